"""bcrypt password hashing in a bounded thread pool of its own (bcrypt releases the GIL).

The pool is sized to the cores this process may run on (its CPU affinity, which container
CPU sets narrow, else the machine's count): one thread per core but one, so a storm of logins
leaves a core to the event loop, the database and the other services. Its queue is bounded
too: a check that would wait behind more than ``queue`` others is refused at once with
:class:`PasswordHasher.BusyError` (identity answers 503 ``service_busy`` with Retry-After), so
no login waits seconds for a thread and then times out. The last ``workers`` places are kept
for logins from addresses without recent failures, and their checks are started before any
waiting one of an address that failed recently, so a storm of failed logins neither crowds
out nor queues ahead of everyone else (decision 0003).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, TypeVar

import bcrypt

from hypersdk_identity.ports.outbound import PasswordHasher

MIN_COST = 12
MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer
QUEUE_PER_WORKER = 4  # waiting checks per thread: at cost 12, at most ~1.2 s of waiting
RETRY_AFTER_SECONDS = 1
T = TypeVar("T")
_SUSPICIOUS: ContextVar[bool] = ContextVar("hypersdk_bcrypt_suspicious", default=False)
"""Whether checks of the current task come second (set by ``first_for`` around a login)."""
Job = tuple[Callable[..., Any], tuple[object, ...], "Future[Any]"]


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
        self._running = 0
        # Work waiting for a thread: first the checks of addresses without recent failures.
        self._waiting: tuple[deque[Job], deque[Job]] = (deque(), deque())
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

    @contextmanager
    def first_for(self, *, suspicious: bool) -> Iterator[None]:
        """Checks started inside go first unless ``suspicious`` (see the port)."""
        token = _SUSPICIOUS.set(suspicious)
        try:
            yield
        finally:
            _SUSPICIOUS.reset(token)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        done: Future[T] = Future()
        suspicious = _SUSPICIOUS.get()
        with self._lock:
            # Checked again here, not only by ``full``: others may have come in since.
            if self._in_flight >= self.workers + self.queue - (self.reserved if suspicious else 0):
                raise PasswordHasher.BusyError(RETRY_AFTER_SECONDS)
            self._in_flight += 1
            self._waiting[suspicious].append((work, args, done))
            self._start_waiting()
        return await asyncio.wrap_future(done)

    def _start_waiting(self) -> None:
        """Hand waiting work to free threads, first come first within a rank (lock held).

        A place is given back when its work ends, not when its caller stops waiting: a thread
        still busy with an abandoned check is still busy.
        """
        while self._running < self.workers:
            rank = self._waiting[False] or self._waiting[True]
            if not rank:
                return
            work, args, done = rank.popleft()
            self._running += 1
            self._pool.submit(self._work, work, args, done)

    def _work(self, work: Callable[..., Any], args: tuple[object, ...], done: Future[Any]) -> None:
        """Run in a pool thread; the place is given back before the caller hears the result."""
        if not done.set_running_or_notify_cancel():  # its caller gave up while it waited
            self._finished()
            return
        try:
            result = work(*args)
        except BaseException as exc:
            self._finished()
            done.set_exception(exc)
            return
        self._finished()
        done.set_result(result)

    def _finished(self) -> None:
        with self._lock:
            self._running -= 1
            self._in_flight -= 1
            self._start_waiting()

    async def hash(self, password: str) -> bytes:
        """Hash off the event loop."""
        salt = bcrypt.gensalt(rounds=self._cost)
        return await self._run(bcrypt.hashpw, password.encode(), salt)

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Check off the event loop; a password over bcrypt's 72 bytes never matches."""
        secret = password.encode()
        matches = await self._run(bcrypt.checkpw, secret[:MAX_BYTES], password_hash)
        return matches and len(secret) <= MAX_BYTES
