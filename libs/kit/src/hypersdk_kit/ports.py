"""Ports through which a service's core records what happened, with no bus or database in sight.

A core changes state and records its events inside one :class:`UnitOfWork` transaction: both
commit, or neither does. Adapters decide where recorded events go (an outbox table that a relay
publishes from, or a list in tests); a core imports only this module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.events import EventData


class EventPublisher(ABC):
    """Publishes facts to the events exchange."""

    @abstractmethod
    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Publish one event and return its envelope once it is durable (confirmed or stored)."""


class EnvelopePublisher(ABC):
    """Publishes envelopes built earlier (by a unit of work), in order, with confirms."""

    @abstractmethod
    async def publish_envelopes(self, events: Sequence[CloudEvent]) -> None:
        """Publish every envelope unchanged; return once all are confirmed, else raise."""


class UnitOfWork(EventPublisher):
    """One atomic change of a service's state together with the events that describe it.

    Inside ``async with uow.transaction():`` the service's stores write through the same
    transaction and :meth:`record` keeps events beside them; leaving the block commits both,
    an exception rolls both back. A transaction opened inside another joins it. ``record``
    outside any transaction commits the event alone (for facts with no state change).
    The envelope (id, time, context) is built when the event is recorded, so retried
    publications carry the same id.
    """

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[None]:
        """Open (or join) the transaction that state changes and events commit in."""

    @abstractmethod
    async def record(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Keep ``data``'s event, in a new envelope, to be published once the work commits."""

    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """:meth:`record`, for code written against :class:`EventPublisher`."""
        return await self.record(data, subject=subject, context=context)
