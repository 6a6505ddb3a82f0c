"""Policy use cases: decide permissions, assign roles."""

from __future__ import annotations

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import AuthorizationDenied, RoleAssigned
from hypersdk_contracts.permissions import Permission, Role
from hypersdk_contracts.rpc import Decision
from hypersdk_kit.bus import EventPublisher
from hypersdk_policy.ports.outbound import RoleStore


class PolicyService:
    """Role-based access control over the design brief's matrix."""

    def __init__(self, *, roles: RoleStore, events: EventPublisher) -> None:
        self._roles = roles
        self._events = events

    async def decide(
        self, *, username: str, permission: str, resource: str, context: RequestContext
    ) -> Decision:
        """Grant or refuse; every refusal is published (and so audited)."""
        if permission not in {p.value for p in Permission}:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "Unknown permission.")
        held = await self._roles.roles_of(username)
        allowed = permission in await self._roles.permissions_of_roles(held)
        if not allowed:
            await self._events.publish(
                AuthorizationDenied(principal=username, permission=permission, resource=resource),
                subject=resource,
                context=context,
            )
        return Decision(allowed=allowed, roles=held)

    async def assign_roles(
        self, *, username: str, roles: list[str], context: RequestContext
    ) -> list[str]:
        """Replace a user's roles with known ones."""
        known = {r.value for r in Role}
        unknown = sorted(set(roles) - known)
        if unknown:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown roles: {', '.join(unknown)}.")
        wanted = sorted(set(roles))
        await self._roles.set_roles(username, wanted)
        await self._events.publish(
            RoleAssigned(username=username, roles=wanted),
            subject=f"user/{username}",
            context=context,
        )
        return wanted

    async def roles_of(self, username: str) -> list[str]:
        """Roles a user holds."""
        return await self._roles.roles_of(username)

    async def ensure_bootstrap_admin(self, username: str) -> bool:
        """Give ``username`` the admin role if nobody holds it; return whether it did."""
        if await self._roles.holders_of(Role.ADMIN.value):
            return False
        await self.assign_roles(
            username=username, roles=[Role.ADMIN.value], context=RequestContext(actor="bootstrap")
        )
        return True
