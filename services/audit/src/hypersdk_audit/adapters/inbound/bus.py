"""Inbound adapters of the audit service: every event in, queries by request/reply."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from faststream.rabbit import RabbitBroker

from hypersdk_audit.core.chain import ChainedEntry
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.core.query import EntryFilter, TextMatch
from hypersdk_audit.core.retention import Hold
from hypersdk_audit.core.service import AuditService
from hypersdk_audit.core.verification import VerificationRun
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import AUDIT_EVENTS_QUEUE, RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    AuditEntryView,
    CheckpointRequest,
    CheckpointView,
    ConsistencyProofRequest,
    ConsistencyProofView,
    GenesisView,
    HoldIdRequest,
    HoldView,
    InclusionProofRequest,
    InclusionProofView,
    ListAuditEventsRequest,
    ListCheckpointsRequest,
    ListHoldsRequest,
    ListQuarantineRequest,
    ListVerificationsRequest,
    PlaceHoldRequest,
    PublicKeysRequest,
    PublicKeysView,
    QuarantinedEventView,
    StartVerificationRequest,
    VerificationIdRequest,
    VerificationView,
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
SYSTEM_CONFIGURE = frozenset({Permission.SYSTEM_CONFIGURE.value})


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
        run = await audit.verify(requested_by=request.context.actor)
        first = run.problems[0] if run.problems else None
        return VerifyResult(
            valid=bool(run.valid),
            entries=run.checked,
            first_bad_sequence=None if first is None else first.sequence,
            reason=None if first is None else f"{first.code}: {first.message}",
            verification=verification_view(run),
        )

    async def list_events(request: ListAuditEventsRequest) -> list[AuditEntryView]:
        entries = await audit.page(
            after_sequence=request.after_sequence,
            limit=request.limit,
            where=entry_filter(request),
        )
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
    _serve_proofs(broker, audit, guard)
    _serve_verifications_and_holds(broker, audit, guard)
    return events


def _serve_verifications_and_holds(
    broker: RabbitBroker, audit: AuditService, guard: Authorizer
) -> None:
    """Background verifications (audit:view), legal holds (placed and lifted: system:configure)."""

    async def start_verification(request: StartVerificationRequest) -> VerificationView:
        run = await audit.start_full_verification(requested_by=request.context.actor)
        return verification_view(run)

    async def get_verification(request: VerificationIdRequest) -> VerificationView:
        run = await audit.verification(request.id)
        if run is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"No verification {request.id}.")
        return verification_view(run)

    async def list_verifications(request: ListVerificationsRequest) -> list[VerificationView]:
        return [verification_view(run) for run in await audit.verifications(limit=request.limit)]

    async def list_holds(request: ListHoldsRequest) -> list[HoldView]:
        return [_hold_view(hold) for hold in await audit.holds()]

    async def place_hold(request: PlaceHoldRequest) -> HoldView:
        return _hold_view(await audit.place_hold(request.reason, context=request.context))

    async def lift_hold(request: HoldIdRequest) -> HoldView:
        return _hold_view(await audit.lift_hold(request.id, context=request.context))

    def serve(
        queue: RpcQueue,
        model: type[Any],
        handler: Callable[[Any], Awaitable[Any]],
        permissions: frozenset[str] = AUDIT_VIEW,
    ) -> None:
        serve_rpc(broker, queue, model, handler, permissions=permissions, authorizer=guard)

    serve(RpcQueue.AUDIT_START_VERIFICATION, StartVerificationRequest, start_verification)
    serve(RpcQueue.AUDIT_GET_VERIFICATION, VerificationIdRequest, get_verification)
    serve(RpcQueue.AUDIT_LIST_VERIFICATIONS, ListVerificationsRequest, list_verifications)
    serve(RpcQueue.AUDIT_LIST_HOLDS, ListHoldsRequest, list_holds)
    serve(RpcQueue.AUDIT_PLACE_HOLD, PlaceHoldRequest, place_hold, SYSTEM_CONFIGURE)
    serve(RpcQueue.AUDIT_LIFT_HOLD, HoldIdRequest, lift_hold, SYSTEM_CONFIGURE)


def verification_view(run: VerificationRun) -> VerificationView:
    """A verification as the API shows it."""
    return VerificationView.model_validate(
        {
            **run.__dict__,
            "problems": [problem.__dict__ for problem in run.problems],
        }
    )


def _hold_view(hold: Hold) -> HoldView:
    return HoldView.model_validate(hold.__dict__)


def _serve_proofs(broker: RabbitBroker, audit: AuditService, guard: Authorizer) -> None:
    """Checkpoints, inclusion and consistency proofs, the checkpoint keys (audit:view)."""

    async def checkpoint(request: CheckpointRequest) -> CheckpointView:
        return checkpoint_view(await audit.checkpoint())

    async def list_checkpoints(request: ListCheckpointsRequest) -> list[CheckpointView]:
        if request.latest:
            latest = await audit.latest_checkpoint()
            return [] if latest is None else [checkpoint_view(latest)]
        kept = await audit.checkpoints(after_size=request.after_size, limit=request.limit)
        return [checkpoint_view(signed) for signed in kept]

    async def inclusion(request: InclusionProofRequest) -> InclusionProofView:
        proof = await audit.inclusion(request.sequence, tree_size=request.tree_size)
        return InclusionProofView(
            entry=_view(proof.entry),
            leaf_index=proof.entry.sequence - 1,
            tree_size=proof.tree_size,
            hashes=[digest.hex() for digest in proof.hashes],
        )

    async def consistency(request: ConsistencyProofRequest) -> ConsistencyProofView:
        proof = await audit.consistency(request.first, second=request.second)
        return ConsistencyProofView(
            first=proof.first, second=proof.second, hashes=[digest.hex() for digest in proof.hashes]
        )

    async def public_keys(request: PublicKeysRequest) -> PublicKeysView:
        keys = {
            key_id: key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
            for key_id, key in audit.public_keys().items()
        }
        genesis = await audit.genesis()
        return PublicKeysView(
            origin=audit.origin,
            keys=keys,
            genesis=None
            if genesis is None
            else GenesisView(
                size=genesis.checkpoint.checkpoint.size,
                head=genesis.checkpoint.checkpoint.head,
                frontier=[digest.hex() for digest in genesis.frontier],
                checkpoint=checkpoint_view(genesis.checkpoint),
            ),
        )

    def serve(queue: RpcQueue, model: type[Any], handler: Callable[[Any], Awaitable[Any]]) -> None:
        serve_rpc(broker, queue, model, handler, permissions=AUDIT_VIEW, authorizer=guard)

    serve(RpcQueue.AUDIT_CHECKPOINT, CheckpointRequest, checkpoint)
    serve(RpcQueue.AUDIT_LIST_CHECKPOINTS, ListCheckpointsRequest, list_checkpoints)
    serve(RpcQueue.AUDIT_PROVE_INCLUSION, InclusionProofRequest, inclusion)
    serve(RpcQueue.AUDIT_PROVE_CONSISTENCY, ConsistencyProofRequest, consistency)
    serve(RpcQueue.AUDIT_PUBLIC_KEYS, PublicKeysRequest, public_keys)


def checkpoint_view(signed: SignedCheckpoint) -> CheckpointView:
    """A checkpoint as the API and its event show it."""
    return CheckpointView.model_validate(signed.to_json())


def entry_filter(request: ListAuditEventsRequest) -> EntryFilter:
    """The filters of a query (``action`` ending in ``*`` is a prefix; ``result=failure``: all)."""
    return EntryFilter(
        since=request.since,
        until=request.until,
        user=request.user,
        subject=request.subject,
        action=None if request.action is None else TextMatch.of(request.action),
        resource=request.resource,
        result=None if request.result is None else TextMatch.of_result(request.result),
        request_id=request.request_id,
        source_ip=request.source_ip,
    )


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
