"""Vault/OpenBao KV v2 adapter through hvac (blocking calls run in threads)."""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import hvac
from hvac.exceptions import (
    BadGateway,
    Forbidden,
    InternalServerError,
    InvalidPath,
    InvalidRequest,
    Unauthorized,
    VaultDown,
    VaultError,
)
from requests.exceptions import RequestException

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import SecretMetadata
from hypersdk_secrets.ports.outbound import Grace, SecretManager, SecretValue

_T = TypeVar("_T")
UNAVAILABLE = (RequestException, VaultDown, InternalServerError, BadGateway)
"""What says Vault cannot answer now: unreachable, timed out, sealed, or failing."""
GRACE_KEY = "grace-"
"""Custom metadata key prefix of a rotated-from version's deadline."""
RENEW_AT = 2 / 3
"""A token is renewed once this share of its lease has passed."""


@dataclass(frozen=True)
class AppRoleLogin:
    """Where the service's AppRole credentials are (0600 files, or a mounted Secret)."""

    role_id_file: Path
    secret_id_file: Path


class VaultSession:
    """An hvac client whose token stays valid.

    With a static token, nothing is done. With an AppRole, the service logs in when it first
    needs Vault, renews its token once two thirds of the lease have passed, logs in again when
    a renewal is refused or would leave less than a third of the first lease (the token's
    maximum TTL nears), and once more when a call is refused as unauthenticated (the token
    was revoked). The secret ID is read from its file at each login and never kept or logged.
    """

    def __init__(
        self,
        client: hvac.Client,
        *,
        approle: AppRoleLogin | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self._approle = approle
        self._clock = clock
        self._lock = threading.Lock()
        self._renew_at = 0.0 if approle is not None else math.inf
        self._lease = 0

    def _login(self) -> None:
        assert self._approle is not None
        role_id = self._approle.role_id_file.read_text().strip()
        secret_id = self._approle.secret_id_file.read_text().strip()
        auth = self.client.auth.approle.login(role_id=role_id, secret_id=secret_id)["auth"]
        self._lease = int(auth.get("lease_duration") or 0)
        self._schedule(self._lease)

    def _schedule(self, lease: int) -> None:
        self._renew_at = self._clock() + lease * RENEW_AT if lease > 0 else math.inf

    def fresh(self) -> None:
        """Make sure the token is valid for a while (blocking: call it in a thread)."""
        if self._approle is None or self._clock() < self._renew_at:
            return
        with self._lock:
            if self._clock() < self._renew_at:
                return
            if self._lease > 0:
                try:
                    auth = self.client.auth.token.renew_self()["auth"]
                except VaultError:  # refused, or past its maximum TTL: log in again
                    auth = None
                lease = int(auth.get("lease_duration") or 0) if auth else 0
                if lease * 3 >= self._lease:
                    self._schedule(lease)
                    return
            self._login()

    def call(self, operation: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """``operation`` with a fresh token; once more after a login if it was refused.

        Vault unreachable, sealed, or failing (5xx) is ``upstream_unavailable`` (a 503 with
        ``Retry-After`` at the gateway); the next call tries again, so service resumes by
        itself when Vault is back. Nothing is cached meanwhile.
        """
        try:
            self.fresh()
            try:
                return operation(*args, **kwargs)
            except (Forbidden, Unauthorized):
                if self._approle is None:
                    raise
                with self._lock:
                    self._login()
                return operation(*args, **kwargs)
        except UNAVAILABLE as exc:
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE,
                "The secret store is unavailable; try again shortly.",
            ) from exc


class VaultSecretManager(SecretManager):
    """Secrets under ``<mount>/<prefix>/`` in a KV v2 engine."""

    def __init__(
        self,
        client: hvac.Client,
        *,
        mount: str,
        prefix: str,
        approle: AppRoleLogin | None = None,
    ) -> None:
        self._session = VaultSession(client, approle=approle)
        self._client = client
        self._kv = client.secrets.kv.v2
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
