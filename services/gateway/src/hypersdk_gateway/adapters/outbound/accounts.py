"""The user workflows' ports over the gateway's backend: identity and policy request/reply."""

from __future__ import annotations

from typing import Literal

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    AssignRolesRequest,
    CreateUserRequest,
    RevokeUserSessionsRequest,
    RoleList,
    RolesOfRequest,
    UpdateUserRequest,
    UserNameRequest,
    UserView,
)
from hypersdk_gateway.ports.outbound import Backend, RoleAssignments, UserAccounts


class BackendUserAccounts(UserAccounts):
    """Identity's ``identity.rpc.*`` user operations."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def create(
        self,
        *,
        username: str,
        password: str | None,
        source: Literal["local", "pam"],
        context: RequestContext,
    ) -> UserView:
        """``identity.rpc.create_user``."""
        request = CreateUserRequest(
            username=username, password=password, source=source, context=context
        )
        return UserView.model_validate(
            await self._backend.ask(RpcQueue.IDENTITY_CREATE_USER, request)
        )

    async def get(self, username: str, context: RequestContext) -> UserView:
        """``identity.rpc.get_user``."""
        request = UserNameRequest(username=username, context=context)
        return UserView.model_validate(await self._backend.ask(RpcQueue.IDENTITY_GET_USER, request))

    async def set_disabled(
        self, username: str, *, disabled: bool, context: RequestContext
    ) -> UserView:
        """``identity.rpc.update_user``."""
        request = UpdateUserRequest(username=username, disabled=disabled, context=context)
        return UserView.model_validate(
            await self._backend.ask(RpcQueue.IDENTITY_UPDATE_USER, request)
        )

    async def delete(self, username: str, context: RequestContext) -> UserView:
        """``identity.rpc.delete_user``."""
        return UserView.model_validate(
            await self._backend.ask(
                RpcQueue.IDENTITY_DELETE_USER, UserNameRequest(username=username, context=context)
            )
        )

    async def end_sessions(self, username: str, context: RequestContext) -> None:
        """``identity.rpc.revoke_user_sessions`` (reason ``roles_changed``)."""
        await self._backend.ask(
            RpcQueue.IDENTITY_REVOKE_USER_SESSIONS,
            RevokeUserSessionsRequest(username=username, reason="roles_changed", context=context),
        )


class BackendRoleAssignments(RoleAssignments):
    """Policy's ``policy.rpc.roles_of`` and ``policy.rpc.assign_roles``."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    async def roles_of(self, username: str, context: RequestContext) -> list[str]:
        """The roles policy says the user holds."""
        answer = await self._backend.ask(
            RpcQueue.POLICY_ROLES_OF, RolesOfRequest(username=username, context=context)
        )
        return RoleList.model_validate(answer).roles

    async def assign(
        self,
        username: str,
        roles: list[str],
        context: RequestContext,
        *,
        generation: int | None,
    ) -> list[str]:
        """Replace the user's roles, for account ``generation``."""
        answer = await self._backend.ask(
            RpcQueue.POLICY_ASSIGN_ROLES,
            AssignRolesRequest(
                username=username, roles=roles, generation=generation, context=context
            ),
        )
        return RoleList.model_validate(answer).roles
