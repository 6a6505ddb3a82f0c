"""Endpoints, the messages sent to them, and what one attempt came to."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from hypersdk_webhooks.core.signing import SigningKeys


class Outcome(StrEnum):
    """How an attempt ended: one stable code each."""

    DELIVERED = "delivered"  # a 2xx answer
    HTTP_ERROR = "http_error"  # any other status (a 3xx too: redirects are never followed)
    TIMEOUT = "timeout"  # no answer within the endpoint's timeout
    CONNECT_FAILED = "connect_failed"  # refused, unreachable, reset before an answer
    TLS_FAILED = "tls_failed"  # the handshake or the certificate failed
    BLOCKED_ADDRESS = "blocked_address"  # the name resolved to an address the policy refuses
    UNRESOLVABLE = "unresolvable"  # the name has no A or AAAA answer
    INVALID_RESPONSE = "invalid_response"  # not HTTP, or a response larger than allowed


@dataclass(frozen=True)
class Attempt:
    """One attempt: never holds the signing secret, the body or the answer's body."""

    outcome: Outcome
    latency_ms: float
    status: int | None = None  # the HTTP status, when an answer came
    address: str | None = None  # the checked address connected to
    detail: str = ""  # a short sentence for operators (no secret, no answer body)

    @property
    def delivered(self) -> bool:
        """Whether the endpoint accepted it."""
        return self.outcome is Outcome.DELIVERED


class EndpointStatus(StrEnum):
    """Whether an endpoint is sent to."""

    ACTIVE = "active"
    PAUSED = "paused"  # by an operator: its messages wait, and go out once it is resumed
    DISABLED = "disabled"  # after sustained failure: it gets no new messages until resumed


class MessageState(StrEnum):
    """Where one message to one endpoint stands."""

    PENDING = "pending"  # to be attempted at next_attempt_at
    DELIVERED = "delivered"
    DEAD = "dead"  # every retry failed: a dead letter, listable and replayable


@dataclass(frozen=True)
class Endpoint:
    """A webhook subscription: where to POST which events, signed with its keys."""

    id: str
    url: str
    event_types: tuple[str, ...]  # topic patterns: ``*`` one segment, ``#`` any number
    description: str
    status: EndpointStatus
    keys: SigningKeys = field(repr=False)
    timeout_seconds: float
    max_in_flight: int
    created_at: datetime
    updated_at: datetime
    failing_since: datetime | None = None
    consecutive_failures: int = 0
    disabled_reason: str = ""


@dataclass(frozen=True)
class Message:
    """One event to one endpoint, attempted until delivered or dead.

    ``message_id`` is the Standard Webhooks id, the same on every attempt and replay (the
    receiver deduplicates on it); ``body`` is the event's CloudEvents JSON as published.
    """

    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    message_id: str
    body: bytes = field(repr=False)
    created_at: datetime
    state: MessageState = MessageState.PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    leased_until: datetime | None = None
    last_attempt: Attempt | None = None


@dataclass(frozen=True)
class Incoming:
    """One genuine event to dispatch and publish: its id, routing key and the body sent out."""

    event_id: str
    event_type: str
    body: bytes


@dataclass(frozen=True)
class Subscription:
    """A subscriber's broker user and what it has declared."""

    id: str
    description: str
    password_digest: str
    created_at: datetime
    queues: tuple[str, ...] = ()
    deleted_at: datetime | None = None

    @property
    def active(self) -> bool:
        """Not deleted."""
        return self.deleted_at is None
