"""Audit use cases: attribute and record events, page entries and quarantine, verify."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from hypersdk_audit.core.attribution import Attribution, NotGenuineError
from hypersdk_audit.core.chain import ChainedEntry, EntryFields, Verification, verify
from hypersdk_audit.core.quarantine import (
    SERVICE,
    QuarantinedEvent,
    quarantine_record,
    security_event,
)
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_audit.ports.outbound import AuditLog
from hypersdk_kit.bus import Received


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
    ) -> None:
        self._log = log
        self._attribution = attribution
        self._clock = clock

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
