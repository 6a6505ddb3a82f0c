"""Limits: token buckets keyed by endpoint group and principal; limits by path prefix."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


@dataclass(frozen=True)
class Verdict:
    """Whether a call may proceed, and the figures for the RateLimit headers."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int


class TokenBuckets:
    """Token buckets refilled continuously; ``capacity`` calls per ``period`` seconds.

    Per process: each gateway replica limits on its own (see docs/security.md).
    """

    def __init__(
        self,
        *,
        capacity: int,
        period_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._capacity = capacity
        self._rate = capacity / period_seconds
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys

    def take(self, key: str) -> Verdict:
        """Spend one token of ``key``'s bucket if there is one."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._evict(now)
            bucket = self._buckets[key] = _Bucket(tokens=self._capacity, updated=now)
        bucket.tokens = min(self._capacity, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return Verdict(True, self._capacity, int(bucket.tokens), self._until_full(bucket))
        wait = math.ceil((1 - bucket.tokens) / self._rate)
        return Verdict(False, self._capacity, 0, max(1, wait))

    def refund(self, key: str) -> None:
        """Give back a token spent on a call that turned out not to count."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.tokens = min(self._capacity, bucket.tokens + 1)

    def _until_full(self, bucket: _Bucket) -> int:
        return math.ceil((self._capacity - bucket.tokens) / self._rate)

    def _evict(self, now: float) -> None:
        full = [
            key
            for key, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self._rate >= self._capacity
        ]
        for key in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[key]


def longest_prefix(path: str, prefixes: Iterable[str]) -> str | None:
    """The longest of ``prefixes`` that ``path`` equals or lies under (by whole segments).

    ``/api/v1/exports`` covers ``/api/v1/exports`` and ``/api/v1/exports/x``, not
    ``/api/v1/exportsx``.
    """
    matches = [p for p in prefixes if path == p or path.startswith(p + "/")]
    return max(matches, key=len) if matches else None
