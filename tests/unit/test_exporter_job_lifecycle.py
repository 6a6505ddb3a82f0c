"""Jobs that never hang and never lie: transitions, history, cancel, attempts, the sweeper,
changed sources, bounded progress, provider limits and idempotency keys (over a local lab)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import itertools
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import Artifact
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
from hypersdk_exporter.core.errors import ExportCancelledError
from hypersdk_exporter.core.formats import FormatSpec
from hypersdk_exporter.core.jobs import (
    IllegalTransitionError,
    Job,
    JobAction,
    JobPolicy,
    ProgressMeter,
    safe_detail,
)
from hypersdk_exporter.core.models import ImageInfo
from hypersdk_exporter.core.service import ExporterService
from hypersdk_exporter.ports.outbound import ByteProgress, CancelCheck, DiskConverter
from hypersdk_kit.memory import InMemoryUnitOfWork

OLGA = RequestContext(actor="olga", source_ip="192.0.2.20", request_id="req-export-1")
IVAN = RequestContext(actor="ivan", source_ip="192.0.2.21", request_id="req-cancel-1")
FAST = JobPolicy(poll_seconds=0.02, heartbeat_seconds=0.05, capacity_poll_seconds=0.02)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class BlockingConverter(InMemoryConverter):
    """Writes half, reports it, then waits until ``release`` is set or it is cancelled."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.running = asyncio.Event()
        self.cancelled = 0
        self.on_block: list[Path] = []

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
        data = source.read_bytes()
        target.write_bytes(data[: len(data) // 2])
        await on_progress(info.virtual_size // 10)
        self.running.set()
        for path in self.on_block:
            path.write_bytes(b"X" * 4096)  # the source changes under the conversion
        while not self.release.is_set():
            if cancelled():
                self.cancelled += 1
                target.unlink()
                raise ExportCancelledError
            await asyncio.sleep(0.01)
        target.write_bytes(data)
        await on_progress(info.virtual_size)
        return hashlib.sha256(data).hexdigest()


@dataclasses.dataclass
class World:
    service: ExporterService
    jobs: InMemoryJobStore
    queue: InMemoryJobQueue
    events: InMemoryUnitOfWork
    converter: DiskConverter
    lab: Path
    export_dir: Path


def _world(tmp_path: Path, converter: DiskConverter, policy: JobPolicy = FAST) -> World:
    lab = tmp_path / "lab"
    (lab / "demo").mkdir(parents=True)
    write_demo_vm(lab / "demo", name="web-01", size_mib=2, seed=7)
    write_demo_vm(lab / "demo", name="db-01", size_mib=2, seed=8)
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
        converter=converter,
        writer=LocalArtifactWriter(),
        queue=queue,
        credentials=InMemoryCredentialDirectory(),
        resolver=InMemoryCredentialResolver({}),
        uow=events,
        export_dir=export_dir,
        policy=policy,
    )
    return World(service, jobs, queue, events, converter, lab, export_dir)


async def _registered(world: World) -> World:
    await world.service.register_provider(
        name="lab", type="local", config={"directory": "demo"}, credential_ref=None, context=OLGA
    )
    return world


@pytest.fixture
async def copying(tmp_path: Path) -> World:
    return await _registered(_world(tmp_path, InMemoryConverter()))


@pytest.fixture
async def blocking(tmp_path: Path) -> World:
    return await _registered(_world(tmp_path, BlockingConverter()))


def _new_job(status: JobStatus = JobStatus.QUEUED) -> Job:
    job, _ = Job.request(
        id="j1", provider="lab", vm="web-01", format=DiskFormat.RAW, requested_by="olga", at=T0
    )
    return dataclasses.replace(job, status=status)


# ---- the aggregate --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_an_ended_job_never_moves_again(status: JobStatus) -> None:
    job = _new_job(status)
    moves = [
        lambda: job.start(at=T0),
        lambda: job.succeed(artifacts=[], at=T0),
        lambda: job.fail(reason="x", at=T0),
        lambda: job.cancel(at=T0),
        lambda: job.request_cancel(by="ivan", at=T0),
        lambda: job.advance(progress=50, at=T0),
    ]
    for move in moves:
        with pytest.raises(IllegalTransitionError):
            move()


def test_a_job_being_cancelled_cannot_succeed_or_restart() -> None:
    running, _ = _new_job().start(at=T0)
    asked, record = running.request_cancel(by="ivan", at=T0)

    assert (asked.status, asked.cancel_requested_by) == (JobStatus.RUNNING, "ivan")
    assert (record.action, record.actor) == (JobAction.CANCEL_REQUESTED, "ivan")
    with pytest.raises(IllegalTransitionError):
        asked.succeed(artifacts=[], at=T0)
    with pytest.raises(IllegalTransitionError):
        asked.start(at=T0)
    cancelled, record = asked.cancel(at=T0)
    assert (cancelled.status, cancelled.cancel_requested_by) == (JobStatus.CANCELLED, "ivan")
    assert (record.action, record.actor) == (JobAction.CANCELLED, "ivan")


def test_each_move_bumps_the_version_and_start_counts_attempts() -> None:
    job = _new_job()
    once, _ = job.start(at=T0)
    twice, record = once.start(at=T0)  # its worker died; a redelivery starts it again

    assert (job.version, once.version, twice.version) == (0, 1, 2)
    assert twice.attempts == 2
    assert record.detail == "attempt 2"


def test_error_text_is_bounded_and_secret_free() -> None:
    text = (
        "qemu-img: Could not open 'https://root:hunter2@esx.example/folder/disk.vmdk': "
        "password=hunter2 token: abc Authorization: Bearer eyJhbGciOi hsdk_k_live_123\n"
        + "x"
        * 2000
    )
    detail = safe_detail(text)

    assert detail is not None
    assert "hunter2" not in detail
    assert "eyJhbGciOi" not in detail
    assert "hsdk_k_live_123" not in detail
    assert "abc" not in detail.split("token")[1][:10]
    assert len(detail) <= 500
    assert "\n" not in detail
    assert "Could not open" in detail


def test_progress_reports_are_bounded_and_carry_bytes_rate_and_eta() -> None:
    now = [0.0]
    meter = ProgressMeter(clock=lambda: now[0], interval_seconds=2, step=5)
    reports = []
    for done in range(0, 1001, 10):  # the first half, 10 bytes every 0.01 s
        now[0] += 0.01
        reports.append(meter.update(done, 2000))
    sent = [r for r in reports if r is not None]

    assert [r.percent for r in sent] == list(range(5, 51, 5))
    last = sent[-1]
    assert (last.bytes_done, last.bytes_total) == (1000, 2000)
    assert last.rate_bytes_per_second == pytest.approx(1000 / 1.01, rel=0.05)
    assert last.eta_seconds == 1
    now[0] += 3  # slow: one more percent after the interval is reported
    report = meter.update(1020, 2000)
    assert report is not None
    assert report.percent == 51
    assert meter.update(2000, 2000) is None  # 100 % is the completion event's


def test_progress_reports_of_a_fast_job_are_at_most_one_a_second() -> None:
    """Twenty step reports in three seconds were twenty commits beside the conversion."""
    now = [0.0]
    meter = ProgressMeter(clock=lambda: now[0], interval_seconds=2, step=5, min_interval_seconds=1)
    sent = []
    for done in range(0, 3000, 10):  # 3000 bytes in 3 s, a step every 0.15 s
        now[0] += 0.01
        report = meter.update(done, 3000)
        if report is not None:
            sent.append((now[0], report.percent))
    assert 2 <= len(sent) <= 3
    assert sent[0][1] == 5  # the first is never held: the job is seen moving at once
    times = [at for at, _ in sent]
    assert all(later - earlier >= 1 for earlier, later in itertools.pairwise(times))
    assert [percent for _, percent in sent] == sorted({percent for _, percent in sent})


# ---- history --------------------------------------------------------------------------------


async def test_a_finished_job_has_its_whole_history(copying: World) -> None:
    job = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    await copying.service.run_export(copying.queue.commands[0], OLGA)

    history = await copying.service.job_history(job.id)

    assert [(t.action, t.status, t.actor) for t in history] == [
        (JobAction.REQUESTED, JobStatus.QUEUED, "olga"),
        (JobAction.STARTED, JobStatus.RUNNING, "olga"),
        (JobAction.SUCCEEDED, JobStatus.SUCCEEDED, "olga"),
    ]
    assert history[-1].detail is not None
    assert "web-01-disk0.img sha256:" in history[-1].detail


# ---- cancel ---------------------------------------------------------------------------------


async def test_a_queued_job_is_cancelled_at_once_and_never_resurrected(copying: World) -> None:
    job = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )

    cancelled = await copying.service.cancel_job(job.id, IVAN)

    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_requested_by == "ivan"
    event = copying.events.events[-1]
    assert event.routing_key == "exporter.job.cancelled"
    assert event.data == {"job_id": job.id, "cancelled_by": "ivan"}
    assert event.actor == "ivan"
    count = len(copying.events.events)

    again = await copying.service.run_export(copying.queue.commands[0], OLGA)

    assert again.status is JobStatus.CANCELLED
    assert len(copying.events.events) == count
    assert not (copying.export_dir / job.id).exists()


async def test_a_running_job_stops_within_a_second_and_leaves_nothing(blocking: World) -> None:
    converter = blocking.converter
    assert isinstance(converter, BlockingConverter)
    job = await blocking.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.QCOW2, context=OLGA
    )
    worker = asyncio.create_task(blocking.service.run_export(blocking.queue.commands[0], OLGA))
    await asyncio.wait_for(converter.running.wait(), 5)
    assert any((blocking.export_dir / job.id).iterdir())

    asked = await blocking.service.cancel_job(job.id, IVAN)
    began = time.monotonic()
    assert (asked.status, asked.cancel_requested_by) == (JobStatus.RUNNING, "ivan")
    assert (await blocking.service.cancel_job(job.id, IVAN)).version == asked.version
    done = await asyncio.wait_for(worker, 1.0)

    assert time.monotonic() - began < 1.0
    assert converter.cancelled == 1
    assert done.status is JobStatus.CANCELLED
    assert done.cancel_requested_by == "ivan"
    assert not (blocking.export_dir / job.id).exists()
    types = blocking.events.types()
    assert types[-2:] == ["exporter.job.cancel_requested", "exporter.job.cancelled"]
    assert "exporter.job.completed" not in types
    assert blocking.events.events[-1].data == {"job_id": job.id, "cancelled_by": "ivan"}
    actions = [t.action for t in await blocking.service.job_history(job.id)]
    assert actions[-2:] == [JobAction.CANCEL_REQUESTED, JobAction.CANCELLED]

    converter.release.set()
    again = await blocking.service.run_export(blocking.queue.commands[0], OLGA)
    assert again.status is JobStatus.CANCELLED
    assert not (blocking.export_dir / job.id).exists()


async def test_an_ended_job_cannot_be_cancelled(copying: World) -> None:
    job = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    await copying.service.run_export(copying.queue.commands[0], OLGA)

    with pytest.raises(ServiceError) as error:
        await copying.service.cancel_job(job.id, IVAN)

    assert error.value.code is ErrorCode.CONFLICT
    assert (await copying.service.get_job(job.id)).status is JobStatus.SUCCEEDED
    with pytest.raises(ServiceError) as missing:
        await copying.service.cancel_job("no-such-job", IVAN)
    assert missing.value.code is ErrorCode.NOT_FOUND


# ---- lost workers ---------------------------------------------------------------------------


async def test_a_job_started_too_often_ends_failed_without_output(copying: World) -> None:
    job = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    stored = copying.jobs.jobs[job.id]
    for _ in range(FAST.max_attempts):  # each start, then its worker killed
        stored, _ = stored.start(at=T0)
    copying.jobs.jobs[job.id] = stored
    partial = copying.export_dir / job.id / ".web-01-disk0.img.partial"
    partial.parent.mkdir()
    partial.write_bytes(b"half")

    done = await copying.service.run_export(copying.queue.commands[0], OLGA)

    assert done.status is JobStatus.FAILED
    assert done.error == "too_many_attempts"
    assert done.error_detail is not None
    assert "started 5 times" in done.error_detail
    assert not partial.parent.exists()
    assert copying.events.events[-1].data == {"job_id": job.id, "reason": "too_many_attempts"}


async def test_the_sweeper_ends_jobs_whose_worker_vanished(copying: World) -> None:
    jobs = []
    for vm in ("web-01", "db-01"):
        created = await copying.service.create_export(
            provider="lab", vm=vm, format=DiskFormat.RAW, context=OLGA
        )
        jobs.append(created)
    now = datetime.now(UTC)
    lost, _ = copying.jobs.jobs[jobs[0].id].start(at=now - timedelta(seconds=120))
    alive, _ = copying.jobs.jobs[jobs[1].id].start(at=now)
    copying.jobs.jobs[lost.id] = lost
    copying.jobs.jobs[alive.id] = alive
    (copying.export_dir / lost.id).mkdir()
    (copying.export_dir / lost.id / ".partial").write_bytes(b"half")

    ended = await copying.service.sweep_stale_jobs()

    assert [j.id for j in ended] == [lost.id]
    swept = copying.jobs.jobs[lost.id]
    assert (swept.status, swept.error) == (JobStatus.FAILED, "worker_lost")
    assert copying.jobs.jobs[alive.id].status is JobStatus.RUNNING
    assert not (copying.export_dir / lost.id).exists()
    assert copying.events.events[-1].data == {"job_id": lost.id, "reason": "worker_lost"}
    assert await copying.service.sweep_stale_jobs() == []


async def test_a_job_whose_command_never_reached_the_queue_ends_failed(copying: World) -> None:
    """The exporter stopped between committing the job and the broker's confirm."""
    now = datetime.now(UTC)
    lost, requested = Job.request(
        id=str(uuid.uuid4()),
        provider="lab",
        vm="web-01",
        format=DiskFormat.RAW,
        requested_by=OLGA.actor,
        at=now - timedelta(seconds=120),
    )
    await copying.jobs.add(lost, requested)  # committed; its command never sent
    sent = await copying.service.create_export(
        provider="lab", vm="db-01", format=DiskFormat.RAW, context=OLGA
    )
    assert copying.jobs.jobs[sent.id].dispatched_at is not None
    waiting = dataclasses.replace(copying.jobs.jobs[sent.id], created_at=now - timedelta(hours=1))
    copying.jobs.jobs[sent.id] = waiting  # old, queued, but dispatched: a worker has it
    fresh, requested = Job.request(
        id=str(uuid.uuid4()),
        provider="lab",
        vm="web-01",
        format=DiskFormat.RAW,
        requested_by=OLGA.actor,
        at=now,
    )
    await copying.jobs.add(fresh, requested)  # its confirm may still be on the way

    ended = await copying.service.sweep_stale_jobs()

    assert [j.id for j in ended] == [lost.id]
    failed = copying.jobs.jobs[lost.id]
    assert (failed.status, failed.error) == (JobStatus.FAILED, "not_dispatched")
    assert failed.error_detail is not None
    assert "never reached the work queue" in failed.error_detail
    assert copying.jobs.jobs[sent.id].status is JobStatus.QUEUED
    assert copying.jobs.jobs[fresh.id].status is JobStatus.QUEUED
    assert copying.events.events[-1].data == {"job_id": lost.id, "reason": "not_dispatched"}
    assert await copying.service.sweep_stale_jobs() == []


async def test_a_worker_records_the_dispatch_of_a_command_it_receives(copying: World) -> None:
    job = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    copying.jobs.jobs[job.id] = dataclasses.replace(copying.jobs.jobs[job.id], dispatched_at=None)
    await copying.service.run_export(copying.queue.commands[0], OLGA)
    assert copying.jobs.jobs[job.id].dispatched_at is not None


async def test_a_worker_whose_job_was_swept_stops_and_never_succeeds(blocking: World) -> None:
    converter = blocking.converter
    assert isinstance(converter, BlockingConverter)
    job = await blocking.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    worker = asyncio.create_task(blocking.service.run_export(blocking.queue.commands[0], OLGA))
    await asyncio.wait_for(converter.running.wait(), 5)
    stored = blocking.jobs.jobs[job.id]
    swept, record = stored.fail(reason="worker_lost", at=datetime.now(UTC))
    await blocking.jobs.save(swept, record)

    done = await asyncio.wait_for(worker, 1.0)

    assert (done.status, done.error) == (JobStatus.FAILED, "worker_lost")
    assert not (blocking.export_dir / job.id).exists()
    assert "exporter.job.completed" not in blocking.events.types()


# ---- changed sources ------------------------------------------------------------------------


async def test_a_source_changed_during_the_export_fails_the_job(blocking: World) -> None:
    converter = blocking.converter
    assert isinstance(converter, BlockingConverter)
    converter.on_block.append(blocking.lab / "demo" / "web-01" / "disk0.raw")
    converter.release.set()
    job = await blocking.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )

    done = await blocking.service.run_export(blocking.queue.commands[0], OLGA)

    assert done.status is JobStatus.FAILED
    assert done.error == "source_changed"
    assert done.artifacts == []
    assert not (blocking.export_dir / job.id).exists()
    assert "exporter.job.completed" not in blocking.events.types()


# ---- limits ---------------------------------------------------------------------------------


async def test_a_provider_at_its_limit_makes_jobs_wait_not_fail(tmp_path: Path) -> None:
    world = await _registered(
        _world(tmp_path, BlockingConverter(), dataclasses.replace(FAST, provider_concurrency=1))
    )
    converter = world.converter
    assert isinstance(converter, BlockingConverter)
    first = await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    second = await world.service.create_export(
        provider="lab", vm="db-01", format=DiskFormat.RAW, context=OLGA
    )
    one = asyncio.create_task(world.service.run_export(world.queue.commands[0], OLGA))
    await asyncio.wait_for(converter.running.wait(), 5)
    two = asyncio.create_task(world.service.run_export(world.queue.commands[1], OLGA))
    await asyncio.sleep(0.2)

    assert world.jobs.jobs[second.id].status is JobStatus.QUEUED
    assert not two.done()

    converter.release.set()
    done = await asyncio.wait_for(asyncio.gather(one, two), 5)
    assert [j.status for j in done] == [JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert world.jobs.jobs[first.id].attempts == world.jobs.jobs[second.id].attempts == 1


async def test_a_waiting_job_can_be_cancelled(tmp_path: Path) -> None:
    world = await _registered(
        _world(tmp_path, BlockingConverter(), dataclasses.replace(FAST, provider_concurrency=1))
    )
    converter = world.converter
    assert isinstance(converter, BlockingConverter)
    await world.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA
    )
    second = await world.service.create_export(
        provider="lab", vm="db-01", format=DiskFormat.RAW, context=OLGA
    )
    one = asyncio.create_task(world.service.run_export(world.queue.commands[0], OLGA))
    await asyncio.wait_for(converter.running.wait(), 5)
    two = asyncio.create_task(world.service.run_export(world.queue.commands[1], OLGA))
    await asyncio.sleep(0.1)

    await world.service.cancel_job(second.id, IVAN)

    assert (await asyncio.wait_for(two, 1)).status is JobStatus.CANCELLED
    converter.release.set()
    await one


# ---- idempotency ----------------------------------------------------------------------------


async def test_an_idempotency_key_returns_the_same_job_or_a_conflict(copying: World) -> None:
    first = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA, idempotency_key="k-1"
    )
    again = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=OLGA, idempotency_key="k-1"
    )

    assert again.id == first.id
    assert len(copying.queue.commands) == 1
    assert copying.events.types().count("exporter.job.requested") == 1
    with pytest.raises(ServiceError) as error:
        await copying.service.create_export(
            provider="lab", vm="db-01", format=DiskFormat.RAW, context=OLGA, idempotency_key="k-1"
        )
    assert error.value.code is ErrorCode.CONFLICT
    other = await copying.service.create_export(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=IVAN, idempotency_key="k-1"
    )
    assert other.id != first.id
    assert len(copying.queue.commands) == 2


# ---- listing --------------------------------------------------------------------------------


async def test_jobs_page_by_cursor_and_filter(copying: World) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    for index in range(7):
        job, record = Job.request(
            id=f"00000000-0000-0000-0000-00000000000{index}",
            provider="lab" if index % 2 else "other",
            vm="web-01",
            format=DiskFormat.RAW,
            requested_by="olga" if index < 4 else "ivan",
            at=base + timedelta(minutes=index // 2),  # pairs share a creation time
        )
        await copying.jobs.add(job, record)
    newest_first = sorted(copying.jobs.jobs.values(), key=lambda j: (j.created_at, j.id))[::-1]

    pages: list[list[str]] = []
    after: str | None = None
    while True:
        page = await copying.service.list_jobs(limit=3, after=after)
        pages.append([j.id for j in page])
        if len(page) < 3:
            break
        after = page[-1].id
    assert [i for page in pages for i in page] == [j.id for j in newest_first]
    assert [len(page) for page in pages] == [3, 3, 1]

    only_lab = await copying.service.list_jobs(limit=100, provider="lab")
    assert {j.provider for j in only_lab} == {"lab"}
    assert len(only_lab) == 3
    by_ivan = await copying.service.list_jobs(limit=100, requested_by="ivan")
    assert len(by_ivan) == 3
    window = await copying.service.list_jobs(
        limit=100, created_after=base + timedelta(minutes=1), created_before=base + timedelta(3)
    )
    assert len(window) == 5
    queued = await copying.service.list_jobs(limit=2, status=JobStatus.QUEUED)
    assert len(queued) == 2
    assert await copying.service.list_jobs(limit=5, status=JobStatus.SUCCEEDED) == []
    with pytest.raises(ServiceError) as error:
        await copying.service.list_jobs(limit=5, after="no-such-job")
    assert error.value.code is ErrorCode.VALIDATION_FAILED


def test_artifacts_of_a_job_are_dropped_when_it_fails() -> None:
    running, _ = _new_job().start(at=T0)
    artifact = Artifact(name="a.img", size_bytes=1, sha256="0" * 64)
    done, _ = running.succeed(artifacts=[artifact], at=T0)
    assert done.artifacts == [artifact]
    failed, _ = running.fail(reason="x", at=T0)
    assert failed.artifacts == []
