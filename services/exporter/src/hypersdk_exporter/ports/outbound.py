"""Outbound ports of the exporter service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.core.models import Job, Provider, Vm

ProgressCallback = Callable[[int], Awaitable[None]]


class ProviderStore(ABC):
    """Registered providers."""

    class ProviderExistsError(Exception):
        """A provider of that name exists."""

    @abstractmethod
    async def add(self, provider: Provider) -> None:
        """Store; raise :class:`ProviderExistsError` on a duplicate name."""

    @abstractmethod
    async def get(self, name: str) -> Provider | None:
        """One provider."""

    @abstractmethod
    async def list(self) -> list[Provider]:
        """All, by name."""

    @abstractmethod
    async def remove(self, name: str) -> bool:
        """Delete; return whether it existed."""


class JobStore(ABC):
    """Export jobs."""

    @abstractmethod
    async def add(self, job: Job) -> None:
        """Store a new job."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """One job."""

    @abstractmethod
    async def recent(self, *, limit: int) -> list[Job]:
        """Newest first."""

    @abstractmethod
    async def update(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        error: str | None = None,
        artifacts: list[Artifact] | None = None,
    ) -> Job:
        """Change a job and return it as stored."""


class ProviderDriver(ABC):
    """Talks to one kind of hypervisor or cloud."""

    @abstractmethod
    def validate_config(self, config: dict[str, str]) -> None:
        """Raise ServiceError if the connection settings are unusable."""

    @abstractmethod
    async def list_vms(self, provider: Provider) -> list[Vm]:
        """The provider's VMs."""


class DiskConverter(ABC):
    """Converts a disk image between formats."""

    @abstractmethod
    async def convert(
        self,
        *,
        source: Path,
        source_format: str,
        target: Path,
        target_format: DiskFormat,
        on_progress: ProgressCallback,
    ) -> None:
        """Write ``target``; call ``on_progress`` with 0-100 as it goes."""


class JobQueue(ABC):
    """Hands export commands to workers."""

    @abstractmethod
    async def enqueue(self, command: VmExportRequested, context: RequestContext) -> None:
        """Queue durably (confirmed by the broker)."""


class CredentialDirectory(ABC):
    """Knows which credential references exist (never their values)."""

    @abstractmethod
    async def exists(self, path: str, context: RequestContext) -> bool:
        """Whether a secret exists at ``path``."""
