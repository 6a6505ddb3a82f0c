"""Audit use cases: attribute and record events, page entries and quarantine, verify."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_audit.core.chain import ChainedEntry, EntryFields
from hypersdk_audit.core.proofs import (
    CheckpointSigner,
    ConsistencyProof,
    InclusionProof,
    check_tree_size,
    new_checkpoint,
    proof_hashes,
    signed,
)
from hypersdk_audit.core.quarantine import (
    SERVICE,
    QuarantinedEvent,
    quarantine_record,
    security_event,
)
from hypersdk_audit.core.query import EVERY_ENTRY, EntryFilter
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_audit.core.retention import Hold
from hypersdk_audit.core.verification import (
    PAGE,
    STALE_SECONDS,
    BundleVerifier,
    InProcessVerifier,
    VerificationRun,
    bundle_lines,
    finished,
    start_at,
)
from hypersdk_audit.ports.outbound import AuditLog, GenesisPoint
from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_contracts.envelope import RequestContext, event_envelope
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import CheckpointSigned, EventData, HoldLifted, HoldPlaced
from hypersdk_kit.attribution import Attribution, NotGenuineError
from hypersdk_kit.bus import Received

Published = Callable[[SignedCheckpoint], Awaitable[None]]


logger = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


def _log_failure(task: asyncio.Future[VerificationRun]) -> None:
    """Log a background verification that could not finish.

    Its row stays running, and reads as abandoned once stale.
    """
    if not task.cancelled() and task.exception() is not None:
        logger.error("a full audit verification failed", exc_info=task.exception())


class AuditService:
    """The audit trail of the platform."""

    def __init__(
        self,
        *,
        log: AuditLog,
        attribution: Attribution,
        clock: Callable[[], datetime] = _now,
        signer: CheckpointSigner | None = None,
        origin: str = "hypersdk",
        published: Published | None = None,
        verifier: BundleVerifier | None = None,
    ) -> None:
        self._log = log
        self._attribution = attribution
        self._clock = clock
        self._signer = signer
        self.origin = origin
        self._published = published
        self._verifier: BundleVerifier = verifier if verifier is not None else InProcessVerifier()
        self._incremental: asyncio.Future[VerificationRun] | None = None
        self._full: asyncio.Future[VerificationRun] | None = None
        self._full_run: VerificationRun | None = None

    async def record(self, received: Received) -> ChainedEntry | None:
        """Record one event (see :meth:`record_batch`); the entry added, if any."""
        added = await self.record_batch([received])
        return added[0] if added else None

    async def record_batch(self, batch: list[Received]) -> list[ChainedEntry]:
        """Chain the genuine events of a batch in order; quarantine the others; all or none.

        Each event id is chained once. An event that cannot be attributed as it claims is kept
        in the quarantine and an ``audit.event.quarantined`` entry of audit's own is chained in
        its place. A genuine event that breaks its contract makes the batch poison
        (PoisonMessageError); the consumer then records the events one by one.
        """
        received_at = self._clock()
        entries: list[EntryFields] = []
        quarantined: list[QuarantinedEvent] = []
        for item in batch:
            try:
                producer = self._attribution.producer_of(item.event, login=item.user_id)
            except NotGenuineError as refusal:
                record = quarantine_record(
                    item.event,
                    login=item.user_id,
                    producer=refusal.producer,
                    reason=refusal.reason,
                    received_at=received_at,
                )
                quarantined.append(record)
                entries.append(
                    entry_fields(security_event(record), producer=SERVICE, received_at=received_at)
                )
                continue
            entries.append(entry_fields(item.event, producer=producer, received_at=received_at))
        return await self._log.append_batch(entries, quarantine=quarantined)

    async def page(
        self, *, after_sequence: int, limit: int, where: EntryFilter = EVERY_ENTRY
    ) -> list[ChainedEntry]:
        """Entries in order: the first ``limit`` after ``after_sequence`` that pass ``where``."""
        return await self._log.page(after_sequence=after_sequence, limit=limit, where=where)

    async def quarantine(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """Quarantined events in the order they arrived."""
        return await self._log.quarantined(after_number=after_number, limit=limit)

    # ---- verification (decision 0048) -----------------------------------------------------

    async def verify(self, *, requested_by: str | None = None) -> VerificationRun:
        """Verify what was added since the newest checkpoint found valid; the run, recorded.

        Concurrent callers share one run: twenty at once cost one walk.
        """
        if self._incremental is None or self._incremental.done():
            self._incremental = asyncio.ensure_future(self._verify_incremental(requested_by))
        return await asyncio.shield(self._incremental)

    async def _verify_incremental(self, requested_by: str | None) -> VerificationRun:
        genesis = await self._log.genesis()
        start = max(
            await self._log.verified_checkpoint(),
            0 if genesis is None else genesis.checkpoint.checkpoint.size,
        )
        head = await self._log.tree_head()
        if head.size <= start:  # nothing since: no walk, no record of one
            now = self._clock()
            return VerificationRun(
                id="unchanged",
                kind="incremental",
                status="done",
                requested_by=requested_by,
                started_at=now,
                updated_at=now,
                finished_at=now,
                from_size=start,
                to_size=start,
                valid=True,
                latest_checkpoint=start or None,
            )
        run = await self._new_run("incremental", start, requested_by)
        return await self._walk(run)

    async def start_full_verification(self, *, requested_by: str | None) -> VerificationRun:
        """Start verifying the whole log, from its genesis, in the background; the run.

        One at a time on this replica: a second request gets the running one.
        """
        if self._full is not None and not self._full.done() and self._full_run is not None:
            return self._full_run
        genesis = await self._log.genesis()
        start = 0 if genesis is None else genesis.checkpoint.checkpoint.size
        run = await self._new_run("full", start, requested_by)
        self._full_run = run
        self._full = asyncio.ensure_future(self._walk(run))
        self._full.add_done_callback(_log_failure)
        return run

    async def verification(self, run_id: str) -> VerificationRun | None:
        """One verification; a running one not heard of for long is reported abandoned."""
        run = await self._log.verification(run_id)
        return None if run is None else self._as_seen(run)

    async def verifications(self, *, limit: int) -> list[VerificationRun]:
        """The newest first."""
        return [self._as_seen(run) for run in await self._log.verifications(limit=limit)]

    def _as_seen(self, run: VerificationRun) -> VerificationRun:
        stale = (self._clock() - run.updated_at).total_seconds() > STALE_SECONDS
        if run.status == "running" and stale:
            return dataclasses.replace(run, status="abandoned")
        return run

    async def _new_run(self, kind: str, start: int, requested_by: str | None) -> VerificationRun:
        head = await self._log.tree_head()
        now = self._clock()
        run = VerificationRun(
            id=str(uuid.uuid4()),
            kind=kind,
            status="running",
            requested_by=requested_by,
            started_at=now,
            updated_at=now,
            from_size=start,
            to_size=head.size,
        )
        await self._log.save_verification(run)
        return run

    async def _walk(self, run: VerificationRun) -> VerificationRun:
        """Write the bundle from the run's start and hand it to the verifier; record the end."""
        current = run

        async def progress(checked: int) -> None:
            nonlocal current
            if checked % (PAGE * 20) == 0:  # a heartbeat every 20 000 entries
                current = dataclasses.replace(current, checked=checked, updated_at=self._clock())
                await self._log.save_verification(current)

        keys = self.public_keys()
        start = await start_at(self._log, run.from_size)
        lines = bundle_lines(
            self._log,
            origin=self.origin,
            keys=keys,
            start=start,
            end=run.to_size,
            progress=progress,
        )
        report = await self._verifier.verify(lines, keys=keys)
        ended = finished(current, report, self._clock())
        await self._log.save_verification(ended)
        return ended

    # ---- legal holds and the genesis (decision 0048) --------------------------------------

    async def genesis(self) -> GenesisPoint | None:
        """Where the log starts after a retention cut (None: at 0)."""
        return await self._log.genesis()

    async def holds(self) -> list[Hold]:
        """Every hold, lifted ones too."""
        return await self._log.holds()

    async def place_hold(self, reason: str, *, context: RequestContext) -> Hold:
        """Suspend retention until lifted; recorded in the chain in the same transaction."""
        if not context.actor:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "A hold names who placed it.")
        hold = Hold(
            id=f"hold-{uuid.uuid4().hex[:16]}",
            reason=reason,
            placed_by=context.actor,
            placed_at=self._clock(),
        )
        record = self._own_record(
            HoldPlaced(hold_id=hold.id, reason=reason), subject=f"hold/{hold.id}", context=context
        )
        await self._log.place_hold(hold, record=record)
        return hold

    async def lift_hold(self, hold_id: str, *, context: RequestContext) -> Hold:
        """Lift a standing hold (recorded); not_found for one not standing."""
        if not context.actor:
            raise ServiceError(ErrorCode.UNAUTHENTICATED, "A lift names who lifted it.")
        standing = [hold for hold in await self._log.holds() if hold.id == hold_id]
        if not standing or standing[0].lifted_at is not None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"No standing legal hold {hold_id}.")
        lifted = dataclasses.replace(standing[0], lifted_by=context.actor, lifted_at=self._clock())
        record = self._own_record(
            HoldLifted(hold_id=hold_id), subject=f"hold/{hold_id}", context=context
        )
        if not await self._log.lift_hold(lifted, record=record):
            raise ServiceError(ErrorCode.NOT_FOUND, f"No standing legal hold {hold_id}.")
        return lifted

    def _own_record(self, data: EventData, *, subject: str, context: RequestContext) -> EntryFields:
        """The entry of something audit itself did for a caller (the caller's seal vouched)."""
        event = event_envelope(data, service=SERVICE, subject=subject, context=context)
        return entry_fields(event, producer=SERVICE, received_at=self._clock())

    # ---- checkpoints and proofs (decision 0047) -------------------------------------------

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The keys checkpoints are signed with, by key id (none without a signer)."""
        return {} if self._signer is None else self._signer.public_keys()

    async def checkpoint(self) -> SignedCheckpoint:
        """A signed checkpoint of the log as it is now; the latest one if nothing was added.

        The state is read in one snapshot and signed outside any transaction, so a slow or
        unavailable signer (Vault) never holds up appends. Two replicas signing the same size
        keep the first; each checkpoint kept is published for witnesses.
        """
        if self._signer is None:
            raise ServiceError(ErrorCode.NOT_IMPLEMENTED, "No checkpoint key is configured.")
        head = await self._log.tree_head()
        latest = await self._log.latest_checkpoint()
        if latest is not None and await self._unchanged_since(latest.checkpoint.size, head.size):
            return latest
        checkpoint, message = new_checkpoint(self.origin, head, self._clock())
        key_id, signature = await self._signer.sign(message)
        kept = await self._log.add_checkpoint(signed(checkpoint, key_id, signature))
        if kept.signature == signature and self._published is not None:
            await self._published(kept)
        return kept

    async def _unchanged_since(self, checkpointed: int, size: int) -> bool:
        """Whether nothing but the record of that checkpoint was added since it.

        Each checkpoint's event is chained too; without this an idle log would be signed
        again every interval, for ever, one checkpoint per checkpoint.
        """
        if size <= checkpointed:
            return True
        if size > checkpointed + 1:
            return False
        newest = await self._log.entry(size)
        return newest is not None and newest.action == CheckpointSigned.audit_action

    async def checkpoints(self, *, after_size: int, limit: int) -> list[SignedCheckpoint]:
        """Checkpoints in increasing size."""
        return await self._log.checkpoints(after_size=after_size, limit=limit)

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The newest checkpoint, if any."""
        return await self._log.latest_checkpoint()

    async def _tree_size(self, tree_size: int | None) -> int:
        """The size a proof is asked for, the latest checkpoint's by default."""
        head = await self._log.tree_head()
        if tree_size is None:
            latest = await self._log.latest_checkpoint()
            tree_size = head.size if latest is None else latest.checkpoint.size
        check_tree_size(tree_size, head.size)
        return tree_size

    async def inclusion(self, sequence: int, *, tree_size: int | None = None) -> InclusionProof:
        """That entry ``sequence`` is in the tree of ``tree_size`` entries."""
        size = await self._tree_size(tree_size)
        if not 1 <= sequence <= size:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, f"sequence must be between 1 and tree_size ({size})."
            )
        entry = await self._log.entry(sequence)
        if entry is None:
            raise ServiceError(ErrorCode.NOT_FOUND, f"No audit entry {sequence}.")
        ranges = merkle.inclusion_ranges(sequence - 1, size)
        nodes = await self._log.tree_nodes(merkle.proof_nodes(ranges))
        return InclusionProof(entry=entry, tree_size=size, hashes=proof_hashes(ranges, nodes))

    async def consistency(self, first: int, *, second: int | None = None) -> ConsistencyProof:
        """That the tree of ``first`` entries is a prefix of the tree of ``second``."""
        size = await self._tree_size(second)
        if not 1 <= first <= size:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, f"first must be between 1 and second ({size})."
            )
        ranges = merkle.consistency_ranges(first, size)
        nodes = await self._log.tree_nodes(merkle.proof_nodes(ranges))
        return ConsistencyProof(first=first, second=size, hashes=proof_hashes(ranges, nodes))
