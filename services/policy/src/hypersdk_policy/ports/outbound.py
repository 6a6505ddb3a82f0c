"""Outbound ports of the policy service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True)
class Assignment:
    """One role a user name holds, and the account (identity's generation) it was given to.

    ``generation`` None: assigned by name only (the bootstrap admin, rows from before accounts
    had generations); it belongs to whichever account holds the name (decision 0041).
    """

    role: str
    generation: int | None


class RoleStore(ABC):
    """Roles, their permissions and who holds them.

    The changes of one user name's assignments are made under :meth:`lock_user`, inside the
    unit of work's transaction, so that reading what the name holds and changing it is atomic
    against a concurrent assignment or deletion of the same name.
    """

    @abstractmethod
    async def permissions_of_roles(self, roles: list[str]) -> set[str]:
        """Union of the permissions of ``roles``."""

    @abstractmethod
    async def roles_of(self, username: str) -> list[str]:
        """Roles a user holds, sorted."""

    @abstractmethod
    async def lock_user(self, username: str) -> None:
        """Hold the changes of ``username``'s assignments to this transaction until it ends."""

    @abstractmethod
    async def assignments(self, username: str) -> list[Assignment]:
        """The roles a user name holds with their accounts, by role."""

    @abstractmethod
    async def set_roles(
        self, username: str, roles: list[str], generation: int | None = None
    ) -> None:
        """Replace every role the name holds by ``roles``, given to account ``generation``."""

    @abstractmethod
    async def deleted_through(self, username: str) -> int:
        """The newest generation of the name whose deletion policy handled; 0 if none."""

    @abstractmethod
    async def record_deletion(self, username: str, generation: int) -> None:
        """Remember that account ``generation`` of the name was deleted (never lowers it)."""

    @abstractmethod
    async def remove_assignments(
        self, username: str, *, through: int | None, unbound: bool
    ) -> list[str]:
        """Remove roles of the name; the removed roles, sorted.

        Those given to generation ``through`` or an older one, and with ``unbound`` those
        given by name only.
        """

    @abstractmethod
    async def holders_of(self, role: str) -> list[str]:
        """Users holding ``role``."""
