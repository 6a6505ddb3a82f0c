"""bcrypt password hashing in a bounded thread pool of its own (bcrypt releases the GIL).

The pool is bounded so that a storm of logins cannot take every core: with N cores, bcrypt
gets N - 1 threads by default and the event loop, the database and the other services keep
one. Logins beyond that wait their turn instead of slowing everything else down.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import bcrypt

from hypersdk_identity.ports.outbound import PasswordHasher

MIN_COST = 12
MAX_BYTES = 72  # bcrypt ignores (bcrypt 5: refuses) anything longer


def default_workers() -> int:
    """One bcrypt thread per core but one, at least one."""
    return max(1, (os.cpu_count() or 2) - 1)


class BcryptPasswordHasher(PasswordHasher):
    """bcrypt with a configurable cost, never below 12, at most ``workers`` at a time."""

    def __init__(self, *, cost: int = MIN_COST, workers: int | None = None) -> None:
        if cost < MIN_COST:
            raise ValueError("bcrypt cost must be at least 12")
        self._cost = cost
        self._pool = ThreadPoolExecutor(
            max_workers=workers or default_workers(), thread_name_prefix="bcrypt"
        )

    async def hash(self, password: str) -> bytes:
        """Hash off the event loop."""
        salt = bcrypt.gensalt(rounds=self._cost)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, bcrypt.hashpw, password.encode(), salt)

    async def check(self, password: str, password_hash: bytes) -> bool:
        """Check off the event loop; a password over bcrypt's 72 bytes never matches."""
        secret = password.encode()
        loop = asyncio.get_running_loop()
        matches = await loop.run_in_executor(
            self._pool, bcrypt.checkpw, secret[:MAX_BYTES], password_hash
        )
        return matches and len(secret) <= MAX_BYTES
