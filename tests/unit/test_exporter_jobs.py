"""Exporter: provider registration, export jobs and the worker that runs them, over a local lab."""

from __future__ import annotations

import hashlib
import json
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from hypersdk_contracts.commands import VmExportRequested
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.local_lab import LocalLabDriver, write_demo_vm
from hypersdk_exporter.adapters.outbound.memory import (
    InMemoryConverter,
    InMemoryCredentialDirectory,
    InMemoryCredentialResolver,
    InMemoryJobQueue,
    InMemoryJobStore,
    InMemoryProviderStore,
)
from hypersdk_exporter.core.jobs import Job
from hypersdk_exporter.core.service import ExporterService
from hypersdk_kit.memory import InMemoryUnitOfWork

CONTEXT = RequestContext(actor="olga", source_ip="192.0.2.20", request_id="req-export-1")
CREDENTIAL_REF = "providers/lab"
DISK_BYTES = 2 * 1024 * 1024


@dataclass
class World:
    service: ExporterService
    providers: InMemoryProviderStore
    jobs: InMemoryJobStore
    queue: InMemoryJobQueue
    events: InMemoryUnitOfWork
    lab: Path
    export_dir: Path
    outside: Path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _vm_with_disks(directory: Path, *, name: str, disk_names: list[str]) -> Path:
    """A VM with one 2 MiB demo disk under each of ``disk_names``."""
    vm_dir = write_demo_vm(directory, name=name, size_mib=2, seed=len(name))
    demo_disk = vm_dir / "disk0.raw"
    content = demo_disk.read_bytes()
    demo_disk.unlink()
    for disk_name in disk_names:
        (vm_dir / disk_name).write_bytes(content)
    spec = {
        "cpus": 1,
        "memory_mib": 512,
        "disks": [{"file": disk_name, "format": "raw"} for disk_name in disk_names],
    }
    (vm_dir / "vm.json").write_text(json.dumps(spec))
    return vm_dir


@pytest.fixture
def world(tmp_path: Path) -> World:
    lab = tmp_path / "lab"
    (lab / "demo").mkdir(parents=True)
    write_demo_vm(lab / "demo", name="web-01", size_mib=2, seed=7)
    _vm_with_disks(lab / "demo", name="broken", disk_names=["disk0-fail.raw"])
    _vm_with_disks(lab / "demo", name="half", disk_names=["disk0.raw", "disk1-fail.raw"])
    outside = tmp_path / "outside"
    outside.mkdir()
    export_dir = tmp_path / "exports"
    export_dir.mkdir(mode=0o700)
    providers = InMemoryProviderStore()
    jobs = InMemoryJobStore()
    queue = InMemoryJobQueue()
    events = InMemoryUnitOfWork(service="exporter", stores=(providers, jobs))
    service = ExporterService(
        providers=providers,
        jobs=jobs,
        drivers={"local": LocalLabDriver(lab)},
        converter=InMemoryConverter(),
        writer=LocalArtifactWriter(),
        queue=queue,
        credentials=InMemoryCredentialDirectory({CREDENTIAL_REF}),
        resolver=InMemoryCredentialResolver({CREDENTIAL_REF: {"username": "lab"}}),
        uow=events,
        export_dir=export_dir,
    )
    return World(service, providers, jobs, queue, events, lab, export_dir, outside)


async def _register_lab(world: World) -> None:
    await world.service.register_provider(
        name="lab",
        type="local",
        config={"directory": "demo"},
        credential_ref=CREDENTIAL_REF,
        context=CONTEXT,
    )


async def _export(world: World, vm: str, fmt: DiskFormat = DiskFormat.QCOW2) -> Job:
    await _register_lab(world)
    job = await world.service.create_export(provider="lab", vm=vm, format=fmt, context=CONTEXT)
    (command,) = world.queue.commands
    assert command.job_id == job.id
    return await world.service.run_export(command, CONTEXT)


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


# ---- providers --------------------------------------------------------------------------------


async def test_register_provider_publishes_the_reference_not_a_secret(world: World) -> None:
    provider = await world.service.register_provider(
        name="lab",
        type="local",
        config={"directory": "demo"},
        credential_ref=CREDENTIAL_REF,
        context=CONTEXT,
    )

    assert provider.credential_ref == CREDENTIAL_REF
    assert await world.service.get_provider("lab") == provider
    (registered,) = world.events.events
    assert registered.routing_key == "exporter.provider.registered"
    assert registered.data == {"name": "lab", "type": "local", "credential_ref": CREDENTIAL_REF}
    assert registered.subject == "provider/lab"
    assert registered.actor == "olga"


async def test_register_provider_without_credential(world: World) -> None:
    await world.service.register_provider(
        name="lab", type="local", config={"directory": "demo"}, credential_ref=None, context=CONTEXT
    )
    assert world.events.events[0].data["credential_ref"] is None


@pytest.mark.parametrize(
    ("provider_type", "config", "credential_ref"),
    [
        pytest.param("vsphere", {"directory": "demo"}, None, id="unknown-type"),
        pytest.param("local", {}, None, id="no-directory"),
        pytest.param("local", {"directory": "missing"}, None, id="missing-directory"),
        pytest.param("local", {"directory": "ABSOLUTE"}, None, id="absolute"),
        pytest.param("local", {"directory": "../outside"}, None, id="dot-dot"),
        pytest.param("local", {"directory": "demo/../../outside"}, None, id="inner-dot-dot"),
        pytest.param("local", {"directory": "escape"}, None, id="symlink-escape"),
        pytest.param("local", {"directory": "demo", "host": "x"}, None, id="unknown-key"),
        pytest.param("local", {"directory": "demo"}, "providers/missing", id="no-such-secret"),
    ],
)
async def test_register_provider_refuses(
    world: World, provider_type: str, config: dict[str, str], credential_ref: str | None
) -> None:
    (world.lab / "escape").symlink_to(world.outside, target_is_directory=True)
    config = {
        key: str(world.lab / "demo") if value == "ABSOLUTE" else value
        for key, value in config.items()
    }

    with pytest.raises(ServiceError) as error:
        await world.service.register_provider(
            name="lab",
            type=provider_type,
            config=config,
            credential_ref=credential_ref,
            context=CONTEXT,
        )

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert world.providers.providers == {}
    assert world.events.events == []


async def test_symlink_inside_the_lab_is_allowed(world: World) -> None:
    (world.lab / "alias").symlink_to(world.lab / "demo", target_is_directory=True)

    await world.service.register_provider(
        name="alias",
        type="local",
        config={"directory": "alias"},
        credential_ref=None,
        context=CONTEXT,
    )

    page = await world.service.list_vms("alias", context=CONTEXT)
    assert [vm.name for _, vm in page.items] == [
        "broken",
        "half",
        "web-01",
    ]


async def test_duplicate_provider_is_a_conflict(world: World) -> None:
    await _register_lab(world)
    original = world.providers.providers["lab"]

    with pytest.raises(ServiceError) as error:
        await world.service.register_provider(
            name="lab",
            type="local",
            config={"directory": "demo"},
            credential_ref=None,
            context=CONTEXT,
        )

    assert error.value.code is ErrorCode.CONFLICT
    assert world.providers.providers["lab"] == original
    assert world.events.types() == ["exporter.provider.registered"]


# ---- creating jobs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("provider", "vm"), [("lab", "no-such-vm"), ("no-such-lab", "web-01")])
async def test_export_of_an_unknown_vm_is_not_found(world: World, provider: str, vm: str) -> None:
    await _register_lab(world)

    with pytest.raises(ServiceError) as error:
        await world.service.create_export(
            provider=provider, vm=vm, format=DiskFormat.RAW, context=CONTEXT
        )

    assert error.value.code is ErrorCode.NOT_FOUND
    assert world.jobs.jobs == {}
    assert world.queue.commands == []
    assert world.events.types() == ["exporter.provider.registered"]


async def test_export_of_a_real_vm_is_queued(world: World) -> None:
    await _register_lab(world)

    job = await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.QCOW2, context=CONTEXT
    )

    assert job.status is JobStatus.QUEUED
    assert job.progress == 0
    assert job.requested_by == "olga"
    assert await world.service.get_job(job.id) == job
    (command,) = world.queue.commands
    assert (command.job_id, command.provider, command.vm, command.format) == (
        job.id,
        "lab",
        "web-01",
        "qcow2",
    )
    requested = world.events.events[-1]
    assert requested.routing_key == "exporter.job.requested"
    assert requested.data == {
        "job_id": job.id,
        "provider": "lab",
        "vm": "web-01",
        "format": "qcow2",
    }
    assert requested.request_id == "req-export-1"
    assert _tree(world.export_dir) == set()


# ---- running jobs -----------------------------------------------------------------------------


async def test_run_export_writes_private_hashed_artifacts_and_a_manifest(world: World) -> None:
    job = await _export(world, "web-01")

    assert job.status is JobStatus.SUCCEEDED
    assert job.progress == 100
    assert job.error is None
    assert await world.service.get_job(job.id) == job
    (artifact,) = job.artifacts
    assert artifact.name == "web-01-disk0.qcow2"
    job_dir = world.export_dir / job.id
    path = job_dir / artifact.name
    content = path.read_bytes()
    assert artifact.sha256 == hashlib.sha256(content).hexdigest()
    assert content == (world.lab / "demo" / "web-01" / "disk0.raw").read_bytes()
    assert artifact.size_bytes == len(content) == DISK_BYTES
    assert _mode(path) == 0o600
    assert _mode(job_dir) == 0o700
    manifest_path = job_dir / "manifest.json"
    assert _mode(manifest_path) == 0o600
    manifest = json.loads(manifest_path.read_text())
    assert manifest["job_id"] == job.id
    assert manifest["vm"] == "web-01"
    assert manifest["format"] == "qcow2"
    assert manifest["artifacts"] == [
        {"name": artifact.name, "size_bytes": DISK_BYTES, "sha256": artifact.sha256}
    ]
    assert _tree(world.export_dir) == {
        job.id,
        f"{job.id}/{artifact.name}",
        f"{job.id}/manifest.json",
    }


async def test_run_export_publishes_started_progressed_completed(world: World) -> None:
    job = await _export(world, "web-01")

    run = world.events.events[2:]
    # CopyingConverter reports 50 and 100; 100 is left to the completion event.
    assert [event.routing_key for event in run] == [
        "exporter.job.started",
        "exporter.job.progressed",
        "exporter.job.completed",
    ]
    assert run[0].data == {"job_id": job.id}
    assert run[1].data["progress"] == 50
    assert (run[1].data["bytes_done"], run[1].data["bytes_total"]) == (DISK_BYTES // 2, DISK_BYTES)
    assert run[-1].data == {
        "job_id": job.id,
        "artifacts": [artifact.model_dump() for artifact in job.artifacts],
    }
    assert all(event.subject == f"job/{job.id}" for event in run)
    assert all(event.request_id == "req-export-1" for event in run)


async def test_each_format_gets_its_extension(world: World) -> None:
    await _register_lab(world)
    names = []
    for fmt in DiskFormat:
        await world.service.create_export(provider="lab", vm="web-01", format=fmt, context=CONTEXT)
        job = await world.service.run_export(world.queue.commands[-1], CONTEXT)
        assert job.status is JobStatus.SUCCEEDED, job.error
        names.append(job.artifacts[0].name)

    assert names == [
        "web-01-disk0.img",
        "web-01-disk0.qcow2",
        "web-01-disk0.vmdk",
        "web-01-disk0.vhdx",
        "web-01-disk0.vhd",
        "web-01.ova",
    ]


async def test_redelivered_command_does_nothing_new(world: World) -> None:
    done = await _export(world, "web-01")
    events = list(world.events.events)
    artifact = world.export_dir / done.id / done.artifacts[0].name
    written = artifact.stat().st_mtime_ns
    tree = _tree(world.export_dir)

    again = await world.service.run_export(world.queue.commands[-1], CONTEXT)

    assert again == done
    assert world.events.events == events
    assert artifact.stat().st_mtime_ns == written
    assert _tree(world.export_dir) == tree
    assert len(world.queue.commands) == 1


async def test_command_for_an_unknown_job_is_dropped(world: World) -> None:
    await _register_lab(world)
    await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=CONTEXT
    )
    stray = world.queue.commands[0].model_copy(update={"job_id": "no-such-job"})

    job = await world.service.run_export(stray, CONTEXT)

    assert job.status is JobStatus.FAILED
    assert job.error == "job_not_found"
    assert world.events.types()[-1] == "exporter.job.requested"
    assert _tree(world.export_dir) == set()


async def test_failed_conversion_fails_the_job_and_leaves_nothing(world: World) -> None:
    job = await _export(world, "broken")

    assert job.status is JobStatus.FAILED
    assert job.error == "conversion_failed"
    assert job.artifacts == []
    assert (await world.service.get_job(job.id)).status is JobStatus.FAILED
    types = world.events.types()
    assert types[-2:] == ["exporter.job.started", "exporter.job.failed"]
    assert world.events.events[-1].data == {"job_id": job.id, "reason": "conversion_failed"}
    assert _tree(world.export_dir) == set()


async def test_failure_on_a_later_disk_removes_the_earlier_artifacts(world: World) -> None:
    job = await _export(world, "half")

    assert job.status is JobStatus.FAILED
    assert job.error == "conversion_failed"
    assert world.events.types()[-1] == "exporter.job.failed"
    assert "exporter.job.completed" not in world.events.types()
    assert _tree(world.export_dir) == set()


async def test_failed_job_is_not_retried_by_a_redelivery(world: World) -> None:
    failed = await _export(world, "broken")
    count = len(world.events.events)

    again = await world.service.run_export(world.queue.commands[-1], CONTEXT)

    assert again == failed
    assert len(world.events.events) == count


# ---- state and events commit together ---------------------------------------------------------


async def test_a_completion_that_cannot_commit_is_redone_and_recorded_once(world: World) -> None:
    """The lost JobCompleted: the job stays running, so the redelivered command completes it."""
    await _register_lab(world)
    job = await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=CONTEXT
    )
    world.events.fail_commits = {"exporter.job.completed"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.run_export(world.queue.commands[0], CONTEXT)

    assert (await world.service.get_job(job.id)).status is JobStatus.RUNNING
    assert "exporter.job.completed" not in world.events.types()

    done = await world.service.run_export(world.queue.commands[0], CONTEXT)

    assert done.status is JobStatus.SUCCEEDED
    assert world.events.types().count("exporter.job.completed") == 1
    (completed,) = [e for e in world.events.events if e.routing_key == "exporter.job.completed"]
    assert completed.data["artifacts"] == [a.model_dump() for a in done.artifacts]


async def test_a_failure_that_cannot_commit_leaves_no_failed_job_and_no_event(
    world: World,
) -> None:
    await _register_lab(world)
    job = await world.service.create_export(
        provider="lab", vm="broken", format=DiskFormat.RAW, context=CONTEXT
    )
    world.events.fail_commits = {"exporter.job.failed"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await world.service.run_export(world.queue.commands[0], CONTEXT)

    assert (await world.service.get_job(job.id)).status is JobStatus.RUNNING
    assert "exporter.job.failed" not in world.events.types()


async def test_a_provider_whose_event_cannot_commit_is_not_registered(world: World) -> None:
    world.events.fail_commits = {"exporter.provider.registered"}

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await _register_lab(world)

    assert await world.service.list_providers() == []
    assert world.events.events == []
    assert world.events.rollbacks == 1


async def test_a_job_whose_command_cannot_be_queued_is_failed_with_its_event(
    world: World,
) -> None:
    class DownQueue(InMemoryJobQueue):
        async def enqueue(self, command: VmExportRequested, context: RequestContext) -> None:
            raise ConnectionError("broker away")

    await _register_lab(world)
    world.service._queue = DownQueue()

    with pytest.raises(ConnectionError):
        await world.service.create_export(
            provider="lab", vm="web-01", format=DiskFormat.RAW, context=CONTEXT
        )

    (job,) = world.jobs.jobs.values()
    assert job.status is JobStatus.FAILED
    assert job.error == "enqueue_failed"
    assert world.events.types()[-2:] == ["exporter.job.requested", "exporter.job.failed"]


async def test_compression_of_a_format_without_it_is_refused_at_once(world: World) -> None:
    await _register_lab(world)
    with pytest.raises(ServiceError) as caught:
        await world.service.create_export(
            provider="lab", vm="web-01", format=DiskFormat.RAW, compress=True, context=CONTEXT
        )
    assert caught.value.code is ErrorCode.VALIDATION_FAILED
    assert world.queue.commands == []
    await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.QCOW2, compress=True, context=CONTEXT
    )
    assert world.queue.commands[-1].compress
