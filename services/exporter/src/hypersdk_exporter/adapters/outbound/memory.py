"""In-memory fakes of the exporter ports, for unit tests."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import JobStatus
from hypersdk_exporter.core import errors
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import FormatSpec
from hypersdk_exporter.core.models import Credential, ImageInfo, Job, Provider
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
    """Jobs in a dict."""

    def __init__(self) -> None:
        self.jobs: dict[str, Job] = {}

    async def add(self, job: Job) -> None:
        """Insert."""
        self.jobs[job.id] = job

    async def get(self, job_id: str) -> Job | None:
        """Fetch."""
        return self.jobs.get(job_id)

    async def recent(self, *, limit: int) -> list[Job]:
        """Newest first."""
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)[:limit]

    async def update(
        self,
        job_id: str,
        *,
        status: JobStatus | None = None,
        progress: int | None = None,
        error: str | None = None,
        artifacts: list[Artifact] | None = None,
    ) -> Job:
        """Replace the given fields."""
        job = self.jobs[job_id]
        self.jobs[job_id] = dataclasses.replace(
            job,
            status=status or job.status,
            progress=job.progress if progress is None else progress,
            error=error or job.error,
            artifacts=job.artifacts if artifacts is None else artifacts,
            updated_at=datetime.now(UTC),
        )
        return self.jobs[job_id]


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
    ) -> str:
        """Copy in two halves; wait for a cancel in between for *slow* sources."""
        self.converted.append((source, target, spec.qemu_name, spec.compresses(compress)))
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
