"""Inbound adapters of the exporter: request/reply questions and the export worker."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import CloudEvent
from hypersdk_contracts.names import EXPORT_JOBS_QUEUE, RpcQueue
from hypersdk_contracts.rpc import (
    CreateExportRequest,
    DiskView,
    GetVmRequest,
    JobIdRequest,
    JobView,
    ListJobsRequest,
    ListProvidersRequest,
    ListVmsRequest,
    ProviderNameRequest,
    ProviderView,
    RegisterProviderRequest,
    VmView,
)
from hypersdk_exporter.core.models import Job, Provider, Vm
from hypersdk_exporter.core.service import ExporterService
from hypersdk_kit.bus import durable_queue, serve_rpc, subscribe_envelopes


def register_rpc(broker: RabbitBroker, exporter: ExporterService) -> None:
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

    async def get_provider(request: ProviderNameRequest) -> ProviderView:
        return provider_view(await exporter.get_provider(request.name))

    async def list_providers(request: ListProvidersRequest) -> list[ProviderView]:
        return [provider_view(p) for p in await exporter.list_providers()]

    async def remove_provider(request: ProviderNameRequest) -> None:
        await exporter.remove_provider(request.name, request.context)

    async def list_vms(request: ListVmsRequest) -> list[VmView]:
        return [vm_view(p, vm) for p, vm in await exporter.list_vms(request.provider)]

    async def get_vm(request: GetVmRequest) -> VmView:
        provider_name, _, vm_name = request.vm_id.partition("/")
        provider, vm = await exporter.find_vm(provider_name, vm_name)
        return vm_view(provider, vm)

    async def create_export(request: CreateExportRequest) -> JobView:
        job = await exporter.create_export(
            provider=request.provider,
            vm=request.vm,
            format=request.format,
            context=request.context,
        )
        return job_view(job)

    async def get_job(request: JobIdRequest) -> JobView:
        return job_view(await exporter.get_job(request.job_id))

    async def list_jobs(request: ListJobsRequest) -> list[JobView]:
        return [job_view(job) for job in await exporter.list_jobs(limit=request.limit)]

    serve_rpc(
        broker, RpcQueue.EXPORTER_REGISTER_PROVIDER, RegisterProviderRequest, register_provider
    )
    serve_rpc(broker, RpcQueue.EXPORTER_GET_PROVIDER, ProviderNameRequest, get_provider)
    serve_rpc(broker, RpcQueue.EXPORTER_LIST_PROVIDERS, ListProvidersRequest, list_providers)
    serve_rpc(broker, RpcQueue.EXPORTER_REMOVE_PROVIDER, ProviderNameRequest, remove_provider)
    serve_rpc(broker, RpcQueue.EXPORTER_LIST_VMS, ListVmsRequest, list_vms)
    serve_rpc(broker, RpcQueue.EXPORTER_GET_VM, GetVmRequest, get_vm)
    serve_rpc(broker, RpcQueue.EXPORTER_CREATE_EXPORT, CreateExportRequest, create_export)
    serve_rpc(broker, RpcQueue.EXPORTER_GET_JOB, JobIdRequest, get_job)
    serve_rpc(broker, RpcQueue.EXPORTER_LIST_JOBS, ListJobsRequest, list_jobs)


def register_worker(broker: RabbitBroker, exporter: ExporterService, *, concurrency: int) -> None:
    """Compete for export commands on the durable work queue."""

    async def run(event: CloudEvent) -> None:
        command = VmExportRequested.model_validate(event.data)
        await exporter.run_export(command, event.context)

    subscribe_envelopes(broker, durable_queue(EXPORT_JOBS_QUEUE), run, prefetch=concurrency)


def provider_view(provider: Provider) -> ProviderView:
    """The API form of a provider (no credential, only its reference)."""
    return ProviderView(
        name=provider.name,
        type=provider.type,
        config=provider.config,
        credential_ref=provider.credential_ref,
        created_at=provider.created_at,
    )


def vm_view(provider: Provider, vm: Vm) -> VmView:
    """The API form of a VM."""
    return VmView(
        id=f"{provider.name}/{vm.name}",
        name=vm.name,
        provider=provider.name,
        cpus=vm.cpus,
        memory_mib=vm.memory_mib,
        disks=[DiskView(name=d.name, size_bytes=d.size_bytes, format=d.format) for d in vm.disks],
    )


def job_view(job: Job) -> JobView:
    """The API form of a job."""
    return JobView(
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
