"""Audit use cases: record an event, page through entries, verify the chain."""

from __future__ import annotations

import asyncio

from hypersdk_audit.core.chain import ChainedEntry, Verification, verify
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_contracts.envelope import CloudEvent


class AuditService:
    """The audit trail of the platform."""

    def __init__(self, *, log: AuditLog) -> None:
        self._log = log

    async def record(self, event: CloudEvent) -> ChainedEntry | None:
        """Append the entry an event stands for (once per event id)."""
        return await self._log.append(entry_fields(event))

    async def record_batch(self, events: list[CloudEvent]) -> list[ChainedEntry]:
        """Append the entries of events in order, all or none (each event id once).

        One event that breaks its contract makes the batch poison (PoisonMessageError); the
        consumer then records the events one by one.
        """
        return await self._log.append_batch([entry_fields(event) for event in events])

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """Entries in order."""
        return await self._log.page(after_sequence=after_sequence, limit=limit)

    async def verify(self) -> Verification:
        """Recompute the whole chain; the hashing, CPU work as long as the log, runs in a thread."""
        entries = [entry async for entry in self._log.walk()]
        return await asyncio.to_thread(verify, entries)
