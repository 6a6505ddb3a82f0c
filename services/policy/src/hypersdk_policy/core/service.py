"""Policy use cases: decide permissions, assign roles."""

from __future__ import annotations

from datetime import datetime

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import AuthorizationDenied, RoleAssigned, RoleRemoved
from hypersdk_contracts.permissions import Permission, Role
from hypersdk_contracts.rpc import Decision
from hypersdk_kit.ports import UnitOfWork
from hypersdk_policy.ports.outbound import RoleStore


class PolicyService:
    """Role-based access control over the matrix of docs/contracts.md."""

    def __init__(self, *, roles: RoleStore, uow: UnitOfWork) -> None:
        self._roles = roles
        self._uow = uow

    async def decide(
        self,
        *,
        username: str,
        permission: str,
        resource: str,
        context: RequestContext,
        scopes: list[str] | None = None,
        external_roles: list[str] | None = None,
    ) -> Decision:
        """Grant or refuse; every refusal is published (and so audited).

        The principal's permissions are those of its assigned roles and its external roles
        (e.g. from PAM groups), narrowed to ``scopes`` for an API key.
        """
        if permission not in {p.value for p in Permission}:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "Unknown permission.")
        held = await self._roles.roles_of(username)
        known = {r.value for r in Role}
        roles = sorted({*held, *(r for r in external_roles or [] if r in known)})
        granted = await self._roles.permissions_of_roles(roles)
        if scopes is not None:
            granted &= set(scopes)
        allowed = permission in granted
        if not allowed:
            await self._uow.record(
                AuthorizationDenied(principal=username, permission=permission, resource=resource),
                subject=resource,
                context=context,
            )
        return Decision(allowed=allowed, roles=roles)

    async def permissions_of(
        self, username: str, external_roles: list[str] | None = None
    ) -> list[str]:
        """Every permission a user holds through assigned and external roles, sorted."""
        known = {r.value for r in Role}
        roles = {
            *await self._roles.roles_of(username),
            *(r for r in external_roles or [] if r in known),
        }
        return sorted(await self._roles.permissions_of_roles(sorted(roles)))

    async def assign_roles(
        self, *, username: str, roles: list[str], context: RequestContext
    ) -> list[str]:
        """Replace a user's roles with known ones."""
        known = {r.value for r in Role}
        unknown = sorted(set(roles) - known)
        if unknown:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown roles: {', '.join(unknown)}.")
        wanted = sorted(set(roles))
        async with self._uow.transaction():
            removed = sorted(set(await self._roles.roles_of(username)) - set(wanted))
            await self._roles.set_roles(username, wanted)
            await self._uow.record(
                RoleAssigned(username=username, roles=wanted),
                subject=f"user/{username}",
                context=context,
            )
            if removed:
                await self._uow.record(
                    RoleRemoved(username=username, roles=removed),
                    subject=f"user/{username}",
                    context=context,
                )
        return wanted

    async def user_deleted(self, username: str, *, deleted_at: datetime) -> list[str]:
        """Remove the roles of a user identity deleted; the removed ones (none the 2nd time).

        The reaction to ``identity.user.deleted``: whatever happened to the gateway's own call
        clearing them, a deleted user's assignments go, so a new user of the same name (a PAM
        user provisioned on first login, say) never inherits them. Roles assigned after the
        deletion belong to such a new user and stay. Idempotent: a redelivered event finds
        nothing to remove and publishes nothing.
        """
        async with self._uow.transaction():
            removed = await self._roles.remove_roles_assigned_until(username, deleted_at)
            if removed:
                await self._uow.record(
                    RoleRemoved(username=username, roles=removed),
                    subject=f"user/{username}",
                    context=RequestContext(),
                )
        return removed

    async def roles_of(self, username: str) -> list[str]:
        """Roles a user holds."""
        return await self._roles.roles_of(username)

    async def ensure_bootstrap_admin(self, username: str) -> bool:
        """Give ``username`` the admin role if nobody holds it; return whether it did."""
        if await self._roles.holders_of(Role.ADMIN.value):
            return False
        # No actor: no API request caused it, and only the gateway's request seal backs one.
        await self.assign_roles(
            username=username, roles=[Role.ADMIN.value], context=RequestContext()
        )
        return True
