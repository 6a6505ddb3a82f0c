"""Request/reply subscribers of the identity service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    ApiKeyIdRequest,
    ApiKeyView,
    AuthenticateApiKeyRequest,
    AuthenticateRequest,
    CreateApiKeyRequest,
    CreateUserRequest,
    IssuedApiKey,
    ListApiKeysRequest,
    ListSessionsRequest,
    ListUsersRequest,
    LoginRequest,
    LoginResult,
    LogoutRequest,
    Principal,
    RefreshRequest,
    RevokedSessions,
    RevokeSessionRequest,
    RevokeUserSessionsRequest,
    RotateApiKeyRequest,
    SessionView,
    UpdateUserRequest,
    UserNameRequest,
    UserView,
)
from hypersdk_identity.core.apikeys import ApiKeyService, Caller
from hypersdk_identity.core.service import IdentityService
from hypersdk_kit.bus import Answer, RequestT, serve_rpc
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import ClaimsSigner

USERS_MANAGE = frozenset({Permission.USERS_MANAGE.value})
APIKEYS_MANAGE = frozenset({Permission.APIKEYS_MANAGE.value})
Answerer = Callable[[RequestT], Awaitable[Answer]]


def principal_claims(principal: Principal) -> dict[str, Any]:
    """What identity's assertion of a principal says."""
    return {
        "typ": "principal",
        "sub": principal.username,
        "kind": principal.kind,
        "sid": principal.session_id,
        "kid": principal.key_id,
        "scopes": principal.scopes,
        "xroles": principal.external_roles,
    }


async def sign_principal(signer: ClaimsSigner, principal: Principal) -> Principal:
    """The principal with a short-lived assertion of itself, signed by identity."""
    assertion = await signer.assert_claims(principal_claims(principal))
    return principal.model_copy(update={"assertion": assertion})


def register_rpc(
    broker: RabbitBroker,
    identity: IdentityService,
    *,
    signer: ClaimsSigner,
    guard: RequestGuard,
    api_keys: ApiKeyService,
) -> None:
    """Answer the identity questions on their request queues."""

    async def login(request: LoginRequest) -> LoginResult:
        # Only the gateway's seal says where a login came from: the address throttle counts
        # the sealed address, never one a caller on the bus wrote into the context.
        seal = await guard.admit(operation=RpcQueue.IDENTITY_LOGIN, context=request.context)
        context = request.context.model_copy(update={"source_ip": seal.get("ip")})
        return await identity.login(request.username, request.password, context)

    async def authenticate(request: AuthenticateRequest) -> Principal:
        return await sign_principal(signer, await identity.authenticate(request.token))

    async def logout(request: LogoutRequest) -> None:
        await identity.logout(request.token, request.context)

    async def create_user(request: CreateUserRequest) -> UserView:
        return await identity.create_user(
            request.username, request.password, request.context, source=request.source
        )

    async def list_users(request: ListUsersRequest) -> list[UserView]:
        return await identity.list_users()

    register_account_rpc(broker, identity, signer=signer, guard=guard)
    register_api_key_rpc(broker, api_keys, signer=signer, guard=guard)
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


def register_account_rpc(
    broker: RabbitBroker,
    identity: IdentityService,
    *,
    signer: ClaimsSigner,
    guard: RequestGuard,
) -> None:
    """Sessions of the caller, and user management (users:manage)."""

    async def refresh(request: RefreshRequest) -> LoginResult:
        return await identity.refresh(request.token, request.context)

    async def list_sessions(request: ListSessionsRequest) -> list[SessionView]:
        claims = await own_session_claims(
            guard,
            RpcQueue.IDENTITY_LIST_SESSIONS,
            request.context,
            request.username,
            target=request.username,
        )
        return await identity.list_sessions(request.username, current_session_id=claims.get("sid"))

    async def revoke_session(request: RevokeSessionRequest) -> None:
        await own_session_claims(
            guard,
            RpcQueue.IDENTITY_REVOKE_SESSION,
            request.context,
            request.username,
            target=request.session_id,
        )
        await identity.revoke_session(request.username, request.session_id, request.context)

    async def get_user(request: UserNameRequest) -> UserView:
        return await identity.get_user(request.username)

    async def update_user(request: UpdateUserRequest) -> UserView:
        return await identity.set_disabled(
            request.username, disabled=request.disabled, context=request.context
        )

    async def delete_user(request: UserNameRequest) -> UserView:
        return await identity.delete_user(request.username, request.context)

    async def unlock_user(request: UserNameRequest) -> None:
        await identity.unlock_user(request.username, request.context)

    async def revoke_user_sessions(request: RevokeUserSessionsRequest) -> RevokedSessions:
        return await identity.revoke_user_sessions(request.username, request.context)

    serve_rpc(broker, RpcQueue.IDENTITY_REFRESH, RefreshRequest, refresh)
    serve_rpc(broker, RpcQueue.IDENTITY_LIST_SESSIONS, ListSessionsRequest, list_sessions)
    serve_rpc(broker, RpcQueue.IDENTITY_REVOKE_SESSION, RevokeSessionRequest, revoke_session)

    def manage(queue: str, model: type[RequestT], answer: Answerer[RequestT]) -> None:
        serve_rpc(broker, queue, model, answer, permissions=USERS_MANAGE, authorizer=guard)

    # Issuing an API key for another user (apikeys:manage) looks the owner up too.
    serve_rpc(
        broker,
        RpcQueue.IDENTITY_GET_USER,
        UserNameRequest,
        get_user,
        permissions=USERS_MANAGE | APIKEYS_MANAGE,
        authorizer=guard,
    )
    manage(RpcQueue.IDENTITY_UPDATE_USER, UpdateUserRequest, update_user)
    manage(RpcQueue.IDENTITY_DELETE_USER, UserNameRequest, delete_user)
    manage(RpcQueue.IDENTITY_UNLOCK_USER, UserNameRequest, unlock_user)
    manage(RpcQueue.IDENTITY_REVOKE_USER_SESSIONS, RevokeUserSessionsRequest, revoke_user_sessions)


def register_api_key_rpc(
    broker: RabbitBroker,
    api_keys: ApiKeyService,
    *,
    signer: ClaimsSigner,
    guard: RequestGuard,
) -> None:
    """API keys: authentication (any caller with a key), management (apikeys:manage)."""

    async def authenticate_api_key(request: AuthenticateApiKeyRequest) -> Principal:
        return await sign_principal(signer, await api_keys.authenticate(request.key))

    async def create_api_key(request: CreateApiKeyRequest) -> IssuedApiKey:
        return await api_keys.create(
            owner=request.owner,
            name=request.name,
            scopes=request.scopes,
            expires_at=request.expires_at,
            caller=await caller_of(
                guard, RpcQueue.IDENTITY_CREATE_API_KEY, request.context, target=request.owner
            ),
            context=request.context,
        )

    async def list_api_keys(request: ListApiKeysRequest) -> list[ApiKeyView]:
        return await api_keys.list_keys(
            owner=request.owner,
            caller=await caller_of(
                guard, RpcQueue.IDENTITY_LIST_API_KEYS, request.context, target=request.owner
            ),
            context=request.context,
        )

    async def revoke_api_key(request: ApiKeyIdRequest) -> None:
        await api_keys.revoke(
            request.key_id,
            caller=await caller_of(
                guard, RpcQueue.IDENTITY_REVOKE_API_KEY, request.context, target=request.key_id
            ),
            context=request.context,
        )

    async def rotate_api_key(request: RotateApiKeyRequest) -> IssuedApiKey:
        return await api_keys.rotate(
            request.key_id,
            grace_seconds=request.grace_seconds,
            caller=await caller_of(
                guard, RpcQueue.IDENTITY_ROTATE_API_KEY, request.context, target=request.key_id
            ),
            context=request.context,
        )

    serve_rpc(
        broker,
        RpcQueue.IDENTITY_AUTHENTICATE_API_KEY,
        AuthenticateApiKeyRequest,
        authenticate_api_key,
    )

    def manage(queue: str, model: type[RequestT], answer: Answerer[RequestT]) -> None:
        serve_rpc(broker, queue, model, answer, permissions=APIKEYS_MANAGE, authorizer=guard)

    manage(RpcQueue.IDENTITY_CREATE_API_KEY, CreateApiKeyRequest, create_api_key)
    manage(RpcQueue.IDENTITY_LIST_API_KEYS, ListApiKeysRequest, list_api_keys)
    manage(RpcQueue.IDENTITY_REVOKE_API_KEY, ApiKeyIdRequest, revoke_api_key)
    manage(RpcQueue.IDENTITY_ROTATE_API_KEY, RotateApiKeyRequest, rotate_api_key)


async def caller_of(
    guard: RequestGuard, operation: str, context: RequestContext, *, target: str | None
) -> Caller:
    """The caller of a key operation, from its principal assertion once verified.

    Read from the assertion identity signed, never from a request field, so a caller cannot
    claim a broader key than it holds. Anything but a session without scopes counts as a key,
    and a key without readable scopes has none.
    """
    claims = await guard.authenticate(operation=operation, context=context, target=target)
    scopes = claims.get("scopes")
    roles = claims.get("xroles")
    external_roles = tuple(str(role) for role in roles) if isinstance(roles, list) else ()
    if claims.get("kind") == "session" and scopes is None:
        key_scopes = None
    else:
        key_scopes = tuple(str(scope) for scope in scopes) if isinstance(scopes, list) else ()
    return Caller(
        username=str(claims.get("sub")), key_scopes=key_scopes, external_roles=external_roles
    )


async def own_session_claims(
    guard: RequestGuard,
    operation: str,
    context: RequestContext,
    username: str,
    *,
    target: str | None,
) -> dict[str, Any]:
    """The caller's verified principal claims; it may only ask about its own sessions.

    Only with a session: an API key, whatever its scopes, neither lists nor ends its owner's
    sessions (decision 0025).
    """
    claims = await guard.authenticate(operation=operation, context=context, target=target)
    if claims.get("sub") != username:
        await guard.refuse(operation=operation, reason="actor_mismatch", context=context)
    if claims.get("kind") != "session":
        await guard.refuse(operation=operation, reason="session_required", context=context)
    return claims
