"""Outbound ports of the identity service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from hypersdk_contracts.envelope import RequestContext
from hypersdk_identity.core.models import (
    ApiKey,
    Session,
    Standing,
    SystemAccount,
    ThrottleKind,
    ThrottleState,
    User,
)


class UserStore(ABC):
    """Keeps user accounts."""

    class UserExistsError(Exception):
        """A user with that name already exists."""

    @abstractmethod
    async def add(self, user: User) -> User:
        """Store a new user; the user as stored, with its generation.

        Raise :class:`UserExistsError` if the name is taken. The generation is one more than
        that of the last account of the name ever stored (1 for a new name), whatever
        ``user.generation`` says: the accounts of a name are ordered by this store alone.
        """

    @abstractmethod
    async def get(self, username: str) -> User | None:
        """The user of that name, if any."""

    @abstractmethod
    async def list(self) -> list[User]:
        """All users, by name."""

    @abstractmethod
    async def set_disabled(self, username: str, *, disabled: bool) -> User | None:
        """Disable or enable a user; the user as now stored, or None if there is none."""

    @abstractmethod
    async def delete(self, username: str) -> User | None:
        """Remove a user with their sessions and API keys; the removed user, if there was one."""


class SessionStore(ABC):
    """Keeps sessions by the hash of their token."""

    @abstractmethod
    async def add(self, session: Session) -> None:
        """Store a new session."""

    @abstractmethod
    async def by_token_hash(self, token_hash: bytes) -> Session | None:
        """The session whose token hashes to ``token_hash``, if any."""

    @abstractmethod
    async def touch(self, session_id: str, at: datetime) -> None:
        """Record activity on a session."""

    @abstractmethod
    async def revoke(self, session_id: str) -> None:
        """End a session now."""

    @abstractmethod
    async def replace_token(
        self, session_id: str, *, old_hash: bytes, new_hash: bytes, at: datetime
    ) -> bool:
        """Swap the token hash if it still is ``old_hash`` (atomically); whether it did.

        Two refreshes racing with the same token: exactly one wins, the other gets False.
        """

    @abstractmethod
    async def list_for_user(self, username: str) -> list[Session]:
        """Every session of a user that is not revoked, oldest first."""

    @abstractmethod
    async def revoke_all_for_user(self, username: str) -> list[str]:
        """End every live session of a user; the ids of those it ended."""

    @abstractmethod
    async def delete_expired(self, *, now: datetime, idle_seconds: int) -> int:
        """Remove revoked, expired and idle sessions; how many."""


class ThrottleStore(ABC):
    """Failed-login counters shared by every identity replica."""

    @abstractmethod
    async def get(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """The counter of one user name or address, if any."""

    @abstractmethod
    async def save(self, state: ThrottleState) -> bool:
        """Store ``state`` if the stored version still is ``state.version`` (0: none stored).

        On success the stored version is ``state.version + 1``; False means another replica
        changed the counter first and the caller must read it again.
        """

    @abstractmethod
    async def delete(self, kind: ThrottleKind, key: str) -> ThrottleState | None:
        """Remove a counter; the removed state, if there was one."""

    @abstractmethod
    async def sweep(self, *, now: datetime, stale_before: datetime) -> list[ThrottleState]:
        """Remove expired lockouts (returned) and counters without failures since a time."""


class TrustStore(ABC):
    """User name and client address pairs that logged in successfully recently.

    Shared by every identity replica. Only a login with the right password adds or extends a
    pair; entries expire, and a user name keeps a bounded number of addresses.
    """

    @abstractmethod
    async def trusted(self, username: str, address: str, *, now: datetime) -> bool:
        """Whether ``username`` logged in from ``address`` and the trust lasts beyond ``now``."""

    @abstractmethod
    async def trust(self, username: str, address: str, *, until: datetime, keep: int) -> None:
        """Trust the pair until ``until``; the user name keeps its ``keep`` latest addresses."""

    @abstractmethod
    async def forget(self, username: str, *, address: str | None = None) -> int:
        """Forget ``address`` of ``username``, or every address of it; how many."""

    @abstractmethod
    async def sweep(self, *, now: datetime) -> int:
        """Remove pairs whose trust ended by ``now``; how many."""


class ApiKeyStore(ABC):
    """Keeps API keys by the hash of the key."""

    @abstractmethod
    async def add(self, key: ApiKey) -> None:
        """Store a new key."""

    @abstractmethod
    async def get(self, key_id: str) -> ApiKey | None:
        """The key of that id, if any."""

    @abstractmethod
    async def by_hash(self, key_hash: bytes) -> ApiKey | None:
        """The key that hashes to ``key_hash``, if any."""

    @abstractmethod
    async def list(self, *, owner: str | None, working_at: datetime) -> list[ApiKey]:
        """Keys not revoked (or still in a grace period) at ``working_at``, oldest first."""

    @abstractmethod
    async def revoke(self, key_id: str, *, at: datetime) -> ApiKey | None:
        """Make a key stop working at ``at`` unless it stops earlier; None if it already has."""

    @abstractmethod
    async def rotate(self, key_id: str, *, replacement: ApiKey, old_valid_until: datetime) -> bool:
        """Store ``replacement`` and end the old key at ``old_valid_until``, atomically.

        False (nothing stored) if the old key was already revoked or replaced.
        """

    @abstractmethod
    async def touch(self, key_id: str, at: datetime) -> None:
        """Record a use (stores may skip writes within a minute of the last one)."""


class PasswordHasher(ABC):
    """Hashes and checks passwords without blocking the event loop, a bounded number at once."""

    class BusyError(Exception):
        """Every thread is busy and the queue is full: refused at once, nothing was checked."""

        def __init__(self, retry_after_seconds: int) -> None:
            super().__init__("password hasher busy")
            self.retry_after_seconds = retry_after_seconds

    def full(self, *, standing: Standing) -> int | None:
        """Seconds to wait if a check of a login of ``standing`` started now would be refused.

        None if it would not. Lets a caller refuse before doing other work; a check may still
        raise :class:`BusyError` when others took the last place in between. Each standing
        keeps places the ones after it may not take (decision 0039): a ``SUSPICIOUS`` caller is
        refused while only the places kept for ``UNKNOWN`` and ``TRUSTED`` ones are left, an
        ``UNKNOWN`` one while only those kept for ``TRUSTED`` ones are left.
        """
        return None

    def first_for(self, *, standing: Standing) -> AbstractContextManager[None]:
        """Checks started inside wait behind no check of a later standing, and count as it.

        A login of a user who logged in from that address recently is served before waiting
        ones of other addresses, and those of addresses without recent failures before the
        ones of a storm's. Work outside such a block comes from callers already authenticated
        (an administrator creating a user) and counts as ``TRUSTED``. Default: no order.
        """
        return nullcontext()

    @abstractmethod
    async def hash(self, password: str) -> bytes:
        """A salted hash of ``password``; raise :class:`BusyError` when at capacity."""

    @abstractmethod
    async def check(self, password: str, password_hash: bytes) -> bool:
        """Whether ``password`` matches ``password_hash``; :class:`BusyError` at capacity."""


class PasswordBlocklist(ABC):
    """Passwords too common to allow."""

    @abstractmethod
    async def contains(self, password: str) -> bool:
        """Whether ``password`` is on the list, ignoring case."""


class PamAuthenticator(ABC):
    """Checks a Linux user's password through PAM, off the event loop."""

    @abstractmethod
    async def authenticate(self, username: str, password: str) -> bool:
        """Whether PAM accepts the password (and the account); PAM's messages stay inside."""


class AccountDirectory(ABC):
    """Looks up Linux accounts and their groups through the name service switch."""

    @abstractmethod
    async def account(self, username: str) -> SystemAccount | None:
        """The account of that name and its groups, if there is one."""


class PermissionDirectory(ABC):
    """Knows which permissions a user holds (the policy service owns the answer)."""

    @abstractmethod
    async def permissions_of(
        self, username: str, *, external_roles: list[str], context: RequestContext
    ) -> frozenset[str]:
        """Permissions ``username`` holds now through assigned and ``external_roles``.

        ``context`` is the request being served: its grant lets the owner of the answer
        check that the question is asked on behalf of someone allowed to ask it.
        """
