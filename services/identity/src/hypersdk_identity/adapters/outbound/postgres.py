"""PostgreSQL adapters of the identity service (schema ``identity``)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from hypersdk_identity.core.models import Session, User
from hypersdk_identity.ports.outbound import SessionStore, UserStore

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
]


class PostgresUserStore(UserStore):
    """Users in ``identity.users``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(self, user: User) -> None:
        """Insert; a duplicate name raises ``UserExistsError``."""
        try:
            await self._pool.execute(
                "INSERT INTO identity.users (username, source, password_hash, created_at, disabled)"
                " VALUES ($1, $2, $3, $4, $5)",
                user.username,
                user.source,
                user.password_hash,
                user.created_at,
                user.disabled,
            )
        except asyncpg.UniqueViolationError as exc:
            raise UserStore.UserExistsError(user.username) from exc

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


class PostgresSessionStore(SessionStore):
    """Sessions in ``identity.sessions``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
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
            "SELECT id::text AS id, username, token_hash, created_at, last_seen_at, expires_at,"
            " revoked FROM identity.sessions WHERE token_hash = $1",
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
