"""In-memory fake of the policy port, for unit tests."""

from __future__ import annotations

from hypersdk_contracts.permissions import ROLE_PERMISSIONS
from hypersdk_policy.ports.outbound import Assignment, RoleStore


class InMemoryRoleStore(RoleStore):
    """The seed matrix, assignments and handled deletions in dicts."""

    def __init__(self) -> None:
        self.matrix = {
            role.value: {p.value for p in perms} for role, perms in ROLE_PERMISSIONS.items()
        }
        self.assignments_by_user: dict[str, dict[str, int | None]] = {}
        """User name -> role -> the generation it was given to (None: by name only)."""
        self.deletions: dict[str, int] = {}

    @property
    def assigned(self) -> dict[str, list[str]]:
        """User name -> roles held, sorted (what tests compare)."""
        return {user: sorted(roles) for user, roles in self.assignments_by_user.items() if roles}

    async def permissions_of_roles(self, roles: list[str]) -> set[str]:
        """Union."""
        return set().union(*(self.matrix.get(role, set()) for role in roles))

    async def roles_of(self, username: str) -> list[str]:
        """Sorted roles."""
        return sorted(self.assignments_by_user.get(username, {}))

    async def lock_user(self, username: str) -> None:
        """Nothing to do: the in-memory unit of work runs one transaction at a time."""

    async def assignments(self, username: str) -> list[Assignment]:
        """By role."""
        held = self.assignments_by_user.get(username, {})
        return [Assignment(role=role, generation=held[role]) for role in sorted(held)]

    async def set_roles(
        self, username: str, roles: list[str], generation: int | None = None
    ) -> None:
        """Replace."""
        if roles:
            self.assignments_by_user[username] = dict.fromkeys(roles, generation)
        else:
            self.assignments_by_user.pop(username, None)

    async def deleted_through(self, username: str) -> int:
        """0 if none."""
        return self.deletions.get(username, 0)

    async def record_deletion(self, username: str, generation: int) -> None:
        """Keep the greatest."""
        self.deletions[username] = max(generation, self.deletions.get(username, 0))

    async def remove_assignments(
        self, username: str, *, through: int | None, unbound: bool
    ) -> list[str]:
        """Drop the matching roles."""
        held = self.assignments_by_user.get(username, {})
        removed = sorted(
            role
            for role, generation in held.items()
            if (generation is None and unbound)
            or (generation is not None and through is not None and generation <= through)
        )
        for role in removed:
            del held[role]
        if not held:
            self.assignments_by_user.pop(username, None)
        return removed

    async def holders_of(self, role: str) -> list[str]:
        """Users with the role."""
        return sorted(user for user, roles in self.assignments_by_user.items() if role in roles)
