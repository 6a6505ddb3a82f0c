"""Outbound ports of the webhooks service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv6Address

from hypersdk_webhooks.core.models import Attempt, Endpoint, Message
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
    """The webhook endpoints (their signing keys with them, encrypted at rest by the adapter)."""

    @abstractmethod
    async def add(self, endpoint: Endpoint) -> None:
        """Store a new endpoint."""

    @abstractmethod
    async def get(self, endpoint_id: str) -> Endpoint | None:
        """The endpoint, or None."""

    @abstractmethod
    async def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""

    @abstractmethod
    async def save(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint."""

    @abstractmethod
    async def delete(self, endpoint_id: str) -> bool:
        """Remove it and its messages; whether it existed."""


class MessageStore(ABC):
    """The durable schedule of messages: what is due when survives any restart."""

    @abstractmethod
    async def add_new(self, messages: Sequence[Message]) -> int:
        """Store those not already there (one per event and endpoint); how many were new."""

    @abstractmethod
    async def claim_due(
        self, *, now: datetime, endpoints: frozenset[str], limit: int, lease: timedelta
    ) -> list[Message]:
        """Pending messages of ``endpoints`` due by ``now`` and not leased, oldest first.

        Each is leased until ``now + lease``: a worker that dies holding it lets it come due
        again then (at least once).
        """

    @abstractmethod
    async def save(self, message: Message) -> None:
        """Replace a stored message (its state, attempts, next time, lease)."""

    @abstractmethod
    async def get(self, message_id: str) -> Message | None:
        """The message by its store id, or None."""

    @abstractmethod
    async def dead(self, *, endpoint_id: str | None, limit: int) -> list[Message]:
        """Dead letters, newest first, of one endpoint or all."""


class WebhookEvents(ABC):
    """What the delivery side tells the platform (published as events, audited)."""

    @abstractmethod
    async def attempted(self, endpoint: Endpoint, message: Message, attempt: Attempt) -> None:
        """One attempt and how it ended (status, latency; never a secret or a body)."""

    @abstractmethod
    async def dead_lettered(self, endpoint: Endpoint, message: Message) -> None:
        """A message whose every retry failed."""

    @abstractmethod
    async def endpoint_disabled(self, endpoint: Endpoint) -> None:
        """An endpoint disabled after sustained failure."""
