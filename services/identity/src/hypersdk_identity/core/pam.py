"""Linux PAM users: who counts as one, and which roles their Linux groups give them.

A PAM user's password is checked by PAM (so by whatever the PAM service stacks: pam_unix,
pam_sss for LDAP/AD through SSSD, pam_krb5...); their groups come from the name service switch
(files, sss, ldap). Accounts below ``min_uid`` (root, daemons) are never accepted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from hypersdk_identity.core.models import SystemAccount, User
from hypersdk_identity.ports.outbound import AccountDirectory, PamAuthenticator, UserStore


@dataclass(frozen=True)
class PamSupport:
    """PAM authentication, the Linux-group-to-role map, and auto-provisioning."""

    authenticator: PamAuthenticator
    directory: AccountDirectory
    group_roles: Mapping[str, Sequence[str]] = field(default_factory=dict)
    auto_provision: bool = True
    min_uid: int = 1000

    async def account(self, username: str) -> SystemAccount | None:
        """The Linux account of ``username`` if it may log in here (exists, uid >= min_uid)."""
        account = await self.directory.account(username)
        if account is None or account.uid < self.min_uid:
            return None
        return account

    def external_roles(self, account: SystemAccount) -> list[str]:
        """Roles the account's groups map to, sorted."""
        return sorted(
            {role for group in account.groups for role in self.group_roles.get(group, ())}
        )

    @property
    def provisions(self) -> bool:
        """Whether a first PAM login in a mapped group creates the user."""
        return self.auto_provision and bool(self.group_roles)

    async def roles_of_user(self, user: User) -> list[str] | None:
        """External roles of a PAM user now; None if their Linux account is gone."""
        account = await self.account(user.username)
        return None if account is None else self.external_roles(account)


async def usable_owner(
    users: UserStore, pam: PamSupport | None, username: str
) -> tuple[User, list[str]] | None:
    """The enabled user behind a credential and their external roles, or None if unusable.

    A PAM user whose Linux account is gone, or who is PAM-backed while PAM is not configured,
    is unusable like a disabled one: their sessions and keys stop working.
    """
    user = await users.get(username)
    if user is None or user.disabled:
        return None
    if user.source != "pam":
        return user, []
    roles = None if pam is None else await pam.roles_of_user(user)
    return None if roles is None else (user, roles)
