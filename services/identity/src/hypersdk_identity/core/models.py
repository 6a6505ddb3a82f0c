"""Identity domain: users, sessions, API keys, login throttling, Linux accounts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Literal


@dataclass(frozen=True)
class User:
    """A user account; ``password_hash`` is None for users checked by PAM.

    ``generation`` tells the accounts of one name apart (decision 0041): the store gives the
    first account of a name 1 and each account created under the name later one more, in the
    order its database commits them; 0 for a user not stored yet.
    """

    username: str
    source: Literal["local", "pam"]
    password_hash: bytes | None
    created_at: datetime
    disabled: bool = False
    generation: int = 0


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


class Standing(IntEnum):
    """How far a login attempt is trusted before its password is checked (decision 0039).

    Ordered: password checks start in this order, and each standing keeps places in the bcrypt
    pool that the ones after it may not take. It is decided from the user name and address
    pair and the address's recent history only, never from whether the user exists.
    """

    TRUSTED = 0
    """This user name logged in successfully from this address recently."""
    UNKNOWN = 1
    """Nothing recent known about the address, for good or bad."""
    SUSPICIOUS = 2
    """The address failed to log in recently, or came back before its ``Retry-After``."""


@dataclass(frozen=True)
class ThrottleState:
    """Failed logins counted for one user name or one client address, shared by all replicas.

    ``version`` is 0 for a state not stored yet; stores save with compare-and-swap on it.
    ``refused_until`` (addresses only): an attempt was refused ``service_busy`` and told to
    retry no earlier than this; coming back before it makes the address suspicious.
    """

    kind: ThrottleKind
    key: str
    failures: int = 0
    window_started_at: datetime | None = None
    last_failure_at: datetime | None = None
    locked_until: datetime | None = None
    refused_until: datetime | None = None
    version: int = 0


@dataclass(frozen=True)
class SystemAccount:
    """A Linux account as the name service (files, SSSD, LDAP...) reports it."""

    username: str
    uid: int
    groups: tuple[str, ...]
