"""A service's PostgreSQL role, as the migration step provisions it, on a database of its own."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from hypersdk_kit.database import (
    IDLE_IN_TRANSACTION_TIMEOUT_SECONDS,
    ServiceRole,
    apply_migrations,
)

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/{database}"


@pytest.fixture
async def provisioned() -> AsyncIterator[tuple[str, ServiceRole]]:
    """A fresh database whose schema ``jobsdemo`` is owned by a freshly provisioned role."""
    name = f"roles_{uuid.uuid4().hex[:8]}"
    role = ServiceRole(name=f"{name}_svc", password=secrets.token_urlsafe(24))
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        await apply_migrations(
            ADMIN_DSN.format(database=name),
            schema="jobsdemo",
            migrations=["CREATE TABLE jobs (id int PRIMARY KEY, status text NOT NULL)"],
            owner=role,
        )
        yield f"postgresql://{role.name}:{role.password}@127.0.0.1:5432/{name}", role
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'DROP ROLE IF EXISTS "{role.name}"')
        await admin.close()


async def test_a_session_hung_inside_a_transaction_loses_its_locks(
    provisioned: tuple[str, ServiceRole],
) -> None:
    """A worker stopped between its UPDATE and its COMMIT no longer blocks the row for ever."""
    dsn, _ = provisioned
    hung = await asyncpg.connect(dsn)
    sweeper = await asyncpg.connect(dsn)
    try:
        assert await hung.fetchval("SHOW idle_in_transaction_session_timeout") == (
            f"{IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s"
        )
        await sweeper.execute("INSERT INTO jobsdemo.jobs VALUES (1, 'running')")
        transaction = hung.transaction()
        await transaction.start()
        await hung.execute("UPDATE jobsdemo.jobs SET status = 'running' WHERE id = 1")
        # ... and the worker hangs here, its transaction open and the row locked.
        started = time.monotonic()
        await asyncio.wait_for(
            sweeper.execute("UPDATE jobsdemo.jobs SET status = 'failed' WHERE id = 1"),
            timeout=IDLE_IN_TRANSACTION_TIMEOUT_SECONDS + 15,
        )
        waited = time.monotonic() - started
        assert await sweeper.fetchval("SELECT status FROM jobsdemo.jobs WHERE id = 1") == "failed"
        assert waited >= IDLE_IN_TRANSACTION_TIMEOUT_SECONDS - 1
    finally:
        await sweeper.close()
        hung.terminate()
