"""The common-password list of zxcvbn (its 30,000 most frequent leaked passwords).

zxcvbn is a maintained package (Dropbox's estimator, ported to Python) that ships the list in
``zxcvbn.frequency_lists``. The list is loaded on first use, in a thread, not at import time.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

from hypersdk_identity.ports.outbound import PasswordBlocklist


def load_zxcvbn_passwords() -> frozenset[str]:
    """The list, case-folded.

    Only ``zxcvbn/frequency_lists.py`` is executed: importing the ``zxcvbn`` package itself
    would also build its ranked dictionaries of every list, which we do not use.
    """
    package = importlib.util.find_spec("zxcvbn")
    if package is None or not package.submodule_search_locations:
        raise RuntimeError("the zxcvbn package is not installed")
    path = Path(next(iter(package.submodule_search_locations))) / "frequency_lists.py"
    spec = importlib.util.spec_from_file_location("_hypersdk_zxcvbn_frequency_lists", path)
    if spec is None or spec.loader is None:
        raise RuntimeError("zxcvbn's frequency lists are missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    passwords: list[str] = module.FREQUENCY_LISTS["passwords"]
    return frozenset(password.casefold() for password in passwords)


class ZxcvbnPasswordBlocklist(PasswordBlocklist):
    """Refuses the passwords on zxcvbn's list, ignoring case."""

    def __init__(self) -> None:
        self._passwords: frozenset[str] | None = None
        self._loading = asyncio.Lock()

    async def contains(self, password: str) -> bool:
        """Whether the password is on the list."""
        return password.casefold() in await self.passwords()

    async def passwords(self) -> frozenset[str]:
        """The list, loaded once."""
        if self._passwords is None:
            async with self._loading:
                if self._passwords is None:
                    self._passwords = await asyncio.to_thread(load_zxcvbn_passwords)
        return self._passwords
