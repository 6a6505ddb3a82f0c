"""Outbound port of the audit service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from hypersdk_audit.core.chain import ChainedEntry, EntryFields


class AuditLog(ABC):
    """An append-only, hash-chained log."""

    @abstractmethod
    async def append(self, fields: EntryFields) -> ChainedEntry | None:
        """Chain and store an entry durably; None if its event id is already recorded."""

    @abstractmethod
    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """Entries after a sequence number, in order."""

    @abstractmethod
    def walk(self) -> AsyncIterator[ChainedEntry]:
        """Every entry in sequence order."""
