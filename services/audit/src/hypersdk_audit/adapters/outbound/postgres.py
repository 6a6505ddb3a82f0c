"""PostgreSQL adapter of the audit log (schema ``audit``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, chain
from hypersdk_audit.ports.outbound import AuditLog

SCHEMA = "audit"
MIGRATIONS = [
    """
    CREATE TABLE entries (
        sequence bigint PRIMARY KEY,
        event_id text NOT NULL UNIQUE,
        timestamp timestamptz NOT NULL,
        "user" text,
        action text NOT NULL,
        resource text,
        result text NOT NULL,
        source_ip text,
        request_id text,
        prev_hash char(64) NOT NULL,
        hash char(64) NOT NULL
    );
    """,
]
_CHAIN_LOCK = 0x41554454  # "AUDT": serialises appends across audit replicas.
_COLUMNS = (
    'sequence, event_id, timestamp, "user", action, resource, result, source_ip, request_id,'
    " prev_hash, hash"
)


class PostgresAuditLog(AuditLog):
    """Entries in ``audit.entries``; appends are serialised by an advisory lock."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append(self, fields: EntryFields) -> ChainedEntry | None:
        """Chain after the current head in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
            if await conn.fetchval(
                "SELECT 1 FROM audit.entries WHERE event_id = $1", fields.event_id
            ):
                return None
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.entries ORDER BY sequence DESC LIMIT 1"
            )
            sequence = 1 if head is None else head["sequence"] + 1
            prev_hash = GENESIS_HASH if head is None else head["hash"]
            entry = chain(fields, sequence=sequence, prev_hash=prev_hash)
            await conn.execute(
                f"INSERT INTO audit.entries ({_COLUMNS})"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                entry.sequence,
                entry.event_id,
                entry.timestamp,
                entry.user,
                entry.action,
                entry.resource,
                entry.result,
                entry.source_ip,
                entry.request_id,
                entry.prev_hash,
                entry.hash,
            )
            return entry

    async def page(self, *, after_sequence: int, limit: int) -> list[ChainedEntry]:
        """One page."""
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM audit.entries WHERE sequence > $1 ORDER BY sequence LIMIT $2",
            after_sequence,
            limit,
        )
        return [_entry(row) for row in rows]

    async def walk(self) -> AsyncIterator[ChainedEntry]:
        """Stream in batches with a cursor."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            async for row in conn.cursor(
                f"SELECT {_COLUMNS} FROM audit.entries ORDER BY sequence", prefetch=1000
            ):
                yield _entry(row)


def _entry(row: Any) -> ChainedEntry:
    return ChainedEntry(**dict(row))
