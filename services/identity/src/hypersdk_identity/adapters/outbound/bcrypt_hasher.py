"""bcrypt password hashing in a thread pool (bcrypt releases the GIL)."""

from __future__ import annotations

import asyncio

import bcrypt

from hypersdk_identity.ports.outbound import PasswordHasher

MIN_COST = 12
MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer


class BcryptPasswordHasher(PasswordHasher):
    """bcrypt with a configurable cost, never below 12."""

    def __init__(self, *, cost: int = MIN_COST) -> None:
        if cost < MIN_COST:
            raise ValueError("bcrypt cost must be at least 12")
        self._cost = cost

    async def hash(self, password: str) -> bytes:
        """Hash off the event loop."""
        salt = bcrypt.gensalt(rounds=self._cost)
        return await asyncio.to_thread(bcrypt.hashpw, password.encode(), salt)

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Check off the event loop; a password over bcrypt's 72 bytes never matches."""
        secret = password.encode()
        matches = await asyncio.to_thread(bcrypt.checkpw, secret[:MAX_BYTES], password_hash)
        return matches and len(secret) <= MAX_BYTES
