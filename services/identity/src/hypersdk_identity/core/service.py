"""Identity use cases: log in, authenticate a token, log out, manage users."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    LoginFailed,
    LoginSucceeded,
    SessionCreated,
    SessionRevoked,
    UserCreated,
)
from hypersdk_contracts.rpc import LoginResult, Principal, UserView
from hypersdk_identity.core.models import Session, User
from hypersdk_identity.ports.outbound import PasswordHasher, SessionStore, UserStore
from hypersdk_kit.bus import EventPublisher

TOKEN_PREFIX = "hsdk_s_"  # noqa: S105 - a public prefix that lets secret scanners spot tokens
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_BYTES = 72  # bcrypt's limit; longer passwords are refused, never truncated.


# Fresh errors per raise: a shared instance would grow its traceback on every raise and keep
# the frames, with their passwords and tokens, of every earlier failure reachable.
def _invalid_credentials() -> ServiceError:
    return ServiceError(ErrorCode.INVALID_CREDENTIALS, "The username or password is incorrect.")


def _unauthenticated() -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHENTICATED, "The session is missing or expired.")


def hash_token(token: str) -> bytes:
    """The stored form of a session token (tokens have 256 bits, so SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).digest()


def check_password_policy(password: str) -> None:
    """Refuse passwords that are too short or too long for bcrypt."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"The password must have at least {MIN_PASSWORD_LENGTH} characters.",
        )
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"The password must fit in {MAX_PASSWORD_BYTES} bytes of UTF-8.",
        )


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live."""

    idle_seconds: int
    lifetime_seconds: int


class IdentityService:
    """Users and sessions."""

    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        hasher: PasswordHasher,
        events: EventPublisher,
        session_policy: SessionPolicy,
        dummy_hash: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._hasher = hasher
        self._events = events
        self._policy = session_policy
        self._dummy_hash = dummy_hash
        self._clock = clock

    async def login(self, username: str, password: str, context: RequestContext) -> LoginResult:
        """Check the password and open a session; the same error whatever went wrong."""
        user = await self._users.get(username)
        if user is None or user.password_hash is None:
            # Spend the same time as a real check, so timing does not reveal who exists.
            await self._hasher.check(password, self._dummy_hash)
            await self._fail_login(username, "invalid_credentials", context)
        assert user is not None
        assert user.password_hash is not None
        if len(password.encode()) > MAX_PASSWORD_BYTES or not await self._hasher.check(
            password, user.password_hash
        ):
            await self._fail_login(username, "invalid_credentials", context)
        if user.disabled:
            await self._fail_login(username, "account_disabled", context)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        session = Session(
            id=str(uuid.uuid4()),
            username=user.username,
            token_hash=hash_token(token),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self._policy.lifetime_seconds),
        )
        await self._sessions.add(session)
        actor = context.model_copy(update={"actor": user.username})
        await self._events.publish(
            LoginSucceeded(username=user.username, method=user.source),
            subject=f"user/{user.username}",
            context=actor,
        )
        await self._events.publish(
            SessionCreated(
                session_id=session.id, username=user.username, expires_at=session.expires_at
            ),
            subject=f"session/{session.id}",
            context=actor,
        )
        return LoginResult(
            token=token, session_id=session.id, expires_at=session.expires_at, user=_view(user)
        )

    async def _fail_login(self, username: str, reason: str, context: RequestContext) -> None:
        await self._events.publish(
            LoginFailed(username=username, reason=reason),
            subject=f"user/{username}",
            context=context,
        )
        raise _invalid_credentials()

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a live session token."""
        session = await self._sessions.by_token_hash(hash_token(token))
        now = self._clock()
        if (
            session is None
            or session.revoked
            or now >= session.expires_at
            or now - session.last_seen_at >= timedelta(seconds=self._policy.idle_seconds)
            or not hmac.compare_digest(session.token_hash, hash_token(token))
        ):
            raise _unauthenticated()
        user = await self._users.get(session.username)
        if user is None or user.disabled:
            raise _unauthenticated()
        await self._sessions.touch(session.id, now)
        return Principal(username=session.username, session_id=session.id)

    async def logout(self, token: str, context: RequestContext) -> None:
        """Revoke the session of ``token``."""
        principal = await self.authenticate(token)
        session_id = principal.session_id
        if session_id is None:
            raise _unauthenticated()
        await self._sessions.revoke(session_id)
        await self._events.publish(
            SessionRevoked(session_id=session_id, username=principal.username, reason="logout"),
            subject=f"session/{session_id}",
            context=context,
        )

    async def create_user(self, username: str, password: str, context: RequestContext) -> UserView:
        """Create a local user with a bcrypt-hashed password."""
        check_password_policy(password)
        user = User(
            username=username,
            source="local",
            password_hash=await self._hasher.hash(password),
            created_at=self._clock(),
        )
        try:
            await self._users.add(user)
        except UserStore.UserExistsError as exc:
            raise ServiceError(ErrorCode.CONFLICT, "A user with that name exists.") from exc
        await self._events.publish(
            UserCreated(username=username), subject=f"user/{username}", context=context
        )
        return _view(user)

    async def ensure_user(self, username: str, password: str, context: RequestContext) -> bool:
        """Create the user unless it exists; return whether it was created."""
        if await self._users.get(username) is not None:
            return False
        await self.create_user(username, password, context)
        return True

    async def list_users(self) -> list[UserView]:
        """Every user, by name."""
        return [_view(user) for user in await self._users.list()]


def _view(user: User) -> UserView:
    return UserView(
        username=user.username,
        source=user.source,
        created_at=user.created_at,
        disabled=user.disabled,
    )
