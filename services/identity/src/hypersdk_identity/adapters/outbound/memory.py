"""In-memory fakes of the identity ports, for unit tests."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from datetime import datetime

from hypersdk_identity.core.models import Session, User
from hypersdk_identity.ports.outbound import PasswordHasher, SessionStore, UserStore


class InMemoryUserStore(UserStore):
    """Users in a dict."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    async def add(self, user: User) -> None:
        """Insert or refuse a duplicate."""
        if user.username in self.users:
            raise UserStore.UserExistsError(user.username)
        self.users[user.username] = user

    async def get(self, username: str) -> User | None:
        """Fetch."""
        return self.users.get(username)

    async def list(self) -> list[User]:
        """All, by name."""
        return [self.users[name] for name in sorted(self.users)]


class InMemorySessionStore(SessionStore):
    """Sessions in a dict."""

    def __init__(self) -> None:
        self.sessions: dict[str, Session] = {}

    async def add(self, session: Session) -> None:
        """Insert."""
        self.sessions[session.id] = session

    async def by_token_hash(self, token_hash: bytes) -> Session | None:
        """Scan for the hash."""
        return next((s for s in self.sessions.values() if s.token_hash == token_hash), None)

    async def touch(self, session_id: str, at: datetime) -> None:
        """Record activity."""
        session = self.sessions[session_id]
        self.sessions[session_id] = dataclasses.replace(
            session, last_seen_at=max(session.last_seen_at, at)
        )

    async def revoke(self, session_id: str) -> None:
        """Mark revoked."""
        self.sessions[session_id] = dataclasses.replace(self.sessions[session_id], revoked=True)


class InsecureFastHasher(PasswordHasher):
    """HMAC-SHA256 'hashing' so unit tests do not spend 240 ms per bcrypt call. Tests only."""

    async def hash(self, password: str) -> bytes:
        """Deterministic digest."""
        return hashlib.sha256(b"salt" + password.encode()).digest()

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Constant-time compare."""
        return hmac.compare_digest(await self.hash(password), password_hash)
