"""In-memory fake of the SecretManager port, for unit tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import SecretMetadata
from hypersdk_secrets.ports.outbound import Grace, SecretManager, SecretValue


class InMemorySecretManager(SecretManager):
    """Versions of each secret in a dict (a destroyed version is None)."""

    def __init__(self) -> None:
        self.versions: dict[str, list[dict[str, str] | None]] = {}
        self.kept: dict[tuple[str, int], datetime] = {}

    async def ready(self) -> bool:
        """Always ready."""
        return True

    async def put(
        self, path: str, data: dict[str, str], *, cas: int | None = None
    ) -> SecretMetadata:
        """Append a version."""
        if cas is not None and len(self.versions.get(path, [])) != cas:
            raise ServiceError(ErrorCode.CONFLICT, "The secret changed meanwhile.")
        self.versions.setdefault(path, []).append(dict(data))
        return SecretMetadata(
            path=path, version=len(self.versions[path]), updated_at=datetime.now(UTC)
        )

    async def read(self, path: str, version: int | None = None) -> SecretValue | None:
        """The latest version, or the one asked for."""
        versions = self.versions.get(path)
        if not versions:
            return None
        number = len(versions) if version is None else version
        if not 1 <= number <= len(versions) or versions[number - 1] is None:
            return None
        data = versions[number - 1]
        assert data is not None
        return SecretValue(data=dict(data), version=number)

    async def describe(self, path: str) -> SecretMetadata | None:
        """Metadata if present."""
        if path not in self.versions:
            return None
        return SecretMetadata(path=path, version=len(self.versions[path]))

    async def list(self) -> list[SecretMetadata]:
        """By path."""
        return [SecretMetadata(path=p, version=len(v)) for p, v in sorted(self.versions.items())]

    async def delete(self, path: str) -> bool:
        """Drop all versions."""
        self.kept = {key: until for key, until in self.kept.items() if key[0] != path}
        return self.versions.pop(path, None) is not None

    async def keep_until(self, path: str, version: int, until: datetime) -> None:
        """Record the grace."""
        self.kept[(path, version)] = until

    async def graces(self) -> Sequence[Grace]:
        """All of them."""
        return [Grace(path, version, until) for (path, version), until in self.kept.items()]

    async def destroy(self, path: str, version: int) -> None:
        """Blank the version."""
        versions = self.versions.get(path)
        if versions and 1 <= version <= len(versions):
            versions[version - 1] = None
        self.kept.pop((path, version), None)
