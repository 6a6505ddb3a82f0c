"""Request/reply subscribers of the identity service."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    AuthenticateRequest,
    CreateUserRequest,
    ListUsersRequest,
    LoginRequest,
    LoginResult,
    LogoutRequest,
    Principal,
    UserView,
)
from hypersdk_identity.core.service import IdentityService
from hypersdk_kit.bus import serve_rpc
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import AssertionSigner

USERS_MANAGE = frozenset({Permission.USERS_MANAGE.value})


def sign_principal(signer: AssertionSigner, principal: Principal) -> Principal:
    """The principal with a short-lived assertion of itself, signed by identity."""
    assertion = signer.sign(
        {
            "typ": "principal",
            "sub": principal.username,
            "kind": principal.kind,
            "sid": principal.session_id,
            "kid": principal.key_id,
            "scopes": principal.scopes,
            "xroles": principal.external_roles,
        }
    )
    return principal.model_copy(update={"assertion": assertion})


def register_rpc(
    broker: RabbitBroker,
    identity: IdentityService,
    *,
    signer: AssertionSigner,
    guard: RequestGuard,
) -> None:
    """Answer the identity questions on their request queues."""

    async def login(request: LoginRequest) -> LoginResult:
        return await identity.login(request.username, request.password, request.context)

    async def authenticate(request: AuthenticateRequest) -> Principal:
        return sign_principal(signer, await identity.authenticate(request.token))

    async def logout(request: LogoutRequest) -> None:
        await identity.logout(request.token, request.context)

    async def create_user(request: CreateUserRequest) -> UserView:
        return await identity.create_user(request.username, request.password, request.context)

    async def list_users(request: ListUsersRequest) -> list[UserView]:
        return await identity.list_users()

    serve_rpc(broker, RpcQueue.IDENTITY_LOGIN, LoginRequest, login)
    serve_rpc(broker, RpcQueue.IDENTITY_AUTHENTICATE, AuthenticateRequest, authenticate)
    serve_rpc(broker, RpcQueue.IDENTITY_LOGOUT, LogoutRequest, logout)
    serve_rpc(
        broker,
        RpcQueue.IDENTITY_CREATE_USER,
        CreateUserRequest,
        create_user,
        permissions=USERS_MANAGE,
        authorizer=guard,
    )
    serve_rpc(
        broker,
        RpcQueue.IDENTITY_LIST_USERS,
        ListUsersRequest,
        list_users,
        permissions=USERS_MANAGE,
        authorizer=guard,
    )
