"""Outbound port of the secrets service."""

from __future__ import annotations

from abc import ABC, abstractmethod

from hypersdk_contracts.rpc import SecretMetadata


class SecretManager(ABC):
    """Stores secrets by path; values go in, metadata comes out (values only to ``read``).

    A store that cannot answer now raises ServiceError ``upstream_unavailable``.
    """

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the backing store answers and is unsealed."""

    @abstractmethod
    async def put(self, path: str, data: dict[str, str]) -> SecretMetadata:
        """Write a new version of the secret at ``path``."""

    @abstractmethod
    async def read(self, path: str) -> dict[str, str] | None:
        """The current version's key/value pairs, or None (never logged by any caller)."""

    @abstractmethod
    async def describe(self, path: str) -> SecretMetadata | None:
        """Metadata of the secret at ``path``, if it exists."""

    @abstractmethod
    async def list(self) -> list[SecretMetadata]:
        """Metadata of every secret, by path."""

    @abstractmethod
    async def delete(self, path: str) -> bool:
        """Remove every version of the secret; return whether it existed."""
