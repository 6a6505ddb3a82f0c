"""Exporter use cases: providers, inventory, export jobs and the worker that runs them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    Artifact,
    JobCompleted,
    JobFailed,
    JobProgressed,
    JobRequested,
    JobStarted,
    ProviderRegistered,
    ProviderRemoved,
)
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.core.models import FILE_EXTENSIONS, TERMINAL, Job, Provider, Vm
from hypersdk_exporter.ports.outbound import (
    CredentialDirectory,
    DiskConverter,
    JobQueue,
    JobStore,
    ProviderDriver,
    ProviderStore,
)
from hypersdk_kit.ports import UnitOfWork

logger = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
PROGRESS_STEP = 10
DONE = 100


class ExportFailedError(Exception):
    """An export could not complete; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sha256_of(path: Path) -> str:
    """SHA-256 of a file, hex, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class ExporterService:
    """Providers, their VMs, and export jobs."""

    def __init__(
        self,
        *,
        providers: ProviderStore,
        jobs: JobStore,
        drivers: dict[str, ProviderDriver],
        converter: DiskConverter,
        queue: JobQueue,
        credentials: CredentialDirectory,
        uow: UnitOfWork,
        export_dir: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._providers = providers
        self._jobs = jobs
        self._drivers = drivers
        self._converter = converter
        self._queue = queue
        self._credentials = credentials
        self._uow = uow
        self._export_dir = export_dir
        self._clock = clock

    # ---- providers ------------------------------------------------------------------------

    async def register_provider(
        self,
        *,
        name: str,
        type: str,
        config: dict[str, str],
        credential_ref: str | None,
        context: RequestContext,
    ) -> Provider:
        """Register a provider whose credential, if any, already exists in the secrets service."""
        driver = self._drivers.get(type)
        if driver is None:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown provider type {type!r}.")
        driver.validate_config(config)
        if credential_ref is not None and not await self._credentials.exists(
            credential_ref, context
        ):
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, "No secret exists at the credential reference."
            )
        provider = Provider(
            name=name,
            type=type,
            config=dict(config),
            credential_ref=credential_ref,
            created_at=self._clock(),
        )
        try:
            async with self._uow.transaction():
                await self._providers.add(provider)
                await self._uow.record(
                    ProviderRegistered(name=name, type=type, credential_ref=credential_ref),
                    subject=f"provider/{name}",
                    context=context,
                )
        except ProviderStore.ProviderExistsError as exc:
            raise ServiceError(ErrorCode.CONFLICT, "A provider with that name exists.") from exc
        return provider

    async def get_provider(self, name: str) -> Provider:
        """One provider or not_found."""
        provider = await self._providers.get(name)
        if provider is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No provider of that name.")
        return provider

    async def list_providers(self) -> list[Provider]:
        """All providers."""
        return await self._providers.list()

    async def remove_provider(self, name: str, context: RequestContext) -> None:
        """Unregister a provider."""
        async with self._uow.transaction():
            if not await self._providers.remove(name):
                raise ServiceError(ErrorCode.NOT_FOUND, "No provider of that name.")
            await self._uow.record(
                ProviderRemoved(name=name), subject=f"provider/{name}", context=context
            )

    # ---- inventory ------------------------------------------------------------------------

    async def list_vms(self, provider_name: str | None = None) -> list[tuple[Provider, Vm]]:
        """VMs of one provider, or of every provider."""
        providers = (
            [await self.get_provider(provider_name)]
            if provider_name
            else await self._providers.list()
        )
        found: list[tuple[Provider, Vm]] = []
        for provider in providers:
            found.extend((provider, vm) for vm in await self._driver(provider).list_vms(provider))
        return found

    async def find_vm(self, provider_name: str, vm_name: str) -> tuple[Provider, Vm]:
        """One VM or not_found."""
        provider = await self.get_provider(provider_name)
        for vm in await self._driver(provider).list_vms(provider):
            if vm.name == vm_name:
                return provider, vm
        raise ServiceError(ErrorCode.NOT_FOUND, "No VM of that name in the provider.")

    def _driver(self, provider: Provider) -> ProviderDriver:
        driver = self._drivers.get(provider.type)
        if driver is None:
            raise ServiceError(ErrorCode.CONFLICT, "The provider's type is no longer supported.")
        return driver

    # ---- jobs -----------------------------------------------------------------------------

    async def create_export(
        self, *, provider: str, vm: str, format: DiskFormat, context: RequestContext
    ) -> Job:
        """Record a queued job (and its event), then hand it to the workers.

        The job is committed before its command is sent, so a worker never receives a command
        for a job it cannot see yet; a command that cannot be sent fails the job (and says so).
        """
        await self.find_vm(provider, vm)
        now = self._clock()
        job = Job(
            id=str(uuid.uuid4()),
            provider=provider,
            vm=vm,
            format=format,
            status=JobStatus.QUEUED,
            progress=0,
            requested_by=context.actor,
            created_at=now,
            updated_at=now,
        )
        async with self._uow.transaction():
            await self._jobs.add(job)
            await self._uow.record(
                JobRequested(job_id=job.id, provider=provider, vm=vm, format=format.value),
                subject=f"job/{job.id}",
                context=context,
            )
        command = VmExportRequested(
            job_id=job.id,
            provider=provider,
            vm=vm,
            format=format.value,
            grant=context.grant or "",
        )
        try:
            await self._queue.enqueue(command, context)
        except Exception:
            await self._fail(job.id, "enqueue_failed", context)
            raise
        return job

    async def get_job(self, job_id: str) -> Job:
        """One job or not_found."""
        job = await self._jobs.get(job_id)
        if job is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No job with that id.")
        return job

    async def list_jobs(self, *, limit: int) -> list[Job]:
        """Newest first."""
        return await self._jobs.recent(limit=limit)

    async def run_export(self, command: VmExportRequested, context: RequestContext) -> Job:
        """Worker side: convert every disk, hash it, write the manifest, record the outcome.

        Idempotent: a redelivered command for a finished job does nothing; one for a job
        that was running when a worker died starts the export again from scratch.
        """
        job = await self._jobs.get(command.job_id)
        if job is None:
            logger.warning("export command for unknown job %s dropped", command.job_id)
            return _missing_job(command, self._clock())
        if job.status in TERMINAL:
            return job
        job_dir = self._export_dir / job.id
        async with self._uow.transaction():
            await self._jobs.update(job.id, status=JobStatus.RUNNING, progress=0)
            await self._uow.record(
                JobStarted(job_id=job.id), subject=f"job/{job.id}", context=context
            )
        try:
            artifacts = await self._export(job, job_dir, context)
        except ExportFailedError as exc:
            shutil.rmtree(job_dir, ignore_errors=True)
            return await self._fail(job.id, exc.reason, context)
        async with self._uow.transaction():
            done = await self._jobs.update(
                job.id, status=JobStatus.SUCCEEDED, progress=100, artifacts=artifacts
            )
            await self._uow.record(
                JobCompleted(job_id=job.id, artifacts=artifacts),
                subject=f"job/{job.id}",
                context=context,
            )
        return done

    async def _fail(self, job_id: str, reason: str, context: RequestContext) -> Job:
        async with self._uow.transaction():
            failed = await self._jobs.update(job_id, status=JobStatus.FAILED, error=reason)
            await self._uow.record(
                JobFailed(job_id=job_id, reason=reason), subject=f"job/{job_id}", context=context
            )
        return failed

    async def _export(self, job: Job, job_dir: Path, context: RequestContext) -> list[Artifact]:
        try:
            _, vm = await self.find_vm(job.provider, job.vm)
        except ServiceError as exc:
            raise ExportFailedError("vm_not_found") from exc
        await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
        await asyncio.to_thread(job_dir.mkdir, mode=0o700, parents=True)
        artifacts: list[Artifact] = []
        reported = 0
        for index, disk in enumerate(vm.disks):

            async def progress(percent: int, index: int = index) -> None:
                nonlocal reported
                overall = (index * 100 + percent) // len(vm.disks)
                if reported + PROGRESS_STEP <= overall < DONE:
                    reported = overall - overall % PROGRESS_STEP
                    async with self._uow.transaction():
                        await self._jobs.update(job.id, progress=reported)
                        await self._uow.record(
                            JobProgressed(job_id=job.id, progress=reported),
                            subject=f"job/{job.id}",
                            context=context,
                        )

            name = f"{vm.name}-{Path(disk.name).stem}.{FILE_EXTENSIONS[job.format]}"
            target = job_dir / name
            partial = job_dir / f".{name}.partial"
            try:
                await self._converter.convert(
                    source=disk.path,
                    source_format=disk.format,
                    target=partial,
                    target_format=job.format,
                    on_progress=progress,
                )
            except OSError as exc:
                raise ExportFailedError("conversion_failed") from exc
            try:
                os.chmod(partial, 0o600)
                await asyncio.to_thread(_fsync, partial)
                partial.rename(target)
                digest = await asyncio.to_thread(sha256_of, target)
            except OSError as exc:
                raise ExportFailedError("artifact_write_failed") from exc
            artifacts.append(Artifact(name=name, size_bytes=target.stat().st_size, sha256=digest))
        try:
            await asyncio.to_thread(self._write_manifest, job, vm, job_dir, artifacts)
        except OSError as exc:
            raise ExportFailedError("artifact_write_failed") from exc
        return artifacts

    def _write_manifest(self, job: Job, vm: Vm, job_dir: Path, artifacts: list[Artifact]) -> None:
        manifest = {
            "job_id": job.id,
            "provider": job.provider,
            "vm": vm.name,
            "format": job.format.value,
            "created_at": self._clock().isoformat(),
            "artifacts": [a.model_dump() for a in artifacts],
        }
        path = job_dir / MANIFEST_NAME
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            json.dump(manifest, stream, indent=2)
            stream.flush()
            os.fsync(stream.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _missing_job(command: VmExportRequested, now: datetime) -> Job:
    return Job(
        id=command.job_id,
        provider=command.provider,
        vm=command.vm,
        format=DiskFormat(command.format),
        status=JobStatus.FAILED,
        progress=0,
        requested_by=None,
        created_at=now,
        updated_at=now,
        error="job_not_found",
    )
