"""In-memory fake of the audit log, for unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, chain
from hypersdk_audit.ports.outbound import AuditLog


class InMemoryAuditLog(AuditLog):
    """Entries in a list."""

    def __init__(self) -> None:
        self.entries: list[ChainedEntry] = []

    async def append(self, fields: EntryFields) -> ChainedEntry | None:
        """Chain after the last entry."""
        if any(entry.event_id == fields.event_id for entry in self.entries):
            return None
        prev_hash = self.entries[-1].hash if self.entries else GENESIS_HASH
        entry = chain(fields, sequence=len(self.entries) + 1, prev_hash=prev_hash)
        self.entries.append(entry)
        return entry

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """One page."""
        return [e for e in self.entries if e.sequence > after_sequence][:limit]

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """All entries."""
        for entry in list(self.entries):
            yield entry
