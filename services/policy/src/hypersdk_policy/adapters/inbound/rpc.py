"""Request/reply subscribers of the policy service.

Decisions are asked with the caller's principal assertion (signed by identity); an allowed
decision comes back with a grant signed by policy, which the services acting on the request
check before they act.
"""

from __future__ import annotations

from typing import Any

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    AssignRolesRequest,
    DecideRequest,
    Decision,
    PermissionList,
    PermissionsOfRequest,
    RoleList,
    RolesOfRequest,
)
from hypersdk_kit.bus import serve_rpc
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import ClaimsSigner
from hypersdk_policy.core.service import PolicyService

USERS_MANAGE = frozenset({Permission.USERS_MANAGE.value})


def register_rpc(
    broker: RabbitBroker, policy: PolicyService, *, guard: RequestGuard, signer: ClaimsSigner
) -> None:
    """Answer the policy questions on their request queues."""

    async def decide(request: DecideRequest) -> Decision:
        claims = await guard.authenticate(
            operation=RpcQueue.POLICY_DECIDE, context=request.context, target=request.permission
        )
        if claims["sub"] != request.username:
            await guard.refuse(
                operation=RpcQueue.POLICY_DECIDE, reason="actor_mismatch", context=request.context
            )
        decision = await policy.decide(
            username=request.username,
            permission=request.permission,
            resource=request.resource,
            context=request.context,
            scopes=claims.get("scopes"),
            external_roles=claims.get("xroles") or [],
        )
        if not decision.allowed:
            return decision
        # Bound to the actor, the permission and the operations of one route, not to one
        # request: the gateway reuses it for that route while it lives and drops it on any
        # revocation (decision 0015); its seal binds each use to one request (decision 0027).
        grant = await signer.assert_claims(
            {
                "typ": "grant",
                "sub": request.username,
                "perm": request.permission,
                "op": sorted(set(request.operations)),
            }
        )
        return decision.model_copy(update={"grant": grant})

    async def assign_roles(request: AssignRolesRequest) -> RoleList:
        if request.generation is None and request.roles:
            # By name only, a late request could give roles to the next account of the name
            # (decision 0041); clearing by name can only take roles away.
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, "Roles are given to one account: name its generation."
            )
        roles = await policy.assign_roles(
            username=request.username,
            roles=request.roles,
            generation=request.generation,
            context=request.context,
        )
        return RoleList(username=request.username, roles=roles)

    async def roles_of(request: RolesOfRequest) -> RoleList:
        await _self_or_granted(
            guard, RpcQueue.POLICY_ROLES_OF, request.context, request.username, USERS_MANAGE
        )
        return RoleList(username=request.username, roles=await policy.roles_of(request.username))

    async def permissions_of(request: PermissionsOfRequest) -> PermissionList:
        await _self_or_granted(
            guard,
            RpcQueue.POLICY_PERMISSIONS_OF,
            request.context,
            request.username,
            frozenset({Permission.USERS_MANAGE.value, Permission.APIKEYS_MANAGE.value}),
        )
        permissions = await policy.permissions_of(request.username, request.external_roles)
        return PermissionList(username=request.username, permissions=permissions)

    serve_rpc(broker, RpcQueue.POLICY_DECIDE, DecideRequest, decide)
    serve_rpc(
        broker,
        RpcQueue.POLICY_ASSIGN_ROLES,
        AssignRolesRequest,
        assign_roles,
        permissions=USERS_MANAGE,
        authorizer=guard,
    )
    serve_rpc(broker, RpcQueue.POLICY_ROLES_OF, RolesOfRequest, roles_of)
    serve_rpc(broker, RpcQueue.POLICY_PERMISSIONS_OF, PermissionsOfRequest, permissions_of)


async def _self_or_granted(
    guard: RequestGuard,
    operation: str,
    context: RequestContext,
    username: str,
    permissions: frozenset[str],
) -> dict[str, Any]:
    """A principal may ask about itself; asking about others needs a grant."""
    if context.grant is not None:
        return await guard.authorize(
            operation=operation, context=context, permissions=permissions, target=username
        )
    claims = await guard.authenticate(operation=operation, context=context, target=username)
    if claims["sub"] != username:
        await guard.refuse(operation=operation, reason="permission_not_granted", context=context)
    return claims
