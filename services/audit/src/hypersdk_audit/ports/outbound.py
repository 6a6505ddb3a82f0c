"""Outbound port of the audit service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence

from hypersdk_audit.core.chain import ChainedEntry, EntryFields
from hypersdk_audit.core.proofs import Node, TreeHead
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_auditproof.checkpoint import SignedCheckpoint


class AuditLog(ABC):
    """An append-only, hash-chained log with its Merkle tree; the quarantine of refused events.

    Appending an entry also stores every perfect subtree of the tree it completes (leaf index
    = sequence - 1, the leaf is the entry's canonical JSON), in the same transaction.
    """

    @abstractmethod
    async def append_batch(
        self, batch: Sequence[EntryFields], *, quarantine: Sequence[QuarantinedEvent] = ()
    ) -> list[ChainedEntry]:
        """Chain and store entries durably, in order, and keep ``quarantine``; all or none.

        An entry whose event id is already recorded (or earlier in the batch) is skipped, and
        so is a quarantine record whose id is already kept; the entries returned are the ones
        added.
        """

    async def append(self, fields: EntryFields) -> ChainedEntry | None:
        """Chain and store one entry; None if its event id is already recorded."""
        added = await self.append_batch([fields])
        return added[0] if added else None

    @abstractmethod
    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """Entries after a sequence number, in order."""

    @abstractmethod
    def walk(self) -> AsyncIterator[ChainedEntry]:
        """Every entry in sequence order."""

    @abstractmethod
    async def quarantined(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """Quarantined events after a number, in the order they were kept."""

    @abstractmethod
    async def entry(self, sequence: int) -> ChainedEntry | None:
        """One entry, or None."""

    @abstractmethod
    async def tree_head(self) -> TreeHead:
        """The size, root and newest entry's hash, as of one moment."""

    @abstractmethod
    async def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """The stored perfect subtrees asked for (those not stored are left out)."""

    @abstractmethod
    async def add_checkpoint(self, signed: SignedCheckpoint) -> SignedCheckpoint:
        """Keep a checkpoint; the one kept for its size (an earlier one wins)."""

    @abstractmethod
    async def checkpoints(self, *, after_size: int, limit: int) -> list[SignedCheckpoint]:
        """Checkpoints of sizes above ``after_size``, smallest first."""

    @abstractmethod
    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The checkpoint of the largest size, if any."""
