"""Outbound ports of the webhooks service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

from hypersdk_webhooks.core.models import Attempt, Endpoint, Incoming, Message, Subscription
from hypersdk_webhooks.core.ssrf import Target

IPAddress = IPv4Address | IPv6Address


class Resolver(ABC):
    """Every address a host name has (A and AAAA), looked up once per attempt."""

    @abstractmethod
    async def resolve(self, host: str) -> list[IPAddress]:
        """All the addresses of ``host``; raise TargetRefusedError(unresolvable) for none."""


class Delivery(ABC):
    """POSTs one webhook to a target, at an address checked when it connects."""

    @abstractmethod
    async def post(
        self,
        target: Target,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float,
    ) -> Attempt:
        """One attempt: resolve once, check every answer, connect to a checked one, no redirect.

        Never raises for what the network or the endpoint did: that is the Attempt's outcome.
        """


class EndpointStore(ABC):
    """The webhook endpoints (their signing keys with them, encrypted at rest by the adapter).

    Writes join the unit of work's transaction when one is open.
    """

    @abstractmethod
    async def add(self, endpoint: Endpoint) -> None:
        """Store a new endpoint."""

    @abstractmethod
    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        """The endpoint, or None; ``for_update`` locks it until the transaction ends."""

    @abstractmethod
    async def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""

    @abstractmethod
    async def save(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint (read ``for_update`` in the same transaction)."""

    @abstractmethod
    async def delete(self, endpoint_id: str) -> bool:
        """Remove it and its messages; whether it existed."""

    @abstractmethod
    async def record_success(self, endpoint_id: str) -> None:
        """A delivered attempt: its failure record is cleared (in one statement)."""

    @abstractmethod
    async def record_failure(self, endpoint_id: str, *, now: datetime) -> Endpoint | None:
        """A failed attempt counted (failing since ``now`` if it was not): the endpoint after.

        One statement, so attempts finishing together are all counted; None if it is gone.
        """

    @abstractmethod
    async def disable(self, endpoint_id: str, *, reason: str, now: datetime) -> bool:
        """Disable it if it is still active; whether this call did."""


class MessageStore(ABC):
    """The durable schedule of messages: what is due when survives any restart."""

    @abstractmethod
    async def add_new(self, messages: Sequence[Message]) -> int:
        """Store those not already there (one per event and endpoint); how many were new."""

    @abstractmethod
    async def claim_due(
        self, *, now: datetime, capacity: Mapping[str, int], limit: int, lease: timedelta
    ) -> list[Message]:
        """Pending messages due by ``now`` and not leased, oldest first, at most ``limit``.

        At most ``capacity[endpoint]`` of each endpoint, and none of an endpoint not in it.
        Each is leased until ``now + lease``: a worker that dies holding it lets it come due
        again then (at least once).
        """

    @abstractmethod
    async def settle(self, message: Message, *, claimed_until: datetime | None) -> bool:
        """Write an attempt's result if the message is still under that claim; whether it was."""

    @abstractmethod
    async def replay(self, message: Message) -> bool:
        """Write a dead letter back as pending; False if it is no longer dead."""

    @abstractmethod
    async def get(self, message_id: str) -> Message | None:
        """The message by its store id, or None."""

    @abstractmethod
    async def dead(self, *, endpoint_id: str | None, limit: int) -> list[Message]:
        """Dead letters, newest first, of one endpoint or all."""

    @abstractmethod
    async def purge(self, *, delivered_before: datetime, dead_before: datetime) -> int:
        """Remove delivered messages and dead letters created before these; how many."""


class SubscriptionStore(ABC):
    """AMQP subscriptions, deleted ones kept until their broker objects are removed."""

    @abstractmethod
    async def add(self, subscription: Subscription) -> None:
        """Insert a new subscription."""

    @abstractmethod
    async def get(self, subscription_id: str) -> Subscription | None:
        """One subscription (a deleted one too), or None."""

    @abstractmethod
    async def list_active(self) -> list[Subscription]:
        """Those not deleted, oldest first."""

    @abstractmethod
    async def count_active(self) -> int:
        """How many are not deleted."""

    @abstractmethod
    async def mark_deleted(self, subscription_id: str, *, now: datetime) -> bool:
        """Mark an active one deleted; False if there is none."""

    @abstractmethod
    async def deleted(self) -> list[Subscription]:
        """Those marked deleted and not removed yet."""

    @abstractmethod
    async def remove(self, subscription_id: str) -> None:
        """Forget it (once its broker objects are gone)."""

    @abstractmethod
    async def record_queue(self, subscription_id: str, queue: str, *, limit: int) -> bool:
        """Add a queue name to an active one's unless it holds ``limit``; whether it is there."""


class BrokerTaps(ABC):
    """The broker objects of subscriptions, made and removed by the service's own login."""

    @abstractmethod
    async def open(self, subscription_id: str) -> None:
        """Declare its tap exchange and bind it to the public exchange with ``#`` (idempotent)."""

    @abstractmethod
    async def close(self, subscription_id: str, *, queues: Sequence[str]) -> None:
        """Delete these queues and its tap (idempotent: what is gone already is fine)."""


class PublicFeed(ABC):
    """The public exchange that subscriptions' taps read."""

    @abstractmethod
    async def publish(self, events: Sequence[Incoming]) -> None:
        """Publish each, confirmed by the broker; raise if the broker could not take them."""
