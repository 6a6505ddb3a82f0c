"""Events audit will not chain as genuine: what is kept of them, and the event that says so."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hypersdk_contracts.catalogue import QUARANTINE_ID_PREFIX
from hypersdk_contracts.envelope import CloudEvent, new_event
from hypersdk_contracts.events import EventQuarantined
from hypersdk_kit.logs import redact

SERVICE = "audit"
MAX_ENVELOPE_BYTES = 64 * 1024
"""A refused envelope larger than this (as JSON) is kept as its header fields only."""
REDACTED = "[REDACTED]"
_SECRET_NAMES = (
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "credential",
    "authorization",
    "assertion",
    "grant",
    "seal",
    "private",
)
_NAMESPACE = uuid.UUID("5b1f3c2e-9a43-4d6c-8a53-7f1e2a9c4d10")
"""Names the id of a quarantine record (uuid5), so a redelivery finds the same one."""
RECORD_ID_PREFIX = QUARANTINE_ID_PREFIX
"""Starts the id of every quarantine record and of the entry that reports it.

Event ids with it are audit's alone (attribution refuses them from anyone else): otherwise a
publisher could chain a genuine event under the id a later forgery's report will have, and the
report would be skipped as a duplicate.
"""


@dataclass(frozen=True)
class QuarantinedEvent:
    """An event refused as not genuine; everything but ``login`` and ``reason`` is unverified."""

    id: str
    received_at: datetime
    event_id: str
    claimed_type: str
    claimed_source: str
    claimed_actor: str | None
    login: str | None
    producer: str | None
    reason: str
    envelope: dict[str, Any]
    number: int = field(default=0, kw_only=True)
    """Position in the quarantine, set by the store (0 before it is stored)."""


def quarantine_record(
    event: CloudEvent,
    *,
    login: str | None,
    producer: str | None,
    reason: str,
    received_at: datetime,
) -> QuarantinedEvent:
    """What the quarantine keeps of a refused event (its id is the same on every redelivery)."""
    return QuarantinedEvent(
        id=RECORD_ID_PREFIX + str(uuid.uuid5(_NAMESPACE, f"{login}\x00{event.id}")),
        received_at=received_at,
        event_id=event.id,
        claimed_type=event.type,
        claimed_source=event.source,
        claimed_actor=event.actor,
        login=login,
        producer=producer,
        reason=reason,
        envelope=kept_envelope(event),
    )


def kept_envelope(event: CloudEvent) -> dict[str, Any]:
    """The envelope as received, secret-looking fields redacted, bounded in size."""
    envelope = _redacted(event.to_wire())
    size = len(json.dumps(envelope))
    if size <= MAX_ENVELOPE_BYTES:
        return dict(envelope)
    headers = {key: value for key, value in envelope.items() if key != "data"}
    return {**headers, "data": {"truncated_bytes": size}}


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: REDACTED if _secret_looking(str(key)) else _redacted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    if isinstance(value, str):
        return redact(value)
    return value


def _secret_looking(name: str) -> bool:
    lowered = name.lower()
    return lowered == "key" or any(part in lowered for part in _SECRET_NAMES)


def security_event(record: QuarantinedEvent) -> CloudEvent:
    """The ``audit.event.quarantined`` event audit chains for a quarantined one (same id)."""
    event = new_event(
        service=SERVICE,
        routing_key=EventQuarantined.routing_key.value,
        data=EventQuarantined(
            quarantined_event_id=record.event_id,
            claimed_type=record.claimed_type,
            claimed_source=record.claimed_source,
            claimed_actor=record.claimed_actor,
            login=record.login,
            producer=record.producer,
            reason=record.reason,
        ),
        subject=f"event/{record.event_id}",
        context=None,
    )
    return event.model_copy(update={"id": record.id, "time": record.received_at})
