"""Identity use cases: log in (bcrypt or PAM), sessions, users, lockouts."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from hypersdk_contracts.credentials import SESSION_TOKEN_PREFIX
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    ApiKeyRevoked,
    LoginFailed,
    LoginSucceeded,
    SessionCreated,
    SessionRefreshed,
    SessionRevoked,
    UserCreated,
    UserDeleted,
    UserDisabled,
    UserUpdated,
)
from hypersdk_contracts.rpc import (
    USERNAME_PATTERN,
    LoginResult,
    Principal,
    RevokedSessions,
    SessionView,
    UserView,
)
from hypersdk_identity.core.models import Session, Standing, User
from hypersdk_identity.core.pam import PamSupport, usable_owner
from hypersdk_identity.core.passwords import (
    MAX_PASSWORD_BYTES,
    check_new_password,
)
from hypersdk_identity.core.throttle import Admission, LoginThrottle, LoginThrottledError
from hypersdk_identity.ports.outbound import (
    ApiKeyStore,
    PasswordBlocklist,
    PasswordHasher,
    SessionStore,
    UserStore,
)
from hypersdk_kit.ports import UnitOfWork

TOKEN_PREFIX = SESSION_TOKEN_PREFIX
TOUCH_INTERVAL_SECONDS = 15  # how stale last_seen_at may get before a request records activity
FailureReason = Literal["invalid_credentials", "account_disabled", "not_provisioned"]
SessionEndReason = Literal[
    "logout", "revoked_by_owner", "user_disabled", "user_deleted", "roles_changed"
]


# Fresh errors per raise: a shared instance would grow its traceback on every raise and keep
# the frames, with their passwords and tokens, of every earlier failure reachable.
def _invalid_credentials() -> ServiceError:
    return ServiceError(ErrorCode.INVALID_CREDENTIALS, "The username or password is incorrect.")


def _unauthenticated() -> ServiceError:
    return ServiceError(ErrorCode.UNAUTHENTICATED, "The session is missing or expired.")


def _no_such_user() -> ServiceError:
    return ServiceError(ErrorCode.NOT_FOUND, "No user of that name.")


def _throttled(retry_after_seconds: int) -> ServiceError:
    return ServiceError(
        ErrorCode.RATE_LIMITED,
        "Too many failed logins; wait before trying again.",
        retry_after_seconds=retry_after_seconds,
    )


def _busy(retry_after_seconds: int) -> ServiceError:
    return ServiceError(
        ErrorCode.SERVICE_BUSY,
        "Too many password checks at once; retry shortly.",
        retry_after_seconds=retry_after_seconds,
    )


def hash_token(token: str) -> bytes:
    """The stored form of a session token (tokens have 256 bits, so SHA-256 suffices)."""
    return hashlib.sha256(token.encode()).digest()


def new_session_token() -> str:
    """A fresh session token: the public prefix and 256 bits from the CSPRNG."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def is_uuid(value: str) -> bool:
    """Whether ``value`` is a UUID (ids from a URL are checked before they reach a store)."""
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live."""

    idle_seconds: int
    lifetime_seconds: int


@dataclass(frozen=True)
class SweepResult:
    """What one sweep removed."""

    sessions_deleted: int
    lockouts_ended: int


@dataclass(frozen=True)
class _LiveSession:
    session: Session
    user: User
    external_roles: list[str]


class IdentityService:
    """Users, sessions, logins and their throttling.

    ``throttle``, ``blocklist``, ``pam`` and ``api_keys`` are optional so that a test can
    leave a concern out; the composition root always wires all of them.
    """

    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        hasher: PasswordHasher,
        uow: UnitOfWork,
        session_policy: SessionPolicy,
        dummy_hash: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        throttle: LoginThrottle | None = None,
        blocklist: PasswordBlocklist | None = None,
        pam: PamSupport | None = None,
        api_keys: ApiKeyStore | None = None,
    ) -> None:
        self._users = users
        self._sessions = sessions
        self._hasher = hasher
        self._uow = uow
        self._policy = session_policy
        self._dummy_hash = dummy_hash
        self._clock = clock
        self._throttle = throttle
        self._blocklist = blocklist
        self._pam = pam
        self._api_keys = api_keys

    # ---- logging in ----------------------------------------------------------------------------

    async def login(self, username: str, password: str, context: RequestContext) -> LoginResult:
        """Check the password and open a session; the same error whatever went wrong."""
        # Every place taken, even those kept for trusted logins: refused before the throttle's
        # database writes (nothing about the attempt is known yet).
        retry_after = self._hasher.full(standing=Standing.TRUSTED)
        if retry_after is not None:
            raise _busy(retry_after)
        admission: Admission | None = None
        standing = Standing.UNKNOWN
        if self._throttle is not None:
            try:
                admission = await self._throttle.admit(username, context.source_ip, context)
            except LoginThrottledError as exc:
                reason: Literal["locked", "throttled"] = "locked" if exc.locked else "throttled"
                await self._publish_failure(username, reason, context)
                raise _throttled(exc.retry_after_seconds) from None
            standing = admission.standing
            retry_after = self._hasher.full(standing=standing)
            if retry_after is not None:  # the last places are kept for better standings
                await self._throttle.withdrawn(admission, context, retry_after_seconds=retry_after)
                raise _busy(retry_after)
        try:
            with self._hasher.first_for(standing=standing):
                user, failure = await self._verify(username, password, context)
        except PasswordHasher.BusyError as exc:
            # Nothing was checked: the attempt costs no failure (a storm of other people's
            # logins must not lock this user out), and is answered at once, not queued.
            if admission is not None and self._throttle is not None:
                await self._throttle.withdrawn(
                    admission, context, retry_after_seconds=exc.retry_after_seconds
                )
            raise _busy(exc.retry_after_seconds) from None
        if user is None or failure is not None:
            async with self._uow.transaction():
                if admission is not None and self._throttle is not None:
                    await self._throttle.failed(admission, context)
                await self._publish_failure(username, failure or "invalid_credentials", context)
            raise _invalid_credentials()
        token = new_session_token()
        now = self._clock()
        session = Session(
            id=str(uuid.uuid4()),
            username=user.username,
            token_hash=hash_token(token),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(seconds=self._policy.lifetime_seconds),
        )
        actor = context.model_copy(update={"actor": user.username})
        async with self._uow.transaction():
            if admission is not None and self._throttle is not None:
                await self._throttle.succeeded(admission, username=user.username)
            await self._sessions.add(session)
            await self._uow.record(
                LoginSucceeded(username=user.username, method=user.source),
                subject=f"user/{user.username}",
                context=actor,
            )
            await self._uow.record(
                SessionCreated(
                    session_id=session.id, username=user.username, expires_at=session.expires_at
                ),
                subject=f"session/{session.id}",
                context=actor,
            )
        return LoginResult(
            token=token, session_id=session.id, expires_at=session.expires_at, user=_view(user)
        )

    async def _verify(
        self, username: str, password: str, context: RequestContext
    ) -> tuple[User | None, FailureReason | None]:
        """The user if the password is theirs; otherwise why not. Unknown users cost the same."""
        user = await self._users.get(username)
        if user is None:
            if self._pam is not None and self._pam.provisions:
                return await self._verify_first_pam_login(username, password, context)
            await self._hasher.check(password, self._dummy_hash)
            return None, "invalid_credentials"
        if user.source == "pam":
            accepted = await self._pam_accepts(username, password)
        else:
            accepted = await self._local_accepts(user, password)
        if not accepted:
            return None, "invalid_credentials"
        if user.disabled:
            return None, "account_disabled"
        return user, None

    async def _local_accepts(self, user: User, password: str) -> bool:
        """The bcrypt verdict; a password over 72 bytes never matches (bcrypt would truncate)."""
        if user.password_hash is None:
            await self._hasher.check(password, self._dummy_hash)
            return False
        matches = await self._hasher.check(password, user.password_hash)
        return matches and len(password.encode()) <= MAX_PASSWORD_BYTES

    async def _pam_accepts(self, username: str, password: str) -> bool:
        """PAM's verdict, never faster than a bcrypt check (timing tells nothing of PAM users)."""
        pam = self._pam
        account = None if pam is None else await pam.account(username)
        if pam is None or account is None:
            await self._hasher.check(password, self._dummy_hash)
            return False
        accepted, _ = await asyncio.gather(
            pam.authenticator.authenticate(username, password),
            self._hasher.check(password, self._dummy_hash),
        )
        return accepted

    async def _verify_first_pam_login(
        self, username: str, password: str, context: RequestContext
    ) -> tuple[User | None, FailureReason | None]:
        """A Linux user in a mapped group becomes a PAM user on their first good login."""
        assert self._pam is not None
        if not re.fullmatch(USERNAME_PATTERN, username):
            await self._hasher.check(password, self._dummy_hash)
            return None, "invalid_credentials"
        if not await self._pam_accepts(username, password):
            return None, "invalid_credentials"
        account = await self._pam.account(username)
        if account is None or not self._pam.external_roles(account):
            return None, "not_provisioned"
        user = User(username=username, source="pam", password_hash=None, created_at=self._clock())
        try:
            async with self._uow.transaction():
                user = await self._users.add(user)  # a generation of its own, as any account
                await self._uow.record(
                    UserCreated(username=username, source="pam", provisioned=True),
                    subject=f"user/{username}",
                    context=context.model_copy(update={"actor": "pam-provisioning"}),
                )
        except UserStore.UserExistsError:
            existing = await self._users.get(username)
            if existing is None or existing.source != "pam" or existing.disabled:
                return None, "invalid_credentials"
            return existing, None
        return user, None

    async def _publish_failure(
        self,
        username: str,
        reason: Literal[
            "invalid_credentials", "account_disabled", "throttled", "locked", "not_provisioned"
        ],
        context: RequestContext,
    ) -> None:
        await self._uow.record(
            LoginFailed(username=username, reason=reason),
            subject=f"user/{username}",
            context=context,
        )

    # ---- sessions ------------------------------------------------------------------------------

    async def _live_session(self, token: str) -> _LiveSession:
        """The session of a token that still works, its user and their external roles."""
        session = await self._sessions.by_token_hash(hash_token(token))
        now = self._clock()
        if (
            session is None
            or not self._is_live(session, now)
            or not hmac.compare_digest(session.token_hash, hash_token(token))
        ):
            raise _unauthenticated()
        usable = await usable_owner(self._users, self._pam, session.username)
        if usable is None:
            raise _unauthenticated()
        user, external_roles = usable
        return _LiveSession(session=session, user=user, external_roles=external_roles)

    def _is_live(self, session: Session, now: datetime) -> bool:
        return (
            not session.revoked
            and now < session.expires_at
            and now - session.last_seen_at < timedelta(seconds=self._policy.idle_seconds)
        )

    async def _external_roles(self, user: User) -> list[str] | None:
        """Roles from the PAM group map; None when a PAM user's Linux account is gone."""
        if user.source != "pam":
            return []
        if self._pam is None:
            return None
        return await self._pam.roles_of_user(user)

    async def authenticate(self, token: str) -> Principal:
        """The principal behind a live session token."""
        live = await self._live_session(token)
        now = self._clock()
        # Recording activity is a committed write; once per interval is enough for an idle
        # timeout measured in minutes, and keeps a write off the path of most requests.
        if now - live.session.last_seen_at >= timedelta(seconds=TOUCH_INTERVAL_SECONDS):
            await self._sessions.touch(live.session.id, now)
        return Principal(
            username=live.user.username,
            kind="session",
            session_id=live.session.id,
            external_roles=live.external_roles,
            valid_until=live.session.expires_at,
        )

    async def logout(self, token: str, context: RequestContext) -> None:
        """Revoke the session of ``token``."""
        live = await self._live_session(token)
        async with self._uow.transaction():
            await self._sessions.revoke(live.session.id)
            await self._publish_revoked(live.session.id, live.user.username, "logout", context)

    async def refresh(self, token: str, context: RequestContext) -> LoginResult:
        """A new token for the session of ``token``; the old token stops working at once.

        The absolute lifetime is not extended: a refresh limits how long one token is exposed,
        it does not make a session immortal.
        """
        live = await self._live_session(token)
        new_token = new_session_token()
        now = self._clock()
        async with self._uow.transaction():
            swapped = await self._sessions.replace_token(
                live.session.id, old_hash=hash_token(token), new_hash=hash_token(new_token), at=now
            )
            if not swapped:  # another refresh with the same token won the race
                raise _unauthenticated()
            await self._uow.record(
                SessionRefreshed(
                    session_id=live.session.id,
                    username=live.user.username,
                    expires_at=live.session.expires_at,
                ),
                subject=f"session/{live.session.id}",
                context=context,
            )
        return LoginResult(
            token=new_token,
            session_id=live.session.id,
            expires_at=live.session.expires_at,
            user=_view(live.user),
        )

    async def list_sessions(
        self, username: str, *, current_session_id: str | None
    ) -> list[SessionView]:
        """The live sessions of ``username``, never their tokens."""
        now = self._clock()
        idle = timedelta(seconds=self._policy.idle_seconds)
        return [
            SessionView(
                id=session.id,
                created_at=session.created_at,
                last_seen_at=session.last_seen_at,
                expires_at=session.expires_at,
                idle_expires_at=min(session.last_seen_at + idle, session.expires_at),
                current=session.id == current_session_id,
            )
            for session in await self._sessions.list_for_user(username)
            if self._is_live(session, now)
        ]

    async def revoke_session(self, username: str, session_id: str, context: RequestContext) -> None:
        """End one of the owner's live sessions; another user's session is not found."""
        now = self._clock()
        owned = is_uuid(session_id) and any(
            session.id == session_id and self._is_live(session, now)
            for session in await self._sessions.list_for_user(username)
        )
        if not owned:
            raise ServiceError(ErrorCode.NOT_FOUND, "You have no live session with that id.")
        async with self._uow.transaction():
            await self._sessions.revoke(session_id)
            await self._publish_revoked(session_id, username, "revoked_by_owner", context)

    async def revoke_user_sessions(self, username: str, context: RequestContext) -> RevokedSessions:
        """End every session of a user whose roles changed."""
        if await self._users.get(username) is None:
            raise _no_such_user()
        async with self._uow.transaction():
            ended = await self._end_sessions(username, "roles_changed", context)
            await self._uow.record(
                UserUpdated(username=username, changed=["roles"], sessions_revoked=ended),
                subject=f"user/{username}",
                context=context,
            )
        return RevokedSessions(username=username, sessions_revoked=ended)

    async def _end_sessions(
        self, username: str, reason: SessionEndReason, context: RequestContext
    ) -> int:
        ended = await self._sessions.revoke_all_for_user(username)
        for session_id in ended:
            await self._publish_revoked(session_id, username, reason, context)
        return len(ended)

    async def _publish_revoked(
        self, session_id: str, username: str, reason: SessionEndReason, context: RequestContext
    ) -> None:
        await self._uow.record(
            SessionRevoked(session_id=session_id, username=username, reason=reason),
            subject=f"session/{session_id}",
            context=context,
        )

    async def sweep(self) -> SweepResult:
        """Remove expired, idle and revoked sessions; end expired lockouts."""
        deleted = await self._sessions.delete_expired(
            now=self._clock(), idle_seconds=self._policy.idle_seconds
        )
        ended = await self._throttle.sweep() if self._throttle is not None else 0
        return SweepResult(sessions_deleted=deleted, lockouts_ended=ended)

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        password: str | None,
        context: RequestContext,
        *,
        source: Literal["local", "pam"] = "local",
    ) -> UserView:
        """Create a local user (bcrypt-hashed password) or a PAM user (no password here)."""
        password_hash: bytes | None = None
        if source == "local":
            if password is None:
                raise ServiceError(ErrorCode.VALIDATION_FAILED, "A local user needs a password.")
            await check_new_password(password, username=username, blocklist=self._blocklist)
            try:
                password_hash = await self._hasher.hash(password)
            except PasswordHasher.BusyError as exc:
                raise _busy(exc.retry_after_seconds) from None
        else:
            if password is not None:
                raise ServiceError(
                    ErrorCode.VALIDATION_FAILED,
                    "A PAM user has no password here; PAM checks it. Leave the password out.",
                )
            if self._pam is None or await self._pam.account(username) is None:
                raise ServiceError(
                    ErrorCode.VALIDATION_FAILED,
                    "There is no Linux account of that name that may log in here.",
                )
        user = User(
            username=username,
            source=source,
            password_hash=password_hash,
            created_at=self._clock(),
        )
        try:
            async with self._uow.transaction():
                user = await self._users.add(user)
                await self._uow.record(
                    UserCreated(username=username, source=source),
                    subject=f"user/{username}",
                    context=context,
                )
        except UserStore.UserExistsError as exc:
            raise ServiceError(ErrorCode.CONFLICT, "A user with that name exists.") from exc
        return _view(user)

    async def ensure_user(self, username: str, password: str, context: RequestContext) -> bool:
        """Create the local user unless it exists; return whether it was created."""
        if await self._users.get(username) is not None:
            return False
        await self.create_user(username, password, context)
        return True

    async def list_users(self) -> list[UserView]:
        """Every user, by name."""
        return [_view(user) for user in await self._users.list()]

    async def get_user(self, username: str) -> UserView:
        """One user, with their PAM group roles and any lockout in force."""
        user = await self._users.get(username)
        if user is None:
            raise _no_such_user()
        external_roles = await self._external_roles(user) or []
        locked_until = (
            await self._throttle.locked_until(username) if self._throttle is not None else None
        )
        return _view(user, external_roles=external_roles, locked_until=locked_until)

    async def set_disabled(
        self, username: str, *, disabled: bool, context: RequestContext
    ) -> UserView:
        """Disable a user (ending their sessions at once) or enable them again."""
        _refuse_self(username, context, "disable")
        user = await self._users.get(username)
        if user is None:
            raise _no_such_user()
        if user.disabled == disabled:
            return _view(user)
        async with self._uow.transaction():
            updated = await self._users.set_disabled(username, disabled=disabled)
            if updated is None:
                raise _no_such_user()
            if disabled:
                ended = await self._end_sessions(username, "user_disabled", context)
                # Revoked, not suspended: enabling the user again restores no key (decision 0025).
                keys = await self._revoke_keys(username, "owner_disabled", context)
                if self._throttle is not None:  # and no address is trusted for them any more
                    await self._throttle.forget_trust(username)
                await self._uow.record(
                    UserDisabled(username=username, sessions_revoked=ended, api_keys_revoked=keys),
                    subject=f"user/{username}",
                    context=context,
                )
            else:
                await self._uow.record(
                    UserUpdated(username=username, changed=["enabled"]),
                    subject=f"user/{username}",
                    context=context,
                )
        return _view(updated)

    async def _revoke_keys(
        self,
        username: str,
        reason: Literal["owner_deleted", "owner_disabled"],
        context: RequestContext,
    ) -> int:
        """Revoke every working key of a user now; how many."""
        if self._api_keys is None:
            return 0
        revoked = 0
        for key in await self._api_keys.list(owner=username, working_at=self._clock()):
            if await self._api_keys.revoke(key.id, at=self._clock()) is None:
                continue
            revoked += 1
            await self._uow.record(
                ApiKeyRevoked(key_id=key.id, owner=username, reason=reason),
                subject=f"apikey/{key.id}",
                context=context,
            )
        return revoked

    async def delete_user(self, username: str, context: RequestContext) -> UserView:
        """Delete a user, their sessions and their API keys; the account as it was.

        ``identity.user.deleted`` names the account's generation, as read by the deletion
        itself: whoever removes the account's roles removes that account's, never those of an
        account created under the name afterwards (decision 0041).
        """
        _refuse_self(username, context, "delete")
        if await self._users.get(username) is None:
            raise _no_such_user()
        async with self._uow.transaction():
            ended = await self._end_sessions(username, "user_deleted", context)
            keys = (
                await self._api_keys.list(owner=username, working_at=self._clock())
                if self._api_keys is not None
                else []
            )
            for key in keys:
                assert self._api_keys is not None
                await self._api_keys.revoke(key.id, at=self._clock())
            if self._throttle is not None:
                await self._throttle.forget_trust(username)
            deleted = await self._users.delete(username)
            if deleted is None:
                raise _no_such_user()
            for key in keys:
                await self._uow.record(
                    ApiKeyRevoked(key_id=key.id, owner=username, reason="owner_deleted"),
                    subject=f"apikey/{key.id}",
                    context=context,
                )
            await self._uow.record(
                UserDeleted(
                    username=username,
                    generation=deleted.generation,
                    sessions_revoked=ended,
                    api_keys_revoked=len(keys),
                ),
                subject=f"user/{username}",
                context=context,
            )
        return _view(deleted)

    async def unlock_user(self, username: str, context: RequestContext) -> bool:
        """Lift a lockout of a user name (known or not yet provisioned); whether one was on."""
        if self._throttle is None:
            return False
        return await self._throttle.unlock(username, context)


def _refuse_self(username: str, context: RequestContext, verb: str) -> None:
    if context.actor is not None and context.actor == username:
        raise ServiceError(ErrorCode.CONFLICT, f"You cannot {verb} your own account.")


def _view(
    user: User, *, external_roles: list[str] | None = None, locked_until: datetime | None = None
) -> UserView:
    return UserView(
        username=user.username,
        generation=user.generation,
        source=user.source,
        created_at=user.created_at,
        disabled=user.disabled,
        external_roles=external_roles or [],
        locked_until=locked_until,
    )
