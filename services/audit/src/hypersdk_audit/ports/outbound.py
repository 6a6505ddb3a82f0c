"""Outbound port of the audit service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence

from hypersdk_audit.core.chain import ChainedEntry, EntryFields


class AuditLog(ABC):
    """An append-only, hash-chained log."""

    @abstractmethod
    async def append_batch(self, batch: Sequence[EntryFields]) -> list[ChainedEntry]:
        """Chain and store entries durably, in order, in one step; all or none.

        An entry whose event id is already recorded (or earlier in the batch) is skipped; the
        entries returned are the ones added.
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
