"""Exporter use cases: providers, inventory, export jobs and the worker that runs them."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    Artifact,
    EventData,
    JobCancelled,
    JobCancelRequested,
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
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import check_request
from hypersdk_exporter.core.jobs import (
    IllegalTransitionError,
    Job,
    JobAction,
    JobPolicy,
    JobQuery,
    JobTransition,
    ProgressMeter,
    ProgressReport,
)
from hypersdk_exporter.core.models import (
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
_SAVE_ATTEMPTS = 20
"""A move retried this often against concurrent writers (progress, cancel) before giving up."""
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
        policy: JobPolicy | None = None,
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
        self._policy = policy or JobPolicy()

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
        idempotency_key: str | None = None,
    ) -> Job:
        """Record a queued job (and its event), then hand it to the workers.

        The job is committed before its command is sent, so a worker never receives a command
        for a job it cannot see yet; a command that cannot be sent fails the job (and says so).
        With an idempotency key, the same request again from the same requester returns the
        job the first one created (and queues nothing); another request with that key is a
        conflict.
        """
        check_request(format, compress=compress)
        digest = request_digest(provider=provider, vm=vm, format=format, compress=compress)
        if idempotency_key is not None:
            earlier = await self._jobs.find_by_key(requested_by=context.actor, key=idempotency_key)
            if earlier is not None:
                return _same_request(earlier, digest)
        await self.describe_vm(provider, vm, context)
        job, requested = Job.request(
            id=str(uuid.uuid4()),
            provider=provider,
            vm=vm,
            format=format,
            requested_by=context.actor,
            at=self._clock(),
            idempotency_key=idempotency_key,
            request_digest=digest,
        )
        try:
            async with self._uow.transaction():
                await self._jobs.add(job, requested)
                await self._uow.record(
                    JobRequested(job_id=job.id, provider=provider, vm=vm, format=format.value),
                    subject=f"job/{job.id}",
                    context=context,
                )
        except JobStore.DuplicateKeyError:
            # A concurrent request with the same key won the race.
            assert idempotency_key is not None
            earlier = await self._jobs.find_by_key(requested_by=context.actor, key=idempotency_key)
            if earlier is None:
                raise
            return _same_request(earlier, digest)
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
            await self._end(
                job.id, context, lambda j: j.fail(reason="enqueue_failed", at=self._clock())
            )
            raise
        return await self._dispatched(job)

    async def _dispatched(self, job: Job) -> Job:
        """Record that the job's command is in the work queue (else the sweeper ends the job).

        Best effort: the command is already sent; the worker records it again on receipt.
        """
        at = self._clock()
        try:
            await self._jobs.mark_dispatched(job.id, at=at)
        except Exception:
            logger.warning("could not record the dispatch of job %s", job.id, exc_info=True)
            return job
        return dataclasses.replace(job, dispatched_at=job.dispatched_at or at)

    async def get_job(self, job_id: str) -> Job:
        """One job or not_found."""
        job = await self._jobs.get(job_id)
        if job is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No job with that id.")
        return job

    async def job_history(self, job_id: str) -> list[JobTransition]:
        """Every transition of one job, oldest first."""
        return await self._jobs.history(job_id)

    async def list_jobs(
        self,
        *,
        limit: int,
        after: str | None = None,
        status: JobStatus | None = None,
        provider: str | None = None,
        requested_by: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[Job]:
        """A page of jobs, newest first; ``after`` is the last job id of the previous page."""
        cursor = None
        if after is not None:
            cursor = await self._jobs.get(after)
            if cursor is None:
                raise ServiceError(ErrorCode.VALIDATION_FAILED, "The cursor names no job.")
        return await self._jobs.page(
            JobQuery(
                limit=limit,
                after=cursor,
                status=status,
                provider=provider,
                requested_by=requested_by,
                created_after=created_after,
                created_before=created_before,
            )
        )

    async def cancel_job(self, job_id: str, context: RequestContext) -> Job:
        """Cancel a queued job at once; ask a running one's worker to stop it (within 1 s).

        Cancelling a job that is already being cancelled returns it unchanged; an ended job
        is a conflict.
        """
        for _ in range(_SAVE_ATTEMPTS):
            job = await self.get_job(job_id)
            if job.status is JobStatus.RUNNING and job.cancel_requested_by is not None:
                return job
            try:
                moved, transition = job.request_cancel(by=context.actor, at=self._clock())
            except IllegalTransitionError as exc:
                raise ServiceError(
                    ErrorCode.CONFLICT, f"The job has ended ({job.status.value})."
                ) from exc
            event: EventData = (
                JobCancelled(job_id=job.id, cancelled_by=context.actor)
                if moved.status is JobStatus.CANCELLED
                else JobCancelRequested(job_id=job.id)
            )
            try:
                async with self._uow.transaction():
                    await self._jobs.save(moved, transition)
                    await self._uow.record(event, subject=f"job/{job.id}", context=context)
            except JobStore.StaleJobError:
                continue  # a worker moved it meanwhile: decide again on what it is now
            return moved
        raise ServiceError(ErrorCode.CONFLICT, "The job keeps changing; try again.")

    async def run_export(
        self, command: VmExportRequested, context: RequestContext, *, worker: str = "worker"
    ) -> Job:
        """Worker side: convert every disk, hash it, write the manifest, record the outcome.

        Idempotent: a redelivered command for an ended job does nothing; one for a job that
        was running when a worker died starts the export again from scratch, unless it has
        been started ``max_attempts`` times already (then it ends failed). While it runs, the
        job row is watched: a cancel request, or the job ended by the sweeper, stops the
        conversion within ``poll_seconds``.
        """
        job = await self._jobs.get(command.job_id)
        if job is None:
            logger.warning("export command for unknown job %s dropped", command.job_id)
            return _missing_job(command, self._clock())
        if job.dispatched_at is None:
            job = await self._dispatched(job)
        job_dir = self._export_dir / job.id
        started = await self._start(job, context)
        if started.status is not JobStatus.RUNNING:
            if started.status is not JobStatus.SUCCEEDED:  # a given-up or cancelled job's
                await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
            return started
        stop = asyncio.Event()
        watcher = asyncio.create_task(self._watch(started.id, stop))
        try:
            artifacts = await self._export(
                started, job_dir, context, stop, compress=command.compress
            )
        except ExportCancelledError:
            await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
            return await self._stopped(started.id, context)
        except ExportFailedError as exc:
            await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
            reason, detail = exc.reason, exc.detail
            return await self._end(
                started.id,
                context,
                lambda j: j.fail(reason=reason, detail=detail, at=self._clock()),
            )
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        done = await self._end(
            started.id,
            context,
            lambda j: j.succeed(artifacts=artifacts, at=self._clock()),
            event=JobCompleted(job_id=started.id, artifacts=artifacts),
        )
        if done.status is not JobStatus.SUCCEEDED:
            # Cancelled or swept while the last bytes were written: nothing of it may remain.
            await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)
        return done

    async def _start(self, job: Job, context: RequestContext) -> Job:
        """Move the job to running once its provider has room; or end it if it must not run.

        Returns the job as it is now: running (go), or ended (nothing to do).
        """
        policy = self._policy
        while True:
            if job.terminal:
                return job
            if job.cancel_requested_by is not None or job.attempts >= policy.max_attempts:
                # Its output goes first: once the job says it ended, nothing of it remains.
                await asyncio.to_thread(
                    shutil.rmtree, self._export_dir / job.id, ignore_errors=True
                )
                if job.cancel_requested_by is not None:
                    return await self._stopped(job.id, context)
                return await self._end(job.id, context, self._give_up)
            try:
                async with self._uow.transaction():
                    running = await self._jobs.running_count(job.provider)
                    if job.status is JobStatus.RUNNING:
                        running -= 1  # itself, restarted after its worker died
                    if running < policy.provider_concurrency:
                        started, transition = job.start(at=self._clock())
                        await self._jobs.save(started, transition)
                        await self._uow.record(
                            JobStarted(job_id=job.id), subject=f"job/{job.id}", context=context
                        )
                        return started
            except JobStore.StaleJobError:
                pass
            else:
                # The provider is at its limit: the job waits (queued), it never fails for it.
                await asyncio.sleep(policy.capacity_poll_seconds)
            reloaded = await self._jobs.get(job.id)
            if reloaded is None:
                return job
            job = reloaded

    def _fail_if_stale(self, job: Job, *, before: datetime) -> tuple[Job, JobTransition]:
        """Fail ``job`` as worker_lost, unless it beat (or ended) since it was found stale."""
        if job.status is not JobStatus.RUNNING or (job.heartbeat_at or job.updated_at) >= before:
            raise IllegalTransitionError(job, JobAction.FAILED)
        detail = f"no heartbeat for {self._policy.stale_after_seconds:g} s (its worker was lost)"
        return job.fail(reason="worker_lost", detail=detail, at=self._clock())

    def _never_sent(self, job: Job, *, before: datetime) -> tuple[Job, JobTransition]:
        """Fail ``job`` as not_dispatched, unless it was dispatched or moved meanwhile."""
        if job.status is not JobStatus.QUEUED or job.dispatched_at is not None:
            raise IllegalTransitionError(job, JobAction.FAILED)
        if job.created_at >= before:
            raise IllegalTransitionError(job, JobAction.FAILED)
        detail = "its command never reached the work queue (the exporter stopped first)"
        return job.fail(reason="not_dispatched", detail=detail, at=self._clock(), by=None)

    def _give_up(self, job: Job) -> tuple[Job, JobTransition]:
        detail = f"started {job.attempts} times without finishing (its workers were lost)"
        return job.fail(reason="too_many_attempts", detail=detail, at=self._clock())

    async def _watch(self, job_id: str, stop: asyncio.Event) -> None:
        """While a job runs: heartbeat it, and set ``stop`` once it should stop."""
        policy = self._policy
        loop = asyncio.get_running_loop()
        beat = loop.time()
        while not stop.is_set():
            await asyncio.sleep(policy.poll_seconds)
            try:
                job = await self._jobs.get(job_id)
                if job is None or job.status is not JobStatus.RUNNING or job.cancel_requested_by:
                    stop.set()
                    return
                if loop.time() - beat >= policy.heartbeat_seconds:
                    await self._jobs.touch(job_id, at=self._clock())
                    beat = loop.time()
            except Exception:
                logger.warning("cannot watch job %s", job_id, exc_info=True)

    async def _stopped(self, job_id: str, context: RequestContext) -> Job:
        """A job whose conversion was stopped: cancelled if asked, else as it already ended."""
        job = await self.get_job(job_id)
        if job.terminal:
            return job
        return await self._end(
            job_id,
            context,
            lambda j: j.cancel(at=self._clock()),
            event_of=lambda j: JobCancelled(job_id=j.id, cancelled_by=j.cancel_requested_by),
            cancel_wins=False,
        )

    async def _end(
        self,
        job_id: str,
        context: RequestContext,
        move: Callable[[Job], tuple[Job, JobTransition]],
        *,
        event: EventData | None = None,
        event_of: Callable[[Job], EventData] | None = None,
        cancel_wins: bool = True,
    ) -> Job:
        """Apply ``move`` to the job as stored, with its event; retried if another writer won.

        A move the job's current state refuses (a cancelled job cannot succeed) leaves the job
        as it is and returns it. ``event`` defaults to JobFailed for a failed job.
        """
        for _ in range(_SAVE_ATTEMPTS):
            job = await self.get_job(job_id)
            if cancel_wins and job.cancel_requested_by is not None and not job.terminal:
                return await self._stopped(job_id, context)
            try:
                moved, transition = move(job)
            except IllegalTransitionError:
                return job
            data = event_of(moved) if event_of else event
            if data is None:
                data = JobFailed(job_id=job_id, reason=moved.error or "failed")
            try:
                async with self._uow.transaction():
                    await self._jobs.save(moved, transition)
                    await self._uow.record(data, subject=f"job/{job_id}", context=context)
            except JobStore.StaleJobError:
                continue
            return moved
        raise JobStore.StaleJobError(job_id)

    async def sweep_stale_jobs(self) -> list[Job]:
        """End the jobs no worker will finish: stale running ones, never dispatched queued ones.

        A running job whose worker stopped beating (vanished, or hung) ends cancelled if
        someone asked to cancel it, else failed ``worker_lost``; its partial output is
        removed. A worker that comes back finds its job ended and stops. A queued job whose
        command never reached the work queue ends failed ``not_dispatched``: its exporter
        stopped between recording the job and the broker's confirm of its command, so no
        worker will ever receive it.
        """
        policy = self._policy
        before = self._clock() - timedelta(seconds=policy.stale_after_seconds)
        ended: list[Job] = []
        for job in await self._jobs.undispatched(before=before, limit=100):
            done = await self._end(
                job.id,
                RequestContext(actor=None),
                functools.partial(self._never_sent, before=before),
            )
            if done.terminal:
                ended.append(done)
        for job in await self._jobs.stale(before=before, limit=100):
            context = RequestContext(actor=None)
            if job.cancel_requested_by is not None:
                done = await self._stopped(job.id, context)
            else:
                done = await self._end(
                    job.id, context, functools.partial(self._fail_if_stale, before=before)
                )
            if done.terminal:
                await asyncio.to_thread(
                    shutil.rmtree, self._export_dir / job.id, ignore_errors=True
                )
                ended.append(done)
        return ended

    async def _export(
        self,
        job: Job,
        job_dir: Path,
        context: RequestContext,
        stop: asyncio.Event,
        *,
        compress: bool,
    ) -> list[Artifact]:
        try:
            session = await self.open_session(job.provider, context)
        except ServiceError as exc:
            raise ExportFailedError("provider_unavailable", exc.message) from exc
        async with session:
            vm = await session.get_vm(job.vm)
            if vm is None:
                raise ExportFailedError("vm_not_found")
            return await self._export_vm(
                job, job_dir, session, vm, context, stop=stop, compress=compress
            )

    async def _export_vm(
        self,
        job: Job,
        job_dir: Path,
        session: ProviderSession,
        vm: VmDescription,
        context: RequestContext,
        *,
        stop: asyncio.Event,
        compress: bool,
    ) -> list[Artifact]:
        meter = ProgressMeter(
            clock=time.monotonic,
            interval_seconds=self._policy.progress_interval_seconds,
            step=self._policy.progress_step,
            min_interval_seconds=self._policy.progress_min_interval_seconds,
        )

        async def progress(done: int, total: int) -> None:
            report = meter.update(done, total)
            if report is not None:
                await self._progressed(job.id, report, context, stop)

        sources: list[DiskSource] = []
        try:
            try:
                for disk in vm.disks:
                    sources.append(await session.open_disk(vm, disk))
            except ServiceError as exc:
                raise ExportFailedError("source_unavailable", exc.message) from exc
            # The pipeline checks the sources' fingerprints before and after (source_changed)
            # and stops within a poll of ``stop`` (set by the job's watcher).
            artifacts = await self._pipeline.run(
                vm,
                sources,
                job.format,
                job_dir,
                compress=compress,
                on_progress=progress,
                cancelled=stop,
            )
        finally:
            for source in sources:
                await source.close()
        if stop.is_set():
            raise ExportCancelledError
        try:
            await asyncio.to_thread(self._write_manifest, job, vm, job_dir, artifacts)
        except OSError as exc:
            raise ExportFailedError("artifact_write_failed", str(exc)) from exc
        return artifacts

    async def _progressed(
        self, job_id: str, report: ProgressReport, context: RequestContext, stop: asyncio.Event
    ) -> None:
        """Record the job's progress and its event; a job no longer running stops."""
        job = await self.get_job(job_id)
        try:
            moved = job.advance(progress=report.percent, at=self._clock())
            async with self._uow.transaction():
                await self._jobs.save(moved, None)
                await self._uow.record(
                    JobProgressed(
                        job_id=job_id,
                        progress=report.percent,
                        bytes_done=report.bytes_done,
                        bytes_total=report.bytes_total,
                        rate_bytes_per_second=report.rate_bytes_per_second,
                        eta_seconds=report.eta_seconds,
                    ),
                    subject=f"job/{job_id}",
                    context=context,
                )
        except (IllegalTransitionError, JobStore.StaleJobError):
            current = await self._jobs.get(job_id)
            if (
                current is None
                or current.status is not JobStatus.RUNNING
                or current.cancel_requested_by is not None
            ):
                stop.set()

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


def request_digest(*, provider: str, vm: str, format: DiskFormat, compress: bool) -> str:
    """What an idempotency key is bound to: the export request, canonically."""
    canonical = json.dumps([provider, vm, format.value, compress], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _same_request(earlier: Job, digest: str) -> Job:
    if earlier.request_digest != digest:
        raise ServiceError(
            ErrorCode.CONFLICT, "The idempotency key was used for a different export request."
        )
    return earlier


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
