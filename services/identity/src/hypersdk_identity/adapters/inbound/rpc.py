"""Request/reply subscribers of the identity service."""

from __future__ import annotations

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import RpcQueue
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


def register_rpc(broker: RabbitBroker, identity: IdentityService) -> None:
    """Answer the identity questions on their request queues."""

    async def login(request: LoginRequest) -> LoginResult:
        return await identity.login(request.username, request.password, request.context)

    async def authenticate(request: AuthenticateRequest) -> Principal:
        return await identity.authenticate(request.token)

    async def logout(request: LogoutRequest) -> None:
        await identity.logout(request.token, request.context)

    async def create_user(request: CreateUserRequest) -> UserView:
        return await identity.create_user(request.username, request.password, request.context)

    async def list_users(request: ListUsersRequest) -> list[UserView]:
        return await identity.list_users()

    serve_rpc(broker, RpcQueue.IDENTITY_LOGIN, LoginRequest, login)
    serve_rpc(broker, RpcQueue.IDENTITY_AUTHENTICATE, AuthenticateRequest, authenticate)
    serve_rpc(broker, RpcQueue.IDENTITY_LOGOUT, LogoutRequest, logout)
    serve_rpc(broker, RpcQueue.IDENTITY_CREATE_USER, CreateUserRequest, create_user)
    serve_rpc(broker, RpcQueue.IDENTITY_LIST_USERS, ListUsersRequest, list_users)
