"""In-memory fakes of the exporter ports, for unit tests."""

from __future__ import annotations

import dataclasses
import shutil
from datetime import UTC, datetime
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.core.models import Credential, Job, Provider
from hypersdk_exporter.ports.outbound import (
    CredentialDirectory,
    CredentialResolver,
    DiskConverter,
    JobQueue,
    JobStore,
    ProgressCallback,
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


class CopyingConverter(DiskConverter):
    """'Converts' by copying bytes; reports 50 and 100. Fails on sources named *fail*."""

    async def convert(
        self,
        *,
        source: Path,
        source_format: str,
        target: Path,
        target_format: DiskFormat,
        on_progress: ProgressCallback,
    ) -> None:
        """Copy the file."""
        if "fail" in source.name:
            raise OSError("simulated conversion failure")
        await on_progress(50)
        shutil.copyfile(source, target)
        await on_progress(100)
