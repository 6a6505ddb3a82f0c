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
    SchemaAccess,
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


async def test_a_schema_its_login_owned_passes_to_an_owner_of_its_own() -> None:
    """Upgrading audit (decision 0048): the login that owned everything keeps only its grants.

    The old state is made the old way (the login owns the schema); migrating again with
    SchemaAccess moves every table, sequence and function to the NOLOGIN owner, re-grants, and
    the login can still append and read what it wrote before, but no longer change it.
    """
    name = f"roles_{uuid.uuid4().hex[:8]}"
    role = ServiceRole(name=f"{name}_svc", password=secrets.token_urlsafe(24))
    other = ServiceRole(name=f"{name}_other", password=secrets.token_urlsafe(24))
    migrations = [
        "CREATE TABLE log (id bigserial PRIMARY KEY, line text NOT NULL);"
        "CREATE FUNCTION shout(t text) RETURNS text LANGUAGE sql AS $$ SELECT upper(t) $$;"
    ]
    access = SchemaAccess(
        grants={
            "service": "GRANT SELECT, INSERT ON log TO {role};"
            "GRANT USAGE ON ALL SEQUENCES IN SCHEMA logdemo TO {role};",
            "other": "GRANT SELECT ON log TO {role};",
        },
        others={"other": other},
    )
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    dsn = f"postgresql://{role.name}:{role.password}@127.0.0.1:5432/{name}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        database = ADMIN_DSN.format(database=name)
        await apply_migrations(database, schema="logdemo", migrations=migrations, owner=role)
        before = await asyncpg.connect(dsn)
        await before.execute("INSERT INTO logdemo.log (line) VALUES ('before')")
        await before.close()

        assert (
            await apply_migrations(
                database, schema="logdemo", migrations=migrations, owner=role, access=access
            )
            == 0
        )

        db = await asyncpg.connect(database)
        owners = await db.fetch(
            "SELECT pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'logdemo' AND c.relkind IN ('r', 'S')"
        )
        function_owner = await db.fetchval(
            "SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE proname = 'shout'"
        )
        await db.close()
        assert {row["owner"] for row in owners} == {f"{role.name}_owner"}
        assert function_owner == f"{role.name}_owner"
        service = await asyncpg.connect(dsn)
        try:
            await service.execute("INSERT INTO logdemo.log (line) VALUES ('after')")
            lines = await service.fetch("SELECT line FROM logdemo.log ORDER BY id")
            assert [row["line"] for row in lines] == ["before", "after"]
            for statement in (
                "UPDATE logdemo.log SET line = 'x'",
                "DELETE FROM logdemo.log",
                "DROP TABLE logdemo.log",
                "CREATE TABLE logdemo.more (id int)",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await service.execute(statement)
        finally:
            await service.close()
        reader = await asyncpg.connect(
            f"postgresql://{other.name}:{other.password}@127.0.0.1:5432/{name}"
        )
        try:
            assert await reader.fetchval("SELECT count(*) FROM logdemo.log") == 2
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await reader.execute("INSERT INTO logdemo.log (line) VALUES ('no')")
        finally:
            await reader.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for dropped in (role.name, other.name, f"{role.name}_owner"):
            await admin.execute(f'DROP ROLE IF EXISTS "{dropped}"')
        await admin.close()
