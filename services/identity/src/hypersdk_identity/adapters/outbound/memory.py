"""In-memory fakes of the identity ports, for unit tests."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.permissions import ROLE_PERMISSIONS, Role
from hypersdk_identity.core.models import (
    ApiKey,
    Session,
    SystemAccount,
    ThrottleKind,
    ThrottleState,
    User,
)
from hypersdk_identity.ports.outbound import (
    AccountDirectory,
    ApiKeyStore,
    PamAuthenticator,
    PasswordBlocklist,
    PasswordHasher,
    PermissionDirectory,
    SessionStore,
    ThrottleStore,
    TrustStore,
    UserStore,
)


class InMemoryUserStore(UserStore):
    """Users in a dict."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.generations: dict[str, int] = {}
        """The last generation given to each name, kept after the user is deleted."""

    async def add(self, user: User) -> User:
        """Insert with the name's next generation, or refuse a duplicate."""
        if user.username in self.users:
            raise UserStore.UserExistsError(user.username)
        generation = self.generations.get(user.username, 0) + 1
        self.generations[user.username] = generation
        self.users[user.username] = dataclasses.replace(user, generation=generation)
        return self.users[user.username]

    async def get(self, username: str) -> User | None:
        """Fetch."""
        return self.users.get(username)

    async def list(self) -> list[User]:
        """All, by name."""
        return [self.users[name] for name in sorted(self.users)]

    async def set_disabled(self, username: str, *, disabled: bool) -> User | None:
        """Flip the flag."""
        if username not in self.users:
            return None
        self.users[username] = dataclasses.replace(self.users[username], disabled=disabled)
        return self.users[username]

    async def delete(self, username: str) -> User | None:
        """Remove."""
        return self.users.pop(username, None)


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

    async def replace_token(
        self, session_id: str, *, old_hash: bytes, new_hash: bytes, at: datetime
    ) -> bool:
        """Compare and swap the hash."""
        session = self.sessions.get(session_id)
        if session is None or session.revoked or session.token_hash != old_hash:
            return False
        self.sessions[session_id] = dataclasses.replace(
            session, token_hash=new_hash, last_seen_at=max(session.last_seen_at, at)
        )
        return True

    async def list_for_user(self, username: str) -> list[Session]:
        """Not revoked, oldest first."""
        return sorted(
            (s for s in self.sessions.values() if s.username == username and not s.revoked),
            key=lambda s: s.created_at,
        )

    async def revoke_all_for_user(self, username: str) -> list[str]:
        """Revoke the live ones."""
        ended = [s.id for s in await self.list_for_user(username)]
        for session_id in ended:
            await self.revoke(session_id)
        return ended

    async def delete_expired(self, *, now: datetime, idle_seconds: int) -> int:
        """Drop what can never work again."""
        idle = timedelta(seconds=idle_seconds)
        dead = [
            s.id
            for s in self.sessions.values()
            if s.revoked or s.expires_at <= now or s.last_seen_at <= now - idle
        ]
        for session_id in dead:
            del self.sessions[session_id]
        return len(dead)


class InMemoryThrottleStore(ThrottleStore):
    """Counters in a dict, with the same compare-and-swap rule as PostgreSQL."""

    def __init__(self) -> None:
        self.states: dict[tuple[ThrottleKind, str], ThrottleState] = {}

    async def get(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """Fetch."""
        return self.states.get((kind, key))

    async def save(self, state: ThrottleState) -> bool:
        """Store if the version matches."""
        stored = self.states.get((state.kind, state.key))
        if (stored.version if stored else 0) != state.version:
            return False
        self.states[(state.kind, state.key)] = dataclasses.replace(state, version=state.version + 1)
        return True

    async def delete(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """Remove."""
        return self.states.pop((kind, key), None)

    async def sweep(self, *, now: datetime, stale_before: datetime) -> list[ThrottleState]:
        """Drop expired lockouts (returned) and stale counters."""
        expired = [
            s for s in self.states.values() if s.locked_until is not None and s.locked_until <= now
        ]
        stale = [
            s
            for s in self.states.values()
            if s.locked_until is None
            and (s.last_failure_at is None or s.last_failure_at < stale_before)
        ]
        for state in [*expired, *stale]:
            del self.states[(state.kind, state.key)]
        return expired


class InMemoryTrustStore(TrustStore):
    """Trusted (user name, address) pairs in a dict, bounded per user name like PostgreSQL."""

    def __init__(self) -> None:
        self.pairs: dict[tuple[str, str], datetime] = {}

    async def trusted(self, username: str, address: str, *, now: datetime) -> bool:
        """Whether the pair is trusted beyond ``now``."""
        until = self.pairs.get((username, address))
        return until is not None and now < until

    async def trust(self, username: str, address: str, *, until: datetime, keep: int) -> None:
        """Upsert, then keep the user name's ``keep`` latest-ending addresses."""
        self.pairs[(username, address)] = until
        mine = sorted(
            (pair for pair in self.pairs if pair[0] == username),
            key=lambda pair: self.pairs[pair],
            reverse=True,
        )
        for pair in mine[keep:]:
            del self.pairs[pair]

    async def forget(self, username: str, *, address: str | None = None) -> int:
        """Remove one pair or all of a user name."""
        gone = [
            pair
            for pair in self.pairs
            if pair[0] == username and (address is None or pair[1] == address)
        ]
        for pair in gone:
            del self.pairs[pair]
        return len(gone)

    async def sweep(self, *, now: datetime) -> int:
        """Remove ended pairs."""
        ended = [pair for pair, until in self.pairs.items() if until <= now]
        for pair in ended:
            del self.pairs[pair]
        return len(ended)


class InMemoryApiKeyStore(ApiKeyStore):
    """API keys in a dict."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}

    async def add(self, key: ApiKey) -> None:
        """Insert."""
        self.keys[key.id] = key

    async def get(self, key_id: str) -> ApiKey | None:
        """Fetch."""
        return self.keys.get(key_id)

    async def by_hash(self, key_hash: bytes) -> ApiKey | None:
        """Scan for the hash."""
        return next((k for k in self.keys.values() if k.key_hash == key_hash), None)

    async def list(self, *, owner: str | None, working_at: datetime) -> list[ApiKey]:
        """Not revoked at ``working_at``, oldest first."""
        return sorted(
            (
                k
                for k in self.keys.values()
                if (owner is None or k.owner == owner)
                and (k.revoked_at is None or k.revoked_at > working_at)
            ),
            key=lambda k: k.created_at,
        )

    async def revoke(self, key_id: str, *, at: datetime) -> ApiKey | None:
        """End now unless already ended."""
        key = self.keys.get(key_id)
        if key is None or (key.revoked_at is not None and key.revoked_at <= at):
            return None
        self.keys[key_id] = dataclasses.replace(key, revoked_at=at)
        return self.keys[key_id]

    async def rotate(self, key_id: str, *, replacement: ApiKey, old_valid_until: datetime) -> bool:
        """Replace once."""
        old = self.keys.get(key_id)
        if old is None or old.revoked_at is not None or old.replaced_by is not None:
            return False
        self.keys[key_id] = dataclasses.replace(
            old, revoked_at=old_valid_until, replaced_by=replacement.id
        )
        self.keys[replacement.id] = replacement
        return True

    async def touch(self, key_id: str, at: datetime) -> None:
        """Record the use."""
        self.keys[key_id] = dataclasses.replace(self.keys[key_id], last_used_at=at)


class InMemoryPasswordBlocklist(PasswordBlocklist):
    """A handful of passwords, compared ignoring case."""

    def __init__(self, passwords: list[str]) -> None:
        self.passwords = {password.casefold() for password in passwords}

    async def contains(self, password: str) -> bool:
        """Membership."""
        return password.casefold() in self.passwords


class InMemoryPam(PamAuthenticator, AccountDirectory):
    """Linux accounts, their groups and passwords, as PAM and NSS would report them."""

    def __init__(self) -> None:
        self.accounts: dict[str, SystemAccount] = {}
        self.passwords: dict[str, str] = {}
        self.attempts: list[str] = []

    def add(self, username: str, password: str, *, uid: int = 1001, groups: list[str]) -> None:
        """A Linux user."""
        self.accounts[username] = SystemAccount(username=username, uid=uid, groups=tuple(groups))
        self.passwords[username] = password

    async def authenticate(self, username: str, password: str) -> bool:
        """Compare in constant time."""
        self.attempts.append(username)
        expected = self.passwords.get(username)
        return expected is not None and hmac.compare_digest(expected.encode(), password.encode())

    async def account(self, username: str) -> SystemAccount | None:
        """Look up."""
        return self.accounts.get(username)


class InMemoryPermissionDirectory(PermissionDirectory):
    """Assigned roles in a dict, mapped through the seed matrix as policy does; remembers asks."""

    def __init__(self, roles: Mapping[str, Sequence[str]] | None = None) -> None:
        self.roles: dict[str, list[str]] = {user: list(r) for user, r in (roles or {}).items()}
        self.asked: list[tuple[str, list[str], RequestContext]] = []

    async def permissions_of(
        self, username: str, *, external_roles: list[str], context: RequestContext
    ) -> frozenset[str]:
        """Permissions of the assigned and the known external roles."""
        self.asked.append((username, list(external_roles), context))
        known = {role.value for role in Role}
        held = {r for r in [*self.roles.get(username, []), *external_roles] if r in known}
        return frozenset(p.value for role in held for p in ROLE_PERMISSIONS[Role(role)])


class InsecureFastHasher(PasswordHasher):
    """HMAC-SHA256 'hashing' so unit tests do not spend 240 ms per bcrypt call. Tests only."""

    async def hash(self, password: str) -> bytes:
        """Deterministic digest."""
        return hashlib.sha256(b"salt" + password.encode()).digest()

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Constant-time compare."""
        return hmac.compare_digest(await self.hash(password), password_hash)
