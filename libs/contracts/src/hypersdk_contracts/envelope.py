"""The CloudEvents 1.0 envelope (structured mode) every message travels in.

The contract (docs/contracts.md) names the extensions ``actor``, ``source_ip`` and
``request_id``. CloudEvents attribute names may only hold lower-case letters and digits, so on
the wire they are ``actor``, ``sourceip`` and ``requestid``; Python code uses the snake-case
names.
The ``seal`` extension carries the gateway's request seal, which vouches for those three
(docs/security.md).
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, TypeAdapter, field_validator

from hypersdk_contracts.base import Message
from hypersdk_contracts.events import EventData
from hypersdk_contracts.names import EVENT_TYPE_PREFIX

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
CLOUDEVENTS_BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
"""CloudEvents JSON batch format: a JSON array of structured envelopes in one message."""
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
"""W3C Trace Context ``traceparent``, version 00."""


class RequestContext(Message):
    """Who caused a message and through which request."""

    actor: str | None = Field(default=None, description="User name or API key id behind it.")
    source_ip: str | None = Field(default=None, description="Client address of the request.")
    request_id: str | None = Field(default=None, description="Request ID of the API call.")
    assertion: str | None = Field(
        default=None, repr=False, description="Principal assertion signed by identity."
    )
    grant: str | None = Field(
        default=None, repr=False, description="Permission grant signed by policy for this call."
    )
    seal: str | None = Field(
        default=None,
        repr=False,
        description="Request seal signed by the gateway: request ID, client address, actor, "
        "operation and target of this hop.",
    )
    traceparent: str | None = Field(
        default=None, pattern=TRACEPARENT_PATTERN, description="W3C trace context of the call."
    )


def child_traceparent(parent: str | None) -> str:
    """A W3C traceparent for the next hop: the same trace, a new span (a new trace if none)."""
    trace_id = parent.split("-")[1] if parent else secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


class CloudEvent(Message):
    """A CloudEvents 1.0 envelope with the HyperSDK extensions."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    specversion: Literal["1.0"] = Field(default="1.0", description="CloudEvents version.")
    id: str = Field(min_length=1, max_length=128, description="Unique event id.")
    source: str = Field(min_length=1, description="URI reference of the producing service.")
    type: str = Field(min_length=1, description="io.hypersdk. plus the routing key.")
    time: datetime = Field(description="When it happened, UTC.")
    subject: str | None = Field(default=None, description="The resource the event is about.")
    datacontenttype: Literal["application/json"] = Field(
        default="application/json", description="Media type of data."
    )
    data: dict[str, Any] = Field(description="The event payload, typed by the event class.")
    actor: str | None = Field(default=None, description="User or API key id that caused it.")
    source_ip: str | None = Field(
        default=None, alias="sourceip", description="Client address of the causing request."
    )
    request_id: str | None = Field(
        default=None, alias="requestid", description="Request ID of the causing API call."
    )
    seal: str | None = Field(
        default=None,
        max_length=4096,
        repr=False,
        description="The gateway's request seal vouching for actor, sourceip and requestid.",
    )
    traceparent: str | None = Field(
        default=None,
        pattern=TRACEPARENT_PATTERN,
        description="W3C trace context (CloudEvents distributed-tracing extension).",
    )

    @field_validator("time")
    @classmethod
    def _utc_only(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone")
        return value.astimezone(UTC)

    @property
    def routing_key(self) -> str:
        """Routing key the event travels under."""
        return self.type.removeprefix(EVENT_TYPE_PREFIX)

    @property
    def context(self) -> RequestContext:
        """The causing request's context, to pass on to follow-up messages."""
        return RequestContext(
            actor=self.actor,
            source_ip=self.source_ip,
            request_id=self.request_id,
            seal=self.seal,
            traceparent=self.traceparent,
        )

    def to_wire(self) -> dict[str, Any]:
        """JSON-ready dict with the CloudEvents attribute names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def new_event(
    *,
    service: str,
    routing_key: str,
    data: Message,
    subject: str | None,
    context: RequestContext | None,
) -> CloudEvent:
    """Wrap ``data`` in a fresh envelope from ``service``."""
    ctx = context or RequestContext()
    return CloudEvent(
        id=str(uuid.uuid4()),
        source=f"/hypersdk/{service}",
        type=EVENT_TYPE_PREFIX + routing_key,
        time=datetime.now(UTC),
        subject=subject,
        data=data.model_dump(mode="json"),
        actor=ctx.actor,
        source_ip=ctx.source_ip,
        request_id=ctx.request_id,
        seal=ctx.seal,
        traceparent=child_traceparent(ctx.traceparent),
    )


_BATCH: TypeAdapter[list[CloudEvent]] = TypeAdapter(
    Annotated[list[CloudEvent], Field(min_length=1)]
)


def batch_to_json(events: list[CloudEvent]) -> bytes:
    """Events in the CloudEvents JSON batch format (``CLOUDEVENTS_BATCH_CONTENT_TYPE``)."""
    return _BATCH.dump_json(events, by_alias=True, exclude_none=True)


def batch_from_json(body: bytes) -> list[CloudEvent]:
    """The events of a batch message; ``ValidationError`` unless it is a non-empty array of them."""
    return _BATCH.validate_json(body)


def event_envelope(
    data: EventData, *, service: str, subject: str | None, context: RequestContext | None
) -> CloudEvent:
    """A fresh envelope from ``service`` for the event ``data``, under its own routing key."""
    return new_event(
        service=service,
        routing_key=data.routing_key.value,
        data=data,
        subject=subject,
        context=context,
    )
