"""bcrypt password hashing in a bounded thread pool of its own (bcrypt releases the GIL).

The pool is sized to the cores this process may run on (its CPU affinity, which container
CPU sets narrow, else the machine's count): one thread per core but one, so a storm of logins
leaves a core to the event loop, the database and the other services. Its queue is bounded
too: a check that would wait behind more than ``queue`` others is refused at once with
:class:`PasswordHasher.BusyError` (identity answers 503 ``service_busy`` with Retry-After), so
no login waits seconds for a thread and then times out.

Each login comes with a :class:`Standing` (decision 0039). Waiting checks start in standing
order (``TRUSTED``, then ``UNKNOWN``, then ``SUSPICIOUS``; first come first within one), and each
standing keeps a thread's worth of places that the ones after it may not take: ``TRUSTED`` may
take every place, ``UNKNOWN`` all but the last ``workers``, ``SUSPICIOUS`` also leaves the
``workers`` before those. So a storm of failed logins neither crowds out nor queues ahead of a
user who logged in from there before, nor of a newcomer (decision 0003).
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

from hypersdk_identity.core.models import Standing
from hypersdk_identity.ports.outbound import PasswordHasher

MIN_COST = 12
MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer
QUEUE_PER_WORKER = 4  # waiting checks per thread: at cost 12, at most ~1.2 s of waiting
RETRY_AFTER_SECONDS = 1
T = TypeVar("T")
_STANDING: ContextVar[Standing] = ContextVar("hypersdk_bcrypt_standing", default=Standing.TRUSTED)
"""The standing checks of the current task count as (set by ``first_for`` around a login).

Outside a login the caller is already authenticated (an administrator creating a user)."""
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

    A check or hash beyond the places its standing may take (``places``; all
    ``workers + queue`` for ``TRUSTED``) raises :class:`PasswordHasher.BusyError` before
    anything is queued.
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
        # Places kept from the standings after each one: a thread's worth each, taken from the
        # queue (every standing may fill the threads), so a login of a better standing waits
        # behind at most the checks running and its own standing's, never finds the pool full.
        kept_for_trusted = min(self.workers, self.queue)
        kept_for_unknown = min(self.workers, self.queue - kept_for_trusted)
        total = self.workers + self.queue
        self.places: dict[Standing, int] = {
            Standing.TRUSTED: total,
            Standing.UNKNOWN: total - kept_for_trusted,
            Standing.SUSPICIOUS: total - kept_for_trusted - kept_for_unknown,
        }
        """How many checks may be in flight when one of each standing is let in."""
        self._in_flight = 0
        self._running = 0
        # Work waiting for a thread, one first-come queue per standing, started in that order.
        self._waiting: dict[Standing, deque[Job]] = {standing: deque() for standing in Standing}
        self._lock = threading.Lock()  # released from the worker threads
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bcrypt")

    @property
    def in_flight(self) -> int:
        """Hashes and checks running or waiting for a thread."""
        return self._in_flight

    def full(self, *, standing: Standing) -> int | None:
        """Seconds to wait when every place ``standing`` may take is taken, else None."""
        return RETRY_AFTER_SECONDS if self._in_flight >= self.places[standing] else None

    @contextmanager
    def first_for(self, *, standing: Standing) -> Iterator[None]:
        """Checks started inside count as ``standing`` (see the port)."""
        token = _STANDING.set(standing)
        try:
            yield
        finally:
            _STANDING.reset(token)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        done: Future[T] = Future()
        standing = _STANDING.get()
        with self._lock:
            # Checked again here, not only by ``full``: others may have come in since.
            if self._in_flight >= self.places[standing]:
                raise PasswordHasher.BusyError(RETRY_AFTER_SECONDS)
            self._in_flight += 1
            self._waiting[standing].append((work, args, done))
            self._start_waiting()
        return await asyncio.wrap_future(done)

    def _start_waiting(self) -> None:
        """Hand waiting work to free threads, in standing order, first come first (lock held).

        A place is given back when its work ends, not when its caller stops waiting: a thread
        still busy with an abandoned check is still busy.
        """
        while self._running < self.workers:
            rank = next((queue for queue in self._waiting.values() if queue), None)
            if rank is None:
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
