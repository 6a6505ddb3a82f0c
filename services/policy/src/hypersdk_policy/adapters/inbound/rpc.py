"""Request/reply subscribers of the policy service."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    AssignRolesRequest,
    DecideRequest,
    Decision,
    RoleList,
    RolesOfRequest,
)
from hypersdk_kit.bus import serve_rpc
from hypersdk_policy.core.service import PolicyService


def register_rpc(broker: RabbitBroker, policy: PolicyService) -> None:
    """Answer the policy questions on their request queues."""

    async def decide(request: DecideRequest) -> Decision:
        return await policy.decide(
            username=request.username,
            permission=request.permission,
            resource=request.resource,
            context=request.context,
        )

    async def assign_roles(request: AssignRolesRequest) -> RoleList:
        roles = await policy.assign_roles(
            username=request.username, roles=request.roles, context=request.context
        )
        return RoleList(username=request.username, roles=roles)

    async def roles_of(request: RolesOfRequest) -> RoleList:
        return RoleList(username=request.username, roles=await policy.roles_of(request.username))

    serve_rpc(broker, RpcQueue.POLICY_DECIDE, DecideRequest, decide)
    serve_rpc(broker, RpcQueue.POLICY_ASSIGN_ROLES, AssignRolesRequest, assign_roles)
    serve_rpc(broker, RpcQueue.POLICY_ROLES_OF, RolesOfRequest, roles_of)
