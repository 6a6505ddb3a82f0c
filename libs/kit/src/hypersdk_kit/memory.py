"""An in-memory unit of work, for unit tests of cores."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar

from hypersdk_contracts.envelope import CloudEvent, RequestContext, event_envelope
from hypersdk_contracts.events import EventData
from hypersdk_kit.ports import UnitOfWork


class InMemoryUnitOfWork(UnitOfWork):
    """Keeps events in ``events`` once their transaction commits; rolls the stores back with it.

    The stores given (in-memory fakes) are snapshotted when a transaction opens and restored if
    it fails, so a test sees a core's state change and its events commit or vanish together.
    One transaction at a time: the fake does not isolate concurrent ones. A transaction that
    records an event whose routing key is in ``fail_commits`` fails at commit (once per key),
    as a lost database connection would, so tests can show that nothing of it remains.
    """

    class CommitFailedError(Exception):
        """The simulated commit failure."""

    def __init__(self, *, service: str = "test", stores: tuple[object, ...] = ()) -> None:
        self.events: list[CloudEvent] = []
        self.rollbacks = 0
        self.fail_commits: set[str] = set()
        self._service = service
        self._stores = stores
        self._pending: ContextVar[list[CloudEvent] | None] = ContextVar(
            f"hypersdk_memory_uow_{id(self)}", default=None
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Open or join; commit the recorded events on success, restore the stores on failure."""
        if self._pending.get() is not None:
            yield
            return
        snapshots = [copy.deepcopy(vars(store)) for store in self._stores]
        pending: list[CloudEvent] = []
        token = self._pending.set(pending)
        try:
            yield
            failing = self.fail_commits & {event.routing_key for event in pending}
            if failing:
                self.fail_commits -= failing
                raise self.CommitFailedError(", ".join(sorted(failing)))
        except BaseException:
            for store, snapshot in zip(self._stores, snapshots, strict=True):
                vars(store).clear()
                vars(store).update(snapshot)
            self.rollbacks += 1
            raise
        finally:
            self._pending.reset(token)
        self.events.extend(pending)

    async def record(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Keep the event with the open transaction (or commit it alone)."""
        event = event_envelope(data, service=self._service, subject=subject, context=context)
        pending = self._pending.get()
        if pending is None:
            self.events.append(event)
        else:
            pending.append(event)
        return event

    def types(self) -> list[str]:
        """Routing keys committed, in order."""
        return [event.routing_key for event in self.events]
