"""The export job aggregate: its states, the moves between them, and the record of each move.

A job is ``queued`` when accepted, ``running`` while a worker converts it, and ends
``succeeded``, ``failed`` or ``cancelled``; an ended job never changes again (a cancelled job
never becomes succeeded, whatever a late worker or a redelivered command says). Every move is
a method that refuses what is illegal and returns the new job together with the
:class:`JobTransition` the change-management record keeps (who, when, what, result, error
text). The store saves a move only if the job is still at the version it was read at, so two
writers (a worker finishing, a user cancelling) can never both win.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from hypersdk_contracts.events import Artifact
from hypersdk_contracts.rpc import DiskFormat, JobStatus

TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
DETAIL_LIMIT = 500
"""Error text kept in the record is cut to this many characters."""

_SECRETS = (
    # user:password@ in URLs
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@"), r"\1[redacted]@"),
    (re.compile(r"(?i)\b(bearer)\s+\S+"), r"\1 [redacted]"),
    # key=value and key: value pairs whose key names a secret
    (
        re.compile(
            r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|authorization|cookie"
            r"|session[_-]?id|vmware_soap_session)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|\S+)"
        ),
        r"\1\2[redacted]",
    ),
    (re.compile(r"hsdk_k_[A-Za-z0-9_]+"), "[redacted]"),
)


def safe_detail(text: str | None) -> str | None:
    """Error text fit for the record: secret-looking parts redacted, one line, bounded."""
    if not text:
        return None
    cleaned = " ".join(text.split())
    for pattern, replacement in _SECRETS:
        cleaned = pattern.sub(replacement, cleaned)
    if len(cleaned) > DETAIL_LIMIT:
        cleaned = cleaned[: DETAIL_LIMIT - 3] + "..."
    return cleaned or None


class JobAction(StrEnum):
    """What a transition did."""

    REQUESTED = "requested"
    STARTED = "started"
    CANCEL_REQUESTED = "cancel_requested"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class IllegalTransitionError(Exception):
    """The move is not allowed from the job's current state."""

    def __init__(self, job: Job, action: JobAction) -> None:
        super().__init__(f"job {job.id} is {job.status.value}; cannot {action.value}")
        self.status = job.status
        self.action = action


@dataclass(frozen=True)
class JobTransition:
    """One entry of a job's history."""

    at: datetime
    action: JobAction
    status: JobStatus
    actor: str | None
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Job:
    """An export job. Change it only through its transition methods."""

    id: str
    provider: str
    vm: str
    format: DiskFormat
    status: JobStatus
    progress: int
    requested_by: str | None
    created_at: datetime
    updated_at: datetime
    error: str | None = None
    artifacts: list[Artifact] = field(default_factory=list)
    error_detail: str | None = None
    attempts: int = 0
    cancel_requested_by: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    idempotency_key: str | None = None
    request_digest: str | None = None
    dispatched_at: datetime | None = None  # when its command was confirmed by the broker
    version: int = 0

    @classmethod
    def request(
        cls,
        *,
        id: str,
        provider: str,
        vm: str,
        format: DiskFormat,
        requested_by: str | None,
        at: datetime,
        idempotency_key: str | None = None,
        request_digest: str | None = None,
    ) -> tuple[Job, JobTransition]:
        """A new queued job and its first record."""
        job = cls(
            id=id,
            provider=provider,
            vm=vm,
            format=format,
            status=JobStatus.QUEUED,
            progress=0,
            requested_by=requested_by,
            created_at=at,
            updated_at=at,
            idempotency_key=idempotency_key,
            request_digest=request_digest,
        )
        return job, JobTransition(at, JobAction.REQUESTED, JobStatus.QUEUED, requested_by)

    @property
    def terminal(self) -> bool:
        """Whether the job has ended (it never changes again)."""
        return self.status in TERMINAL

    def _move(self, at: datetime, **changes: object) -> Job:
        return dataclasses.replace(
            self,
            updated_at=at,
            version=self.version + 1,
            **changes,  # type: ignore[arg-type]
        )

    def start(self, *, at: datetime) -> tuple[Job, JobTransition]:
        """A worker takes the job: from queued, or again from running after a worker died."""
        if self.status not in {JobStatus.QUEUED, JobStatus.RUNNING}:
            raise IllegalTransitionError(self, JobAction.STARTED)
        if self.cancel_requested_by is not None:
            raise IllegalTransitionError(self, JobAction.STARTED)
        job = self._move(
            at,
            status=JobStatus.RUNNING,
            progress=0,
            attempts=self.attempts + 1,
            started_at=at,
            heartbeat_at=at,
        )
        detail = f"attempt {job.attempts}"
        return job, JobTransition(
            at, JobAction.STARTED, JobStatus.RUNNING, self.requested_by, detail=detail
        )

    def advance(self, *, progress: int, at: datetime) -> Job:
        """Progress of a running job (not a transition: the history does not keep it)."""
        if self.status is not JobStatus.RUNNING:
            raise IllegalTransitionError(self, JobAction.STARTED)
        return self._move(at, progress=max(0, min(progress, 100)))

    def request_cancel(self, *, by: str | None, at: datetime) -> tuple[Job, JobTransition]:
        """Ask a running job to stop; its worker ends it cancelled. A queued job ends at once."""
        if self.status is JobStatus.QUEUED:
            return self.cancel(at=at, by=by)
        if self.status is not JobStatus.RUNNING:
            raise IllegalTransitionError(self, JobAction.CANCEL_REQUESTED)
        job = self._move(at, cancel_requested_by=by)
        return job, JobTransition(at, JobAction.CANCEL_REQUESTED, JobStatus.RUNNING, by)

    def cancel(self, *, at: datetime, by: str | None = None) -> tuple[Job, JobTransition]:
        """End cancelled: from queued, or from running once its conversion stopped."""
        if self.terminal:
            raise IllegalTransitionError(self, JobAction.CANCELLED)
        who = by if by is not None else self.cancel_requested_by
        job = self._move(
            at,
            status=JobStatus.CANCELLED,
            cancel_requested_by=who,
            error="cancelled",
            artifacts=[],
            finished_at=at,
        )
        return job, JobTransition(at, JobAction.CANCELLED, JobStatus.CANCELLED, who)

    def succeed(self, *, artifacts: list[Artifact], at: datetime) -> tuple[Job, JobTransition]:
        """End succeeded: only a running job nobody asked to cancel."""
        if self.status is not JobStatus.RUNNING or self.cancel_requested_by is not None:
            raise IllegalTransitionError(self, JobAction.SUCCEEDED)
        job = self._move(
            at,
            status=JobStatus.SUCCEEDED,
            progress=100,
            artifacts=list(artifacts),
            finished_at=at,
        )
        detail = ", ".join(f"{a.name} sha256:{a.sha256}" for a in artifacts)
        return job, JobTransition(
            at,
            JobAction.SUCCEEDED,
            JobStatus.SUCCEEDED,
            self.requested_by,
            detail=safe_detail(detail),
        )

    def fail(
        self, *, reason: str, at: datetime, detail: str | None = None, by: str | None = None
    ) -> tuple[Job, JobTransition]:
        """End failed with a stable reason (and error text, bounded and redacted)."""
        if self.terminal:
            raise IllegalTransitionError(self, JobAction.FAILED)
        text = safe_detail(detail)
        job = self._move(
            at,
            status=JobStatus.FAILED,
            error=reason,
            error_detail=text,
            artifacts=[],
            finished_at=at,
        )
        actor = by if by is not None else self.requested_by
        return job, JobTransition(
            at, JobAction.FAILED, JobStatus.FAILED, actor, reason=reason, detail=text
        )


@dataclass(frozen=True)
class JobQuery:
    """A page of jobs, newest first, with optional filters."""

    limit: int
    after: Job | None = None
    status: JobStatus | None = None
    provider: str | None = None
    requested_by: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None

    def matches(self, job: Job) -> bool:
        """Whether ``job`` passes the filters (not the cursor or limit)."""
        return (
            (self.status is None or job.status is self.status)
            and (self.provider is None or job.provider == self.provider)
            and (self.requested_by is None or job.requested_by == self.requested_by)
            and (self.created_after is None or job.created_at >= self.created_after)
            and (self.created_before is None or job.created_at < self.created_before)
        )


@dataclass(frozen=True)
class JobPolicy:
    """How workers run jobs (from the exporter's settings)."""

    max_attempts: int = 5
    """A job started this often without finishing (its workers died) ends failed."""
    provider_concurrency: int = 4
    """Jobs of one provider running at once, across all workers; more wait queued."""
    capacity_poll_seconds: float = 1.0
    """How often a job waiting for its provider's capacity looks again."""
    poll_seconds: float = 0.2
    """How often a running job's worker reads its row (a cancel stops it within this)."""
    heartbeat_seconds: float = 2.0
    """How often a running job's worker proves it is alive."""
    stale_after_seconds: float = 60.0
    """A running job with no heartbeat for this long is ended by the sweeper."""
    progress_interval_seconds: float = 2.0
    """Progress events at most this often..."""
    progress_step: int = 5
    """...unless the job moved at least this many percent since the last one..."""
    progress_min_interval_seconds: float = 1.0
    """...and never sooner than this after the last one (at most one a second)."""


@dataclass(frozen=True)
class ProgressReport:
    """Where a running job is: percent, bytes, rate and ETA."""

    percent: int
    bytes_done: int
    bytes_total: int
    rate_bytes_per_second: int
    eta_seconds: int | None


@dataclass
class ProgressMeter:
    """Turns bytes done into reports at a bounded rate.

    A report is due when the overall percent grew and either ``step`` percent or
    ``interval_seconds`` passed since the last one and, after the first report,
    ``min_interval_seconds`` did too; 100 % is left to the completion event. So a job emits
    at most ``100 / step`` step reports plus one per interval, and never more than one per
    ``min_interval_seconds``: a fast export of a few seconds made twenty step reports, each a
    job row, an outbox row and an audit entry
    committed while its qemu-img competed for the same disk.
    """

    clock: Callable[[], float]
    interval_seconds: float
    step: int
    min_interval_seconds: float = 0.0
    _started: float = field(init=False)
    _last_time: float = field(init=False)
    _last_percent: int = 0

    def __post_init__(self) -> None:
        self._started = self._last_time = self.clock()

    def update(self, done: int, total: int) -> ProgressReport | None:
        """``done`` of ``total`` bytes converted; a report if one is due."""
        now = self.clock()
        done = max(0, min(done, total))
        overall = done * 100 // total if total > 0 else 0
        if overall >= 100 or overall <= self._last_percent:  # noqa: PLR2004 - percent
            return None
        since = now - self._last_time
        if self._last_percent and since < self.min_interval_seconds:  # the first is never held
            return None
        if overall - self._last_percent < self.step and since < self.interval_seconds:
            return None
        self._last_percent, self._last_time = overall, now
        elapsed = now - self._started
        rate = int(done / elapsed) if elapsed > 0 else 0
        eta = int((total - done) / rate) if rate > 0 else None
        return ProgressReport(
            percent=overall,
            bytes_done=done,
            bytes_total=total,
            rate_bytes_per_second=rate,
            eta_seconds=eta,
        )
