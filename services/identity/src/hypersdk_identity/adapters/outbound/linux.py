"""Linux accounts: passwords through PAM (python-pam), groups through NSS (pwd, grp).

Both run in a thread: PAM modules and name services block (files, SSSD, LDAP, Kerberos), and
PAM's own messages and codes never leave this module except as a debug log line.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd

import pam

from hypersdk_identity.core.models import SystemAccount
from hypersdk_identity.ports.outbound import AccountDirectory, PamAuthenticator

logger = logging.getLogger(__name__)


class PythonPamAuthenticator(PamAuthenticator):
    """``pam_authenticate`` and ``pam_acct_mgmt`` of one PAM service, in a thread."""

    def __init__(self, *, service: str, max_concurrent: int = 4) -> None:
        self._service = service
        # PAM stacks can be slow (network, Kerberos); do not let them take every worker thread.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def authenticate(self, username: str, password: str) -> bool:
        """Whether PAM accepts the password and the account."""
        async with self._slots:
            return await asyncio.to_thread(self._authenticate, username, password)

    def _authenticate(self, username: str, password: str) -> bool:
        checker = pam.PamAuthenticator()
        try:
            accepted = bool(
                checker.authenticate(username, password, service=self._service, resetcreds=False)
            )
        except Exception:  # a PAM stack must never take the login path down with it
            logger.warning("PAM service %s failed to answer", self._service)
            return False
        if not accepted:
            logger.debug("PAM refused a login (code %s)", checker.code)
        return accepted


class NssAccountDirectory(AccountDirectory):
    """Accounts and group names from the name service switch (``getpwnam``, ``getgrouplist``)."""

    async def account(self, username: str) -> SystemAccount | None:
        """The account and the names of all its groups (primary and supplementary)."""
        return await asyncio.to_thread(self._account, username)

    @staticmethod
    def _account(username: str) -> SystemAccount | None:
        try:
            entry = pwd.getpwnam(username)
        except KeyError:
            return None
        names: set[str] = set()
        for gid in os.getgrouplist(entry.pw_name, entry.pw_gid):
            try:
                names.add(grp.getgrgid(gid).gr_name)
            except KeyError:
                continue
        return SystemAccount(username=entry.pw_name, uid=entry.pw_uid, groups=tuple(sorted(names)))
