"""Outbound port of the audit service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

from hypersdk_audit.core.chain import ChainedEntry, EntryFields
from hypersdk_audit.core.quarantine import QuarantinedEvent


class AuditLog(ABC):
    """An append-only, hash-chained log, and the quarantine of events it refused."""

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
