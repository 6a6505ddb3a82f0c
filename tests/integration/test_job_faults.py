"""Jobs that never hang and never lie, on the real platform with the exporter as a real process.

The faults reproduced before this work, each on a stack of its own (they kill or stop the
exporter): a worker killed again and again (the job ends ``failed``, not ``running`` at 0 %
forever); a worker killed with -9 (its qemu-img dies with it); a worker hung (the sweeper ends
its job, and the worker, once it wakes, stops and leaves nothing). Then, on one shared stack:
cancel within a second, a source overwritten during the export, idempotency keys and paging.

qemu-img is the real one, slowed with its own ``-r`` rate limit (a wrapper script that
``exec``s it) so that a 64 MiB disk takes seconds to convert.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from .conftest import ADMIN_PASSWORD, TEST_ENV, Api, Stack, devstack

DISK_MIB = 64
RATE = "8M"  # bytes per second qemu-img may convert: 64 MiB in about 8 s


def _slow_qemu_img(directory: Path) -> Path:
    """qemu-img whose conversions are rate-limited; run by the (unprivileged) conversion user."""
    qemu_img = shutil.which("qemu-img")
    assert qemu_img is not None
    wrapper = directory / "qemu-img-slow"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = convert ]; then shift; exec {qemu_img} convert -r {RATE} "$@"; fi\n'
        f'exec {qemu_img} "$@"\n'
    )
    wrapper.chmod(0o755)  # no secret in it; the conversion user must execute it
    return wrapper


@contextmanager
def job_stack(state: Path, **env: str) -> Iterator[Stack]:
    """A platform of its own whose exporter converts slowly; ``env`` adds exporter settings."""
    tools = state / "tools"
    tools.mkdir()
    tools.chmod(0o711)
    extra = {
        **TEST_ENV,
        "HYPERSDK_EXPORTER_QEMU_IMG": str(_slow_qemu_img(tools)),
        **{f"HYPERSDK_EXPORTER_{key.upper()}": value for key, value in env.items()},
    }
    with devstack.isolated(state / "stack", extra_env=extra) as config:
        devstack.up(config, admin_password=ADMIN_PASSWORD)
        yield Stack(
            config=config,
            api=Api(config.gateway_url),
            amqp_url=config.amqp_url(),
            database_url=config.database_url(),
        )


def _big_vm(stack: Stack, name: str = "big-01", seed: int = 1) -> Path:
    """A VM of the demo lab whose disk is 64 MiB of incompressible, fully allocated data."""
    vm_dir = stack.config.state_dir / "lab" / "demo" / name
    vm_dir.mkdir(mode=0o700)
    disk = vm_dir / "disk0.raw"
    disk.write_bytes(hashlib.shake_256(f"{name}-{seed}".encode()).digest(DISK_MIB << 20))
    (vm_dir / "vm.json").write_text(
        '{"cpus": 1, "memory_mib": 512, "disks": [{"file": "disk0.raw", "format": "raw"}]}'
    )
    devstack.share_lab(vm_dir, gid=pwd.getpwnam(devstack.CONVERSION_USER).pw_gid)
    return disk


def _export(
    stack: Stack, token: str, vm: str, *, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    status, job, _ = stack.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": vm, "format": "qcow2"},
        token=token,
        headers=headers,
    )
    assert status == 202, job
    return dict(job)


def _job(stack: Stack, token: str, job_id: str) -> dict[str, Any]:
    status, job, _ = stack.api.call("GET", f"/api/v1/jobs/{job_id}", token=token)
    assert status == 200, job
    return dict(job)


def _wait(
    condition: Callable[[], Any],
    seconds: float,
    what: str,
    *,
    explain: Callable[[], Any] | None = None,
) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.05)
    details = f"; {explain()}" if explain is not None else ""
    raise AssertionError(f"{what}: not within {seconds} s{details}")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _exporter_pid(stack: Stack) -> int | None:
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None
    for pid in _children(supervisor):
        if "hypersdk_exporter" in _cmdline(pid) and _alive(pid):
            return pid
    return None


def _conversions(pid: int) -> list[int]:
    """The qemu-img processes a worker started (the wrapper execs qemu-img in place)."""
    return [c for c in _children(pid) if "qemu-img convert" in _cmdline(c) and _alive(c)]


def _running_conversion(stack: Stack, token: str, job_id: str) -> tuple[int, int]:
    """Wait until the job runs with its qemu-img converting: (worker pid, qemu-img pid)."""

    def found() -> tuple[int, int] | None:
        job = _job(stack, token, job_id)
        assert job["status"] in {"queued", "running"}, job
        worker = _exporter_pid(stack)
        if job["status"] != "running" or worker is None:
            return None
        conversions = _conversions(worker)
        return (worker, conversions[0]) if conversions else None

    return tuple(_wait(found, 60, "the job running its qemu-img"))  # type: ignore[return-value]


def _moved_on(stack: Stack, token: str, job_id: str, attempt: int) -> bool:
    job = _job(stack, token, job_id)
    return bool(job["status"] != "running" or job["attempts"] > attempt)


def _job_dir(stack: Stack, job_id: str) -> Path:
    return stack.config.state_dir / "exports" / job_id


# ---- a worker killed again and again ----------------------------------------------------------


def test_a_job_whose_workers_keep_dying_ends_failed_without_output(tmp_path: Path) -> None:
    with job_stack(tmp_path, max_job_attempts="3") as stack:
        admin = stack.api.login("admin", ADMIN_PASSWORD)
        _big_vm(stack)
        job = _export(stack, admin, "big-01")
        for attempt in range(1, 11):  # the reproduction killed it 10 times
            current = _job(stack, admin, job["id"])
            if current["status"] == "failed":
                break
            worker, conversion = _running_conversion(stack, admin, job["id"])
            assert _job(stack, admin, job["id"])["attempts"] == attempt
            assert any(_job_dir(stack, job["id"]).iterdir())  # its partial output
            os.kill(worker, signal.SIGKILL)
            _wait(lambda conversion=conversion: not _alive(conversion), 2, "qemu-img dying")
            _wait(functools.partial(_moved_on, stack, admin, job["id"], attempt), 60, "a retry")
        done = _wait(
            lambda: (j := _job(stack, admin, job["id"]))["status"] == "failed" and j,
            60,
            "the job failed",
        )

        assert attempt == 4
        assert done["error"] == "too_many_attempts"
        assert "started 3 times" in done["error_detail"]
        assert done["artifacts"] == []
        assert not _job_dir(stack, job["id"]).exists()
        actions = [entry["action"] for entry in done["history"]]
        assert actions == ["requested", "started", "started", "started", "failed"]
        assert done["history"][-1]["reason"] == "too_many_attempts"
        assert not [p for p in _children(_exporter_pid(stack) or 0) if "qemu-img" in _cmdline(p)]


# ---- kill -9: the conversion dies with its worker ---------------------------------------------


def test_a_worker_killed_with_sigkill_takes_its_qemu_img_along(tmp_path: Path) -> None:
    with job_stack(tmp_path) as stack:
        admin = stack.api.login("admin", ADMIN_PASSWORD)
        disk = _big_vm(stack)
        job = _export(stack, admin, "big-01")
        worker, conversion = _running_conversion(stack, admin, job["id"])

        os.kill(worker, signal.SIGKILL)
        killed = time.monotonic()
        _wait(lambda: not _alive(conversion), 1.0, "qemu-img dying with its worker")
        assert time.monotonic() - killed < 1.0

        done = _wait(
            lambda: (
                (j := _job(stack, admin, job["id"]))["status"] != "running"
                and j["status"] != "queued"
                and j
            ),
            120,
            "the retry ending",
        )
        assert done["status"] == "succeeded", done
        assert done["attempts"] == 2
        (artifact,) = done["artifacts"]
        path = _job_dir(stack, job["id"]) / artifact["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == artifact["sha256"]
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(disk), str(path)],
            capture_output=True,
            check=False,
        )
        assert compare.returncode == 0, compare.stdout
        assert sorted(p.name for p in _job_dir(stack, job["id"]).iterdir()) == [
            artifact["name"],
            "manifest.json",
        ]


# ---- a hung worker: the sweeper ---------------------------------------------------------------


def test_the_sweeper_ends_the_job_of_a_hung_worker_which_then_stops(tmp_path: Path) -> None:
    with job_stack(tmp_path, stale_job_seconds="3", sweep_interval_seconds="0.5") as stack:
        admin = stack.api.login("admin", ADMIN_PASSWORD)
        _big_vm(stack)
        # A second exporter process (its own health port): it sweeps while the first is hung.
        env = stack.config.service_env()
        env["HYPERSDK_EXPORTER_HEALTH_PORT"] = str(devstack.free_port())
        log = (stack.config.log_dir / "exporter-2.log").open("ab")
        second = subprocess.Popen(
            [stack.config.python, "-m", "hypersdk_exporter"],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait(
                lambda: devstack._ready(
                    f"http://127.0.0.1:{env['HYPERSDK_EXPORTER_HEALTH_PORT']}/readyz"
                ),
                60,
                "the second exporter ready",
            )
            job = _export(stack, admin, "big-01")

            def running() -> tuple[int, int] | None:
                for worker in (second.pid, _exporter_pid(stack) or 0):
                    conversions = _conversions(worker)
                    if conversions:
                        return worker, conversions[0]
                return None

            worker, conversion = _wait(running, 60, "a worker converting")
            os.kill(worker, signal.SIGSTOP)  # hung: alive, holding its command, silent
            try:
                # From the database: the hung process holds some of the exporter's requests.
                swept = _wait(
                    lambda: (
                        (
                            rows := stack.db(
                                "SELECT status, error, error_detail FROM exporter.jobs"
                                " WHERE id = $1::uuid",
                                job["id"],
                            )
                        )[0]["status"]
                        == "failed"
                        and rows[0]
                    ),
                    # Stale after 3 s; a hung worker stopped inside a transaction holds the
                    # job's row until PostgreSQL ends its idle session (15 s).
                    40,
                    "the sweeper failing the job",
                    explain=lambda: stack.db(
                        "SELECT usename, state, wait_event_type, wait_event, left(query, 120)"
                        " AS query, now() - xact_start AS in_transaction FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ),
                )
            finally:
                os.kill(worker, signal.SIGCONT)
            assert swept["error"] == "worker_lost"
            assert "no heartbeat" in swept["error_detail"]
            # Awake again, the worker sees its job ended: it kills its conversion and
            # removes what it wrote; it never reports success.
            _wait(lambda: not _alive(conversion), 3, "the woken worker stopping qemu-img")
            _wait(lambda: not _job_dir(stack, job["id"]).exists(), 3, "the output removed")
            time.sleep(1)
            final = _job(stack, admin, job["id"])
            assert (final["status"], final["error"]) == ("failed", "worker_lost")
            assert [e["action"] for e in final["history"]] == ["requested", "started", "failed"]
        finally:
            second.terminate()
            second.wait(timeout=40)
            log.close()


# ---- cancel, changed sources, idempotency, paging (one shared stack) ---------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with job_stack(tmp_path_factory.mktemp("jobs")) as stack:
        yield stack


def test_cancel_stops_a_running_export_within_a_second(shared: Stack) -> None:
    admin = shared.api.login("admin", ADMIN_PASSWORD)
    _big_vm(shared, "cancel-01")
    job = _export(shared, admin, "cancel-01")
    _, conversion = _running_conversion(shared, admin, job["id"])

    began = time.monotonic()
    status, asked, _ = shared.api.call("POST", f"/api/v1/jobs/{job['id']}/cancel", token=admin)
    assert status == 202, asked
    assert asked["cancel_requested_by"] is not None
    done = _wait(
        lambda: (j := _job(shared, admin, job["id"]))["status"] == "cancelled" and j,
        1.0,
        "the job cancelled",
    )
    assert time.monotonic() - began < 1.0
    assert not _alive(conversion)
    assert not _job_dir(shared, job["id"]).exists()
    assert done["cancel_requested_by"] == asked["cancel_requested_by"]
    assert [e["action"] for e in done["history"]] == [
        "requested",
        "started",
        "cancel_requested",
        "cancelled",
    ]
    status, again, _ = shared.api.call("POST", f"/api/v1/jobs/{job['id']}/cancel", token=admin)
    assert status == 409, again
    assert again["error"]["code"] == "conflict"
    time.sleep(1)
    assert _job(shared, admin, job["id"])["status"] == "cancelled"


def test_a_queued_job_is_cancelled_at_once(shared: Stack) -> None:
    admin = shared.api.login("admin", ADMIN_PASSWORD)
    _big_vm(shared, "queued-01")
    _big_vm(shared, "queued-02")
    first = _export(shared, admin, "queued-01")  # job_concurrency 1: the second waits
    second = _export(shared, admin, "queued-02")
    _running_conversion(shared, admin, first["id"])
    assert _job(shared, admin, second["id"])["status"] == "queued"

    status, cancelled, _ = shared.api.call(
        "POST", f"/api/v1/jobs/{second['id']}/cancel", token=admin
    )
    assert status == 202, cancelled
    assert cancelled["status"] == "cancelled"
    shared.api.call("POST", f"/api/v1/jobs/{first['id']}/cancel", token=admin)
    _wait(lambda: _job(shared, admin, first["id"])["status"] == "cancelled", 2, "first cancelled")
    time.sleep(1)  # the worker takes the cancelled job's command and leaves it cancelled
    final = _job(shared, admin, second["id"])
    assert final["status"] == "cancelled"
    assert final["attempts"] == 0
    assert not _job_dir(shared, second["id"]).exists()


def test_a_source_overwritten_during_the_export_fails_the_job(shared: Stack) -> None:
    admin = shared.api.login("admin", ADMIN_PASSWORD)
    disk = _big_vm(shared, "changing-01")
    job = _export(shared, admin, "changing-01")
    _running_conversion(shared, admin, job["id"])

    with disk.open("r+b") as stream:  # same size, other content (as a guest writing would)
        stream.write(secrets.token_bytes(1 << 20))

    done = _wait(
        lambda: (j := _job(shared, admin, job["id"]))["status"] not in {"queued", "running"} and j,
        60,
        "the job ending",
    )
    assert (done["status"], done["error"]) == ("failed", "source_changed"), done
    assert done["error_detail"]  # which disk moved
    assert done["artifacts"] == []
    assert not _job_dir(shared, job["id"]).exists()


def test_idempotency_keys_and_paging(shared: Stack) -> None:
    admin = shared.api.login("admin", ADMIN_PASSWORD)
    key = {"Idempotency-Key": "nightly-" + secrets.token_hex(4)}
    first = _export(shared, admin, "web-01", headers=key)
    again = _export(shared, admin, "web-01", headers=key)
    assert again["id"] == first["id"]
    status, conflict, _ = shared.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": "db-01", "format": "qcow2"},
        token=admin,
        headers=key,
    )
    assert status == 409, conflict
    assert conflict["error"]["code"] == "conflict"
    status, bad, _ = shared.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": "db-01", "format": "qcow2"},
        token=admin,
        headers={"Idempotency-Key": "bad key with spaces"},
    )
    assert status in {400, 422}, bad

    _wait(lambda: _job(shared, admin, first["id"])["status"] == "succeeded", 60, "export done")
    for _ in range(4):  # enough jobs for three pages of two, whatever ran before
        extra = _export(shared, admin, "db-01")
        shared.api.call("POST", f"/api/v1/jobs/{extra['id']}/cancel", token=admin)
    seen: list[str] = []
    after = ""
    while True:
        status, page, _ = shared.api.call(
            "GET", f"/api/v1/jobs?limit=2&requested_by=admin{after}", token=admin
        )
        assert status == 200, page
        assert len(page) <= 2
        assert all(job["history"] is None for job in page)
        seen += [job["id"] for job in page]
        if len(page) < 2:
            break
        after = f"&after={page[-1]['id']}"
    status, everything, _ = shared.api.call("GET", "/api/v1/jobs?limit=1000", token=admin)
    assert seen == [job["id"] for job in everything]
    assert len(seen) == len(set(seen)) >= 5
    status, done, _ = shared.api.call(
        "GET", "/api/v1/jobs?status=succeeded&provider=demo-lab", token=admin
    )
    assert status == 200
    assert first["id"] in [job["id"] for job in done]
    assert {job["status"] for job in done} == {"succeeded"}
    status, none, _ = shared.api.call(
        "GET", "/api/v1/jobs?created_before=2000-01-01T00:00:00Z", token=admin
    )
    assert (status, none) == (200, [])
    status, bad, _ = shared.api.call("GET", "/api/v1/jobs?status=exploded", token=admin)
    assert status in {400, 422}, bad


def test_a_job_whose_command_never_reached_the_queue_ends_failed(shared: Stack) -> None:
    """The state an exporter killed between committing a job and the broker's confirm of its
    command leaves behind (written here as the database administrator): a queued job no worker
    will ever receive. The sweeper ends it failed instead of leaving it queued forever."""
    admin = shared.api.login("admin", ADMIN_PASSWORD)
    job_id = str(uuid.uuid4())

    async def plant() -> None:
        connection = await asyncpg.connect(shared.database_url)
        try:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO exporter.jobs (id, provider, vm, format, status, progress,"
                    " requested_by, created_at, updated_at)"
                    " VALUES ($1::uuid, 'demo-lab', 'web-01', 'qcow2', 'queued', 0, 'admin',"
                    " now() - interval '1 hour', now() - interval '1 hour')",
                    job_id,
                )
                await connection.execute(
                    "INSERT INTO exporter.job_history (job_id, at, action, status, actor)"
                    " VALUES ($1::uuid, now() - interval '1 hour', 'requested', 'queued', 'admin')",
                    job_id,
                )
        finally:
            await connection.close()

    asyncio.run(plant())
    assert _job(shared, admin, job_id)["status"] == "queued"
    done = _wait(
        lambda: (j := _job(shared, admin, job_id))["status"] != "queued" and j,
        30,
        "the sweeper ending the undispatched job",
    )
    assert (done["status"], done["error"]) == ("failed", "not_dispatched"), done
    assert "never reached the work queue" in done["error_detail"]
    assert [e["action"] for e in done["history"]] == ["requested", "failed"]
    # a job exported normally meanwhile was dispatched, and is not touched by the sweeper
    fresh = _export(shared, admin, "web-01")
    finished = _wait(
        lambda: (
            (j := _job(shared, admin, fresh["id"]))["status"] not in {"queued", "running"} and j
        ),
        60,
        "the normal export ending",
    )
    assert finished["status"] == "succeeded", finished
