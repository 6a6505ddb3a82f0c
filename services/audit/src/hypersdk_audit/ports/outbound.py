"""Outbound port of the audit service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from hypersdk_audit.core.chain import ChainedEntry, EntryFields
from hypersdk_audit.core.proofs import Node, TreeHead
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.core.query import EVERY_ENTRY, EntryFilter
from hypersdk_auditproof.checkpoint import SignedCheckpoint

if TYPE_CHECKING:
    from hypersdk_audit.core.retention import Hold
    from hypersdk_audit.core.verification import VerificationRun


@dataclass(frozen=True)
class GenesisPoint:
    """Where the log starts after a retention cut: the signed checkpoint of the size cut at.

    ``frontier`` is the compact range of the tree at that size (its perfect subtrees' roots,
    largest first): with it the remaining entries' leaves lead to every later root.
    """

    checkpoint: SignedCheckpoint
    frontier: tuple[bytes, ...]


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
    async def page(
        self, *, after_sequence: int, limit: int, where: EntryFilter = EVERY_ENTRY
    ) -> list[ChainedEntry]:
        """Entries after a sequence number that pass ``where``, in order."""

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

    @abstractmethod
    async def genesis(self) -> GenesisPoint | None:
        """The newest retention genesis (None for a log never cut)."""

    @abstractmethod
    async def holds(self) -> list[Hold]:
        """Every legal hold, lifted ones too, oldest first."""

    @abstractmethod
    async def place_hold(self, hold: Hold, *, record: EntryFields) -> None:
        """Keep a new hold and chain ``record`` (its audit entry), in one transaction."""

    @abstractmethod
    async def lift_hold(self, hold: Hold, *, record: EntryFields) -> bool:
        """Mark a standing hold lifted and chain ``record``, in one transaction.

        Lifted by ``hold.lifted_by`` at ``hold.lifted_at``; False if no such hold stands.
        """

    @abstractmethod
    async def save_verification(self, run: VerificationRun) -> None:
        """Record a verification, or its progress and end (a run that ended stays as it is)."""

    @abstractmethod
    async def verification(self, run_id: str) -> VerificationRun | None:
        """One verification."""

    @abstractmethod
    async def verifications(self, *, limit: int) -> list[VerificationRun]:
        """The newest verifications first."""

    @abstractmethod
    async def verified_checkpoint(self) -> int:
        """The newest checkpoint size a verification found valid (0 if none)."""


class RetentionStore(ABC):
    """What the retention job reads and does, as its own database role (decision 0048)."""

    @abstractmethod
    async def active_holds(self) -> list[Hold]:
        """Holds not lifted."""

    @abstractmethod
    async def size(self) -> int:
        """The newest entry's sequence (0 for an empty log)."""

    @abstractmethod
    async def genesis_size(self) -> int:
        """Where the log starts now (0 if never cut)."""

    @abstractmethod
    async def action_of(self, sequence: int) -> str | None:
        """The action of an entry still held (None if it is not)."""

    @abstractmethod
    async def last_before(self, cutoff: datetime) -> int:
        """The end of the longest prefix of entries all recorded before ``cutoff``."""

    @abstractmethod
    async def tree_head_at(self, size: int) -> TreeHead:
        """The tree's root and the chain's head at ``size`` (an entry still held)."""

    @abstractmethod
    async def cut(self, genesis: SignedCheckpoint, *, record: EntryFields, reason: str) -> int:
        """Cut up to ``genesis`` in one transaction; how many entries were deleted.

        Keep ``genesis`` (or the checkpoint already kept for its size, if it agrees), record it
        as the genesis, chain ``record``, delete entries 1 to its size.
        """
