"""Turn events into audit entries."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from hypersdk_audit.core.chain import EntryFields
from hypersdk_contracts.envelope import CloudEvent
from hypersdk_contracts.events import EVENT_TYPES, RequestCompleted
from hypersdk_kit.bus import PoisonMessageError


def entry_fields(
    event: CloudEvent, *, producer: str | None = None, received_at: datetime | None = None
) -> EntryFields:
    """The audit entry an event (attributed to ``producer``) stands for.

    A known event type with a payload that does not match its contract is poison (it goes to
    the dead-letter queue); an event type this version does not know is recorded as-is (audit
    quarantines such events before they get here).
    """
    data_type = EVENT_TYPES.get(event.routing_key)
    action = event.routing_key
    result = "success"
    resource = event.subject
    if data_type is not None:
        try:
            data = data_type.model_validate(event.data)
        except ValidationError as exc:
            raise PoisonMessageError(f"{event.type} payload does not match its contract") from exc
        action = data.audit_action
        result = data.audit_result()
        if isinstance(data, RequestCompleted):
            resource = f"{data.method} {data.route}"
    return EntryFields(
        event_id=event.id,
        timestamp=event.time,
        user=event.actor,
        action=action,
        resource=resource,
        result=result,
        source_ip=event.source_ip,
        request_id=event.request_id,
        producer=producer,
        received_at=received_at,
    )
