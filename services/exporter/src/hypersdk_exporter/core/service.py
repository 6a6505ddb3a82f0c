"""Exporter use cases: providers, inventory, export jobs and the worker that runs them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
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
    ProviderUpdated,
)
from hypersdk_contracts.rpc import PROVIDER_CREDENTIAL_PREFIX, DiskFormat, JobStatus
from hypersdk_exporter.core.errors import ExportFailedError
from hypersdk_exporter.core.formats import check_request
from hypersdk_exporter.core.models import (
    TERMINAL,
    Job,
    Page,
    Provider,
    VmDescription,
    VmSummary,
)
from hypersdk_exporter.core.pipeline import ExportPipeline
from hypersdk_exporter.ports.outbound import (
    ArtifactWriter,
    CredentialDirectory,
    CredentialResolver,
    DiskConverter,
    DiskSource,
    JobQueue,
    JobStore,
    ProviderDriver,
    ProviderSession,
    ProviderStore,
)
from hypersdk_kit.ports import UnitOfWork

logger = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
PROGRESS_STEP = 10
DONE = 100
DEFAULT_PAGE = 100
MAX_PAGE = 500
MAX_TOKEN_CHARS = 2048


class ExporterService:
    """Providers, their VMs, and export jobs."""

    def __init__(
        self,
        *,
        providers: ProviderStore,
        jobs: JobStore,
        drivers: dict[str, ProviderDriver],
        converter: DiskConverter,
        writer: ArtifactWriter,
        queue: JobQueue,
        credentials: CredentialDirectory,
        resolver: CredentialResolver,
        uow: UnitOfWork,
        export_dir: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._providers = providers
        self._jobs = jobs
        self._drivers = drivers
        self._pipeline = ExportPipeline(converter=converter, writer=writer)
        self._queue = queue
        self._credentials = credentials
        self._resolver = resolver
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
        await self._check_settings(
            type=type, config=config, credential_ref=credential_ref, context=context
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

    async def update_provider(
        self,
        *,
        name: str,
        type: str,
        config: dict[str, str],
        credential_ref: str | None,
        context: RequestContext,
    ) -> Provider:
        """Replace a provider's type, settings and credential reference, checked as on register.

        Jobs read the provider when they run: a queued job uses the settings of that moment.
        """
        existing = await self.get_provider(name)
        await self._check_settings(
            type=type, config=config, credential_ref=credential_ref, context=context
        )
        updated = dataclasses.replace(
            existing, type=type, config=dict(config), credential_ref=credential_ref
        )
        async with self._uow.transaction():
            if not await self._providers.replace(updated):
                raise ServiceError(ErrorCode.NOT_FOUND, "No provider of that name.")
            await self._uow.record(
                ProviderUpdated(name=name, type=type, credential_ref=credential_ref),
                subject=f"provider/{name}",
                context=context,
            )
        return updated

    async def _check_settings(
        self,
        *,
        type: str,
        config: dict[str, str],
        credential_ref: str | None,
        context: RequestContext,
    ) -> None:
        driver = self._drivers.get(type)
        if driver is None:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown provider type {type!r}.")
        driver.validate_config(config)
        if credential_ref is not None and not credential_ref.startswith(PROVIDER_CREDENTIAL_PREFIX):
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                f"A provider credential lives under {PROVIDER_CREDENTIAL_PREFIX}.",
            )
        if credential_ref is not None and not await self._credentials.exists(
            credential_ref, context
        ):
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, "No secret exists at the credential reference."
            )

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

    async def open_session(
        self, provider: Provider | str, context: RequestContext
    ) -> ProviderSession:
        """A session to the provider, its credential resolved through the secrets service.

        The credential lives only in the driver's session; errors never carry it.
        """
        if isinstance(provider, str):
            provider = await self.get_provider(provider)
        driver = self._driver(provider)
        credential = None
        if provider.credential_ref is not None:
            try:
                credential = await self._resolver.resolve(provider.credential_ref, context)
            except ServiceError as exc:
                if exc.code is not ErrorCode.NOT_FOUND:
                    raise
                raise ServiceError(
                    ErrorCode.CONFLICT, "The provider's credential no longer exists."
                ) from None
        try:
            return await driver.connect(provider, credential)
        except ServiceError:
            raise
        except Exception as exc:
            # A library's message may quote what it was given: log the type, answer a code.
            logger.warning(
                "provider session failed",
                extra={"provider": provider.name, "error": type(exc).__name__},
            )
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "The provider cannot be reached."
            ) from None

    async def describe_vm(
        self, provider_name: str, vm_id: str, context: RequestContext
    ) -> tuple[Provider, VmDescription]:
        """One VM by its id (or name) in the provider, or not_found."""
        provider = await self.get_provider(provider_name)
        async with await self.open_session(provider, context) as session:
            vm = await session.get_vm(vm_id)
        if vm is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No VM of that id in the provider.")
        return provider, vm

    async def list_vms(
        self,
        provider_name: str | None = None,
        *,
        page_token: str | None = None,
        limit: int = DEFAULT_PAGE,
        context: RequestContext,
    ) -> Page[tuple[Provider, VmSummary]]:
        """One page of VMs of one provider, or of every provider in name order.

        The token is opaque to callers: the provider the page stopped in and that provider's
        own token. Listing every provider skips one that cannot be reached (and logs it).
        """
        if not 1 <= limit <= MAX_PAGE:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"limit must be 1 to {MAX_PAGE}.")
        start, inner = _decode_page(page_token)
        if provider_name:
            providers = [await self.get_provider(provider_name)]
            if start is not None and start != provider_name:
                raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.")
        else:
            providers = [
                p for p in await self._providers.list() if start is None or p.name >= start
            ]
            if start is not None and (not providers or providers[0].name != start):
                inner = None  # the provider the token stopped in was removed meanwhile
        found: list[tuple[Provider, VmSummary]] = []
        for index, provider in enumerate(providers):
            try:
                async with await self.open_session(provider, context) as session:
                    page = await session.list_vms(page_token=inner, limit=limit - len(found))
            except ServiceError as exc:
                if provider_name or exc.code is ErrorCode.VALIDATION_FAILED:
                    raise
                logger.warning(
                    "provider skipped in the inventory",
                    extra={"provider": provider.name, "code": exc.code.value},
                )
                page = Page(items=[], next_token=None)
            inner = None
            found.extend((provider, vm) for vm in page.items)
            if page.next_token is not None:
                return Page(items=found, next_token=_encode_page(provider.name, page.next_token))
            if len(found) >= limit and index + 1 < len(providers):
                return Page(items=found, next_token=_encode_page(providers[index + 1].name, None))
        return Page(items=found, next_token=None)

    def _driver(self, provider: Provider) -> ProviderDriver:
        driver = self._drivers.get(provider.type)
        if driver is None:
            raise ServiceError(ErrorCode.CONFLICT, "The provider's type is no longer supported.")
        return driver

    # ---- jobs -----------------------------------------------------------------------------

    async def create_export(
        self,
        *,
        provider: str,
        vm: str,
        format: DiskFormat,
        compress: bool = False,
        context: RequestContext,
    ) -> Job:
        """Record a queued job (and its event), then hand it to the workers.

        The job is committed before its command is sent, so a worker never receives a command
        for a job it cannot see yet; a command that cannot be sent fails the job (and says so).
        """
        check_request(format, compress=compress)
        await self.describe_vm(provider, vm, context)
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
            compress=compress,
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
            artifacts = await self._export(job, job_dir, context, compress=command.compress)
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

    async def _export(
        self, job: Job, job_dir: Path, context: RequestContext, *, compress: bool
    ) -> list[Artifact]:
        try:
            session = await self.open_session(job.provider, context)
        except ServiceError as exc:
            raise ExportFailedError("provider_unavailable") from exc
        async with session:
            vm = await session.get_vm(job.vm)
            if vm is None:
                raise ExportFailedError("vm_not_found")
            return await self._export_vm(job, job_dir, session, vm, context, compress=compress)

    async def _export_vm(
        self,
        job: Job,
        job_dir: Path,
        session: ProviderSession,
        vm: VmDescription,
        context: RequestContext,
        *,
        compress: bool,
    ) -> list[Artifact]:
        reported = 0

        async def progress(done: int, total: int) -> None:
            nonlocal reported
            overall = done * 100 // total if total else 0
            if reported + PROGRESS_STEP <= overall < DONE:
                reported = overall - overall % PROGRESS_STEP
                async with self._uow.transaction():
                    await self._jobs.update(job.id, progress=reported)
                    await self._uow.record(
                        JobProgressed(job_id=job.id, progress=reported),
                        subject=f"job/{job.id}",
                        context=context,
                    )

        sources: list[DiskSource] = []
        try:
            try:
                for disk in vm.disks:
                    sources.append(await session.open_disk(vm, disk))
            except ServiceError as exc:
                raise ExportFailedError("source_unavailable") from exc
            artifacts = await self._pipeline.run(
                vm,
                sources,
                job.format,
                job_dir,
                compress=compress,
                on_progress=progress,
                cancelled=lambda: False,
            )
        finally:
            for source in sources:
                await source.close()
        try:
            await asyncio.to_thread(self._write_manifest, job, vm, job_dir, artifacts)
        except OSError as exc:
            raise ExportFailedError("artifact_write_failed") from exc
        return artifacts

    def _write_manifest(
        self, job: Job, vm: VmDescription, job_dir: Path, artifacts: list[Artifact]
    ) -> None:
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


def _encode_page(provider: str, token: str | None) -> str:
    raw = json.dumps([provider, token], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_page(token: str | None) -> tuple[str | None, str | None]:
    """(provider, that provider's token) of an inventory page token; VALIDATION_FAILED else."""
    if token is None:
        return None, None
    try:
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise ValueError("length")
        provider, inner = json.loads(
            base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        )
        if not isinstance(provider, str) or not (inner is None or isinstance(inner, str)):
            raise ValueError("shape")
    except (ValueError, TypeError, binascii.Error) as exc:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.") from exc
    return provider, inner


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
