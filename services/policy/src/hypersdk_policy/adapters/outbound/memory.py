"""In-memory fake of the policy port, for unit tests."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from hypersdk_contracts.permissions import ROLE_PERMISSIONS
from hypersdk_policy.ports.outbound import RoleStore


class InMemoryRoleStore(RoleStore):
    """The seed matrix and assignments in dicts."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.matrix = {
            role.value: {p.value for p in perms} for role, perms in ROLE_PERMISSIONS.items()
        }
        self.assignments: dict[str, list[str]] = {}
        self.assigned_at: dict[str, datetime] = {}
        self._clock = clock

    async def permissions_of_roles(self, roles: list[str]) -> set[str]:
        """Union."""
        return set().union(*(self.matrix.get(role, set()) for role in roles))

    async def roles_of(self, username: str) -> list[str]:
        """Sorted roles."""
        return sorted(self.assignments.get(username, []))

    async def set_roles(self, username: str, roles: list[str]) -> None:
        """Replace."""
        self.assignments[username] = list(roles)
        self.assigned_at[username] = self._clock()

    async def remove_roles_assigned_until(self, username: str, until: datetime) -> list[str]:
        """Drop the user's roles if they were set at or before ``until``."""
        if username not in self.assignments or self.assigned_at[username] > until:
            return []
        self.assigned_at.pop(username)
        return sorted(self.assignments.pop(username))

    async def holders_of(self, role: str) -> list[str]:
        """Users with the role."""
        return sorted(user for user, roles in self.assignments.items() if role in roles)
