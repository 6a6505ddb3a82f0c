"""Inbound adapters of the exporter: request/reply questions and the export worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.errors import ServiceError
from hypersdk_contracts.events import ExporterRequestRejected
from hypersdk_contracts.names import EXPORT_JOBS_QUEUE, RpcQueue
from hypersdk_contracts.operations import EXPORT_COMMAND, target_of
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    CreateExportRequest,
    DiskView,
    GetVmRequest,
    JobHistoryView,
    JobIdRequest,
    JobView,
    ListJobsRequest,
    ListProvidersRequest,
    ListVmsRequest,
    NicView,
    ProviderNameRequest,
    ProviderView,
    RegisterProviderRequest,
    UpdateProviderRequest,
    VmPage,
    VmView,
)
from hypersdk_exporter.core.jobs import Job, JobTransition
from hypersdk_exporter.core.models import Provider, VmDescription, VmSummary
from hypersdk_exporter.core.service import ExporterService
from hypersdk_kit.bus import (
    Authorizer,
    EventPublisher,
    PoisonMessageError,
    durable_queue,
    serve_rpc,
    subscribe_envelopes,
)
from hypersdk_kit.guard import check_grant, check_seal, verify_seal
from hypersdk_kit.runtime import Periodic
from hypersdk_kit.trust import MAX_CLOCK_SKEW_SECONDS, AssertionRejectedError, AssertionVerifier

logger = logging.getLogger(__name__)
BROWSE = frozenset({Permission.VMS_BROWSE.value})
CONFIGURE = frozenset({Permission.PROVIDERS_CONFIGURE.value})
EXPORT = frozenset({Permission.VMS_EXPORT.value})
VIEW_JOBS = frozenset({Permission.JOBS_VIEW.value})
CANCEL_JOBS = frozenset({Permission.JOBS_CANCEL.value})


def register_rpc(broker: RabbitBroker, exporter: ExporterService, *, guard: Authorizer) -> None:
    """Answer provider, inventory and job questions on their request queues."""

    async def register_provider(request: RegisterProviderRequest) -> ProviderView:
        provider = await exporter.register_provider(
            name=request.name,
            type=request.type,
            config=request.config,
            credential_ref=request.credential_ref,
            context=request.context,
        )
        return provider_view(provider)

    async def update_provider(request: UpdateProviderRequest) -> ProviderView:
        provider = await exporter.update_provider(
            name=request.name,
            type=request.type,
            config=request.config,
            credential_ref=request.credential_ref,
            context=request.context,
        )
        return provider_view(provider)

    async def get_provider(request: ProviderNameRequest) -> ProviderView:
        return provider_view(await exporter.get_provider(request.name))

    async def list_providers(request: ListProvidersRequest) -> list[ProviderView]:
        return [provider_view(p) for p in await exporter.list_providers()]

    async def remove_provider(request: ProviderNameRequest) -> None:
        await exporter.remove_provider(request.name, request.context)

    async def list_vms(request: ListVmsRequest) -> VmPage:
        page = await exporter.list_vms(
            request.provider,
            page_token=request.page_token,
            limit=request.limit,
            context=request.context,
        )
        return VmPage(
            items=[vm_view(p, vm) for p, vm in page.items], next_page_token=page.next_token
        )

    async def get_vm(request: GetVmRequest) -> VmView:
        provider_name, _, vm_id = request.vm_id.partition("/")
        provider, vm = await exporter.describe_vm(provider_name, vm_id, request.context)
        return vm_view(provider, vm)

    async def create_export(request: CreateExportRequest) -> JobView:
        job = await exporter.create_export(
            provider=request.provider,
            vm=request.vm,
            format=request.format,
            compress=request.compress,
            context=request.context,
            idempotency_key=request.idempotency_key,
        )
        return job_view(job)

    async def get_job(request: JobIdRequest) -> JobView:
        job = await exporter.get_job(request.job_id)
        return job_view(job, history=await exporter.job_history(job.id))

    async def cancel_job(request: JobIdRequest) -> JobView:
        job = await exporter.cancel_job(request.job_id, request.context)
        return job_view(job, history=await exporter.job_history(job.id))

    async def list_jobs(request: ListJobsRequest) -> list[JobView]:
        jobs = await exporter.list_jobs(
            limit=request.limit,
            after=request.after,
            status=request.status,
            provider=request.provider,
            requested_by=request.requested_by,
            created_after=request.created_after,
            created_before=request.created_before,
        )
        return [job_view(job) for job in jobs]

    routes: list[tuple[str, type[Any], Callable[[Any], Awaitable[Any]], frozenset[str]]] = [
        (
            RpcQueue.EXPORTER_REGISTER_PROVIDER,
            RegisterProviderRequest,
            register_provider,
            CONFIGURE,
        ),
        (RpcQueue.EXPORTER_UPDATE_PROVIDER, UpdateProviderRequest, update_provider, CONFIGURE),
        (RpcQueue.EXPORTER_GET_PROVIDER, ProviderNameRequest, get_provider, BROWSE),
        (RpcQueue.EXPORTER_LIST_PROVIDERS, ListProvidersRequest, list_providers, BROWSE),
        (RpcQueue.EXPORTER_REMOVE_PROVIDER, ProviderNameRequest, remove_provider, CONFIGURE),
        (RpcQueue.EXPORTER_LIST_VMS, ListVmsRequest, list_vms, BROWSE),
        (RpcQueue.EXPORTER_GET_VM, GetVmRequest, get_vm, BROWSE),
        (RpcQueue.EXPORTER_CREATE_EXPORT, CreateExportRequest, create_export, EXPORT),
        (RpcQueue.EXPORTER_GET_JOB, JobIdRequest, get_job, VIEW_JOBS),
        (RpcQueue.EXPORTER_LIST_JOBS, ListJobsRequest, list_jobs, VIEW_JOBS),
        (RpcQueue.EXPORTER_CANCEL_JOB, JobIdRequest, cancel_job, CANCEL_JOBS),
    ]
    for queue, model, answer, permissions in routes:
        serve_rpc(broker, queue, model, answer, permissions=permissions, authorizer=guard)


@dataclass(frozen=True)
class CommandVerifier:
    """Checks an export command before a worker acts on it (zero trust on the bus).

    The command must carry the requester's vms:export grant, signed by policy for this command
    and the command's actor, and the gateway's seal of the export request that queued it
    (same request ID, client address and actor, and the same VM); the job must exist, belong
    to that principal and have been created while grant and seal were valid. Both may have
    expired since (the job may have waited in the queue), but not longer ago than
    ``max_age_seconds``. The seal is not checked for reuse here: a command is redelivered
    after a worker fails, and the job it names can run only once.
    """

    verifier: AssertionVerifier | None
    exporter: ExporterService
    events: EventPublisher
    max_age_seconds: int
    seals: AssertionVerifier | None = None
    clock: Callable[[], float] = time.time

    async def verify(self, event: CloudEvent, command: VmExportRequested) -> None:
        """Return if the command may run; else publish the refusal and raise poison."""
        try:
            await self._check(event, command)
        except AssertionRejectedError as exc:
            await self.events.publish(
                ExporterRequestRejected(
                    operation=EXPORT_JOBS_QUEUE, reason=exc.reason, claimed_actor=event.actor
                ),
                subject=f"job/{command.job_id}",
                # The command's claims are unproven: the claimed actor is in the payload.
                context=RequestContext(traceparent=event.traceparent),
            )
            raise PoisonMessageError(exc.reason) from exc

    async def _check(self, event: CloudEvent, command: VmExportRequested) -> None:
        if self.verifier is None:
            raise AssertionRejectedError("no_trust_anchor")
        claims = self.verifier.verify(command.grant, check_expiry=False)
        check_grant(claims, context=event.context, permissions=EXPORT, operation=EXPORT_COMMAND)
        if claims["exp"] < self.clock() - self.max_age_seconds:
            raise AssertionRejectedError("expired")
        try:
            job = await self.exporter.get_job(command.job_id)
        except ServiceError as exc:
            raise AssertionRejectedError("unknown_job") from exc
        if job.requested_by != claims["sub"]:
            raise AssertionRejectedError("actor_mismatch")
        created = job.created_at.timestamp()
        if not claims["iat"] - MAX_CLOCK_SKEW_SECONDS <= created <= claims["exp"]:
            raise AssertionRejectedError("grant_not_for_job")
        seal = verify_seal(self.seals, event.seal, check_expiry=False)
        target = target_of(EXPORT_COMMAND, command)
        check_seal(seal, context=event.context, operation=EXPORT_COMMAND, target=target)
        if seal["op"] != RpcQueue.EXPORTER_CREATE_EXPORT:
            raise AssertionRejectedError("operation_mismatch")
        if seal.get("res") != target:
            raise AssertionRejectedError("target_mismatch")
        if not seal["iat"] - MAX_CLOCK_SKEW_SECONDS <= created <= seal["exp"]:
            raise AssertionRejectedError("seal_not_for_job")


def register_worker(
    broker: RabbitBroker,
    exporter: ExporterService,
    *,
    concurrency: int,
    verifier: CommandVerifier,
) -> None:
    """Compete for export commands on the durable work queue, ``concurrency`` at once.

    One consumer per slot, each with a prefetch of one: a worker runs at most
    ``concurrency`` exports and never holds a command it has not started (another worker
    may take it).
    """

    async def run(event: CloudEvent) -> None:
        command = VmExportRequested.model_validate(event.data)
        await verifier.verify(event, command)
        # The command's grant (checked above) lets the worker read the provider's credential
        # as a follow-up of this export; events never carry a grant.
        await exporter.run_export(
            command, event.context.model_copy(update={"grant": command.grant})
        )

    for _ in range(concurrency):
        subscribe_envelopes(broker, durable_queue(EXPORT_JOBS_QUEUE), run, prefetch=1)


def stale_job_sweeper(exporter: ExporterService, *, interval_seconds: float) -> Periodic:
    """Ends the jobs no worker will finish, every ``interval_seconds``.

    Every exporter process runs one; they may overlap safely (each move is a compare-and-set).
    """

    async def sweep() -> None:
        for job in await exporter.sweep_stale_jobs():
            logger.warning("stale job ended", extra={"job_id": job.id, "status": job.status.value})

    return Periodic("sweeping stale jobs", sweep, interval_seconds=interval_seconds)


def provider_view(provider: Provider) -> ProviderView:
    """The API form of a provider (no credential, only its reference)."""
    return ProviderView(
        name=provider.name,
        type=provider.type,
        config=provider.config,
        credential_ref=provider.credential_ref,
        created_at=provider.created_at,
    )


def vm_view(provider: Provider, vm: VmSummary) -> VmView:
    """The API form of a VM (with disks and NICs when the provider described them)."""
    view = VmView(
        id=f"{provider.name}/{vm.id}",
        name=vm.name,
        provider=provider.name,
        cpus=vm.cpus,
        memory_mib=vm.memory_mib,
        disks=[],
        state=vm.state,
        path=vm.path,
        detailed=False,
    )
    if not isinstance(vm, VmDescription):
        return view
    return view.model_copy(
        update={
            "disks": [
                DiskView(
                    name=d.name,
                    size_bytes=d.capacity_bytes,
                    format=d.format,
                    key=d.key,
                    controller=d.controller,
                    unit=d.unit,
                )
                for d in vm.disks
            ],
            "nics": [
                NicView(name=n.name, network=n.network, mac=n.mac, model=n.model) for n in vm.nics
            ],
            "firmware": vm.firmware.value,
            "guest_os": vm.guest_os,
            "detailed": True,
        }
    )


def job_view(job: Job, *, history: list[JobTransition] | None = None) -> JobView:
    """The API form of a job (with its history when given)."""
    return JobView(
        error_detail=job.error_detail,
        attempts=job.attempts,
        cancel_requested_by=job.cancel_requested_by,
        started_at=job.started_at,
        finished_at=job.finished_at,
        history=None
        if history is None
        else [
            JobHistoryView(
                at=t.at,
                action=t.action.value,
                status=t.status,
                actor=t.actor,
                reason=t.reason,
                detail=t.detail,
            )
            for t in history
        ],
        id=job.id,
        provider=job.provider,
        vm=job.vm,
        format=job.format,
        status=job.status,
        progress=job.progress,
        error=job.error,
        artifacts=job.artifacts,
        requested_by=job.requested_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )
