"""PostgreSQL adapters of the identity service (schema ``identity``)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import asyncpg

from hypersdk_identity.core.models import ApiKey, Session, ThrottleKind, ThrottleState, User
from hypersdk_identity.ports.outbound import (
    ApiKeyStore,
    SessionStore,
    ThrottleStore,
    TrustStore,
    UserStore,
)
from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_DEAD_MIGRATION, OUTBOX_MIGRATION

SCHEMA = "identity"
MIGRATIONS = [
    """
    CREATE TABLE users (
        username text PRIMARY KEY,
        source text NOT NULL CHECK (source IN ('local', 'pam')),
        password_hash bytea,
        created_at timestamptz NOT NULL,
        disabled boolean NOT NULL DEFAULT false
    );
    CREATE TABLE sessions (
        id uuid PRIMARY KEY,
        username text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        token_hash bytea NOT NULL UNIQUE,
        created_at timestamptz NOT NULL,
        last_seen_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        revoked boolean NOT NULL DEFAULT false
    );
    CREATE INDEX sessions_username ON sessions (username);
    """,
    # 2: login throttling shared by all replicas, API keys, sweeping of expired sessions.
    """
    CREATE TABLE login_throttle (
        kind text NOT NULL CHECK (kind IN ('username', 'address')),
        key text NOT NULL,
        failures integer NOT NULL CHECK (failures >= 0),
        window_started_at timestamptz,
        last_failure_at timestamptz,
        locked_until timestamptz,
        version bigint NOT NULL,
        PRIMARY KEY (kind, key)
    );
    CREATE INDEX login_throttle_locked_until ON login_throttle (locked_until)
        WHERE locked_until IS NOT NULL;
    CREATE TABLE api_keys (
        id uuid PRIMARY KEY,
        owner text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        name text NOT NULL,
        key_hash bytea NOT NULL UNIQUE,
        hint text NOT NULL,
        scopes text[] NOT NULL,
        created_at timestamptz NOT NULL,
        created_by text,
        expires_at timestamptz,
        revoked_at timestamptz,
        replaced_by uuid,
        last_used_at timestamptz
    );
    CREATE INDEX api_keys_owner ON api_keys (owner);
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    """,
    OUTBOX_MIGRATION,
    OUTBOX_DEAD_MIGRATION,
    # 5: the standing of a login (decision 0039): trusted pairs, refusals' Retry-After.
    """
    ALTER TABLE login_throttle ADD COLUMN refused_until timestamptz;
    CREATE TABLE login_trust (
        username text NOT NULL REFERENCES users (username) ON DELETE CASCADE,
        address text NOT NULL,
        trusted_until timestamptz NOT NULL,
        PRIMARY KEY (username, address)
    );
    CREATE INDEX login_trust_until ON login_trust (trusted_until);
    """,
    # 6: account generations (decision 0041). The last generation of every name ever created
    # stays after its user is deleted, so that an account created again under the name gets a
    # higher one; accounts that exist already are generation 1.
    """
    CREATE TABLE user_generations (
        username text PRIMARY KEY,
        generation bigint NOT NULL CHECK (generation >= 1)
    );
    ALTER TABLE users ADD COLUMN generation bigint NOT NULL DEFAULT 1 CHECK (generation >= 1);
    ALTER TABLE users ALTER COLUMN generation DROP DEFAULT;
    INSERT INTO user_generations (username, generation) SELECT username, 1 FROM users;
    """,
]
SESSION_COLUMNS = (
    "id::text AS id, username, token_hash, created_at, last_seen_at, expires_at, revoked"
)
THROTTLE_COLUMNS = (
    "kind, key, failures, window_started_at, last_failure_at, locked_until, refused_until, version"
)
API_KEY_COLUMNS = (
    "id::text AS id, owner, name, key_hash, hint, scopes, created_at, created_by, expires_at,"
    " revoked_at, replaced_by::text AS replaced_by, last_used_at"
)
LAST_USED_PRECISION_SECONDS = 60  # last_used_at is written at most once a minute per key


def _changed(status: str) -> bool:
    """Whether an INSERT/UPDATE/DELETE status string says a row was touched."""
    return not status.endswith(" 0")


class PostgresUserStore(UserStore):
    """Users in ``identity.users``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, user: User) -> User:
        """Insert with the name's next generation; a duplicate name raises ``UserExistsError``.

        One statement: the name's row in ``user_generations`` is incremented (row-locked until
        commit, so a concurrent creation of the same name waits and then counts from this one)
        and the user inserted with the result. A duplicate fails the statement, and the
        increment goes with it.
        """
        try:
            generation = await self._pool.fetchval(
                "WITH next AS ("
                " INSERT INTO identity.user_generations AS g (username, generation)"
                " VALUES ($1, 1) ON CONFLICT (username)"
                " DO UPDATE SET generation = g.generation + 1 RETURNING g.generation)"
                " INSERT INTO identity.users"
                " (username, source, password_hash, created_at, disabled, generation)"
                " SELECT $1, $2, $3, $4, $5, next.generation FROM next RETURNING generation",
                user.username,
                user.source,
                user.password_hash,
                user.created_at,
                user.disabled,
            )
        except asyncpg.UniqueViolationError as exc:
            raise UserStore.UserExistsError(user.username) from exc
        return dataclasses.replace(user, generation=generation)

    async def get(self, username: str) -> User | None:
        """Fetch one user."""
        row = await self._pool.fetchrow(
            "SELECT * FROM identity.users WHERE username = $1", username
        )
        return None if row is None else User(**dict(row))

    async def list(self) -> list[User]:
        """All users by name."""
        rows = await self._pool.fetch("SELECT * FROM identity.users ORDER BY username")
        return [User(**dict(row)) for row in rows]

    async def set_disabled(self, username: str, *, disabled: bool) -> User | None:
        """Set the flag; the user as now stored."""
        row = await self._pool.fetchrow(
            "UPDATE identity.users SET disabled = $2 WHERE username = $1 RETURNING *",
            username,
            disabled,
        )
        return None if row is None else User(**dict(row))

    async def delete(self, username: str) -> User | None:
        """Delete; sessions and API keys go with the user (ON DELETE CASCADE)."""
        row = await self._pool.fetchrow(
            "DELETE FROM identity.users WHERE username = $1 RETURNING *", username
        )
        return None if row is None else User(**dict(row))


class PostgresSessionStore(SessionStore):
    """Sessions in ``identity.sessions``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, session: Session) -> None:
        """Insert a session."""
        await self._pool.execute(
            "INSERT INTO identity.sessions"
            " (id, username, token_hash, created_at, last_seen_at, expires_at, revoked)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)",
            session.id,
            session.username,
            session.token_hash,
            session.created_at,
            session.last_seen_at,
            session.expires_at,
            session.revoked,
        )

    async def by_token_hash(self, token_hash: bytes) -> Session | None:
        """Look a session up by its token hash."""
        row = await self._pool.fetchrow(
            f"SELECT {SESSION_COLUMNS} FROM identity.sessions WHERE token_hash = $1",
            token_hash,
        )
        return None if row is None else Session(**dict(row))

    async def touch(self, session_id: str, at: datetime) -> None:
        """Move ``last_seen_at`` forward."""
        await self._pool.execute(
            "UPDATE identity.sessions SET last_seen_at = greatest(last_seen_at, $2) WHERE id = $1",
            session_id,
            at,
        )

    async def revoke(self, session_id: str) -> None:
        """Mark revoked."""
        await self._pool.execute(
            "UPDATE identity.sessions SET revoked = true WHERE id = $1", session_id
        )

    async def replace_token(
        self, session_id: str, *, old_hash: bytes, new_hash: bytes, at: datetime
    ) -> bool:
        """Swap the hash in one statement; a second refresh with the old token matches nothing."""
        status = await self._pool.execute(
            "UPDATE identity.sessions SET token_hash = $3,"
            " last_seen_at = greatest(last_seen_at, $4)"
            " WHERE id = $1 AND token_hash = $2 AND NOT revoked",
            session_id,
            old_hash,
            new_hash,
            at,
        )
        return _changed(status)

    async def list_for_user(self, username: str) -> list[Session]:
        """Sessions not revoked, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {SESSION_COLUMNS} FROM identity.sessions"
            " WHERE username = $1 AND NOT revoked ORDER BY created_at, id",
            username,
        )
        return [Session(**dict(row)) for row in rows]

    async def revoke_all_for_user(self, username: str) -> list[str]:
        """Revoke in one statement; the ids it revoked."""
        rows = await self._pool.fetch(
            "UPDATE identity.sessions SET revoked = true WHERE username = $1 AND NOT revoked"
            " RETURNING id::text AS id",
            username,
        )
        return [row["id"] for row in rows]

    async def delete_expired(self, *, now: datetime, idle_seconds: int) -> int:
        """Delete what can never work again."""
        status = await self._pool.execute(
            "DELETE FROM identity.sessions WHERE revoked OR expires_at <= $1"
            " OR last_seen_at <= $1::timestamptz - make_interval(secs => $2)",
            now,
            float(idle_seconds),
        )
        return int(status.split()[-1])


class PostgresThrottleStore(ThrottleStore):
    """Failed-login counters in ``identity.login_throttle``, swapped on ``version``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def get(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """One counter."""
        row = await self._pool.fetchrow(
            f"SELECT {THROTTLE_COLUMNS} FROM identity.login_throttle WHERE kind = $1 AND key = $2",
            kind,
            key,
        )
        return None if row is None else ThrottleState(**dict(row))

    async def save(self, state: ThrottleState) -> bool:
        """Insert (version 0) or update where the version still matches."""
        values = (
            state.kind,
            state.key,
            state.failures,
            state.window_started_at,
            state.last_failure_at,
            state.locked_until,
            state.refused_until,
        )
        if state.version == 0:
            status = await self._pool.execute(
                "INSERT INTO identity.login_throttle"
                f" ({THROTTLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, 1)"
                " ON CONFLICT (kind, key) DO NOTHING",
                *values,
            )
        else:
            status = await self._pool.execute(
                "UPDATE identity.login_throttle SET failures = $3, window_started_at = $4,"
                " last_failure_at = $5, locked_until = $6, refused_until = $7,"
                " version = version + 1 WHERE kind = $1 AND key = $2 AND version = $8",
                *values,
                state.version,
            )
        return _changed(status)

    async def delete(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """Delete and return."""
        row = await self._pool.fetchrow(
            "DELETE FROM identity.login_throttle WHERE kind = $1 AND key = $2"
            f" RETURNING {THROTTLE_COLUMNS}",
            kind,
            key,
        )
        return None if row is None else ThrottleState(**dict(row))

    async def sweep(self, *, now: datetime, stale_before: datetime) -> list[ThrottleState]:
        """Delete expired lockouts (each returned to exactly one replica) and stale counters."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "DELETE FROM identity.login_throttle"
                " WHERE locked_until IS NOT NULL AND locked_until <= $1"
                f" RETURNING {THROTTLE_COLUMNS}",
                now,
            )
            await conn.execute(
                "DELETE FROM identity.login_throttle WHERE locked_until IS NULL"
                " AND (last_failure_at IS NULL OR last_failure_at < $1)",
                stale_before,
            )
        return [ThrottleState(**dict(row)) for row in rows]


class PostgresTrustStore(TrustStore):
    """Trusted (user name, address) pairs in ``identity.login_trust``, shared by replicas.

    A row goes with its user (``ON DELETE CASCADE``); a user name keeps its ``keep`` addresses
    whose trust lasts longest, so the table holds at most users x ``keep`` rows.
    """

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def trusted(self, username: str, address: str, *, now: datetime) -> bool:
        """One primary-key lookup."""
        row = await self._pool.fetchrow(
            "SELECT 1 FROM identity.login_trust"
            " WHERE username = $1 AND address = $2 AND trusted_until > $3",
            username,
            address,
            now,
        )
        return row is not None

    async def trust(self, username: str, address: str, *, until: datetime, keep: int) -> None:
        """Upsert the pair, then drop the user name's addresses beyond the ``keep`` latest."""
        await self._pool.execute(
            "INSERT INTO identity.login_trust (username, address, trusted_until)"
            " VALUES ($1, $2, $3) ON CONFLICT (username, address)"
            " DO UPDATE SET trusted_until = EXCLUDED.trusted_until",
            username,
            address,
            until,
        )
        await self._pool.execute(
            "DELETE FROM identity.login_trust WHERE username = $1 AND address IN ("
            " SELECT address FROM identity.login_trust WHERE username = $1"
            " ORDER BY trusted_until DESC, address OFFSET $2)",
            username,
            keep,
        )

    async def forget(self, username: str, *, address: str | None = None) -> int:
        """Delete one pair or every pair of a user name."""
        if address is None:
            status = await self._pool.execute(
                "DELETE FROM identity.login_trust WHERE username = $1", username
            )
        else:
            status = await self._pool.execute(
                "DELETE FROM identity.login_trust WHERE username = $1 AND address = $2",
                username,
                address,
            )
        return int(status.split()[-1])

    async def sweep(self, *, now: datetime) -> int:
        """Delete ended pairs."""
        status = await self._pool.execute(
            "DELETE FROM identity.login_trust WHERE trusted_until <= $1", now
        )
        return int(status.split()[-1])


def _api_key(row: asyncpg.Record) -> ApiKey:
    fields = dict(row)
    fields["scopes"] = tuple(fields["scopes"])
    return ApiKey(**fields)


class PostgresApiKeyStore(ApiKeyStore):
    """API keys in ``identity.api_keys`` (hash of the key, never the key)."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, key: ApiKey) -> None:
        """Insert."""
        await self._insert(self._pool, key)

    @staticmethod
    async def _insert(conn: Database | asyncpg.Connection, key: ApiKey) -> None:
        await conn.execute(
            "INSERT INTO identity.api_keys (id, owner, name, key_hash, hint, scopes, created_at,"
            " created_by, expires_at, revoked_at, replaced_by, last_used_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            key.id,
            key.owner,
            key.name,
            key.key_hash,
            key.hint,
            list(key.scopes),
            key.created_at,
            key.created_by,
            key.expires_at,
            key.revoked_at,
            key.replaced_by,
            key.last_used_at,
        )

    async def get(self, key_id: str) -> ApiKey | None:
        """By id."""
        row = await self._pool.fetchrow(
            f"SELECT {API_KEY_COLUMNS} FROM identity.api_keys WHERE id = $1", key_id
        )
        return None if row is None else _api_key(row)

    async def by_hash(self, key_hash: bytes) -> ApiKey | None:
        """By the hash of the key (unique index)."""
        row = await self._pool.fetchrow(
            f"SELECT {API_KEY_COLUMNS} FROM identity.api_keys WHERE key_hash = $1", key_hash
        )
        return None if row is None else _api_key(row)

    async def list(self, *, owner: str | None, working_at: datetime) -> list[ApiKey]:
        """Keys not revoked at ``working_at``."""
        rows = await self._pool.fetch(
            f"SELECT {API_KEY_COLUMNS} FROM identity.api_keys"
            " WHERE ($1::text IS NULL OR owner = $1) AND (revoked_at IS NULL OR revoked_at > $2)"
            " ORDER BY created_at, id",
            owner,
            working_at,
        )
        return [_api_key(row) for row in rows]

    async def revoke(self, key_id: str, *, at: datetime) -> ApiKey | None:
        """End at ``at`` unless it ends sooner."""
        row = await self._pool.fetchrow(
            "UPDATE identity.api_keys SET revoked_at = $2"
            " WHERE id = $1 AND (revoked_at IS NULL OR revoked_at > $2)"
            f" RETURNING {API_KEY_COLUMNS}",
            key_id,
            at,
        )
        return None if row is None else _api_key(row)

    async def rotate(self, key_id: str, *, replacement: ApiKey, old_valid_until: datetime) -> bool:
        """Mark the old key replaced and insert the new one in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "UPDATE identity.api_keys SET revoked_at = $2, replaced_by = $3"
                " WHERE id = $1 AND revoked_at IS NULL AND replaced_by IS NULL",
                key_id,
                old_valid_until,
                replacement.id,
            )
            if not _changed(status):
                return False
            await self._insert(conn, replacement)
        return True

    async def touch(self, key_id: str, at: datetime) -> None:
        """Write ``last_used_at`` at most once a minute."""
        await self._pool.execute(
            "UPDATE identity.api_keys SET last_used_at = $2 WHERE id = $1"
            " AND (last_used_at IS NULL"
            " OR last_used_at < $2::timestamptz - make_interval(secs => $3))",
            key_id,
            at,
            float(LAST_USED_PRECISION_SECONDS),
        )
