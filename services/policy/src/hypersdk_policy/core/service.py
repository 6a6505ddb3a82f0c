"""Policy use cases: decide permissions, assign roles."""

from __future__ import annotations

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import AuthorizationDenied, RoleAssigned, RoleRemoved
from hypersdk_contracts.permissions import Permission, Role
from hypersdk_contracts.rpc import Decision
from hypersdk_kit.ports import UnitOfWork
from hypersdk_policy.ports.outbound import Assignment, RoleStore


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
        self,
        *,
        username: str,
        roles: list[str],
        context: RequestContext,
        generation: int | None = None,
    ) -> list[str]:
        """Replace a user's roles with known ones, given to account ``generation``.

        ``generation`` is identity's number of the account the roles are for (decision 0041).
        Refused with ``conflict`` when policy has handled the deletion of that account or of a
        newer one, or when a newer account of the name holds roles: a late request for an
        account that is gone never gives its roles to the next account of the name; clearing
        the roles of such an account changes nothing and answers no roles (its own went with
        its deletion). Roles of older accounts of the name (whose deletion has not arrived
        yet) are replaced.
        Without a generation (by name only: the bootstrap admin, a clear by name) the roles
        go to whichever account holds the name, and the next deletion of it removes them.
        """
        known = {r.value for r in Role}
        unknown = sorted(set(roles) - known)
        if unknown:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"Unknown roles: {', '.join(unknown)}.")
        wanted = sorted(set(roles))
        async with self._uow.transaction():
            await self._roles.lock_user(username)
            held = await self._roles.assignments(username)
            stale = None if generation is None else await self._stale(username, generation, held)
            if stale is not None:
                if not wanted:
                    return []
                raise ServiceError(ErrorCode.CONFLICT, stale)
            removed = sorted({a.role for a in held} - set(wanted))
            await self._roles.set_roles(username, wanted, generation)
            await self._uow.record(
                RoleAssigned(username=username, roles=wanted, generation=generation),
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

    async def _stale(self, username: str, generation: int, held: list[Assignment]) -> str | None:
        """Why account ``generation`` may not get roles (gone, or a newer one holds the name)."""
        if generation <= await self._roles.deleted_through(username):
            return "That account was deleted; a newer one may have the name."
        if any(a.generation is not None and a.generation > generation for a in held):
            return "A newer account of that name holds roles; read it again."
        return None

    async def user_deleted(self, username: str, *, generation: int | None) -> list[str]:
        """Remove the roles of an account identity deleted; the removed ones (none the 2nd time).

        The reaction to ``identity.user.deleted``: whatever happened to the gateway's own call
        clearing them, a deleted account's assignments go, so a new account of the same name
        (a PAM user provisioned on first login, say) never inherits them. Which assignments are
        the deleted account's is decided by identity's generations alone, never by a clock
        (decision 0041): those given to ``generation`` or an older account of the name go,
        those of a newer account stay. Assignments by name only go with the first deletion of
        the name newer than any policy handled before. Idempotent: a redelivered event (or one
        older than a deletion handled already) finds nothing to remove and publishes nothing.
        An event without a generation (published before accounts had them) removes the
        assignments by name only.
        """
        async with self._uow.transaction():
            await self._roles.lock_user(username)
            if generation is None:
                removed = await self._roles.remove_assignments(username, through=None, unbound=True)
            else:
                newest = generation > await self._roles.deleted_through(username)
                if newest:
                    await self._roles.record_deletion(username, generation)
                removed = await self._roles.remove_assignments(
                    username, through=generation, unbound=newest
                )
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
