"""In-memory fake of the audit log, for unit tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, chain
from hypersdk_audit.core.quarantine import QuarantinedEvent
from hypersdk_audit.ports.outbound import AuditLog


class InMemoryAuditLog(AuditLog):
    """Entries and quarantined events in lists."""

    def __init__(self) -> None:
        self.entries: list[ChainedEntry] = []
        self.quarantine: list[QuarantinedEvent] = []

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
            entry = chain(fields, sequence=len(self.entries) + 1, prev_hash=prev_hash)
            self.entries.append(entry)
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
