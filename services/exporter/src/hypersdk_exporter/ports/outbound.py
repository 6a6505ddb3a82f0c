"""Outbound ports of the exporter service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_exporter.core.formats import FormatSpec
from hypersdk_exporter.core.jobs import Job, JobQuery, JobTransition
from hypersdk_exporter.core.models import (
    Credential,
    DiskInfo,
    ImageInfo,
    Page,
    Provider,
    SourceFingerprint,
    VmDescription,
    VmSummary,
)

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
    async def replace(self, provider: Provider) -> bool:
        """Replace type, config and credential reference; return whether it existed."""

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
    async def mark_dispatched(self, job_id: str, *, at: datetime) -> None:
        """Record that the job's command reached the work queue (changes no version)."""

    @abstractmethod
    async def undispatched(self, *, before: datetime, limit: int) -> list[Job]:
        """Queued jobs created before ``before`` whose command was never recorded as sent."""

    @abstractmethod
    async def running_count(self, provider: str) -> int:
        """Running jobs of ``provider``; inside a transaction, held until it ends.

        Two workers counting for the same provider in their transactions are serialized, so
        a count followed by a start cannot overshoot the provider's limit.
        """


class DiskSource(ABC):
    """An opened disk of a VM; ``close()`` releases it.

    ``format`` and ``capacity_bytes`` are what the provider says; the content is untrusted.
    ``root`` is the provider's directory a backing file or extent may resolve into (None: no
    file outside the image itself may be referenced).
    """

    format: str
    capacity_bytes: int
    root: Path | None = None

    @abstractmethod
    async def local_path(self) -> Path | None:
        """A path qemu-img may read (with the format spelled out), or None if only streamed."""

    @abstractmethod
    def stream(self) -> AsyncIterator[bytes]:
        """The raw bytes of the image file, in order."""

    @abstractmethod
    async def fingerprint(self) -> SourceFingerprint:
        """Size and change id now: compared before and after an export to detect a change."""

    @abstractmethod
    async def close(self) -> None:
        """Release whatever the disk holds open (idempotent)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class ProviderSession(ABC):
    """One connection to a provider, its credential already resolved."""

    @abstractmethod
    async def list_vms(self, *, page_token: str | None, limit: int) -> Page[VmSummary]:
        """One page of VMs in a stable order (by name).

        ``page_token`` is the opaque ``next_token`` of the previous page (None for the first);
        a token the driver did not make raises ServiceError(VALIDATION_FAILED). Items may be
        :class:`VmDescription` when the driver has the detail at no extra cost.
        """

    @abstractmethod
    async def get_vm(self, vm_id: str) -> VmDescription | None:
        """One VM by its id (or, where the provider allows, its name), without a full scan."""

    @abstractmethod
    async def open_disk(self, vm: VmDescription, disk: DiskInfo) -> DiskSource:
        """Open one disk of ``vm`` for reading."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection (idempotent)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()


class ProviderDriver(ABC):
    """Talks to one kind of hypervisor or cloud; registered by ``type``."""

    type: ClassVar[str]

    @abstractmethod
    def validate_config(self, config: dict[str, str]) -> None:
        """Raise ServiceError(VALIDATION_FAILED) if the connection settings are unusable."""

    @abstractmethod
    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        """Open a session; ServiceError(UPSTREAM_UNAVAILABLE) if the provider cannot be reached.

        Errors never carry the credential's values.
        """


class CredentialResolver(ABC):
    """Resolves a credential reference through the secrets service; the value is never logged."""

    @abstractmethod
    async def resolve(self, ref: str, context: RequestContext) -> Credential:
        """The credential at ``ref``; ServiceError(NOT_FOUND/FORBIDDEN/...) if it cannot be read."""


ByteProgress = Callable[[int], Awaitable[None]]  # bytes of the current disk done
CancelCheck = Callable[[], bool]


class DiskConverter(ABC):
    """Inspects untrusted disk images and converts them (qemu-img, unprivileged)."""

    @abstractmethod
    async def inspect(self, source: Path, *, format: str, allowed_root: Path) -> ImageInfo:
        """What the image is, opened as ``format`` (never probed).

        Raise ExportFailedError with a stable reason if the image is not of that format, cannot
        be read, or refers to a backing file, extent or data file outside ``allowed_root``.
        """

    @abstractmethod
    async def convert(
        self,
        *,
        source: Path,
        info: ImageInfo,
        target: Path,
        spec: FormatSpec,
        compress: bool,
        on_progress: ByteProgress,
        cancelled: CancelCheck,
        spooled: bool = False,
    ) -> str:
        """Write ``target`` (0600) and return its SHA-256, computed as it is written.

        ``spooled``: the source is a copy the exporter has just written (read it through the
        page cache, where it still is).

        Raise ExportCancelledError within a second of ``cancelled()`` turning true (the
        conversion killed), ExportFailedError(conversion_failed) if qemu-img fails.
        """


class ArtifactWriter(ABC):
    """The job directory and the files the exporter writes itself."""

    @abstractmethod
    async def prepare(self, job_dir: Path) -> None:
        """Create ``job_dir`` empty, 0700 (owned by the conversion user)."""

    @abstractmethod
    async def free_bytes(self, job_dir: Path) -> int:
        """Free space of the filesystem that holds ``job_dir``."""

    @abstractmethod
    async def discard(self, job_dir: Path) -> None:
        """Remove ``job_dir`` and everything in it (idempotent)."""

    @abstractmethod
    async def spool(
        self, stream: AsyncIterator[bytes], target: Path, *, cancelled: CancelCheck
    ) -> None:
        """Copy a streamed source image to ``target`` (0600, readable by the conversion user)."""

    @abstractmethod
    async def finish(self, partial: Path, target: Path) -> int:
        """Flush ``partial`` to disk, make it 0600, rename it to ``target``; return its size."""

    @abstractmethod
    async def pack_ova(
        self,
        *,
        target: Path,
        descriptor: tuple[str, bytes],
        disks: list[tuple[str, Path]],
        manifest: Callable[[dict[str, str]], tuple[str, bytes]],
        cancelled: CancelCheck,
    ) -> tuple[int, str]:
        """Write a ustar OVA: the descriptor, the disks in order, then the manifest.

        Each member is hashed as it is copied in; ``manifest`` turns {member: sha256} into
        the manifest's (name, content). Returns the OVA's size and SHA-256 (same pass). The
        disk files are removed once packed.
        """


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
