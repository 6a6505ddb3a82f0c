"""In-memory fake of the audit log, for unit tests."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, link
from hypersdk_audit.core.proofs import Node, TreeHead, root_at, root_nodes
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.core.query import EVERY_ENTRY, EntryFilter
from hypersdk_audit.core.retention import Hold
from hypersdk_audit.core.verification import VerificationRun
from hypersdk_audit.ports.outbound import AuditLog, GenesisPoint, RetentionStore
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_auditproof.merkle import TreeBuilder


class InMemoryAuditLog(AuditLog):
    """Entries, tree nodes, checkpoints and quarantined events in lists and dicts."""

    def __init__(self) -> None:
        self.entries: list[ChainedEntry] = []
        self.quarantine: list[QuarantinedEvent] = []
        self.nodes: dict[Node, bytes] = {}
        self.kept: dict[int, SignedCheckpoint] = {}
        self.genesis_sizes: list[int] = []
        self.hold_list: list[Hold] = []
        self.runs: dict[str, VerificationRun] = {}
        self.cut_before = 0
        """Entries 1 to this one were cut (the newest genesis)."""
        self._tree = TreeBuilder()

    @property
    def size(self) -> int:
        """The head's sequence."""
        return self.cut_before + len(self.entries)

    async def append_batch(
        self, batch: Sequence[EntryFields], *, quarantine: Sequence[QuarantinedEvent] = ()
    ) -> list[ChainedEntry]:
        """Chain after the last entry, skipping event ids already recorded."""
        seen = {entry.event_id for entry in self.entries}
        added: list[ChainedEntry] = []
        for fields in batch:
            if fields.event_id in seen:
                continue
            seen.add(fields.event_id)
            prev_hash = self.entries[-1].hash if self.entries else self._start_hash()
            entry, leaf = link(fields, sequence=self.size + 1, prev_hash=prev_hash)
            self.entries.append(entry)
            for level, index, digest in self._tree.append(leaf):
                self.nodes[(level, index)] = digest
            added.append(entry)
        kept = {record.id for record in self.quarantine}
        for record in quarantine:
            if record.id not in kept:
                kept.add(record.id)
                number = len(self.quarantine) + 1
                self.quarantine.append(dataclasses.replace(record, number=number))
        return added

    async def page(
        self, *, after_sequence: int, limit: int, where: EntryFilter = EVERY_ENTRY
    ) -> list[ChainedEntry]:
        """One page of the entries that pass the filters."""
        found = (e for e in self.entries if e.sequence > after_sequence and where.matches(e))
        return list(itertools.islice(found, limit))

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """All entries."""
        for entry in list(self.entries):
            yield entry

    async def quarantined(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """One page of the quarantine."""
        return [r for r in self.quarantine if r.number > after_number][:limit]

    async def entry(self, sequence: int) -> ChainedEntry | None:
        """One entry."""
        index = sequence - self.cut_before - 1
        return self.entries[index] if 0 <= index < len(self.entries) else None

    def _start_hash(self) -> str:
        return self.kept[self.cut_before].checkpoint.head if self.cut_before else GENESIS_HASH

    async def tree_head(self) -> TreeHead:
        """As it stands."""
        size = self.size
        head = self.entries[-1].hash if self.entries else self._start_hash()
        return TreeHead(size=size, root=root_at(size, self.nodes), head=head)

    async def tree_nodes(self, nodes: Iterable[Node]) -> dict[Node, bytes]:
        """The stored ones."""
        return {node: self.nodes[node] for node in nodes if node in self.nodes}

    async def add_checkpoint(self, signed: SignedCheckpoint) -> SignedCheckpoint:
        """The first one of a size stays."""
        return self.kept.setdefault(signed.checkpoint.size, signed)

    async def checkpoints(self, *, after_size: int, limit: int) -> list[SignedCheckpoint]:
        """Smallest first."""
        return [self.kept[size] for size in sorted(self.kept) if size > after_size][:limit]

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The largest."""
        return self.kept[max(self.kept)] if self.kept else None

    async def genesis(self) -> GenesisPoint | None:
        """The newest genesis."""
        if not self.genesis_sizes:
            return None
        size = self.genesis_sizes[-1]
        wanted = sorted(root_nodes(size), key=lambda node: -node[0])
        return GenesisPoint(
            checkpoint=self.kept[size], frontier=tuple(self.nodes[node] for node in wanted)
        )

    async def holds(self) -> list[Hold]:
        """Oldest first."""
        return list(self.hold_list)

    async def place_hold(self, hold: Hold, *, record: EntryFields) -> None:
        """Kept, and its entry chained."""
        if any(kept.id == hold.id for kept in self.hold_list):
            raise ValueError(f"hold {hold.id} exists")
        self.hold_list.append(hold)
        await self.append_batch([record])

    async def lift_hold(self, hold: Hold, *, record: EntryFields) -> bool:
        """Once."""
        for index, kept in enumerate(self.hold_list):
            if kept.id == hold.id and kept.lifted_at is None:
                self.hold_list[index] = dataclasses.replace(
                    kept, lifted_by=hold.lifted_by, lifted_at=hold.lifted_at
                )
                await self.append_batch([record])
                return True
        return False

    async def save_verification(self, run: VerificationRun) -> None:
        """A run that ended stays as it is."""
        kept = self.runs.get(run.id)
        if kept is None or kept.status == "running":
            self.runs[run.id] = run

    async def verification(self, run_id: str) -> VerificationRun | None:
        """One."""
        return self.runs.get(run_id)

    async def verifications(self, *, limit: int) -> list[VerificationRun]:
        """Newest first."""
        return sorted(self.runs.values(), key=lambda run: run.started_at, reverse=True)[:limit]

    async def verified_checkpoint(self) -> int:
        """The newest valid."""
        sizes = [run.latest_checkpoint or 0 for run in self.runs.values() if run.valid]
        return max(sizes, default=0)


class InMemoryRetentionStore(RetentionStore):
    """The retention job's view of an :class:`InMemoryAuditLog`, with the database's rules."""

    def __init__(self, log: InMemoryAuditLog) -> None:
        self.log = log

    async def active_holds(self) -> list[Hold]:
        """Not lifted."""
        return [hold for hold in self.log.hold_list if hold.lifted_at is None]

    async def size(self) -> int:
        """The head's sequence."""
        return self.log.size

    async def genesis_size(self) -> int:
        """Where it starts."""
        return self.log.cut_before

    async def action_of(self, sequence: int) -> str | None:
        """Of a held entry."""
        entry = await self.log.entry(sequence)
        return None if entry is None else entry.action

    async def last_before(self, cutoff: datetime) -> int:
        """Up to the first entry received at or after ``cutoff``."""
        for entry in self.log.entries:
            if (entry.received_at or entry.timestamp) >= cutoff:
                return entry.sequence - 1
        return self.log.size

    async def tree_head_at(self, size: int) -> TreeHead:
        """From the stored nodes."""
        entry = await self.log.entry(size)
        if entry is None:
            raise RuntimeError(f"no audit entry {size} to seal a genesis at")
        return TreeHead(size=size, root=root_at(size, self.log.nodes), head=entry.hash)

    async def cut(self, genesis: SignedCheckpoint, *, record: EntryFields, reason: str) -> int:
        """What the database allows: a sealed prefix, no hold."""
        size = genesis.checkpoint.size
        if await self.active_holds():
            raise PermissionError("a legal hold suspends cutting audit entries")
        kept = self.log.kept.setdefault(size, genesis)
        if (kept.checkpoint.root, kept.checkpoint.head) != (
            genesis.checkpoint.root,
            genesis.checkpoint.head,
        ):
            raise RuntimeError(f"the checkpoint kept for size {size} disagrees with the tree")
        await self.log.append_batch([record])
        before = len(self.log.entries)
        self.log.entries = [entry for entry in self.log.entries if entry.sequence > size]
        self.log.cut_before = size
        self.log.genesis_sizes.append(size)
        return before - len(self.log.entries)
