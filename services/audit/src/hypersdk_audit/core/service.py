"""Audit use cases: attribute and record events, page entries and quarantine, verify."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_audit.core.attribution import Attribution, NotGenuineError
from hypersdk_audit.core.chain import ChainedEntry, EntryFields, Verification, verify
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
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import CheckpointSigned
from hypersdk_kit.bus import Received

Published = Callable[[SignedCheckpoint], Awaitable[None]]


def _now() -> datetime:
    return datetime.now(UTC)


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
    ) -> None:
        self._log = log
        self._attribution = attribution
        self._clock = clock
        self._signer = signer
        self.origin = origin
        self._published = published

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

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """Entries in order."""
        return await self._log.page(after_sequence=after_sequence, limit=limit)

    async def quarantine(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """Quarantined events in the order they arrived."""
        return await self._log.quarantined(after_number=after_number, limit=limit)

    async def verify(self) -> Verification:
        """Recompute the whole chain; the hashing, CPU work as long as the log, runs in a thread."""
        entries = [entry async for entry in self._log.walk()]
        return await asyncio.to_thread(verify, entries)

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
