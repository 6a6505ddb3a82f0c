"""In-memory fake of the SecretManager port, for unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypersdk_contracts.rpc import SecretMetadata
from hypersdk_secrets.ports.outbound import SecretManager


class InMemorySecretManager(SecretManager):
    """Versions of each secret in a dict."""

    def __init__(self) -> None:
        self.versions: dict[str, list[dict[str, str]]] = {}

    async def ready(self) -> bool:
        """Always ready."""
        return True

    async def put(self, path: str, data: dict[str, str]) -> SecretMetadata:
        """Append a version."""
        self.versions.setdefault(path, []).append(dict(data))
        return SecretMetadata(
            path=path, version=len(self.versions[path]), updated_at=datetime.now(UTC)
        )

    async def read(self, path: str) -> dict[str, str] | None:
        """The latest version."""
        versions = self.versions.get(path)
        return dict(versions[-1]) if versions else None

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
        return self.versions.pop(path, None) is not None
