"""In-memory fakes of the outbound ports, for unit tests of the service core."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from hypersdk_webhooks.core.models import (
    Attempt,
    Endpoint,
    EndpointStatus,
    Incoming,
    Message,
    MessageState,
    Outcome,
    Subscription,
)
from hypersdk_webhooks.core.ssrf import UNRESOLVABLE, IPAddress, Target, TargetRefusedError
from hypersdk_webhooks.ports.outbound import (
    BrokerTaps,
    Delivery,
    EndpointStore,
    MessageStore,
    PublicFeed,
    Resolver,
    SubscriptionStore,
)


class InMemoryResolver(Resolver):
    """Scripted answers: the same ones at every lookup, or the next round at each lookup.

    ``answers`` maps a host to its addresses, answered every time. ``rounds`` maps a host to
    one list of addresses per lookup (the last repeats): a zone that rebinds between lookups.
    An empty answer, or a host in neither, raises TargetRefusedError(unresolvable), as the
    real resolvers do. ``lookups`` records every host asked, in order.
    """

    def __init__(
        self,
        answers: Mapping[str, Sequence[IPAddress]] | None = None,
        *,
        rounds: Mapping[str, Sequence[Sequence[IPAddress]]] | None = None,
    ) -> None:
        self._answers = {host: list(found) for host, found in (answers or {}).items()}
        self._rounds = {host: [list(r) for r in found] for host, found in (rounds or {}).items()}
        self.lookups: list[str] = []

    async def resolve(self, host: str) -> list[IPAddress]:
        """The scripted answers of ``host``."""
        self.lookups.append(host)
        rounds = self._rounds.get(host)
        if rounds:
            found = rounds[min(self.lookups.count(host), len(rounds)) - 1]
        else:
            found = self._answers.get(host, [])
        if not found:
            raise TargetRefusedError(UNRESOLVABLE, "The host name has no A or AAAA answer.")
        return list(found)


@dataclass(frozen=True)
class RecordedPost:
    """One post an InMemoryDelivery received (the body and headers as given)."""

    target: Target
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)
    timeout_seconds: float


class InMemoryDelivery(Delivery):
    """Records every post and returns scripted attempts in order (the last one repeats).

    With no script, every post is delivered (status 204).
    """

    def __init__(self, attempts: Sequence[Attempt] = ()) -> None:
        self._attempts = list(attempts)
        self.posts: list[RecordedPost] = []

    async def post(
        self,
        target: Target,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float,
    ) -> Attempt:
        """Record the post; the next scripted attempt."""
        self.posts.append(
            RecordedPost(
                target=target, headers=dict(headers), body=body, timeout_seconds=timeout_seconds
            )
        )
        if not self._attempts:
            return Attempt(outcome=Outcome.DELIVERED, latency_ms=0.0, status=204)
        index = min(len(self.posts), len(self._attempts)) - 1
        return self._attempts[index]


class InMemoryEndpointStore(EndpointStore):
    """Endpoints in a dict, in the order they were added."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.messages: InMemoryMessageStore | None = None  # to delete an endpoint's messages

    async def add(self, endpoint: Endpoint) -> None:
        """Store a new endpoint."""
        self.endpoints[endpoint.id] = endpoint

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        """The endpoint, or None (one task at a time: nothing to lock)."""
        return self.endpoints.get(endpoint_id)

    async def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        return list(self.endpoints.values())

    async def save(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint."""
        self.endpoints[endpoint.id] = endpoint

    async def delete(self, endpoint_id: str) -> bool:
        """Remove it and its messages."""
        if self.messages is not None:
            self.messages.drop_endpoint(endpoint_id)
        return self.endpoints.pop(endpoint_id, None) is not None

    async def record_success(self, endpoint_id: str) -> None:
        """Clear its failure record."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is not None and endpoint.consecutive_failures:
            self.endpoints[endpoint_id] = replace(
                endpoint, failing_since=None, consecutive_failures=0
            )

    async def record_failure(self, endpoint_id: str, *, now: datetime) -> Endpoint | None:
        """Count a failure."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            return None
        failing = replace(
            endpoint,
            failing_since=endpoint.failing_since or now,
            consecutive_failures=endpoint.consecutive_failures + 1,
        )
        self.endpoints[endpoint_id] = failing
        return failing

    async def disable(self, endpoint_id: str, *, reason: str, now: datetime) -> bool:
        """Disable it if active."""
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None or endpoint.status is not EndpointStatus.ACTIVE:
            return False
        self.endpoints[endpoint_id] = replace(
            endpoint, status=EndpointStatus.DISABLED, disabled_reason=reason, updated_at=now
        )
        return True


class InMemoryMessageStore(MessageStore):
    """Messages in a dict; unique per (event, endpoint) like the database's constraint."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}

    async def add_new(self, messages: Sequence[Message]) -> int:
        """Store those not already there."""
        present = {(m.event_id, m.endpoint_id) for m in self.messages.values()}
        new = [m for m in messages if (m.event_id, m.endpoint_id) not in present]
        for message in new:
            self.messages[message.id] = message
        return len(new)

    async def claim_due(
        self, *, now: datetime, capacity: Mapping[str, int], limit: int, lease: timedelta
    ) -> list[Message]:
        """Due, unleased pending messages within each endpoint's capacity, oldest first."""
        due = sorted(
            (
                m
                for m in self.messages.values()
                if m.state is MessageState.PENDING
                and m.endpoint_id in capacity
                and m.next_attempt_at is not None
                and m.next_attempt_at <= now
                and (m.leased_until is None or m.leased_until <= now)
            ),
            key=lambda m: (m.next_attempt_at, m.created_at, m.id),
        )
        taken: dict[str, int] = {}
        chosen: list[Message] = []
        for message in due:
            if len(chosen) == limit:
                break
            if taken.get(message.endpoint_id, 0) < capacity[message.endpoint_id]:
                taken[message.endpoint_id] = taken.get(message.endpoint_id, 0) + 1
                chosen.append(message)
        claimed = [replace(m, leased_until=now + lease) for m in chosen]
        for message in claimed:
            self.messages[message.id] = message
        return claimed

    async def settle(self, message: Message, *, claimed_until: datetime | None) -> bool:
        """Write the result if the stored message still carries that claim."""
        stored = self.messages.get(message.id)
        if stored is None or stored.leased_until != claimed_until:
            return False
        self.messages[message.id] = message
        return True

    async def replay(self, message: Message) -> bool:
        """Write it back as pending if it is still dead."""
        stored = self.messages.get(message.id)
        if stored is None or stored.state is not MessageState.DEAD:
            return False
        self.messages[message.id] = message
        return True

    async def get(self, message_id: str) -> Message | None:
        """The message, or None."""
        return self.messages.get(message_id)

    async def dead(self, *, endpoint_id: str | None, limit: int) -> list[Message]:
        """Dead letters, newest first."""
        dead = [
            m
            for m in self.messages.values()
            if m.state is MessageState.DEAD and endpoint_id in (None, m.endpoint_id)
        ]
        return sorted(dead, key=lambda m: m.created_at, reverse=True)[:limit]

    async def purge(self, *, delivered_before: datetime, dead_before: datetime) -> int:
        """Forget old delivered and dead messages."""
        cutoff = {MessageState.DELIVERED: delivered_before, MessageState.DEAD: dead_before}
        gone = [
            key
            for key, m in self.messages.items()
            if m.state in cutoff and m.created_at < cutoff[m.state]
        ]
        for key in gone:
            del self.messages[key]
        return len(gone)

    def drop_endpoint(self, endpoint_id: str) -> None:
        """Forget an endpoint's messages."""
        for key in [k for k, m in self.messages.items() if m.endpoint_id == endpoint_id]:
            del self.messages[key]


class InMemorySubscriptionStore(SubscriptionStore):
    """Subscriptions in a dict."""

    def __init__(self) -> None:
        self.subscriptions: dict[str, Subscription] = {}

    async def add(self, subscription: Subscription) -> None:
        """Insert (ids are unique)."""
        assert subscription.id not in self.subscriptions
        self.subscriptions[subscription.id] = subscription

    async def get(self, subscription_id: str) -> Subscription | None:
        """By id."""
        return self.subscriptions.get(subscription_id)

    async def list_active(self) -> list[Subscription]:
        """Not deleted, oldest first."""
        active = [s for s in self.subscriptions.values() if s.active]
        return sorted(active, key=lambda s: (s.created_at, s.id))

    async def count_active(self) -> int:
        """How many are not deleted."""
        return len(await self.list_active())

    async def mark_deleted(self, subscription_id: str, *, now: datetime) -> bool:
        """Mark an active one."""
        found = self.subscriptions.get(subscription_id)
        if found is None or not found.active:
            return False
        self.subscriptions[subscription_id] = replace(found, deleted_at=now)
        return True

    async def deleted(self) -> list[Subscription]:
        """Marked and not removed."""
        return [s for s in self.subscriptions.values() if not s.active]

    async def remove(self, subscription_id: str) -> None:
        """Forget it."""
        self.subscriptions.pop(subscription_id, None)

    async def record_queue(self, subscription_id: str, queue: str, *, limit: int) -> bool:
        """Add the name, within the limit."""
        found = self.subscriptions.get(subscription_id)
        if found is None or not found.active:
            return False
        if queue in found.queues:
            return True
        if len(found.queues) >= limit:
            return False
        self.subscriptions[subscription_id] = replace(found, queues=(*found.queues, queue))
        return True


@dataclass
class InMemoryTaps(BrokerTaps):
    """Which taps are open, which queues were deleted; ``fail`` makes every call raise."""

    open_taps: set[str] = field(default_factory=set)
    deleted_queues: list[str] = field(default_factory=list)
    fail: bool = False

    async def open(self, subscription_id: str) -> None:
        """Open it."""
        if self.fail:
            raise ConnectionError("broker down")
        self.open_taps.add(subscription_id)

    async def close(self, subscription_id: str, *, queues: Sequence[str]) -> None:
        """Close it and delete the queues."""
        if self.fail:
            raise ConnectionError("broker down")
        self.deleted_queues.extend(queues)
        self.open_taps.discard(subscription_id)


@dataclass
class InMemoryPublicFeed(PublicFeed):
    """What was published; ``fail`` makes the next publish raise."""

    published: list[Incoming] = field(default_factory=list)
    fail: bool = False

    async def publish(self, events: Sequence[Incoming]) -> None:
        """Keep them."""
        if self.fail:
            raise ConnectionError("broker down")
        self.published.extend(events)
