"""Inbound adapters of the audit service: every event in, queries by request/reply."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_audit.core.chain import ChainedEntry
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.core.service import AuditService
from hypersdk_contracts.names import AUDIT_EVENTS_QUEUE, RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    AuditEntryView,
    ListAuditEventsRequest,
    ListQuarantineRequest,
    QuarantinedEventView,
    VerifyRequest,
    VerifyResult,
)
from hypersdk_kit.bus import (
    Authorizer,
    BatchConsumer,
    Received,
    durable_queue,
    events_exchange,
    serve_rpc,
)

AUDIT_VIEW = frozenset({Permission.AUDIT_VIEW.value})


def register_consumers(
    broker: RabbitBroker,
    audit: AuditService,
    *,
    prefetch: int,
    batch_size: int,
    batch_wait_seconds: float,
    guard: Authorizer,
    declare_topology: bool = True,
) -> BatchConsumer:
    """Record every event of the events exchange; answer verify and list requests.

    Events are recorded in batches (one transaction each), acked once their batch is stored,
    by the returned consumer: start it once the broker is started. Each comes with the
    broker-validated login that published it, which attributes it.
    """

    async def record(batch: list[Received]) -> None:
        await audit.record_batch(batch)

    events = BatchConsumer(
        broker,
        durable_queue(AUDIT_EVENTS_QUEUE, routing_key="#"),
        record,
        exchange=events_exchange(declare=declare_topology),
        prefetch=prefetch,
        max_batch=batch_size,
        max_wait_seconds=batch_wait_seconds,
    )

    async def verify(request: VerifyRequest) -> VerifyResult:
        outcome = await audit.verify()
        return VerifyResult(
            valid=outcome.valid,
            entries=outcome.entries,
            first_bad_sequence=outcome.first_bad_sequence,
            reason=outcome.reason,
        )

    async def list_events(request: ListAuditEventsRequest) -> list[AuditEntryView]:
        entries = await audit.page(after_sequence=request.after_sequence, limit=request.limit)
        return [_view(entry) for entry in entries]

    serve_rpc(
        broker,
        RpcQueue.AUDIT_VERIFY,
        VerifyRequest,
        verify,
        permissions=AUDIT_VIEW,
        authorizer=guard,
    )

    async def list_quarantine(request: ListQuarantineRequest) -> list[QuarantinedEventView]:
        records = await audit.quarantine(after_number=request.after_number, limit=request.limit)
        return [_quarantined_view(record) for record in records]

    serve_rpc(
        broker,
        RpcQueue.AUDIT_LIST_EVENTS,
        ListAuditEventsRequest,
        list_events,
        permissions=AUDIT_VIEW,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.AUDIT_LIST_QUARANTINE,
        ListQuarantineRequest,
        list_quarantine,
        permissions=AUDIT_VIEW,
        authorizer=guard,
    )
    return events


def _view(entry: ChainedEntry) -> AuditEntryView:
    return AuditEntryView(
        sequence=entry.sequence,
        event_id=entry.event_id,
        timestamp=entry.timestamp,
        user=entry.user,
        action=entry.action,
        resource=entry.resource,
        result=entry.result,
        source_ip=entry.source_ip,
        request_id=entry.request_id,
        producer=entry.producer,
        received_at=entry.received_at,
        prev_hash=entry.prev_hash,
        hash=entry.hash,
    )


def _quarantined_view(record: QuarantinedEvent) -> QuarantinedEventView:
    return QuarantinedEventView(
        number=record.number,
        id=record.id,
        received_at=record.received_at,
        event_id=record.event_id,
        claimed_type=record.claimed_type,
        claimed_source=record.claimed_source,
        claimed_actor=record.claimed_actor,
        login=record.login,
        producer=record.producer,
        reason=record.reason,
        envelope=record.envelope,
    )
