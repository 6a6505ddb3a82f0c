"""Exports against plain qemu-img, and cancels (issue 10's targets).

One raw source disk of several GiB (``HYPERSDK_BENCH_DISK_GIB``, default 4) is written into a
``local`` provider's lab directory of the benchmark's platform, with the content of the demo
lab (a quarter random data, a quarter compressible text, half zero holes). For qcow2 and
streamOptimized vmdk, in one run:

- **plain**: ``qemu-img convert -f raw -O <fmt> <the platform's options>`` to a file, timed,
  once as it runs by default (its output left unsynced) and once **durable** (then one fsync
  of the output, timed with it, as the platform makes each artifact durable);
- **direct**: the durable run with the source read as the platform reads it, past the page
  cache (``-T none``, decision 0049): what qemu-img alone does with the platform's choice;
- **platform**: ``POST /api/v1/exports`` then ``GET /api/v1/jobs/{id}`` until ``succeeded``,
  timed from the POST to the moment the job was recorded as succeeded (the job's own time
  stamp; the client learns it within one poll). The platform's output is then checked, not
  timed: its SHA-256 must be the artifact's, and ``qemu-img compare`` must find it equal to
  the source.

Before every run the dirty pages are written back and, as root, the page cache is dropped, so
each run reads its source from disk; the three rotate which goes first, round after round.
The throughput ratio is the median durable plain time over the median platform time (target
at least 0.95); the direct and unsynced ones are reported beside it. qcow2 runs take seconds
and the machine's disk is noisy, so it gets more rounds than the vmdk, whose runs take half a
minute of CPU each.

Cancel: an export of the same disk is started; once its qemu-img runs and writes, ``POST
/api/v1/jobs/{id}/cancel``; measured until the job reads ``cancelled``, and until no qemu-img
of the job is alive and its partial output is gone (target under 1 s each). Three times.

Everything runs on this machine against 127.0.0.1, bounded in time; the disk and every output
are removed at the end.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

import devstack
from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.adapters.outbound.local_lab import write_demo_vm
from hypersdk_exporter.core.formats import FORMATS

DISK_GIB = float(os.environ.get("HYPERSDK_BENCH_DISK_GIB", "4"))
MEASURED = (DiskFormat.QCOW2, DiskFormat.VMDK)
ROUNDS = {
    fmt: int(os.environ.get(f"HYPERSDK_BENCH_{fmt.value.upper()}_ROUNDS", default))
    for fmt, default in zip(MEASURED, ("9", "4"), strict=True)
}
CANCELS = 3
WAYS = ("plain", "durable", "direct", "platform")
RATIO_TARGET = 0.95
CANCEL_TARGET_S = 1.0
PROVIDER = "bench-lab"
DIRECTORY = "bench"
VM = "bench-disk"
SPACE_MARGIN_BYTES = 1 << 30
EXPORT_LIMIT_S = 900.0
CANCEL_LIMIT_S = 30.0
JOB_POLL_S = 0.2
PROCESS_POLL_S = 0.05
CANCEL_POLL_S = 0.01
PHASE_LIMIT_S = EXPORT_LIMIT_S * len(WAYS) * sum(ROUNDS.values()) + 600
"""Every export is bounded; so is the phase (run.py's ``bounded``)."""

_TICK = os.sysconf("SC_CLK_TCK")
Log = Callable[[str], None]


# ---- the machine ---------------------------------------------------------------------------


def drop_caches() -> bool:
    """Write dirty pages back, then drop the page cache (root only); whether it was dropped."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError:
        return False
    return True


def _boot_seconds() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def qemu_processes(job_id: str) -> dict[int, tuple[str, float]]:
    """qemu-img processes working on one job: pid -> (subcommand, start in boot seconds)."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "qemu-img":
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if not any(job_id.encode() in arg for arg in argv):
            continue
        start = int(stat[stat.rindex(")") + 2 :].split()[19]) / _TICK
        found[int(entry.name)] = (argv[1].decode() if len(argv) > 1 else "", start)
    return found


class ConversionWatch:
    """Watches, in a thread, the job's ``qemu-img convert`` from its start to its exit."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.started: float | None = None  # boot seconds
        self.ended: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ConversionWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        pid: int | None = None
        while not self._stop.is_set():
            if pid is None:
                for candidate, (command, start) in qemu_processes(self.job_id).items():
                    if command == "convert":
                        pid, self.started = candidate, start
            elif not Path(f"/proc/{pid}").exists():
                self.ended = _boot_seconds()
                return
            self._stop.wait(PROCESS_POLL_S)

    @property
    def seconds(self) -> float | None:
        """qemu-img's lifetime (within one poll), or None if it was not seen."""
        if self.started is None or self.ended is None:
            return None
        return self.ended - self.started


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def compare(source: Path, output: Path, fmt: str) -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, str(source), str(output)],
        check=False,
        capture_output=True,
        timeout=EXPORT_LIMIT_S,
    )
    return result.returncode == 0


# ---- one run each way ----------------------------------------------------------------------


def plain_args(fmt: DiskFormat, source: Path, output: Path, *, direct: bool = False) -> list[str]:
    """qemu-img convert with the options the platform gives this format (core/formats.py);
    ``direct``: the source read past the page cache, as the platform reads it."""
    qemu = FORMATS[fmt].qemu_args(compress=False)
    reading = ["-T", "none"] if direct else []
    return ["qemu-img", "convert", *reading, "-f", "raw", *qemu, str(source), str(output)]


def plain(
    fmt: DiskFormat, source: Path, out_dir: Path, *, durable: bool, direct: bool = False
) -> dict[str, Any]:
    """One plain conversion, timed; ``durable``: then the output fsynced, timed with it.

    qemu-img's default cache mode for convert (``unsafe``) never flushes, and ``-t
    writeback`` made the streamOptimized vmdk about a fifth slower than one fsync after it
    (flushes along the way; measured with this benchmark), so the like-for-like baseline of
    a platform that fsyncs each artifact once is this: plain ``qemu-img convert``, then one
    fsync of what it wrote.
    """
    output = out_dir / f"plain.{FORMATS[fmt].extension}"
    args = plain_args(fmt, source, output, direct=direct)
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True, timeout=EXPORT_LIMIT_S)
    if durable:
        fd = os.open(output, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    seconds = time.perf_counter() - started
    size = output.stat().st_size
    output.unlink()
    return {"seconds": seconds, "output_bytes": size}


def _stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _history_seconds(job: dict[str, Any], first: str, last: str) -> float | None:
    """Seconds between two actions of the job's history, if it has one."""
    at = {entry["action"]: _stamp(entry["at"]) for entry in job.get("history") or []}
    if first in at and last in at:
        return at[last] - at[first]
    return None


async def platform(
    client: httpx.AsyncClient,
    fmt: DiskFormat,
    *,
    source: Path,
    export_dir: Path,
) -> dict[str, Any]:
    posted_wall = time.time()
    posted = time.perf_counter()
    response = await client.post(
        "/api/v1/exports", json={"provider": PROVIDER, "vm": VM, "format": fmt.value}
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    with ConversionWatch(job_id) as watch:
        job = await _wait_for(client, job_id, {"succeeded", "failed", "cancelled"})
        polled = time.perf_counter() - posted
        await asyncio.sleep(2 * PROCESS_POLL_S)
    if job["status"] != "succeeded":
        raise RuntimeError(f"the {fmt.value} export ended {job['status']}: {job.get('error')}")
    ended = job.get("finished_at") or job["updated_at"]
    (artifact,) = job["artifacts"]
    output = export_dir / job_id / artifact["name"]
    digest = await asyncio.to_thread(sha256_file, output)
    same = await asyncio.to_thread(compare, source, output, FORMATS[fmt].qemu_name)
    shutil.rmtree(export_dir / job_id)
    return {
        "seconds": _stamp(ended) - posted_wall,
        "seconds_polled": polled,
        "qemu_img_seconds": watch.seconds,
        "worker_seconds": _history_seconds(job, "started", "succeeded"),
        "output_bytes": artifact["size_bytes"],
        "sha256_matches": digest == artifact["sha256"],
        "compare_equal": same,
    }


async def _wait_for(
    client: httpx.AsyncClient, job_id: str, states: set[str], limit: float = EXPORT_LIMIT_S
) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/jobs/{job_id}")
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        if job["status"] in states:
            return job
        await asyncio.sleep(JOB_POLL_S)
    raise TimeoutError(f"job {job_id} not {states} within {limit} s")


# ---- cancel --------------------------------------------------------------------------------


def _partial_gone(job_dir: Path) -> bool:
    """No file of the job is left: its directory is gone or holds nothing."""
    if not job_dir.exists():
        return True
    return not any(path.is_file() for path in job_dir.rglob("*"))


async def cancel_once(
    client: httpx.AsyncClient, fmt: DiskFormat, *, export_dir: Path
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/exports", json={"provider": PROVIDER, "vm": VM, "format": fmt.value}
    )
    response.raise_for_status()
    job_id = response.json()["id"]
    job_dir = export_dir / job_id
    deadline = time.monotonic() + CANCEL_LIMIT_S
    while time.monotonic() < deadline:  # qemu-img converts and its output is on disk
        running = any(c == "convert" for c, _ in qemu_processes(job_id).values())
        if running and job_dir.exists() and any(job_dir.glob(".*.partial")):
            break
        await asyncio.sleep(CANCEL_POLL_S)
    else:
        raise RuntimeError(f"the {fmt.value} export to cancel never ran")
    await asyncio.sleep(0.5)  # well into the conversion
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    progress_at_cancel = job["progress"]

    started = time.perf_counter()
    response = await client.post(f"/api/v1/jobs/{job_id}/cancel")
    answered = time.perf_counter() - started
    if response.status_code >= 400:
        # No cancel on this platform: let the export end, and say so.
        await _wait_for(client, job_id, {"succeeded", "failed", "cancelled"})
        shutil.rmtree(job_dir, ignore_errors=True)
        return {"unavailable": f"POST cancel answered {response.status_code}"}
    status_s: float | None = None
    stopped_s: float | None = None

    async def status() -> None:
        nonlocal status_s
        while time.perf_counter() - started < CANCEL_LIMIT_S:
            job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
            if job["status"] == "cancelled":
                status_s = time.perf_counter() - started
                return
            if job["status"] in ("succeeded", "failed"):
                return
            await asyncio.sleep(CANCEL_POLL_S)

    async def stopped() -> None:
        nonlocal stopped_s
        while time.perf_counter() - started < CANCEL_LIMIT_S:
            alive = await asyncio.to_thread(qemu_processes, job_id)
            if not alive and _partial_gone(job_dir):
                stopped_s = time.perf_counter() - started
                return
            await asyncio.sleep(CANCEL_POLL_S)

    await asyncio.gather(status(), stopped())
    shutil.rmtree(job_dir, ignore_errors=True)
    return {
        "format": fmt.value,
        "progress_at_cancel": progress_at_cancel,
        "answered_s": answered,
        "cancelled_s": status_s,
        "stopped_s": stopped_s,
    }


# ---- the phase -----------------------------------------------------------------------------


async def measure(config: devstack.StackConfig, auth: dict[str, str], log: Log) -> dict[str, Any]:
    """The figures of the exports section, or why the phase was skipped."""
    size = int(DISK_GIB * 1024) << 20
    state = config.state_dir
    need = 3 * size + SPACE_MARGIN_BYTES  # the source, two outputs, a margin
    free = shutil.disk_usage(state).free
    if free < need:
        message = (
            f"skipped: {need / 2**30:.1f} GiB needed under {state} "
            f"(a {DISK_GIB:g} GiB source, two outputs, 1 GiB margin), {free / 2**30:.1f} GiB free"
        )
        log(f"  exports {message}")
        return {"skipped": message}
    lab = state / "lab" / DIRECTORY
    export_dir = state / "exports"
    out_dir = state / "bench-plain"
    out_dir.mkdir(mode=0o700, exist_ok=True)
    try:
        log(f"  writing a {DISK_GIB:g} GiB source disk")
        vm_dir = await asyncio.to_thread(
            write_demo_vm, lab, name=VM, size_mib=size >> 20, seed=2026
        )
        source = vm_dir / "disk0.raw"
        conversion = devstack.ensure_conversion_user(config)
        if conversion is not None:
            devstack.share_lab(state / "lab", gid=conversion[1])
        async with httpx.AsyncClient(
            base_url=config.gateway_url, headers=auth, timeout=60
        ) as client:
            response = await client.post(
                "/api/v1/providers",
                json={"name": PROVIDER, "type": "local", "config": {"directory": DIRECTORY}},
            )
            response.raise_for_status()
            results = await _exports(
                client, source=source, out_dir=out_dir, export_dir=export_dir, log=log
            )
            cancels: list[dict[str, Any]] = []
            for index in range(CANCELS):
                log(f"  cancel {index + 1}")
                fmt = MEASURED[index % len(MEASURED)]
                cancels.append(await cancel_once(client, fmt, export_dir=export_dir))
                if "unavailable" in cancels[-1]:
                    break
            results["cancel"] = cancels
        results.update(
            disk_gib=DISK_GIB,
            disk_bytes=size,
            allocated_bytes=source.stat().st_blocks * 512,
            as_root=os.geteuid() == 0,
        )
        return results
    finally:
        shutil.rmtree(lab, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)


async def _exports(
    client: httpx.AsyncClient, *, source: Path, out_dir: Path, export_dir: Path, log: Log
) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    cache_dropped = True
    for fmt in MEASURED:
        rows[fmt.value] = {
            "plain_args": plain_args(fmt, Path("SOURCE"), Path("OUTPUT"))[1:],
            "runs": [],
        }
    for round_index in range(max(ROUNDS.values())):
        for format_index, fmt in enumerate(MEASURED):
            if round_index >= ROUNDS[fmt]:
                continue
            turn = (round_index + format_index) % len(WAYS)
            order = WAYS[turn:] + WAYS[:turn]
            run: dict[str, Any] = {"order": list(order)}
            for way in order:
                cache_dropped &= await asyncio.to_thread(drop_caches)
                log(f"  {fmt.value}, round {round_index + 1}: {way}")
                if way == "platform":
                    run[way] = await platform(client, fmt, source=source, export_dir=export_dir)
                else:
                    run[way] = await asyncio.to_thread(
                        plain, fmt, source, out_dir, durable=way != "plain", direct=way == "direct"
                    )
            rows[fmt.value]["runs"].append(run)
    for row in rows.values():
        medians = {
            way: statistics.median(run[way]["seconds"] for run in row["runs"]) for way in WAYS
        }
        row.update(
            plain_s=medians["plain"],
            durable_s=medians["durable"],
            direct_s=medians["direct"],
            platform_s=medians["platform"],
            ratio=medians["durable"] / medians["platform"],
            ratio_direct=medians["direct"] / medians["platform"],
            ratio_unsynced=medians["plain"] / medians["platform"],
            verified=all(
                run["platform"]["sha256_matches"] and run["platform"]["compare_equal"]
                for run in row["runs"]
            ),
        )
    rounds = {fmt.value: count for fmt, count in ROUNDS.items()}
    return {"formats": rows, "rounds": rounds, "cache_dropped": cache_dropped}


# ---- docs/benchmarks.md --------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "not met"


def render(exports: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md on exports."""
    lines = ["## Exports against qemu-img", ""]
    if "skipped" in exports:
        return [*lines, f"Not measured in this run: {exports['skipped']}."]
    cache = (
        "the page cache dropped before each run (`sync`, `drop_caches`)"
        if exports["cache_dropped"]
        else "the page cache could not be dropped (not root): later runs may read a warm cache"
    )
    rounds = " and ".join(f"{count} {name}" for name, count in exports["rounds"].items())
    lines += [
        f"One raw source disk of {exports['disk_gib']:g} GiB "
        f"({exports['allocated_bytes'] / 2**30:.2f} GiB allocated: a quarter random data, a",
        "quarter compressible text, half zero holes) in a `local` provider's lab, converted by",
        "plain `qemu-img convert` with the options the platform gives the format, both as",
        "it runs by default (output left unsynced in the page cache) and durable (then one",
        "`fsync` of the output, as the platform makes each artifact durable), then durable",
        "with the source read as the platform reads it, past the page cache (`-T none`,",
        "decision 0049), and exported through the platform (`POST /api/v1/exports` to the",
        "job's `succeeded`, which includes inspecting and mapping the source, the SHA-256 of",
        "the output, its fsync and the job's bookkeeping). "
        f"{rounds} rounds, the order rotating, {cache}; medians. Each",
        "platform output was checked afterwards: its SHA-256 is the artifact's and",
        "`qemu-img compare` finds it equal to the source. The target is judged on durable",
        "output against plain `qemu-img convert`; the ratios to qemu-img given the platform's",
        "read option and to the unsynced run are shown beside it.",
        "",
        "| format | plain, unsynced | plain, durable | plain, durable, `-T none` | platform "
        "| of which qemu-img | ratio (durable / platform) | ratio (`-T none` / platform) "
        "| ratio (unsynced / platform) | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in exports["formats"].items():
        qemu = [run["platform"]["qemu_img_seconds"] for run in row["runs"]]
        qemu_text = (
            f"{statistics.median(qemu):.2f} s" if all(q is not None for q in qemu) else "not seen"
        )
        lines.append(
            f"| {name} | {row['plain_s']:.2f} s | {row['durable_s']:.2f} s | "
            f"{row['direct_s']:.2f} s | {row['platform_s']:.2f} s | {qemu_text} | "
            f"{row['ratio']:.3f} | {row['ratio_direct']:.3f} | "
            f"{row['ratio_unsynced']:.3f} | **{_met(row['ratio'] >= RATIO_TARGET)}** "
            f"(at least {RATIO_TARGET}){'' if row['verified'] else ', output NOT verified'} |"
        )
    lines += [
        "",
        "Runs one by one (seconds, unsynced / durable / `-T none` / platform; the order run):",
        "",
    ]
    for name, row in exports["formats"].items():
        runs = ", ".join(
            f"{run['plain']['seconds']:.2f} / {run['durable']['seconds']:.2f} / "
            f"{run['direct']['seconds']:.2f} / "
            f"{run['platform']['seconds']:.2f} ({', '.join(run['order'])})"
            for run in row["runs"]
        )
        lines.append(f"- {name} (`qemu-img {' '.join(row['plain_args'])}`): {runs}.")
    cancels = exports["cancel"]
    lines += ["", "### Cancel", ""]
    if any("unavailable" in cancel for cancel in cancels):
        return [*lines, f"Not measured: {cancels[0].get('unavailable', 'no cancel route')}."]
    status = [c["cancelled_s"] for c in cancels]
    stopped = [c["stopped_s"] for c in cancels]
    seen = [s for s in status + stopped if s is not None]
    met = len(seen) == len(status + stopped) and max(seen) < CANCEL_TARGET_S
    worst_status = max((s for s in status if s is not None), default=None)
    worst_stopped = max((s for s in stopped if s is not None), default=None)
    lines += [
        f"{len(cancels)} exports of the same disk, each cancelled half a second after its",
        "qemu-img started writing (`POST /api/v1/jobs/{id}/cancel`); measured from the POST",
        "until the job reads `cancelled`, and until no qemu-img of the job is alive and its",
        "partial output is gone:",
        "",
        "| format | progress at cancel | POST answered | job cancelled | stopped, output gone |",
        "|---|---|---|---|---|",
        *(
            f"| {c['format']} | {c['progress_at_cancel']} % | {c['answered_s'] * 1000:.0f} ms | "
            f"{_ms(c['cancelled_s'])} | {_ms(c['stopped_s'])} |"
            for c in cancels
        ),
        "",
        f"Worst: job cancelled after {_ms(worst_status)}, stopped after {_ms(worst_stopped)}: "
        f"**{_met(met)}** "
        f"(target under {CANCEL_TARGET_S:g} s).",
    ]
    return lines


def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1000:.0f} ms"
