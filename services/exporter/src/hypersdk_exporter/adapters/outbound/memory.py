"""In-memory fakes of the exporter ports, for unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from datetime import datetime
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import JobStatus
from hypersdk_exporter.core import errors
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import FormatSpec
from hypersdk_exporter.core.jobs import Job, JobQuery, JobTransition
from hypersdk_exporter.core.models import Credential, ImageInfo, Provider
from hypersdk_exporter.ports.outbound import (
    ByteProgress,
    CancelCheck,
    CredentialDirectory,
    CredentialResolver,
    DiskConverter,
    JobQueue,
    JobStore,
    ProviderStore,
)


class InMemoryProviderStore(ProviderStore):
    """Providers in a dict."""

    def __init__(self) -> None:
        self.providers: dict[str, Provider] = {}

    async def add(self, provider: Provider) -> None:
        """Insert or refuse."""
        if provider.name in self.providers:
            raise ProviderStore.ProviderExistsError(provider.name)
        self.providers[provider.name] = provider

    async def get(self, name: str) -> Provider | None:
        """Fetch."""
        return self.providers.get(name)

    async def list(self) -> list[Provider]:
        """By name."""
        return [self.providers[name] for name in sorted(self.providers)]

    async def replace(self, provider: Provider) -> bool:
        """Replace an existing one."""
        if provider.name not in self.providers:
            return False
        self.providers[provider.name] = provider
        return True

    async def remove(self, name: str) -> bool:
        """Delete."""
        return self.providers.pop(name, None) is not None


class InMemoryJobStore(JobStore):
    """Jobs and their history in dicts."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}
        self.transitions: dict[str, list[JobTransition]] = {}
        self.lost = False
        """While true every call fails as a lost database would."""

    def _check(self) -> None:
        if self.lost:
            raise ConnectionError("database unreachable")

    async def add(self, job: Job, transition: JobTransition) -> None:
        """Insert, or refuse a reused idempotency key."""
        self._check()
        if job.idempotency_key is not None and any(
            (other.requested_by, other.idempotency_key) == (job.requested_by, job.idempotency_key)
            for other in self.jobs.values()
        ):
            raise JobStore.DuplicateKeyError(job.idempotency_key)
        self.jobs[job.id] = job
        self.transitions[job.id] = [transition]

    async def get(self, job_id: str) -> Job | None:
        """Fetch."""
        self._check()
        return self.jobs.get(job_id)

    async def find_by_key(self, *, requested_by: str | None, key: str) -> Job | None:
        """Scan."""
        self._check()
        for job in self.jobs.values():
            if (job.requested_by, job.idempotency_key) == (requested_by, key):
                return job
        return None

    async def history(self, job_id: str) -> list[JobTransition]:
        """Oldest first."""
        self._check()
        return list(self.transitions.get(job_id, []))

    async def page(self, query: JobQuery) -> list[Job]:
        """Newest first, ties by id (descending), after the cursor."""
        self._check()
        ordered = sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True)
        if query.after is not None:
            cursor = (query.after.created_at, query.after.id)
            ordered = [j for j in ordered if (j.created_at, j.id) < cursor]
        return [j for j in ordered if query.matches(j)][: query.limit]

    async def save(self, job: Job, transition: JobTransition | None) -> None:
        """Compare the version and replace (the dispatch time is kept: no move sets it)."""
        self._check()
        stored = self.jobs.get(job.id)
        if stored is None or stored.version != job.version - 1:
            raise JobStore.StaleJobError(job.id)
        self.jobs[job.id] = dataclasses.replace(job, dispatched_at=stored.dispatched_at)
        if transition is not None:
            self.transitions[job.id].append(transition)

    async def touch(self, job_id: str, *, at: datetime) -> None:
        """Set the heartbeat."""
        self._check()
        job = self.jobs.get(job_id)
        if job is not None and job.status is JobStatus.RUNNING:
            self.jobs[job_id] = dataclasses.replace(job, heartbeat_at=at)

    async def stale(self, *, before: datetime, limit: int) -> list[Job]:
        """Running with an old heartbeat."""
        self._check()
        found = [
            j
            for j in self.jobs.values()
            if j.status is JobStatus.RUNNING and (j.heartbeat_at or j.updated_at) < before
        ]
        return sorted(found, key=lambda j: j.created_at)[:limit]

    async def mark_dispatched(self, job_id: str, *, at: datetime) -> None:
        """Set dispatched_at if not set."""
        self._check()
        job = self.jobs.get(job_id)
        if job is not None and job.dispatched_at is None:
            self.jobs[job_id] = dataclasses.replace(job, dispatched_at=at)

    async def undispatched(self, *, before: datetime, limit: int) -> list[Job]:
        """Queued, never dispatched, old."""
        self._check()
        found = [
            j
            for j in self.jobs.values()
            if j.status is JobStatus.QUEUED and j.dispatched_at is None and j.created_at < before
        ]
        return sorted(found, key=lambda j: j.created_at)[:limit]

    async def running_count(self, provider: str) -> int:
        """Count."""
        self._check()
        return sum(
            1
            for j in self.jobs.values()
            if j.provider == provider and j.status is JobStatus.RUNNING
        )


class InMemoryJobQueue(JobQueue):
    """Commands in a list."""

    def __init__(self) -> None:
        self.commands: list[VmExportRequested] = []

    async def enqueue(self, command: VmExportRequested, context: RequestContext) -> None:
        """Record."""
        self.commands.append(command)


class InMemoryCredentialDirectory(CredentialDirectory):
    """A set of existing paths."""

    def __init__(self, paths: set[str] | None = None) -> None:
        self.paths = paths or set()

    async def exists(self, path: str, context: RequestContext) -> bool:
        """Membership."""
        return path in self.paths


class InMemoryCredentialResolver(CredentialResolver):
    """Secrets in a dict; records which references were resolved for whom."""

    def __init__(self, secrets: dict[str, dict[str, str]] | None = None) -> None:
        self.secrets = secrets or {}
        self.resolved: list[tuple[str, str | None]] = []

    async def resolve(self, ref: str, context: RequestContext) -> Credential:
        """The secret at ``ref`` or not_found."""
        if ref not in self.secrets:
            raise ServiceError(ErrorCode.NOT_FOUND, "No secret at the credential reference.")
        self.resolved.append((ref, context.actor))
        return Credential(ref=ref, values=dict(self.secrets[ref]))


class InMemoryConverter(DiskConverter):
    """'Converts' by copying bytes (the digest computed as it copies).

    ``inspect`` refuses sources whose name says so: *backing* (a backing file), *extent* (an
    external extent); ``convert`` fails on sources named *fail* and, once ``started`` is set,
    waits for a cancel when the source is named *slow*. ``sizes`` overrides virtual sizes.
    """

    def __init__(self) -> None:
        self.inspected: list[tuple[Path, str, Path]] = []
        self.converted: list[tuple[Path, Path, str, bool]] = []
        self.spooled: list[bool] = []  # per conversion: whether its source was a spool
        self.sizes: dict[str, int] = {}
        self.started = asyncio.Event()

    async def inspect(self, source: Path, *, format: str, allowed_root: Path) -> ImageInfo:
        """Refuse by name; the virtual size is the file's (or ``sizes``)."""
        self.inspected.append((source, format, allowed_root))
        if "backing" in source.name:
            raise ExportFailedError(errors.UNSAFE_BACKING_FILE)
        if "extent" in source.name:
            raise ExportFailedError(errors.UNSAFE_EXTERNAL_EXTENT)
        size = self.sizes.get(source.name, os.stat(source).st_size)
        return ImageInfo(format=format, virtual_size=size)

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
        """Copy in two halves; wait for a cancel in between for *slow* sources."""
        self.converted.append((source, target, spec.qemu_name, spec.compresses(compress)))
        self.spooled.append(spooled)
        if "fail" in source.name:
            raise ExportFailedError(errors.CONVERSION_FAILED, "simulated")
        data = _read(source)
        _write(target, data[: len(data) // 2])
        self.started.set()
        await on_progress(info.virtual_size // 2)
        while "slow" in source.name:
            if cancelled():
                os.unlink(target)
                raise ExportCancelledError
            await asyncio.sleep(0.01)
        _write(target, data)
        await on_progress(info.virtual_size)
        return hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
