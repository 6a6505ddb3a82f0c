"""Outbound ports of the identity service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime

from hypersdk_identity.core.models import Session, User


class UserStore(ABC):
    """Keeps user accounts."""

    class UserExistsError(Exception):
        """A user with that name already exists."""

    @abstractmethod
    async def add(self, user: User) -> None:
        """Store a new user; raise :class:`UserExistsError` if the name is taken."""

    @abstractmethod
    async def get(self, username: str) -> User | None:
        """The user of that name, if any."""

    @abstractmethod
    async def list(self) -> list[User]:
        """All users, by name."""


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


class PasswordHasher(ABC):
    """Hashes and checks passwords without blocking the event loop."""

    @abstractmethod
    async def hash(self, password: str) -> bytes:
        """A salted hash of ``password``."""

    @abstractmethod
    async def check(self, password: str, password_hash: bytes) -> bool:
        """Whether ``password`` matches ``password_hash``."""
