"""Bus adapters of identity: questions to the policy service."""

from __future__ import annotations

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import PermissionList, PermissionsOfRequest
from hypersdk_identity.ports.outbound import PermissionDirectory
from hypersdk_kit.bus import RpcClient


class RpcPermissionDirectory(PermissionDirectory):
    """Asks policy (``policy.rpc.permissions_of``) with the caller's grant and assertion."""

    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    async def permissions_of(
        self, username: str, *, external_roles: list[str], context: RequestContext
    ) -> frozenset[str]:
        """Policy's answer; a refusal or a timeout is raised as policy's ServiceError."""
        answer = await self._rpc.call(
            RpcQueue.POLICY_PERMISSIONS_OF,
            PermissionsOfRequest(username=username, external_roles=external_roles, context=context),
        )
        return frozenset(PermissionList.model_validate(answer).permissions)
