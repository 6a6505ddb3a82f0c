"""PostgreSQL adapter of the audit log (schema ``audit``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from hypersdk_audit.core.chain import GENESIS_HASH, ChainedEntry, EntryFields, chain
from hypersdk_audit.core.quarantine import QuarantinedEvent
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
    # Decisions 0029, 0030: the producing service (from its broker login) and audit's receive time;
    # NULL on entries recorded before, whose hashes do not cover them. The quarantine keeps
    # events refused as not genuine; they are never chained.
    """
    ALTER TABLE entries ADD COLUMN producer text, ADD COLUMN received_at timestamptz;
    CREATE TABLE quarantine (
        number bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        received_at timestamptz NOT NULL,
        event_id text NOT NULL,
        claimed_type text NOT NULL,
        claimed_source text NOT NULL,
        claimed_actor text,
        login text,
        producer text,
        reason text NOT NULL,
        envelope jsonb NOT NULL
    );
    """,
]
_CHAIN_LOCK = 0x41554454  # "AUDT": serialises appends across audit replicas.
_COPY_COLUMNS = (
    "sequence",
    "event_id",
    "timestamp",
    "user",
    "action",
    "resource",
    "result",
    "source_ip",
    "request_id",
    "producer",
    "received_at",
    "prev_hash",
    "hash",
)
_COLUMNS = ", ".join(f'"{column}"' if column == "user" else column for column in _COPY_COLUMNS)


class PostgresAuditLog(AuditLog):
    """Entries in ``audit.entries``; appends are serialised by an advisory lock.

    A batch costs one transaction: a lock, two reads and one COPY, however many entries.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def append_batch(
        self, batch: Sequence[EntryFields], *, quarantine: Sequence[QuarantinedEvent] = ()
    ) -> list[ChainedEntry]:
        """Chain after the current head and COPY the new rows, in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _CHAIN_LOCK)
            seen = {
                row["event_id"]
                for row in await conn.fetch(
                    "SELECT event_id FROM audit.entries WHERE event_id = ANY($1::text[])",
                    [fields.event_id for fields in batch],
                )
            }
            head = await conn.fetchrow(
                "SELECT sequence, hash FROM audit.entries ORDER BY sequence DESC LIMIT 1"
            )
            sequence = 0 if head is None else head["sequence"]
            prev_hash = GENESIS_HASH if head is None else head["hash"]
            added: list[ChainedEntry] = []
            for fields in batch:
                if fields.event_id in seen:
                    continue
                seen.add(fields.event_id)
                sequence += 1
                entry = chain(fields, sequence=sequence, prev_hash=prev_hash)
                prev_hash = entry.hash
                added.append(entry)
            if added:
                await conn.copy_records_to_table(
                    "entries",
                    schema_name=SCHEMA,
                    columns=_COPY_COLUMNS,
                    records=[tuple(getattr(entry, c) for c in _COPY_COLUMNS) for entry in added],
                )
            if quarantine:
                await conn.executemany(
                    f"INSERT INTO audit.quarantine ({_QUARANTINE_COLUMNS}) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb) "
                    "ON CONFLICT (id) DO NOTHING",
                    [_quarantine_row(record) for record in quarantine],
                )
            return added

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

    async def quarantined(self, *, after_number: int, limit: int) -> list[QuarantinedEvent]:
        """One page of ``audit.quarantine``."""
        rows = await self._pool.fetch(
            f"SELECT number, {_QUARANTINE_COLUMNS} FROM audit.quarantine WHERE number > $1 "
            "ORDER BY number LIMIT $2",
            after_number,
            limit,
        )
        return [
            QuarantinedEvent(**{**dict(row), "envelope": json.loads(row["envelope"])})
            for row in rows
        ]


_QUARANTINE_FIELDS = (
    "id",
    "received_at",
    "event_id",
    "claimed_type",
    "claimed_source",
    "claimed_actor",
    "login",
    "producer",
    "reason",
    "envelope",
)
_QUARANTINE_COLUMNS = ", ".join(_QUARANTINE_FIELDS)


def _quarantine_row(record: QuarantinedEvent) -> tuple[Any, ...]:
    return tuple(
        json.dumps(record.envelope) if name == "envelope" else getattr(record, name)
        for name in _QUARANTINE_FIELDS
    )


def _entry(row: Any) -> ChainedEntry:
    return ChainedEntry(**dict(row))
