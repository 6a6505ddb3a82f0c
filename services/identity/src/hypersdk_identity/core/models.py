"""Identity domain: users, sessions, API keys, login throttling, Linux accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal


@dataclass(frozen=True)
class User:
    """A user account; ``password_hash`` is None for users checked by PAM."""

    username: str
    source: Literal["local", "pam"]
    password_hash: bytes | None
    created_at: datetime
    disabled: bool = False


@dataclass(frozen=True)
class Session:
    """A server-side session; only the token's hash is kept."""

    id: str
    username: str
    token_hash: bytes
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    revoked: bool = False


@dataclass(frozen=True)
class ApiKey:
    """An API key; only the SHA-256 of the key is kept, and the last four characters as a hint."""

    id: str
    owner: str
    name: str
    key_hash: bytes
    hint: str
    scopes: tuple[str, ...]
    created_at: datetime
    created_by: str | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    replaced_by: str | None = None
    last_used_at: datetime | None = None

    @property
    def valid_until(self) -> datetime | None:
        """When the key stops working at the latest: its expiry or its revocation time."""
        ends = [when for when in (self.revoked_at, self.expires_at) if when is not None]
        return min(ends) if ends else None

    def works_at(self, now: datetime) -> bool:
        """Whether the key is accepted at ``now`` (not revoked, not expired)."""
        return (self.revoked_at is None or now < self.revoked_at) and (
            self.expires_at is None or now < self.expires_at
        )


ThrottleKind = Literal["username", "address"]


@dataclass(frozen=True)
class ThrottleState:
    """Failed logins counted for one user name or one client address, shared by all replicas.

    ``version`` is 0 for a state not stored yet; stores save with compare-and-swap on it.
    """

    kind: ThrottleKind
    key: str
    failures: int = 0
    window_started_at: datetime | None = None
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None
    version: int = 0


@dataclass(frozen=True)
class SystemAccount:
    """A Linux account as the name service (files, SSSD, LDAP...) reports it."""

    username: str
    uid: int
    groups: tuple[str, ...]
