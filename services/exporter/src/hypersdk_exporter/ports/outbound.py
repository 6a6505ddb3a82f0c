"""Outbound ports of the exporter service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.core.jobs import Job, JobQuery, JobTransition
from hypersdk_exporter.core.models import Provider, Vm

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
    """Export jobs and the history of their transitions (the change-management record)."""

    class StaleJobError(Exception):
        """The job changed since it was read (another writer moved it first)."""

    class DuplicateKeyError(Exception):
        """The requester already has a job with that idempotency key."""

    @abstractmethod
    async def add(self, job: Job, transition: JobTransition) -> None:
        """Store a new job with its first record; :class:`DuplicateKeyError` on a reused key."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None:
        """One job (None for an unknown or malformed id)."""

    @abstractmethod
    async def find_by_key(self, *, requested_by: str | None, key: str) -> Job | None:
        """The requester's job with that idempotency key."""

    @abstractmethod
    async def history(self, job_id: str) -> list[JobTransition]:
        """Every transition of the job, oldest first."""

    @abstractmethod
    async def page(self, query: JobQuery) -> list[Job]:
        """A page of jobs, newest first (ties by id), after ``query.after``."""

    @abstractmethod
    async def save(self, job: Job, transition: JobTransition | None) -> None:
        """Store ``job`` (one move past the stored version) and its record, if any.

        Raise :class:`StaleJobError` if the stored job is no longer at ``job.version - 1``.
        """

    @abstractmethod
    async def touch(self, job_id: str, *, at: datetime) -> None:
        """The running worker's heartbeat (changes no version)."""

    @abstractmethod
    async def stale(self, *, before: datetime, limit: int) -> list[Job]:
        """Running jobs whose last heartbeat is older than ``before``."""

    @abstractmethod
    async def running_count(self, provider: str) -> int:
        """Running jobs of ``provider``; inside a transaction, held until it ends.

        Two workers counting for the same provider in their transactions are serialized, so
        a count followed by a start cannot overshoot the provider's limit.
        """


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
