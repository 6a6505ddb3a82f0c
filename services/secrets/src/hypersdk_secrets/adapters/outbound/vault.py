"""Vault/OpenBao KV v2 adapter through hvac (blocking calls run in threads)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import hvac
from hvac.exceptions import InvalidPath

from hypersdk_contracts.rpc import SecretMetadata
from hypersdk_secrets.ports.outbound import SecretManager


class VaultSecretManager(SecretManager):
    """Secrets under ``<mount>/<prefix>/`` in a KV v2 engine."""

    def __init__(self, client: hvac.Client, *, mount: str, prefix: str) -> None:
        self._client = client
        self._kv = client.secrets.kv.v2
        self._mount = mount
        self._prefix = prefix.strip("/")

    def _full(self, path: str) -> str:
        return f"{self._prefix}/{path}"

    async def ready(self) -> bool:
        """Vault answers, is initialised and unsealed, and our token is valid."""
        try:
            sealed = await asyncio.to_thread(self._client.sys.is_sealed)
            authenticated = await asyncio.to_thread(self._client.is_authenticated)
        except Exception:
            return False
        return bool(authenticated) and not sealed

    async def put(self, path: str, data: dict[str, str]) -> SecretMetadata:
        """Create or update."""
        response = await asyncio.to_thread(
            self._kv.create_or_update_secret,
            path=self._full(path),
            secret=data,
            mount_point=self._mount,
        )
        meta = response["data"]
        return SecretMetadata(
            path=path, version=int(meta["version"]), updated_at=_time(meta["created_time"])
        )

    async def read(self, path: str) -> dict[str, str] | None:
        """The current version's data."""
        try:
            response = await asyncio.to_thread(
                self._kv.read_secret_version,
                path=self._full(path),
                mount_point=self._mount,
                raise_on_deleted_version=True,
            )
        except InvalidPath:
            return None
        data = response["data"]["data"]
        return {str(key): str(value) for key, value in data.items()}

    async def describe(self, path: str) -> SecretMetadata | None:
        """Read metadata only."""
        try:
            response = await asyncio.to_thread(
                self._kv.read_secret_metadata, path=self._full(path), mount_point=self._mount
            )
        except InvalidPath:
            return None
        meta = response["data"]
        return SecretMetadata(
            path=path, version=int(meta["current_version"]), updated_at=_time(meta["updated_time"])
        )

    async def list(self) -> list[SecretMetadata]:
        """Walk the folder tree, then read each secret's metadata."""
        paths: list[str] = []
        pending = [""]
        while pending:
            folder = pending.pop()
            try:
                response = await asyncio.to_thread(
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
        described = [await self.describe(path) for path in sorted(paths)]
        return [meta for meta in described if meta is not None]

    async def delete(self, path: str) -> bool:
        """Delete metadata and all versions."""
        if await self.describe(path) is None:
            return False
        await asyncio.to_thread(
            self._kv.delete_metadata_and_all_versions,
            path=self._full(path),
            mount_point=self._mount,
        )
        return True


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
