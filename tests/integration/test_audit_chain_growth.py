"""The audit chain's batch statements use their indexes however long the chain has grown.

asyncpg prepares every statement; PostgreSQL may settle a prepared statement on a generic plan
made while ``audit.entries`` was nearly empty (a sequential scan) and keep it as the chain grows.
Found by the benchmark: on a fresh database, the duplicate check of each batch scanned the whole
chain (16 ms per batch at 30,000 entries). The audit pool plans each execution afresh.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from hypersdk_audit.adapters.outbound.postgres import MIGRATIONS, SCHEMA, PostgresAuditLog
from hypersdk_audit.core.chain import EntryFields
from hypersdk_audit.inject import create_audit_pool
from hypersdk_kit.database import apply_migrations

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/{database}"
GROWN_TO = 30_000


@pytest.fixture
async def fresh_database() -> AsyncIterator[str]:
    name = f"audit_growth_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield ADMIN_DSN.format(database=name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _fields(count: int) -> list[EntryFields]:
    now = datetime.now(UTC)
    return [
        EntryFields(
            event_id=str(uuid.uuid4()),
            timestamp=now,
            user="admin",
            action="api.call",
            resource="GET /api/v1/jobs",
            result="success",
            source_ip="127.0.0.1",
            request_id=str(uuid.uuid4()),
            producer="gateway",
            received_at=now,
        )
        for _ in range(count)
    ]


async def _scans(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT seq_scan, coalesce(idx_scan, 0) AS idx_scan FROM pg_stat_user_tables "
            "WHERE schemaname = $1 AND relname = 'entries'",
            SCHEMA,
        )
        assert row is not None
        return int(row["seq_scan"]), int(row["idx_scan"])
    finally:
        await conn.close()


async def _flush_statistics(pool: asyncpg.Pool) -> None:
    """Make the pool's connection publish its table counters now (PostgreSQL 15+)."""
    await pool.execute("SELECT pg_stat_force_next_flush()")
    await pool.execute("SELECT 1")  # answered after the backend went idle once, and flushed


async def test_a_chain_grown_under_prepared_statements_is_never_scanned_whole(
    fresh_database: str,
) -> None:
    await apply_migrations(fresh_database, schema=SCHEMA, migrations=MIGRATIONS)
    pool = await create_audit_pool(fresh_database, size=1)
    log = PostgresAuditLog(pool)
    try:
        # Prepared and executed while the chain is short: enough runs to settle on a plan.
        for _ in range(12):
            await log.append_batch(_fields(30))

        # The chain grows under those statements (a bulk load, as hours of API calls would).
        filler = await log.append_batch(_fields(GROWN_TO))
        assert len(filler) == GROWN_TO
        await _flush_statistics(pool)
        seq_before, idx_before = await _scans(fresh_database)

        replayed = _fields(20)
        first = await log.append_batch(replayed)
        again = await log.append_batch(replayed[:10] + _fields(10))
        await _flush_statistics(pool)
        seq_after, idx_after = await _scans(fresh_database)
    finally:
        await pool.close()

    assert len(first) == 20
    assert [entry.sequence for entry in again] == [first[-1].sequence + n for n in range(1, 11)]
    assert seq_after == seq_before, "a batch scanned the whole chain"
    assert idx_after > idx_before
