"""Following a job to its end, and what its progress means in bytes, rate and time left."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.platform import Platform
from hypersdk_cli.core.session import parse_instant

ENDED = frozenset({"succeeded", "failed", "cancelled"})
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Progress:
    """Where a job stands: the API's percent, and estimates from it.

    ``done_bytes`` is the share of the VM's disks (their virtual sizes, from GET /vms/{id})
    that the percent stands for; ``rate`` is bytes per second since the job started and
    ``eta_seconds`` the time left at that rate, both by the server's clock (``started_at``
    and ``updated_at`` of the job), so a slow poll or a skewed local clock changes neither.
    """

    status: str
    percent: int
    total_bytes: int | None
    done_bytes: int | None
    rate: float | None
    eta_seconds: float | None


def total_disk_bytes(vm: Any) -> int | None:
    """The sum of a VM's disk sizes, if the VM describes its disks."""
    try:
        total = sum(int(disk["size_bytes"]) for disk in vm["disks"])
    except (KeyError, TypeError, ValueError):
        return None
    return total or None


def progress_of(job: Any, total_bytes: int | None) -> Progress:
    """The progress a job's fields show."""
    percent = max(0, min(100, int(job.get("progress") or 0)))
    status = str(job.get("status"))
    done = None if total_bytes is None else total_bytes * percent // 100
    rate = eta = None
    if done and job.get("started_at") and job.get("updated_at") and status == "running":
        elapsed = (
            parse_instant(job["updated_at"]) - parse_instant(job["started_at"])
        ).total_seconds()
        if elapsed > 0:
            rate = done / elapsed
            eta = (total_bytes - done) / rate if total_bytes else None
    return Progress(
        status=status,
        percent=percent,
        total_bytes=total_bytes,
        done_bytes=done,
        rate=rate,
        eta_seconds=eta,
    )


def follow_job(
    platform: Platform,
    job_id: str,
    *,
    on_update: Callable[[Any], None],
    sleep: Callable[[float], None],
    poll_seconds: float = POLL_SECONDS,
) -> Any:
    """Poll the job until it ends; ``on_update`` sees every answer; the last is returned."""
    while True:
        job = platform.get_job(job_id)
        on_update(job)
        if job.get("status") in ENDED:
            return job
        sleep(poll_seconds)


def ended_well(job: Any) -> None:
    """Nothing if the job succeeded; CliError (exit 8) naming why if it failed or was cancelled."""
    status = job.get("status")
    if status == "succeeded":
        return
    reason = job.get("error") or status
    detail = job.get("error_detail")
    message = f"Job {job.get('id')} {status}: {reason}" + (f" ({detail})" if detail else "") + "."
    raise CliError(f"job_{status}", message, exit_code=ExitCode.EXPORT_FAILED)
