"""In-memory fake of the audit log, for unit tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterable, Sequence

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, link
from hypersdk_audit.core.proofs import Node, TreeHead, root_at
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_auditproof.merkle import TreeBuilder


class InMemoryAuditLog(AuditLog):
    """Entries, tree nodes, checkpoints and quarantined events in lists and dicts."""

    def __init__(self) -> None:
        self.entries: list[ChainedEntry] = []
        self.quarantine: list[QuarantinedEvent] = []
        self.nodes: dict[Node, bytes] = {}
        self.kept: dict[int, SignedCheckpoint] = {}
        self._tree = TreeBuilder()

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
            prev_hash = self.entries[-1].hash if self.entries else GENESIS_HASH
            entry, leaf = link(fields, sequence=len(self.entries) + 1, prev_hash=prev_hash)
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

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """One page."""
        return [e for e in self.entries if e.sequence > after_sequence][:limit]

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """All entries."""
        for entry in list(self.entries):
            yield entry

    async def quarantined(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """One page of the quarantine."""
        return [r for r in self.quarantine if r.number > after_number][:limit]

    async def entry(self, sequence: int) -> ChainedEntry | None:
        """One entry."""
        return self.entries[sequence - 1] if 1 <= sequence <= len(self.entries) else None

    async def tree_head(self) -> TreeHead:
        """As it stands."""
        size = len(self.entries)
        head = self.entries[-1].hash if self.entries else GENESIS_HASH
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
