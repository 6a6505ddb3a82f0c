"""Outbound port of the secrets service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from hypersdk_contracts.rpc import SecretMetadata


@dataclass(frozen=True)
class SecretValue:
    """One version of a secret: its pairs (never logged, never published) and its number."""

    data: dict[str, str] = field(repr=False)
    version: int


@dataclass(frozen=True)
class Grace:
    """A rotated-from version, readable until ``until``, then destroyed."""

    path: str
    version: int
    until: datetime


class SecretManager(ABC):
    """Stores secrets by path; values go in, metadata comes out (values only to ``read``).

    A store that cannot answer now raises ServiceError ``upstream_unavailable``.
    """

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the backing store answers and is unsealed."""

    @abstractmethod
    async def put(
        self, path: str, data: dict[str, str], *, cas: int | None = None
    ) -> SecretMetadata:
        """Write a new version of the secret at ``path``.

        ``cas``: only if the current version is still that one (else ServiceError conflict).
        """

    @abstractmethod
    async def read(self, path: str, version: int | None = None) -> SecretValue | None:
        """The current version (or ``version``), or None if there is none (or it is destroyed)."""

    @abstractmethod
    async def describe(self, path: str) -> SecretMetadata | None:
        """Metadata of the secret at ``path``, if it exists."""

    @abstractmethod
    async def list(self) -> list[SecretMetadata]:
        """Metadata of every secret, by path."""

    @abstractmethod
    async def delete(self, path: str) -> bool:
        """Remove every version of the secret; return whether it existed."""

    @abstractmethod
    async def keep_until(self, path: str, version: int, until: datetime) -> None:
        """Record that ``version`` stays readable until ``until`` (a rotation's grace)."""

    @abstractmethod
    async def graces(self) -> Sequence[Grace]:
        """Every recorded grace, ended or not."""

    @abstractmethod
    async def destroy(self, path: str, version: int) -> None:
        """Destroy one version for good, and forget its grace."""
