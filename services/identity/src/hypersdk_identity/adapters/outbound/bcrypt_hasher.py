"""bcrypt password hashing in a bounded thread pool of its own (bcrypt releases the GIL).

The pool is sized to the cores this process may run on (its CPU affinity, which container
CPU sets narrow, else the machine's count): one thread per core but one, so a storm of logins
leaves a core to the event loop, the database and the other services. Its queue is bounded
too: a check that would wait behind more than ``queue`` others is refused at once with
:class:`PasswordHasher.BusyError` (identity answers 503 ``service_busy`` with Retry-After), so
no login waits seconds for a thread and then times out. The last ``workers`` places are kept
for logins from addresses without recent failures, so a storm of failed logins does not
crowd out everyone else (decision 0003).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import bcrypt

from hypersdk_identity.ports.outbound import PasswordHasher

MIN_COST = 12
MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer
QUEUE_PER_WORKER = 4  # waiting checks per thread: at cost 12, at most ~1.2 s of waiting
RETRY_AFTER_SECONDS = 1
T = TypeVar("T")


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity where the OS has one, else all."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """One bcrypt thread per usable core but one, at least one."""
    return max(1, usable_cores() - 1)


class BcryptPasswordHasher(PasswordHasher):
    """bcrypt with a configurable cost, never below 12; ``workers`` at a time, ``queue`` waiting.

    A check or hash beyond ``workers + queue`` in flight raises :class:`PasswordHasher.BusyError`
    before anything is queued.
    """

    def __init__(
        self, *, cost: int = MIN_COST, workers: int | None = None, queue: int | None = None
    ) -> None:
        if cost < MIN_COST:
            raise ValueError("bcrypt cost must be at least 12")
        if queue is not None and queue < 0:
            raise ValueError("the bcrypt queue cannot be negative")
        self._cost = cost
        self.workers = workers or default_workers()
        self.queue = QUEUE_PER_WORKER * self.workers if queue is None else queue
        # Places a suspicious login may not take: one thread's worth, so a login from an address
        # without recent failures waits behind at most the queue, never finds it full.
        self.reserved = min(self.workers, self.queue)
        self._in_flight = 0
        self._lock = threading.Lock()  # released from the worker threads
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bcrypt")

    @property
    def in_flight(self) -> int:
        """Hashes and checks running or waiting for a thread."""
        return self._in_flight

    def full(self, *, suspicious: bool = False) -> int | None:
        """Seconds to wait when every place is taken, else None.

        For a suspicious caller, every place but the reserved ones counts as all of them.
        """
        places = self.workers + self.queue - (self.reserved if suspicious else 0)
        return RETRY_AFTER_SECONDS if self._in_flight >= places else None

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._in_flight >= self.workers + self.queue:
                raise PasswordHasher.BusyError(RETRY_AFTER_SECONDS)
            self._in_flight += 1
        try:
            submitted = self._pool.submit(work, *args)
        except BaseException:
            self._release()
            raise
        # Released when the work ends (or is cancelled before it started), not when the caller
        # stops waiting: a thread still busy with an abandoned check is still busy.
        submitted.add_done_callback(self._release)
        return await asyncio.wrap_future(submitted)

    def _release(self, _: object = None) -> None:
        with self._lock:
            self._in_flight -= 1

    async def hash(self, password: str) -> bytes:
        """Hash off the event loop."""
        salt = bcrypt.gensalt(rounds=self._cost)
        return await self._run(bcrypt.hashpw, password.encode(), salt)

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Check off the event loop; a password over bcrypt's 72 bytes never matches."""
        secret = password.encode()
        matches = await self._run(bcrypt.checkpw, secret[:MAX_BYTES], password_hash)
        return matches and len(secret) <= MAX_BYTES
