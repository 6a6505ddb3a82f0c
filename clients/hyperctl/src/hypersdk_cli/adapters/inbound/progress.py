"""A job's progress as a person sees it, and what Ctrl-C does while they watch.

On a terminal: a live bar on stderr (percent, bytes, rate, time left). Elsewhere: one line
per change. Ctrl-C offers to cancel the job (a prompt on a terminal; without one, a second
Ctrl-C within :data:`SECOND_INTERRUPT_SECONDS`, or ``--cancel-on-interrupt``); either way
the run ends with exit code 130 and says where the job stands.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from hypersdk_cli.adapters.inbound.output import console, note
from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.jobs import ENDED, follow_job, progress_of
from hypersdk_cli.core.jobs import Progress as JobProgress
from hypersdk_cli.core.platform import Platform
from hypersdk_cli.core.text import printable

SECOND_INTERRUPT_SECONDS = 3.0
CANCEL_WAIT_SECONDS = 15.0


def human_bytes(count: float) -> str:
    """``count`` bytes in binary units: ``12.5 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":  # noqa: PLR2004 - binary units
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def duration(seconds: float) -> str:
    """``seconds`` as ``m:ss`` (or ``h:mm:ss``)."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def describe(progress: JobProgress) -> dict[str, str]:
    """The parts of a progress line: bytes, rate and ETA ('-' where unknown)."""
    size = (
        f"{human_bytes(progress.done_bytes or 0)}/{human_bytes(progress.total_bytes)}"
        if progress.total_bytes
        else "-"
    )
    rate = f"{human_bytes(progress.rate)}/s" if progress.rate else "-"
    eta = duration(progress.eta_seconds) if progress.eta_seconds is not None else "-"
    return {"bytes": size, "rate": rate, "eta": eta}


class JobDisplay:
    """Shows one job's progress until it ends or the display is stopped."""

    def __init__(self, *, job_id: str, total_bytes: int | None, live: bool) -> None:
        self._job_id = printable(job_id, one_line=True)
        self._total_bytes = total_bytes
        self._live = live
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._last_line = ""

    def __enter__(self) -> JobDisplay:
        if self._live:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                TextColumn("{task.percentage:>3.0f}%", markup=False),
                TextColumn("{task.fields[bytes]}", markup=False),
                TextColumn("{task.fields[rate]}", markup=False),
                TextColumn("ETA {task.fields[eta]}", markup=False),
                console=console(stderr=True),
                refresh_per_second=8,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                f"{self._job_id[:8]} queued", total=100, bytes="-", rate="-", eta="-"
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """End the live display, leaving its last state on screen."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def update(self, job: Any) -> None:
        """Show the job's latest answer."""
        progress = progress_of(job, self._total_bytes)
        parts = describe(progress)
        if self._progress is not None and self._task is not None:
            self._progress.update(
                self._task,
                completed=progress.percent,
                description=f"{self._job_id[:8]} {progress.status}",
                bytes=parts["bytes"],
                rate=parts["rate"],
                eta=parts["eta"],
            )
            return
        line = (
            f"job {self._job_id} {progress.status} {progress.percent}%"
            f" {parts['bytes']} {parts['rate']} ETA {parts['eta']}"
        )
        if line != self._last_line:
            note(line)
            self._last_line = line


def watch_job(
    platform: Platform,
    job_id: str,
    *,
    total_bytes: int | None,
    cancel_on_interrupt: bool,
) -> Any:
    """Follow the job to its end with a display; on Ctrl-C, offer to cancel it (exit 130)."""
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    shown_id = printable(job_id, one_line=True)  # the server's text, shown in a prompt
    display = JobDisplay(job_id=job_id, total_bytes=total_bytes, live=sys.stderr.isatty())
    try:
        with display:
            return follow_job(platform, job_id, on_update=display.update, sleep=time.sleep)
    except KeyboardInterrupt:
        display.stop()
        click.echo("", err=True)
    if _wants_cancel(shown_id, cancel_on_interrupt=cancel_on_interrupt, interactive=interactive):
        _cancel(platform, job_id)
    else:
        note(f"Job {shown_id} keeps running: follow it with 'hyperctl jobs watch {shown_id}'.")
    raise click.exceptions.Exit(ExitCode.INTERRUPTED)


def _wants_cancel(job_id: str, *, cancel_on_interrupt: bool, interactive: bool) -> bool:
    if cancel_on_interrupt:
        return True
    try:
        if interactive:
            return click.confirm(f"Cancel job {job_id}?", default=False, err=True)
        note(
            f"Interrupted: Ctrl-C again within {SECOND_INTERRUPT_SECONDS:g} s cancels job"
            f" {job_id}; otherwise it keeps running."
        )
        time.sleep(SECOND_INTERRUPT_SECONDS)
    except (KeyboardInterrupt, click.Abort):
        click.echo("", err=True)
        return not interactive  # a second Ctrl-C: cancel; Ctrl-C at the prompt: leave it
    return False


def _cancel(platform: Platform, job_id: str) -> None:
    try:
        job = platform.cancel_job(job_id)
    except CliError as error:
        if error.exit_code is not ExitCode.CONFLICT:
            raise
        job = platform.get_job(job_id)  # it ended meanwhile
        note(f"Job {job_id} had already ended: {job.get('status')}.")
        return
    deadline = time.monotonic() + CANCEL_WAIT_SECONDS
    while job.get("status") not in ENDED and time.monotonic() < deadline:
        time.sleep(0.2)
        job = platform.get_job(job_id)
    note(f"Job {job_id} {job.get('status')}.")
