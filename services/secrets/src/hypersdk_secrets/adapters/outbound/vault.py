"""Vault/OpenBao KV v2 adapter through hvac (blocking calls run in threads)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from hvac.exceptions import (
    InvalidPath,
    InvalidRequest,
)

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import SecretMetadata
from hypersdk_kit.vault import VaultSession
from hypersdk_secrets.ports.outbound import Grace, SecretManager, SecretValue

_T = TypeVar("_T")
UNAVAILABLE_MESSAGE = "The secret store is unavailable; try again shortly."
GRACE_KEY = "grace-"
"""Custom metadata key prefix of a rotated-from version's deadline."""


class VaultSecretManager(SecretManager):
    """Secrets under ``<mount>/<prefix>/`` in a KV v2 engine, through a logged-in session.

    Build the session with ``unavailable=UNAVAILABLE_MESSAGE`` (``SecretsSettings.vault_session``
    in the composition root) so an outage reads as the secret store's.
    """

    def __init__(self, session: VaultSession, *, mount: str, prefix: str) -> None:
        self._session = session
        self._client = session.client
        self._kv = session.client.secrets.kv.v2
        self._mount = mount
        self._prefix = prefix.strip("/")

    async def _call(self, operation: Callable[..., _T], **kwargs: Any) -> _T:
        return await asyncio.to_thread(functools.partial(self._session.call, operation, **kwargs))

    def _full(self, path: str) -> str:
        return f"{self._prefix}/{path}"

    async def ready(self) -> bool:
        """Vault answers, is initialised and unsealed, and our token is valid."""
        try:
            sealed = await asyncio.to_thread(self._client.sys.is_sealed)
            await asyncio.to_thread(self._session.fresh)
            authenticated = await asyncio.to_thread(self._client.is_authenticated)
        except Exception:
            return False
        return bool(authenticated) and not sealed

    async def put(
        self, path: str, data: dict[str, str], *, cas: int | None = None
    ) -> SecretMetadata:
        """Create or update (with ``cas``: only over that version)."""
        try:
            response = await self._call(
                self._kv.create_or_update_secret,
                path=self._full(path),
                secret=data,
                cas=cas,
                mount_point=self._mount,
            )
        except InvalidRequest as exc:
            if cas is not None and "check-and-set" in str(exc):
                raise ServiceError(ErrorCode.CONFLICT, "The secret changed meanwhile.") from None
            raise
        meta = response["data"]
        return SecretMetadata(
            path=path, version=int(meta["version"]), updated_at=_time(meta["created_time"])
        )

    async def read(self, path: str, version: int | None = None) -> SecretValue | None:
        """The current version's data, or that of ``version``."""
        try:
            response = await self._call(
                self._kv.read_secret_version,
                path=self._full(path),
                version=version,
                mount_point=self._mount,
                raise_on_deleted_version=True,
            )
        except InvalidPath:
            return None
        data = response["data"]["data"]
        if data is None:  # destroyed
            return None
        number = int(response["data"]["metadata"]["version"])
        return SecretValue(
            data={str(key): str(value) for key, value in data.items()}, version=number
        )

    async def _metadata(self, path: str) -> dict[str, Any] | None:
        try:
            response = await self._call(
                self._kv.read_secret_metadata, path=self._full(path), mount_point=self._mount
            )
        except InvalidPath:
            return None
        meta: dict[str, Any] = response["data"]
        return meta

    async def describe(self, path: str) -> SecretMetadata | None:
        """Read metadata only."""
        meta = await self._metadata(path)
        if meta is None:
            return None
        return SecretMetadata(
            path=path, version=int(meta["current_version"]), updated_at=_time(meta["updated_time"])
        )

    async def _paths(self) -> list[str]:
        """Every secret's path under our folder (a walk of the folder tree)."""
        paths: list[str] = []
        pending = [""]
        while pending:
            folder = pending.pop()
            try:
                response = await self._call(
                    self._kv.list_secrets,
                    path=f"{self._prefix}/{folder}".rstrip("/"),
                    mount_point=self._mount,
                )
            except InvalidPath:
                continue
            for key in response["data"]["keys"]:
                if key.endswith("/"):
                    pending.append(folder + key)
                else:
                    paths.append(folder + key)
        return sorted(paths)

    async def list(self) -> list[SecretMetadata]:
        """Walk the folder tree, then read each secret's metadata."""
        described = [await self.describe(path) for path in await self._paths()]
        return [meta for meta in described if meta is not None]

    async def delete(self, path: str) -> bool:
        """Delete metadata and all versions."""
        if await self.describe(path) is None:
            return False
        await self._call(
            self._kv.delete_metadata_and_all_versions,
            path=self._full(path),
            mount_point=self._mount,
        )
        return True

    async def _set_custom(self, path: str, custom: dict[str, str]) -> None:
        await self._call(
            self._kv.update_metadata,
            path=self._full(path),
            custom_metadata=custom,
            mount_point=self._mount,
        )

    async def keep_until(self, path: str, version: int, until: datetime) -> None:
        """The grace as custom metadata of the secret: ``grace-<version>`` = ISO time."""
        meta = await self._metadata(path) or {}
        custom = dict(meta.get("custom_metadata") or {})
        custom[f"{GRACE_KEY}{version}"] = until.isoformat()
        await self._set_custom(path, custom)

    async def graces(self) -> Sequence[Grace]:
        """The grace entries of every secret's custom metadata."""
        found: list[Grace] = []
        for path in await self._paths():
            meta = await self._metadata(path) or {}
            for key, value in (meta.get("custom_metadata") or {}).items():
                if key.startswith(GRACE_KEY) and key[len(GRACE_KEY) :].isdigit():
                    until = _time(value)
                    if until is not None:
                        found.append(Grace(path, int(key[len(GRACE_KEY) :]), until))
        return found

    async def destroy(self, path: str, version: int) -> None:
        """Destroy the version's data for good, then drop its grace entry."""
        await self._call(
            self._kv.destroy_secret_versions,
            path=self._full(path),
            versions=[version],
            mount_point=self._mount,
        )
        meta = await self._metadata(path) or {}
        custom = dict(meta.get("custom_metadata") or {})
        if custom.pop(f"{GRACE_KEY}{version}", None) is not None:
            await self._set_custom(path, custom)


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
