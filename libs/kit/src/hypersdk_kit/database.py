"""PostgreSQL pools and forward-only migrations, one schema per service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

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


class Database:
    """A pool whose queries join the transaction open in the current task, if any.

    Stores take a ``Database`` instead of a bare pool, so that a unit of work
    (``hypersdk_kit.outbox``) can run several stores' writes and its outbox rows in one
    transaction without passing a connection through every port.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self._current: ContextVar[asyncpg.Connection | None] = ContextVar(
            f"hypersdk_database_{id(self)}", default=None
        )

    @property
    def in_transaction(self) -> bool:
        """Whether the current task has a transaction open on this database."""
        return self._current.get() is not None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """Open a transaction for the current task, or join the one it has open."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        async with self.pool.acquire() as conn, conn.transaction():
            token = self._current.set(conn)
            try:
                yield conn
            finally:
                self._current.reset(token)

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """The current transaction's connection, or one from the pool for the block."""
        current = self._current.get()
        if current is not None:
            yield current
            return
        async with self.pool.acquire() as conn:
            yield conn

    def _executor(self) -> asyncpg.Pool | asyncpg.Connection:
        current = self._current.get()
        return self.pool if current is None else current

    async def execute(self, query: str, *args: Any) -> str:
        """Run a statement; its status line."""
        status: str = await self._executor().execute(query, *args)
        return status

    async def executemany(self, query: str, args: Iterable[Sequence[Any]]) -> None:
        """Run a statement once per argument tuple."""
        await self._executor().executemany(query, args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """All rows."""
        rows: list[asyncpg.Record] = await self._executor().fetch(query, *args)
        return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        """The first row, if any."""
        row: asyncpg.Record | None = await self._executor().fetchrow(query, *args)
        return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        """The first column of the first row."""
        return await self._executor().fetchval(query, *args)
