"""PostgreSQL adapter of the policy service (schema ``policy``)."""

from __future__ import annotations

from datetime import datetime

from hypersdk_contracts.permissions import ROLE_PERMISSIONS
from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_DEAD_MIGRATION, OUTBOX_MIGRATION
from hypersdk_policy.ports.outbound import RoleStore

SCHEMA = "policy"
_SEED = ",\n".join(
    f"('{role.value}', '{permission.value}')"
    for role, permissions in ROLE_PERMISSIONS.items()
    for permission in sorted(permissions)
)
MIGRATIONS = [
    f"""
    CREATE TABLE role_permissions (
        role text NOT NULL,
        permission text NOT NULL,
        PRIMARY KEY (role, permission)
    );
    INSERT INTO role_permissions (role, permission) VALUES
    {_SEED};
    CREATE TABLE role_assignments (
        username text NOT NULL,
        role text NOT NULL,
        assigned_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (username, role)
    );
    """,
    OUTBOX_MIGRATION,
    OUTBOX_DEAD_MIGRATION,
]


class PostgresRoleStore(RoleStore):
    """Roles in ``policy.role_permissions`` and ``policy.role_assignments``."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def permissions_of_roles(self, roles: list[str]) -> set[str]:
        """Union of permissions."""
        rows = await self._pool.fetch(
            "SELECT DISTINCT permission FROM policy.role_permissions WHERE role = ANY($1)", roles
        )
        return {row["permission"] for row in rows}

    async def roles_of(self, username: str) -> list[str]:
        """Sorted roles."""
        rows = await self._pool.fetch(
            "SELECT role FROM policy.role_assignments WHERE username = $1 ORDER BY role", username
        )
        return [row["role"] for row in rows]

    async def set_roles(self, username: str, roles: list[str]) -> None:
        """Replace in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM policy.role_assignments WHERE username = $1", username)
            await conn.executemany(
                "INSERT INTO policy.role_assignments (username, role) VALUES ($1, $2)",
                [(username, role) for role in roles],
            )

    async def remove_roles_assigned_until(self, username: str, until: datetime) -> list[str]:
        """One statement: only rows assigned at or before ``until`` go."""
        rows = await self._pool.fetch(
            "DELETE FROM policy.role_assignments WHERE username = $1 AND assigned_at <= $2 "
            "RETURNING role",
            username,
            until,
        )
        return sorted(row["role"] for row in rows)

    async def holders_of(self, role: str) -> list[str]:
        """Users holding a role."""
        rows = await self._pool.fetch(
            "SELECT username FROM policy.role_assignments WHERE role = $1 ORDER BY username", role
        )
        return [row["username"] for row in rows]
