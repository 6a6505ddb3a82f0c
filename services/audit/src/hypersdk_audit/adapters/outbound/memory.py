"""In-memory fake of the audit log, for unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, chain
from hypersdk_audit.ports.outbound import AuditLog


class InMemoryAuditLog(AuditLog):
    """Entries in a list."""

    def __init__(self) -> None:
        self.entries: list[ChainedEntry] = []

    async def append_batch(self, batch: Sequence[EntryFields]) -> list[ChainedEntry]:
        """Chain after the last entry, skipping event ids already recorded."""
        seen = {entry.event_id for entry in self.entries}
        added: list[ChainedEntry] = []
        for fields in batch:
            if fields.event_id in seen:
                continue
            seen.add(fields.event_id)
            prev_hash = self.entries[-1].hash if self.entries else GENESIS_HASH
            entry = chain(fields, sequence=len(self.entries) + 1, prev_hash=prev_hash)
            self.entries.append(entry)
            added.append(entry)
        return added

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """One page."""
        return [e for e in self.entries if e.sequence > after_sequence][:limit]

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """All entries."""
        for entry in list(self.entries):
            yield entry
