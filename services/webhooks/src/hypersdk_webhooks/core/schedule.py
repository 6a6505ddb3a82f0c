"""When a delivery is attempted again, when it is given up, and when an endpoint is disabled.

Both policies are pure functions of what the caller stored (attempts made, failing since,
consecutive failures) and the time now, so a restart changes nothing: the caller writes the
next attempt's time to PostgreSQL and picks the delivery up again when it falls due.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise

DEFAULT_DELAYS = (
    timedelta(0),
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=3),
    timedelta(hours=6),
    timedelta(hours=12),
    timedelta(hours=24),
)
"""The wait before each attempt: the first at once, then one retry after each later delay."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; after the last delay's attempt, a dead letter."""

    delays: tuple[timedelta, ...] = DEFAULT_DELAYS
    """``delays[n]`` is the wait before attempt ``n + 1``, counted from the end of attempt ``n``."""
    jitter_ratio: float = 0.2
    """Each wait is multiplied by a uniform factor in ``[1 - jitter_ratio, 1 + jitter_ratio]``."""

    def __post_init__(self) -> None:
        if not self.delays:
            raise ValueError("a retry policy has at least one delay (the first attempt's)")
        if any(delay < timedelta(0) for delay in self.delays):
            raise ValueError("retry delays are never negative")
        if any(later < earlier for earlier, later in pairwise(self.delays)):
            raise ValueError("retry delays never decrease")
        if not 0 <= self.jitter_ratio < 1:
            raise ValueError("jitter_ratio is at least 0 and less than 1")

    @property
    def max_attempts(self) -> int:
        """Attempts made before a message is dead-lettered: the first and every retry."""
        return len(self.delays)

    @property
    def total_span(self) -> timedelta:
        """From the first attempt to the last, without jitter (with it, within the ratio)."""
        return sum(self.delays, timedelta(0))

    def next_attempt_at(
        self, *, attempts_made: int, now: datetime, rng: random.Random
    ) -> datetime | None:
        """When to attempt next after ``attempts_made`` failed ones, or None for a dead letter.

        ``now`` is when the last attempt ended (or when the message was queued, for none), so a
        slow timeout does not eat into the wait.
        """
        _require_aware("now", now)
        if attempts_made < 0:
            raise ValueError("attempts_made is never negative")
        if attempts_made >= len(self.delays):
            return None
        delay = self.delays[attempts_made]
        if delay and self.jitter_ratio:
            delay *= rng.uniform(1 - self.jitter_ratio, 1 + self.jitter_ratio)
        return now + max(delay, timedelta(0))


@dataclass(frozen=True)
class DisablePolicy:
    """An endpoint is disabled once it has failed both for long enough and often enough.

    The caller keeps ``failing_since`` (the first failure after the last success) and the
    consecutive failures, and resets both on any success: one delivered attempt clears the
    record, whatever failed before it.
    """

    after: timedelta = timedelta(days=5)
    """How long the endpoint has failed without a success in between."""
    min_failures: int = 10
    """How many consecutive attempts failed, at least, in that time."""

    def __post_init__(self) -> None:
        if self.after < timedelta(0):
            raise ValueError("after is never negative")
        if self.min_failures < 1:
            raise ValueError("min_failures is at least 1")

    def should_disable(
        self, *, failing_since: datetime | None, consecutive_failures: int, now: datetime
    ) -> bool:
        """Whether both the time and the count of consecutive failures have been reached."""
        _require_aware("now", now)
        if consecutive_failures < 0:
            raise ValueError("consecutive_failures is never negative")
        if failing_since is None:
            return False
        _require_aware("failing_since", failing_since)
        return now - failing_since >= self.after and consecutive_failures >= self.min_failures


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
