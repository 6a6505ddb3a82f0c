"""PostgreSQL pools and forward-only migrations, one schema per service."""

from __future__ import annotations

import asyncpg

_LOCK_NAMESPACE = 0x485344  # "HSD": advisory lock key prefix for migrations.


async def create_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """A connection pool; every connection uses UTC."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=size, server_settings={"timezone": "UTC"}
    )
    assert pool is not None
    return pool


async def apply_migrations(dsn: str, *, schema: str, migrations: list[str]) -> int:
    """Apply the migrations of ``schema`` not applied yet, in order; return how many ran.

    Each migration runs in its own transaction under an advisory lock, so replicas starting
    together do not race. Migrations are append-only: never edit one that has shipped.
    """
    conn = await asyncpg.connect(dsn)
    applied = 0
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        async with conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_NAMESPACE, schema
            )
            done = {
                row["version"]
                for row in await conn.fetch(f'SELECT version FROM "{schema}".schema_migrations')
            }
            for version, sql in enumerate(migrations, start=1):
                if version in done:
                    continue
                await conn.execute(f'SET LOCAL search_path TO "{schema}"')
                await conn.execute(sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (version) VALUES ($1)', version
                )
                applied += 1
    finally:
        await conn.close()
    return applied
