"""Outbound ports of the policy service."""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime


class RoleStore(ABC):
    """Roles, their permissions and who holds them."""

    @abstractmethod
    async def permissions_of_roles(self, roles: list[str]) -> set[str]:
        """Union of the permissions of ``roles``."""

    @abstractmethod
    async def roles_of(self, username: str) -> list[str]:
        """Roles a user holds, sorted."""

    @abstractmethod
    async def set_roles(self, username: str, roles: list[str]) -> None:
        """Replace the roles a user holds."""

    @abstractmethod
    async def remove_roles_assigned_until(self, username: str, until: datetime) -> list[str]:
        """Remove the user's roles assigned at or before ``until``; the removed ones, sorted.

        Roles assigned later (to a new user of the same name) stay.
        """

    @abstractmethod
    async def holders_of(self, role: str) -> list[str]:
        """Users holding ``role``."""
