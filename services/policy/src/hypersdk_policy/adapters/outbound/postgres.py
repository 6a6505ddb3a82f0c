"""PostgreSQL adapter of the policy service (schema ``policy``)."""

from __future__ import annotations

from hypersdk_contracts.permissions import ROLE_PERMISSIONS
from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_DEAD_MIGRATION, OUTBOX_MIGRATION
from hypersdk_policy.ports.outbound import Assignment, RoleStore

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
    # 4: assignments name the account they were given to, deletions are remembered by account
    # (decision 0041). Rows from before stay unbound (NULL): by name only.
    """
    ALTER TABLE role_assignments ADD COLUMN generation bigint CHECK (generation >= 1);
    CREATE TABLE user_deletions (
        username text PRIMARY KEY,
        generation bigint NOT NULL CHECK (generation >= 1)
    );
    """,
]
_USER_LOCK_NAMESPACE = 0x485350  # "HSP": advisory lock key prefix of a user name's assignments.


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

    async def lock_user(self, username: str) -> None:
        """A transaction-scoped advisory lock on the name (joins the open transaction)."""
        await self._pool.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _USER_LOCK_NAMESPACE, username
        )

    async def assignments(self, username: str) -> list[Assignment]:
        """By role."""
        rows = await self._pool.fetch(
            "SELECT role, generation FROM policy.role_assignments WHERE username = $1"
            " ORDER BY role",
            username,
        )
        return [Assignment(role=row["role"], generation=row["generation"]) for row in rows]

    async def set_roles(
        self, username: str, roles: list[str], generation: int | None = None
    ) -> None:
        """Replace in one transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM policy.role_assignments WHERE username = $1", username)
            await conn.executemany(
                "INSERT INTO policy.role_assignments (username, role, generation)"
                " VALUES ($1, $2, $3)",
                [(username, role, generation) for role in roles],
            )

    async def deleted_through(self, username: str) -> int:
        """0 if none."""
        value = await self._pool.fetchval(
            "SELECT generation FROM policy.user_deletions WHERE username = $1", username
        )
        return 0 if value is None else int(value)

    async def record_deletion(self, username: str, generation: int) -> None:
        """Upsert, keeping the greatest."""
        await self._pool.execute(
            "INSERT INTO policy.user_deletions AS d (username, generation) VALUES ($1, $2)"
            " ON CONFLICT (username) DO UPDATE SET generation = greatest(d.generation, $2)",
            username,
            generation,
        )

    async def remove_assignments(
        self, username: str, *, through: int | None, unbound: bool
    ) -> list[str]:
        """One statement."""
        rows = await self._pool.fetch(
            "DELETE FROM policy.role_assignments WHERE username = $1"
            " AND ((generation IS NULL AND $3) OR generation <= $2) RETURNING role",
            username,
            through,
            unbound,
        )
        return sorted(row["role"] for row in rows)

    async def holders_of(self, role: str) -> list[str]:
        """Users holding a role."""
        rows = await self._pool.fetch(
            "SELECT username FROM policy.role_assignments WHERE role = $1 ORDER BY username", role
        )
        return [row["username"] for row in rows]
