"""Identity domain: users and sessions."""

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
