"""PostgreSQL pools and forward-only migrations, one schema per service."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

_LOCK_NAMESPACE = 0x485344  # "HSD": advisory lock key prefix for migrations.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
MAX_IDENTIFIER_LENGTH = 63  # PostgreSQL's NAMEDATALEN - 1
IDLE_IN_TRANSACTION_TIMEOUT_SECONDS = 15
"""How long a service's session may sit idle inside a transaction before PostgreSQL ends it."""


def is_plain_identifier(name: str, *, max_length: int = MAX_IDENTIFIER_LENGTH) -> bool:
    """Whether ``name`` is a plain lower-case SQL identifier, safe to interpolate into SQL.

    Role and schema names are interpolated (quoted) into statements that take no parameters
    (CREATE ROLE, SET ROLE, CREATE SCHEMA, the outbox's table names): only these pass.
    """
    return len(name) <= max_length and _IDENTIFIER.fullmatch(name) is not None


async def create_pool(dsn: str, *, size: int, custom_plans: bool = False) -> asyncpg.Pool:
    """A connection pool; every connection uses UTC.

    ``custom_plans`` plans every execution of a prepared statement with its parameters and the
    table as it is now. asyncpg prepares every query, and PostgreSQL may settle on a generic plan
    after five executions: one settled while a table was small (a sequential scan) is kept as
    the table grows, until something invalidates it. A service whose hot table starts empty and
    grows fast (the audit chain) asks for custom plans; each costs a planning of the query.
    """
    settings = {"timezone": "UTC"}
    if custom_plans:
        settings["plan_cache_mode"] = "force_custom_plan"
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=size, server_settings=settings)
    assert pool is not None
    return pool


@dataclass(frozen=True)
class ServiceRole:
    """The PostgreSQL login role a service connects as; it owns the service's schema only."""

    name: str
    password: str = field(repr=False)

    @classmethod
    def of_dsn(cls, dsn: str) -> ServiceRole:
        """The user and password of a ``postgresql://user:password@host/db`` DSN."""
        parts = urlsplit(dsn)
        name = unquote(parts.username or "")
        if not is_plain_identifier(name):
            raise ValueError("the database URL's user must be a lower-case SQL identifier")
        if not parts.password:
            raise ValueError("the database URL must carry the role's password")
        return cls(name=name, password=unquote(parts.password))


def scram_verifier(password: str, *, iterations: int = 4096) -> str:
    """PostgreSQL's SCRAM-SHA-256 verifier of ``password`` (what ``pg_authid`` stores).

    Handing PostgreSQL the verifier rather than the password keeps the password out of its
    statement logs. ASCII passwords only (SASLprep leaves those unchanged).
    """
    if not password.isascii():
        raise ValueError("role passwords must be ASCII")
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", "sha256").digest()).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


async def _provision_role(
    conn: asyncpg.Connection,
    *,
    schema: str,
    role: ServiceRole,
    owns_schema: bool = True,
    login: bool = True,
) -> None:
    """Create or update ``role``; with ``owns_schema``, the owner of ``schema`` and all in it.

    The role can log in (unless ``login`` is false: a schema's owner that nobody logs in as)
    and nothing more: no superuser, no role or database creation, no rights on other schemas
    (each is owned by its own service's role, with no grants), no CREATE on ``public``. Runs on
    an administrator's connection.
    """
    if login:
        verifier = scram_verifier(role.password)
        attributes = f"LOGIN PASSWORD '{verifier}'"
    else:
        attributes = "NOLOGIN PASSWORD NULL"
    attributes = (
        f"{attributes} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"
    )
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role.name)
    await conn.execute(f'{"ALTER" if exists else "CREATE"} ROLE "{role.name}" {attributes}')
    # A process that hangs (stopped, or stuck outside PostgreSQL) inside a transaction would
    # hold its row and advisory locks for ever, and whoever must take over waits behind them
    # (the exporter's sweeper ending a hung worker's job): PostgreSQL ends such a session.
    # No service keeps a transaction idle for long; the outbox relay's wait for confirms is
    # bounded well below this.
    await conn.execute(
        f'ALTER ROLE "{role.name}" SET idle_in_transaction_session_timeout = '
        f"'{IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s'"
    )
    database = await conn.fetchval("SELECT current_database()")
    await conn.execute(f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC')
    if login:
        await conn.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role.name}"')
    await conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
    if not owns_schema:
        return
    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION "{role.name}"')
    await conn.execute(f'ALTER SCHEMA "{schema}" OWNER TO "{role.name}"')
    # Objects an earlier migration created as another role (the administrator, or the service's
    # login before its schema had an owner of its own) pass to the owner (a sequence owned by a
    # column moves with its table; functions too).
    rows = await conn.fetch(
        """
        SELECT c.relname, c.relkind FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
          AND pg_get_userbyid(c.relowner) <> $2
          AND NOT EXISTS (
            SELECT 1 FROM pg_depend d
            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
          )
        """,
        schema,
        role.name,
    )
    kinds = {"v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE", "S": "SEQUENCE"}
    for row in rows:
        kind = kinds.get(row["relkind"], "TABLE")
        await conn.execute(f'ALTER {kind} "{schema}"."{row["relname"]}" OWNER TO "{role.name}"')
    functions = await conn.fetch(
        "SELECT p.oid::regprocedure::text AS signature FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = $1 AND pg_get_userbyid(p.proowner) <> $2",
        schema,
        role.name,
    )
    for function in functions:
        await conn.execute(f'ALTER FUNCTION {function["signature"]} OWNER TO "{role.name}"')


@dataclass(frozen=True)
class SchemaAccess:
    """A schema owned by a role nobody logs in as, reached by login roles through grants only.

    A service whose login must not be able to change what it wrote (the audit log: INSERT and
    SELECT, never UPDATE or DELETE) cannot own its tables, since an owner may do anything to
    them. Its schema is then owned by ``<login>_owner`` (NOLOGIN); the migrations run as that
    owner; afterwards each template of ``grants`` runs as the owner, ``{role}`` replaced by the
    quoted name of the login role it is keyed by (``"service"`` is the service's own login;
    other keys name ``others``, extra login roles such as a retention job's). Grants are
    re-applied on every migrate, so they follow the tables the migrations create.
    """

    grants: Mapping[str, str]
    others: Mapping[str, ServiceRole] = field(default_factory=dict)


def owner_role_of(login: ServiceRole) -> ServiceRole:
    """The NOLOGIN owner of a schema whose service login holds grants only (SchemaAccess)."""
    name = f"{login.name}_owner"
    if not is_plain_identifier(name):
        raise ValueError(f"the owner role of {login.name!r} would not be a plain identifier")
    return ServiceRole(name=name, password="")


async def apply_migrations(
    dsn: str,
    *,
    schema: str,
    migrations: list[str],
    owner: ServiceRole | None = None,
    access: SchemaAccess | None = None,
) -> int:
    """Apply the migrations of ``schema`` not applied yet, in order; return how many ran.

    With ``owner``, ``dsn`` is an administrator's connection: the service's role is created
    (or its password and attributes reset) first, owns the schema, and the migrations run as
    that role, so everything they create is the role's. With ``access`` too, the schema is
    owned by a NOLOGIN role of its own instead, the migrations run as it, and the service's
    role (and ``access.others``) get only ``access.grants``. Without ``owner``, ``dsn`` is the
    service's own connection, whose role must already own the schema (or may create it).

    All pending migrations run in one transaction under an advisory lock, so replicas starting
    together do not race. Migrations are append-only: never edit one that has shipped.
    """
    if not is_plain_identifier(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    if access is not None and owner is None:
        raise ValueError("grants need the administrator's connection and the service's role")
    conn = await asyncpg.connect(dsn)
    applied = 0
    try:
        if owner is not None:
            schema_owner = owner if access is None else owner_role_of(owner)
            await _provision_role(conn, schema=schema, role=schema_owner, login=access is None)
            if access is not None:
                for login in (owner, *access.others.values()):
                    await _provision_role(conn, schema=schema, role=login, owns_schema=False)
            await conn.execute(f'SET ROLE "{schema_owner.name}"')
        elif not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema):
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
            if owner is not None and access is not None:
                await _grant(conn, schema, {"service": owner, **access.others}, access.grants)
    finally:
        await conn.close()
    return applied


async def _grant(
    conn: asyncpg.Connection,
    schema: str,
    roles: Mapping[str, ServiceRole],
    grants: Mapping[str, str],
) -> None:
    """Give each login role exactly its grants: whatever it held in ``schema`` is revoked first."""
    await conn.execute(f'SET LOCAL search_path TO "{schema}"')
    for key, role in roles.items():
        quoted = f'"{role.name}"'
        await conn.execute(
            f'REVOKE ALL ON ALL TABLES IN SCHEMA "{schema}" FROM {quoted};'
            f'REVOKE ALL ON ALL SEQUENCES IN SCHEMA "{schema}" FROM {quoted};'
            f'REVOKE ALL ON SCHEMA "{schema}" FROM {quoted};'
        )
        template = grants.get(key)
        if template is not None:
            await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {quoted};')
            await conn.execute(template.format(role=quoted))


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
