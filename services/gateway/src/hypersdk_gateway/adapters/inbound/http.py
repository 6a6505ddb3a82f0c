"""Routes of the HTTP API (``/api/v1``), authorization per route, and error mapping."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from hypersdk_contracts.asyncapi import asyncapi_document
from hypersdk_contracts.base import INT64_MAX
from hypersdk_contracts.errors import HTTP_STATUS, ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.permissions import Permission
from hypersdk_contracts.rpc import (
    IDEMPOTENCY_KEY_PATTERN,
    NAME_PATTERN,
    PROVIDER_TYPES,
    SECRET_PATH_PATTERN,
    USERNAME_PATTERN,
    ApiKeyIdRequest,
    ApiKeyView,
    AuditEntryView,
    CheckpointRequest,
    CheckpointView,
    ConsistencyProofRequest,
    ConsistencyProofView,
    CreateApiKeyRequest,
    CreateExportRequest,
    DecideRequest,
    DiskFormat,
    GetVmRequest,
    HoldIdRequest,
    HoldView,
    InclusionProofRequest,
    InclusionProofView,
    IssuedApiKey,
    JobIdRequest,
    JobStatus,
    JobView,
    ListApiKeysRequest,
    ListAuditEventsRequest,
    ListCheckpointsRequest,
    ListHoldsRequest,
    ListJobsRequest,
    ListProvidersRequest,
    ListQuarantineRequest,
    ListSecretsRequest,
    ListSessionsRequest,
    ListUsersRequest,
    ListVerificationsRequest,
    ListVmsRequest,
    LoginRequest,
    LogoutRequest,
    PlaceHoldRequest,
    Principal,
    ProviderNameRequest,
    ProviderType,
    ProviderView,
    PublicKeysRequest,
    PutSecretRequest,
    QuarantinedEventView,
    RefreshRequest,
    RegisterProviderRequest,
    RevokeSessionRequest,
    RolesOfRequest,
    RotateApiKeyRequest,
    RotateSecretRequest,
    SecretMetadata,
    SecretPathRequest,
    SecretRotation,
    SessionView,
    StartVerificationRequest,
    UpdateProviderRequest,
    UserNameRequest,
    UserView,
    VerificationIdRequest,
    VerificationView,
    VerifyRequest,
    VerifyResult,
    VmView,
)
from hypersdk_gateway.adapters.inbound.audit_entries import (
    AuditFilters,
    ExportFormat,
    entries_export,
)
from hypersdk_gateway.adapters.inbound.audit_export import (
    audit_bundle,
    first_checkpoint_after,
    prepend,
)
from hypersdk_gateway.adapters.inbound.errors import ErrorEnvelope, envelope_bytes
from hypersdk_gateway.adapters.inbound.middleware import API_PREFIX, ASYNCAPI_PATH, context_of
from hypersdk_gateway.adapters.inbound.operations import operations_of
from hypersdk_gateway.adapters.inbound.routing import indexed
from hypersdk_gateway.adapters.inbound.subscriptions import add_subscription_routes
from hypersdk_gateway.adapters.inbound.webhooks import add_webhook_routes
from hypersdk_gateway.adapters.outbound.accounts import BackendRoleAssignments, BackendUserAccounts
from hypersdk_gateway.core.credentials import CredentialCache
from hypersdk_gateway.core.users import UserAdministration
from hypersdk_gateway.ports.outbound import Backend

logger = logging.getLogger(__name__)

MAX_PAGE = 1000
NEXT_PAGE_HEADER = "X-Next-Page-Token"
MAX_NUMBER = 2**63 - 1
"""Largest position a page may start after (PostgreSQL's bigint)."""
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in (
        (400, "Malformed request"),
        (401, "No valid credential"),
        (403, "Credential lacks the permission"),
        (404, "Not found"),
        (409, "Conflict"),
        (413, "Body too large"),
        (422, "Validation failed"),
        (429, "Rate limited"),
        (500, "Internal error"),
        (503, "A backing service is unavailable"),
    )
}
# Only on routes whose backing capability is not built yet.
NOT_BUILT: dict[int | str, dict[str, Any]] = {
    501: {"model": ErrorEnvelope, "description": "Not available in this version"}
}


class Body(BaseModel):
    """Request bodies refuse unknown fields.

    What the contracts refuse (text with NUL characters, malformed secret paths, ...) is
    refused when the handler builds its request message: see ``invalid_message`` below.
    """

    model_config = ConfigDict(extra="forbid")


class LoginBody(Body):
    """Credentials to log in with."""

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginResponse(BaseModel):
    """A new session token; shown once."""

    token: str
    expires_at: datetime
    user: UserView


class MeResponse(BaseModel):
    """The caller."""

    username: str
    roles: list[str]
    session_id: str | None
    kind: Literal["session", "apikey"] = "session"
    key_id: str | None = None
    scopes: list[str] | None = Field(
        default=None, description="API key scopes; null: all of the user's permissions."
    )
    external_roles: list[str] = Field(
        default_factory=list, description="Roles from the PAM group map (PAM users)."
    )


class CreateUserBody(Body):
    """A new user: local (with a password) or PAM (without: PAM checks it)."""

    username: str = Field(pattern=USERNAME_PATTERN)
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    source: Literal["local", "pam"] = "local"
    roles: list[str] = Field(default_factory=list, max_length=4)


class UpdateUserBody(Body):
    """Replace a user's roles, disable or enable them; either ends their sessions at once."""

    roles: list[str] | None = Field(default=None, max_length=4)
    disabled: bool | None = None


UserNameParam = Annotated[str, Path(max_length=64, description="Login name.")]
IdParam = Annotated[str, Path(max_length=64, description="Public id.")]
InstantParam = Annotated[
    str | None,
    Query(
        max_length=64,
        description="RFC 3339 date-time with a time zone, e.g. 2026-01-31T12:00:00Z.",
        json_schema_extra={"format": "date-time"},
    ),
]
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def instant(value: str | None, name: str) -> datetime | None:
    """A query parameter's RFC 3339 date-time (a number is not one, whatever pydantic says)."""
    if value is None:
        return None
    try:
        if not _RFC3339.match(value):
            raise ValueError(value)
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"{name} must be an RFC 3339 date-time with a time zone."
        ) from exc
    return parsed


def audit_filters(filters: AuditFilters) -> dict[str, Any]:
    """An audit query's filters as ``ListAuditEventsRequest`` fields, its times read strictly."""
    return {
        **filters.model_dump(exclude={"since", "until"}),
        "since": instant(filters.since, "since"),
        "until": instant(filters.until, "until"),
    }


class PlaceHoldBody(Body):
    """A legal hold: why it is placed (a case number, a request)."""

    reason: str = Field(min_length=1, max_length=500)


class CreateApiKeyBody(Body):
    """A new API key; ``owner`` defaults to the caller, scopes must be the owner's."""

    name: str = Field(min_length=1, max_length=64)
    scopes: list[Permission] = Field(min_length=1, max_length=10)
    expires_at: AwareDatetime | None = None
    owner: str | None = Field(default=None, pattern=USERNAME_PATTERN)


class RotateApiKeyBody(Body):
    """How long the replaced key keeps working (0: it dies at once)."""

    grace_seconds: int = Field(default=0, ge=0, le=7 * 24 * 3600)


class UserWithRoles(BaseModel):
    """A user and their roles."""

    user: UserView
    roles: list[str]


class ProviderSettingsBody(Body):
    """A provider's settings; ``credential_ref`` names a secret path, never a secret."""

    type: str = Field(description="Provider type: local, libvirt or vsphere.")
    config: dict[str, str] = Field(default_factory=dict)
    credential_ref: str | None = Field(default=None, pattern=SECRET_PATH_PATTERN)


class ProviderBody(ProviderSettingsBody):
    """A provider connection to register."""

    name: str = Field(pattern=NAME_PATTERN)


def _provider_type(value: str) -> ProviderType:
    """The type if the platform knows it, else validation_failed naming the known ones."""
    if value not in PROVIDER_TYPES:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"Supported provider types: {', '.join(PROVIDER_TYPES)}.",
        )
    return value  # type: ignore[return-value]


class ExportBody(Body):
    """What to export."""

    provider: str = Field(pattern=NAME_PATTERN)
    vm: str = Field(min_length=1, max_length=255)
    format: DiskFormat
    compress: bool = False
    idempotency_key: str | None = Field(default=None, pattern=IDEMPOTENCY_KEY_PATTERN)


class SecretBody(Body):
    """Key/value pairs of a secret."""

    data: dict[str, str] = Field(min_length=1, max_length=64)


PERMISSION_EXTENSION = "x-required-permission"
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "HTTPBearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "Session token from POST /auth/login.",
    },
    "APIKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "API key.",
    },
}


def guarded(permission: Permission | None) -> dict[str, Any]:
    """The ``openapi_extra`` of a route that needs a credential, and ``permission`` unless None.

    :class:`GuardedRoute` reads it to authorize the caller before the route reads its input;
    the OpenAPI document shows it as both credential schemes and ``x-required-permission``.
    """
    extra: dict[str, Any] = {"security": [{scheme: []} for scheme in SECURITY_SCHEMES]}
    if permission is not None:
        extra[PERMISSION_EXTENSION] = permission.value
    return extra


Authorize = Callable[[Request, Permission], Awaitable[None]]


def guarded_route(authorize: Authorize) -> type[APIRoute]:
    """The route class of the API: each route marked :func:`guarded` calls ``authorize`` first.

    Authorization wraps the route's handler instead of being a FastAPI dependency: it then
    runs before the body is read or validated (a caller without the permission learns nothing
    about the input it sent), and costs no dependency resolution per call (decision 0017).
    """

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            extra = self.openapi_extra or {}
            if PERMISSION_EXTENSION not in extra:
                return handler  # public, or any authenticated principal (the chain checked)
            permission = Permission(extra[PERMISSION_EXTENSION])

            async def authorized(request: Request) -> Response:
                await authorize(request, permission)
                return await handler(request)

            return authorized

    return GuardedRoute


class SecretPathConvertor(PathConvertor):
    """A secret's path in a URL; never one ending in ``/rotate``, which is the rotate route's.

    So ``PUT /secrets/x/rotate`` is a method the rotate route does not allow (405), not a PUT
    of a secret named ``x/rotate``.
    """

    regex = r".+(?<!/rotate)"


ExtendApi = Callable[[APIRouter], None]


def not_implemented(what: str) -> ServiceError:
    """The 501 of a route whose backing capability is not built yet."""
    return ServiceError(ErrorCode.NOT_IMPLEMENTED, f"{what} is not available in this version.")


def build_api(  # noqa: PLR0915 - the route table of docs/contracts.md, one statement per route
    backend: Backend,
    *,
    cache: CredentialCache,
    ready: Callable[[], Awaitable[bool]],
    extend: ExtendApi | None = None,
) -> FastAPI:
    """The FastAPI application (the middleware chain wraps it in inject.py).

    ``backend`` should be the :class:`InvalidatingBackend` over the bus, so that a revocation
    made through this replica empties its credential cache before the call returns.
    ``extend`` may add routes under ``/api/v1``, marked :func:`guarded` like the others (the
    benchmark does).
    """
    register_url_convertor("secretpath", SecretPathConvertor())

    async def authorize(request: Request, permission: Permission) -> None:
        # The layers' shared state (what ``request.state`` wraps), read without building a
        # State and a URL per call.
        st = request.scope["state"]
        principal: Principal = st["principal"]
        credential: bytes = st["credential"]
        matched = request.scope.get("route")
        route = matched.path if matched is not None else request.url.path
        resource = f"{request.method} {route}"
        # A grant names the operations of one route (decision 0027), so it is kept per route.
        grant_key = f"{permission.value} {resource}"
        cached = cache.grant(credential, grant_key)
        if cached is not None:
            st["grant"] = cached
            return
        generation = cache.generation
        decision = await backend.ask(
            RpcQueue.POLICY_DECIDE,
            DecideRequest(
                username=principal.username,
                permission=permission.value,
                resource=resource,
                operations=operations_of(resource),
                context=context_of(request.scope),
            ),
        )
        if not decision["allowed"]:
            raise ServiceError(
                ErrorCode.FORBIDDEN, f"This call needs the {permission.value} permission."
            )
        # Passed on with every request this call makes, so each service checks it itself.
        request.state.grant = decision.get("grant")
        if request.state.grant:
            cache.remember_grant(credential, grant_key, request.state.grant, generation=generation)

    def ctx(request: Request) -> Any:
        return context_of(request.scope)

    api = APIRouter(
        prefix=API_PREFIX, responses=ERROR_RESPONSES, route_class=guarded_route(authorize)
    )
    users = UserAdministration(
        accounts=BackendUserAccounts(backend), roles=BackendRoleAssignments(backend)
    )

    # ---- auth ------------------------------------------------------------------------------
    @api.post("/auth/login", response_model=LoginResponse, tags=["auth"])
    async def login(body: LoginBody, request: Request) -> Any:
        """Exchange a username and password for a session token."""
        result = await backend.ask(
            RpcQueue.IDENTITY_LOGIN,
            LoginRequest(username=body.username, password=body.password, context=ctx(request)),
        )
        return {
            "token": result["token"],
            "expires_at": result["expires_at"],
            "user": result["user"],
        }

    @api.post("/auth/logout", status_code=204, tags=["auth"], openapi_extra=guarded(None))
    async def logout(request: Request) -> Response:
        """End the current session."""
        await backend.ask(
            RpcQueue.IDENTITY_LOGOUT,
            LogoutRequest(token=session_token(request), context=ctx(request)),
        )
        return Response(status_code=204)

    @api.post(
        "/auth/refresh",
        response_model=LoginResponse,
        tags=["auth"],
        openapi_extra=guarded(None),
    )
    async def refresh(request: Request) -> Any:
        """Swap the session token for a new one; the old token stops working at once.

        The session keeps its absolute expiry: refreshing rotates the token, it does not
        extend the session.
        """
        result = await backend.ask(
            RpcQueue.IDENTITY_REFRESH,
            RefreshRequest(token=session_token(request), context=ctx(request)),
        )
        return {
            "token": result["token"],
            "expires_at": result["expires_at"],
            "user": result["user"],
        }

    @api.get("/auth/me", response_model=MeResponse, tags=["auth"], openapi_extra=guarded(None))
    async def me(request: Request) -> Any:
        """Who the caller is and which roles they hold."""
        principal = request.state.principal
        roles = await backend.ask(
            RpcQueue.POLICY_ROLES_OF,
            RolesOfRequest(username=principal.username, context=ctx(request)),
        )
        return {
            "username": principal.username,
            "roles": roles["roles"],
            "session_id": principal.session_id,
            "kind": principal.kind,
            "key_id": principal.key_id,
            "scopes": principal.scopes,
            "external_roles": principal.external_roles,
        }

    @api.get(
        "/auth/sessions",
        response_model=list[SessionView],
        tags=["auth"],
        openapi_extra=guarded(None),
    )
    async def list_sessions(request: Request) -> Any:
        """The caller's live sessions (never their tokens); ``current`` marks this one.

        Needs a session token: an API key of any scope gets 403 (decision 0025).
        """
        principal = session_principal(request)
        return await backend.ask(
            RpcQueue.IDENTITY_LIST_SESSIONS,
            ListSessionsRequest(
                username=principal.username,
                current_session_id=principal.session_id,
                context=ctx(request),
            ),
        )

    @api.delete(
        "/auth/sessions/{session_id}",
        status_code=204,
        tags=["auth"],
        openapi_extra=guarded(None),
    )
    async def revoke_session(session_id: IdParam, request: Request) -> Response:
        """Revoke one of the caller's sessions (another user's session is a 404).

        Needs a session token: an API key of any scope gets 403 (decision 0025).
        """
        principal = session_principal(request)
        await backend.ask(
            RpcQueue.IDENTITY_REVOKE_SESSION,
            RevokeSessionRequest(
                username=principal.username, session_id=session_id, context=ctx(request)
            ),
        )
        return Response(status_code=204)

    # ---- users -----------------------------------------------------------------------------
    users_manage = guarded(Permission.USERS_MANAGE)

    @api.get("/users", response_model=list[UserView], tags=["users"], openapi_extra=users_manage)
    async def list_users(request: Request) -> Any:
        """Every user."""
        return await backend.ask(
            RpcQueue.IDENTITY_LIST_USERS, ListUsersRequest(context=ctx(request))
        )

    @api.post(
        "/users",
        status_code=201,
        response_model=UserWithRoles,
        tags=["users"],
        openapi_extra=users_manage,
    )
    async def create_user(body: CreateUserBody, request: Request) -> Any:
        """Create a local user (with a password) or a PAM user (without), and their roles."""
        created = await users.create(
            username=body.username,
            password=body.password,
            source=body.source,
            roles=body.roles,
            context=ctx(request),
        )
        return {"user": created.user, "roles": created.roles}

    @api.get(
        "/users/{username}",
        response_model=UserWithRoles,
        tags=["users"],
        openapi_extra=users_manage,
    )
    async def get_user(username: UserNameParam, request: Request) -> Any:
        """One user (with PAM group roles and any lockout in force) and their assigned roles."""
        found = await users.get(username, ctx(request))
        return {"user": found.user, "roles": found.roles}

    @api.patch(
        "/users/{username}",
        response_model=UserWithRoles,
        tags=["users"],
        openapi_extra=users_manage,
    )
    async def update_user(username: UserNameParam, body: UpdateUserBody, request: Request) -> Any:
        """Replace a user's roles and/or disable or enable them.

        Disabling a user or changing their roles ends all their sessions at once.
        """
        updated = await users.update(
            username, roles=body.roles, disabled=body.disabled, context=ctx(request)
        )
        return {"user": updated.user, "roles": updated.roles}

    @api.delete("/users/{username}", status_code=204, tags=["users"], openapi_extra=users_manage)
    async def delete_user(username: UserNameParam, request: Request) -> Response:
        """Delete a user with their sessions and API keys, and clear their role assignments."""
        await users.delete(username, ctx(request))
        return Response(status_code=204)

    @api.post(
        "/users/{username}/unlock", status_code=204, tags=["users"], openapi_extra=users_manage
    )
    async def unlock_user(username: UserNameParam, request: Request) -> Response:
        """Lift a login lockout of a user name (also one not provisioned yet, e.g. PAM)."""
        await backend.ask(
            RpcQueue.IDENTITY_UNLOCK_USER,
            UserNameRequest(username=username, context=ctx(request)),
        )
        return Response(status_code=204)

    # ---- api keys --------------------------------------------------------------------------
    keys_manage = guarded(Permission.APIKEYS_MANAGE)

    @api.get(
        "/api-keys", response_model=list[ApiKeyView], tags=["api-keys"], openapi_extra=keys_manage
    )
    async def list_keys(
        request: Request, owner: Annotated[str | None, Query(max_length=64)] = None
    ) -> Any:
        """API keys that work (never the keys themselves), of ``owner`` or of every user.

        Without users:manage, only the caller's own keys.
        """
        return await backend.ask(
            RpcQueue.IDENTITY_LIST_API_KEYS,
            ListApiKeysRequest(owner=owner, context=ctx(request)),
        )

    @api.post(
        "/api-keys",
        status_code=201,
        response_model=IssuedApiKey,
        tags=["api-keys"],
        openapi_extra=keys_manage,
    )
    async def create_key(body: CreateApiKeyBody, request: Request) -> Any:
        """Issue an API key; the answer is the only time the key is shown.

        Identity checks the scopes: permissions both the owner and the caller hold now (a
        calling key narrowed to its scopes), else 422; another owner needs users:manage.
        """
        principal: Principal = request.state.principal
        return await backend.ask(
            RpcQueue.IDENTITY_CREATE_API_KEY,
            CreateApiKeyRequest(
                owner=body.owner or principal.username,
                name=body.name,
                scopes=sorted({scope.value for scope in body.scopes}),
                expires_at=body.expires_at,
                context=ctx(request),
            ),
        )

    @api.delete("/api-keys/{key_id}", status_code=204, tags=["api-keys"], openapi_extra=keys_manage)
    async def revoke_key(key_id: IdParam, request: Request) -> Response:
        """Revoke an API key: once this returns, no gateway accepts it."""
        await backend.ask(
            RpcQueue.IDENTITY_REVOKE_API_KEY,
            ApiKeyIdRequest(key_id=key_id, context=ctx(request)),
        )
        return Response(status_code=204)

    @api.post(
        "/api-keys/{key_id}/rotate",
        status_code=201,
        response_model=IssuedApiKey,
        tags=["api-keys"],
        openapi_extra=keys_manage,
    )
    async def rotate_key(
        key_id: IdParam, request: Request, body: RotateApiKeyBody | None = None
    ) -> Any:
        """Issue a replacement key; the old one dies at once or after ``grace_seconds``."""
        return await backend.ask(
            RpcQueue.IDENTITY_ROTATE_API_KEY,
            RotateApiKeyRequest(
                key_id=key_id,
                grace_seconds=body.grace_seconds if body else 0,
                context=ctx(request),
            ),
        )

    # ---- providers and VMs -----------------------------------------------------------------
    browse = guarded(Permission.VMS_BROWSE)
    configure_providers = guarded(Permission.PROVIDERS_CONFIGURE)

    @api.get(
        "/providers", response_model=list[ProviderView], tags=["providers"], openapi_extra=browse
    )
    async def list_providers(request: Request) -> Any:
        """Providers (never their credentials)."""
        return await backend.ask(
            RpcQueue.EXPORTER_LIST_PROVIDERS, ListProvidersRequest(context=ctx(request))
        )

    @api.get(
        "/providers/{name}", response_model=ProviderView, tags=["providers"], openapi_extra=browse
    )
    async def get_provider(name: str, request: Request) -> Any:
        """One provider (never its credential)."""
        return await backend.ask(
            RpcQueue.EXPORTER_GET_PROVIDER, ProviderNameRequest(name=name, context=ctx(request))
        )

    @api.post(
        "/providers",
        status_code=201,
        response_model=ProviderView,
        tags=["providers"],
        openapi_extra=configure_providers,
    )
    async def register_provider(body: ProviderBody, request: Request) -> Any:
        """Register a provider that references its credential by secret path."""
        return await backend.ask(
            RpcQueue.EXPORTER_REGISTER_PROVIDER,
            RegisterProviderRequest(
                name=body.name,
                type=_provider_type(body.type),
                config=body.config,
                credential_ref=body.credential_ref,
                context=ctx(request),
            ),
        )

    @api.put(
        "/providers/{name}",
        response_model=ProviderView,
        tags=["providers"],
        openapi_extra=configure_providers,
    )
    async def update_provider(name: str, body: ProviderSettingsBody, request: Request) -> Any:
        """Replace a provider's type, settings and credential reference (checked as on POST)."""
        return await backend.ask(
            RpcQueue.EXPORTER_UPDATE_PROVIDER,
            UpdateProviderRequest(
                name=name,
                type=_provider_type(body.type),
                config=body.config,
                credential_ref=body.credential_ref,
                context=ctx(request),
            ),
        )

    @api.delete(
        "/providers/{name}", status_code=204, tags=["providers"], openapi_extra=configure_providers
    )
    async def remove_provider(name: str, request: Request) -> Response:
        """Unregister a provider."""
        await backend.ask(
            RpcQueue.EXPORTER_REMOVE_PROVIDER, ProviderNameRequest(name=name, context=ctx(request))
        )
        return Response(status_code=204)

    @api.get("/vms", response_model=list[VmView], tags=["vms"], openapi_extra=browse)
    async def list_vms(
        request: Request,
        response: Response,
        provider: str | None = None,
        page_token: Annotated[str | None, Query(max_length=2048)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> Any:
        """One page of VMs of every provider, or of one; ``X-Next-Page-Token`` leads on."""
        page = await backend.ask(
            RpcQueue.EXPORTER_LIST_VMS,
            ListVmsRequest(
                provider=provider, page_token=page_token, limit=limit, context=ctx(request)
            ),
        )
        if page["next_page_token"] is not None:
            response.headers[NEXT_PAGE_HEADER] = page["next_page_token"]
        return page["items"]

    @api.get("/vms/{vm_id:path}", response_model=VmView, tags=["vms"], openapi_extra=browse)
    async def get_vm(vm_id: str, request: Request) -> Any:
        """One VM; its id is ``provider/vm``."""
        return await backend.ask(
            RpcQueue.EXPORTER_GET_VM, GetVmRequest(vm_id=vm_id, context=ctx(request))
        )

    # ---- exports and jobs ------------------------------------------------------------------
    @api.post(
        "/exports",
        status_code=202,
        response_model=JobView,
        tags=["jobs"],
        openapi_extra=guarded(Permission.VMS_EXPORT),
    )
    async def create_export(
        body: ExportBody,
        request: Request,
        idempotency_key: Annotated[
            str | None,
            Header(
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="Same key and request again: the same job; another request: 409.",
            ),
        ] = None,
    ) -> Any:
        """Queue an export; the job runs on an exporter worker."""
        if (
            idempotency_key is not None
            and body.idempotency_key is not None
            and idempotency_key != body.idempotency_key
        ):
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "The Idempotency-Key header and the body's idempotency_key differ.",
            )
        return await backend.ask(
            RpcQueue.EXPORTER_CREATE_EXPORT,
            CreateExportRequest(
                provider=body.provider,
                vm=body.vm,
                format=body.format,
                compress=body.compress,
                idempotency_key=idempotency_key or body.idempotency_key,
                context=ctx(request),
            ),
        )

    view_jobs = guarded(Permission.JOBS_VIEW)

    @api.get("/jobs", response_model=list[JobView], tags=["jobs"], openapi_extra=view_jobs)
    async def list_jobs(  # noqa: PLR0917 - one query parameter per filter of the contract
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
        after: Annotated[str | None, Query(max_length=64, description="Last job id seen.")] = None,
        status: JobStatus | None = None,
        provider: Annotated[str | None, Query(max_length=63)] = None,
        requested_by: Annotated[str | None, Query(max_length=128)] = None,
        created_after: InstantParam = None,
        created_before: InstantParam = None,
    ) -> Any:
        """Jobs, newest first: a page of ``limit`` after the job id ``after``, filtered."""
        return await backend.ask(
            RpcQueue.EXPORTER_LIST_JOBS,
            ListJobsRequest(
                limit=limit,
                after=after,
                status=status,
                provider=provider,
                requested_by=requested_by,
                created_after=instant(created_after, "created_after"),
                created_before=instant(created_before, "created_before"),
                context=ctx(request),
            ),
        )

    @api.get("/jobs/{job_id}", response_model=JobView, tags=["jobs"], openapi_extra=view_jobs)
    async def get_job(job_id: IdParam, request: Request) -> Any:
        """One job: status, progress, artifacts with sizes and SHA-256, and its history."""
        return await backend.ask(
            RpcQueue.EXPORTER_GET_JOB, JobIdRequest(job_id=job_id, context=ctx(request))
        )

    @api.post(
        "/jobs/{job_id}/cancel",
        status_code=202,
        response_model=JobView,
        tags=["jobs"],
        openapi_extra=guarded(Permission.JOBS_CANCEL),
    )
    async def cancel_job(job_id: IdParam, request: Request) -> Any:
        """Cancel a job: a queued one at once, a running one within a second (409 if ended)."""
        return await backend.ask(
            RpcQueue.EXPORTER_CANCEL_JOB, JobIdRequest(job_id=job_id, context=ctx(request))
        )

    # ---- secrets ---------------------------------------------------------------------------
    secrets_manage = guarded(Permission.SECRETS_MANAGE)

    @api.get(
        "/secrets",
        response_model=list[SecretMetadata],
        tags=["secrets"],
        openapi_extra=secrets_manage,
    )
    async def list_secrets(request: Request) -> Any:
        """Secret metadata (never values)."""
        return await backend.ask(RpcQueue.SECRETS_LIST, ListSecretsRequest(context=ctx(request)))

    @api.post(
        "/secrets/{path:path}/rotate",
        response_model=SecretRotation,
        tags=["secrets"],
        openapi_extra=secrets_manage,
    )
    async def rotate_secret(path: str, body: SecretBody, request: Request) -> Any:
        """Rotate a secret: the new value is current at once, the previous kept a while.

        The previous version stays readable for the grace period, then is destroyed. The
        answer holds metadata only.
        """
        return await backend.ask(
            RpcQueue.SECRETS_ROTATE,
            RotateSecretRequest(path=path, data=body.data, context=ctx(request)),
        )

    @api.put(
        "/secrets/{path:secretpath}",
        response_model=SecretMetadata,
        tags=["secrets"],
        openapi_extra=secrets_manage,
    )
    async def put_secret(path: str, body: SecretBody, request: Request) -> Any:
        """Store a new version of a secret; the answer holds metadata only."""
        return await backend.ask(
            RpcQueue.SECRETS_PUT, PutSecretRequest(path=path, data=body.data, context=ctx(request))
        )

    @api.delete(
        "/secrets/{path:secretpath}",
        status_code=204,
        tags=["secrets"],
        openapi_extra=secrets_manage,
    )
    async def delete_secret(path: str, request: Request) -> Response:
        """Delete a secret and its versions."""
        await backend.ask(
            RpcQueue.SECRETS_DELETE, SecretPathRequest(path=path, context=ctx(request))
        )
        return Response(status_code=204)

    # ---- audit -----------------------------------------------------------------------------
    audit_view = guarded(Permission.AUDIT_VIEW)

    @api.get(
        "/audit/events",
        response_model=list[AuditEntryView],
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_events(
        request: Request,
        filters: Annotated[AuditFilters, Query()],
        after_sequence: Annotated[
            int, Query(ge=0, le=INT64_MAX, description="Sequence of the last entry seen.")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Any:
        """Audit entries in chain order that pass every filter given.

        The cursor is the sequence of a page's last entry, passed back as ``after_sequence``;
        a page shorter than ``limit`` is the last one.
        """
        return await backend.ask(
            RpcQueue.AUDIT_LIST_EVENTS,
            ListAuditEventsRequest(
                after_sequence=after_sequence,
                limit=limit,
                **audit_filters(filters),
                context=ctx(request),
            ),
        )

    @api.get(
        "/audit/quarantine",
        response_model=list[QuarantinedEventView],
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_quarantine(request: Request, after_number: int = 0, limit: int = 100) -> Any:
        """Events audit refused to chain as genuine, in the order they arrived."""
        if not 0 <= after_number <= MAX_NUMBER or not 1 <= limit <= MAX_PAGE:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, "0 <= after_number < 2^63 and 1 <= limit <= 1000."
            )
        return await backend.ask(
            RpcQueue.AUDIT_LIST_QUARANTINE,
            ListQuarantineRequest(after_number=after_number, limit=limit, context=ctx(request)),
        )

    @api.get("/audit/verify", response_model=VerifyResult, tags=["audit"], openapi_extra=audit_view)
    async def audit_verify(request: Request) -> Any:
        """Recompute the hash chain; name the first entry that does not check out."""
        return await backend.ask(RpcQueue.AUDIT_VERIFY, VerifyRequest(context=ctx(request)))

    @api.get(
        "/audit/verifications",
        response_model=list[VerificationView],
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_verifications(
        request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 20
    ) -> Any:
        """Verifications of the log, the newest first (incremental and full)."""
        return await backend.ask(
            RpcQueue.AUDIT_LIST_VERIFICATIONS,
            ListVerificationsRequest(limit=limit, context=ctx(request)),
        )

    @api.post(
        "/audit/verifications",
        status_code=202,
        response_model=VerificationView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_start_verification(request: Request) -> Any:
        """Start a full verification from the genesis in the background (202, the run)."""
        return await backend.ask(
            RpcQueue.AUDIT_START_VERIFICATION, StartVerificationRequest(context=ctx(request))
        )

    @api.get(
        "/audit/verifications/{run_id}",
        response_model=VerificationView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_verification(
        request: Request, run_id: Annotated[str, Path(min_length=1, max_length=64)]
    ) -> Any:
        """One verification: its progress, then its outcome."""
        return await backend.ask(
            RpcQueue.AUDIT_GET_VERIFICATION,
            VerificationIdRequest(id=run_id, context=ctx(request)),
        )

    @api.get(
        "/audit/holds", response_model=list[HoldView], tags=["audit"], openapi_extra=audit_view
    )
    async def audit_holds(request: Request) -> Any:
        """Legal holds, lifted ones too: while one stands, retention cuts nothing."""
        return await backend.ask(RpcQueue.AUDIT_LIST_HOLDS, ListHoldsRequest(context=ctx(request)))

    system_configure = guarded(Permission.SYSTEM_CONFIGURE)

    @api.post(
        "/audit/holds",
        status_code=201,
        response_model=HoldView,
        tags=["audit"],
        openapi_extra=system_configure,
    )
    async def audit_place_hold(body: PlaceHoldBody, request: Request) -> Any:
        """Place a legal hold (recorded in the log)."""
        return await backend.ask(
            RpcQueue.AUDIT_PLACE_HOLD, PlaceHoldRequest(reason=body.reason, context=ctx(request))
        )

    @api.delete(
        "/audit/holds/{hold_id}",
        response_model=HoldView,
        tags=["audit"],
        openapi_extra=system_configure,
    )
    async def audit_lift_hold(
        request: Request, hold_id: Annotated[str, Path(min_length=1, max_length=64)]
    ) -> Any:
        """Lift a standing legal hold (recorded in the log); the hold as lifted."""
        return await backend.ask(
            RpcQueue.AUDIT_LIFT_HOLD, HoldIdRequest(id=hold_id, context=ctx(request))
        )

    @api.get(
        "/audit/checkpoints",
        response_model=list[CheckpointView],
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_checkpoints(
        request: Request,
        after_size: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    ) -> Any:
        """Signed checkpoints of the log's Merkle tree, smallest size first."""
        return await backend.ask(
            RpcQueue.AUDIT_LIST_CHECKPOINTS,
            ListCheckpointsRequest(after_size=after_size, limit=limit, context=ctx(request)),
        )

    @api.get(
        "/audit/checkpoints/latest",
        response_model=CheckpointView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_latest_checkpoint(request: Request) -> Any:
        """The newest signed checkpoint (404 before the first)."""
        found = await backend.ask(
            RpcQueue.AUDIT_LIST_CHECKPOINTS,
            ListCheckpointsRequest(latest=True, context=ctx(request)),
        )
        if not found:
            raise ServiceError(ErrorCode.NOT_FOUND, "No checkpoint has been signed yet.")
        return found[0]

    @api.post(
        "/audit/checkpoints",
        response_model=CheckpointView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_sign_checkpoint(request: Request) -> Any:
        """Sign a checkpoint of the log as it is now (the latest one if nothing was added)."""
        return await backend.ask(RpcQueue.AUDIT_CHECKPOINT, CheckpointRequest(context=ctx(request)))

    @api.get(
        "/audit/proofs/inclusion",
        response_model=InclusionProofView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_inclusion_proof(
        request: Request,
        sequence: Annotated[int, Query(ge=1, le=INT64_MAX)],
        tree_size: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    ) -> Any:
        """RFC 9162 proof that an entry is in the tree (by default the latest checkpoint's)."""
        return await backend.ask(
            RpcQueue.AUDIT_PROVE_INCLUSION,
            InclusionProofRequest(sequence=sequence, tree_size=tree_size, context=ctx(request)),
        )

    @api.get(
        "/audit/proofs/consistency",
        response_model=ConsistencyProofView,
        tags=["audit"],
        openapi_extra=audit_view,
    )
    async def audit_consistency_proof(
        request: Request,
        first: Annotated[int, Query(ge=1, le=INT64_MAX)],
        second: Annotated[int | None, Query(ge=1, le=INT64_MAX)] = None,
    ) -> Any:
        """RFC 9162 proof that the tree of ``first`` entries is a prefix of ``second``'s."""
        return await backend.ask(
            RpcQueue.AUDIT_PROVE_CONSISTENCY,
            ConsistencyProofRequest(first=first, second=second, context=ctx(request)),
        )

    @api.get(
        "/audit/export",
        tags=["audit"],
        openapi_extra=audit_view,
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}, "text/csv": {}}}},
    )
    async def audit_export(
        request: Request,
        filters: Annotated[AuditFilters, Query()],
        export_format: Annotated[
            ExportFormat,
            Query(
                alias="format",
                description="bundle (the default): the whole log, verifiable offline; jsonl or "
                "csv: the entries the filters select.",
            ),
        ] = "bundle",
        after_sequence: Annotated[
            int, Query(ge=0, le=INT64_MAX, description="jsonl and csv: entries after this one.")
        ] = 0,
    ) -> StreamingResponse:
        """The whole log as an offline-verifiable bundle (JSON Lines), streamed page by page.

        The header (origin, checkpoint keys) and the first page are read before answering, so a
        refusal or an unavailable audit service is an ordinary error response. With
        ``format=jsonl`` or ``format=csv``, the entries the filters select instead (a bundle
        takes no filter: a part of the log could not be verified).
        """
        context = ctx(request)
        if export_format != "bundle":
            query = ListAuditEventsRequest(
                after_sequence=after_sequence,
                limit=MAX_PAGE,
                **audit_filters(filters),
                context=context,
            )
            return await entries_export(backend, query, export_format)
        if filters.given or after_sequence:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "A bundle is the whole log (a part of it could not be verified): filter with "
                "format=jsonl or format=csv.",
            )
        keys = await backend.ask(RpcQueue.AUDIT_PUBLIC_KEYS, PublicKeysRequest(context=context))
        checkpoints = await backend.ask(
            RpcQueue.AUDIT_LIST_CHECKPOINTS,
            ListCheckpointsRequest(
                after_size=first_checkpoint_after(keys), limit=MAX_PAGE, context=context
            ),
        )
        pages = audit_bundle(backend, context, keys, checkpoints)
        first = await anext(pages)
        return StreamingResponse(
            prepend(first, pages),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": 'attachment; filename="audit-bundle.jsonl"'},
        )

    # ---- system ----------------------------------------------------------------------------
    system = guarded(Permission.SYSTEM_CONFIGURE)

    @api.get("/system/config", tags=["system"], openapi_extra=system, responses=NOT_BUILT)
    async def get_config() -> None:
        """Runtime configuration."""
        raise not_implemented("System configuration")

    @api.put("/system/config", tags=["system"], openapi_extra=system, responses=NOT_BUILT)
    async def put_config() -> None:
        """Change runtime configuration."""
        raise not_implemented("System configuration")

    add_webhook_routes(api, backend, extra=system)
    add_subscription_routes(api, backend, extra=system)

    if extend is not None:
        extend(api)
    # The API's routes go straight into the application's route table: FastAPI's
    # include_router matches an included route twice per call (decision 0017).
    app = FastAPI(
        title="HyperSDK API",
        version="1.0.0",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
        routes=api.routes,
        # The platform sets up no OpenTelemetry through FastAPI; its per-request check for a
        # configured provider read the environment on every call (about 8 % of the gateway's
        # CPU per call under load).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    _document_security(app)

    # Public like the OpenAPI document (PUBLIC_PATHS) and, like it, not listed in that document.
    @app.get(ASYNCAPI_PATH, include_in_schema=False)
    async def asyncapi() -> Response:
        """The AsyncAPI document of the bus (built once, off the event loop: 0.4 s)."""
        return Response(await asyncio.to_thread(asyncapi_json), media_type="application/json")

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorEnvelope}})
    async def readyz() -> Any:
        """The bus is reachable."""
        if await ready():
            return {"status": "ready"}
        raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "The message bus is unreachable.")

    _install_error_handlers(app)
    # The plain route list, for layers that must name a route before routing happens.
    app.state.route_table = [r for r in app.routes if isinstance(r, APIRoute)]
    _route_by_index(app)
    return app


@functools.cache
def asyncapi_json() -> bytes:
    """The bus's AsyncAPI document (``hypersdk_contracts.asyncapi``), built on first use only."""
    return json.dumps(asyncapi_document(), sort_keys=True).encode()


def _route_by_index(app: FastAPI) -> None:
    """Route each request among the routes its path can match, not all of them (0042).

    Only where the router does nothing else before its scan (no form limits, no body limit
    wrapped around its dispatch, telemetry off, as built above); otherwise it scans as before.
    """
    router = app.router
    if router.form_limits or router.middleware_stack != router.app:
        return
    # Starlette types the attribute as its bound method; any ASGI callable is what it calls.
    router.middleware_stack = indexed(  # type: ignore[assignment]
        router.app, router=router, routes=router.routes
    )


def _document_security(app: FastAPI) -> None:
    """Name the credential schemes that :func:`guarded` routes refer to in the document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = generate()
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def session_token(request: Request) -> str:
    """The session token of the call; a call made with an API key has none."""
    token: str | None = getattr(request.state, "token", None)
    if token is None:
        raise ServiceError(
            ErrorCode.INVALID_REQUEST,
            "This call needs a session token; API keys are revoked with DELETE /api-keys/{id}.",
        )
    return token


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the application accepts on the request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)  # PARTIAL: the path matches, the method not
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def session_principal(request: Request) -> Principal:
    """The caller of a session-only call: an API key never manages sessions (decision 0025)."""
    principal: Principal = request.state.principal
    if principal.kind != "session":
        raise ServiceError(
            ErrorCode.FORBIDDEN, "Sessions are listed and revoked with a session token, not a key."
        )
    return principal


def _error(request: Request, code: ErrorCode, message: str, status: int | None = None) -> Response:
    request_id = getattr(request.state, "request_id", "") or ""
    return Response(
        envelope_bytes(code, message, request_id),
        status_code=status or HTTP_STATUS[code],
        media_type="application/json",
    )


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> Response:
        response = _error(request, exc.code, exc.message)
        if exc.retry_after_seconds is not None:
            response.headers["Retry-After"] = str(exc.retry_after_seconds)
        elif exc.code is ErrorCode.UPSTREAM_UNAVAILABLE:
            response.headers["Retry-After"] = "1"  # every 503 says when to retry
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        fields = sorted(
            {
                ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
                for err in exc.errors()
            }
        )
        return _error(
            request, ErrorCode.VALIDATION_FAILED, f"Invalid or missing fields: {', '.join(fields)}."
        )

    @app.exception_handler(ValidationError)
    async def invalid_message(request: Request, exc: ValidationError) -> Response:
        # A handler built a contract message from the caller's input and the contract refused
        # it (after authorization, so a caller without the permission learns nothing more).
        # Only field names are named: input values may hold a password.
        fields = sorted({".".join(str(p) for p in err["loc"]) or "body" for err in exc.errors()})
        return _error(request, ErrorCode.VALIDATION_FAILED, f"Invalid fields: {', '.join(fields)}.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        codes = {
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.INVALID_REQUEST,
            400: ErrorCode.INVALID_REQUEST,
        }
        code = codes.get(exc.status_code, ErrorCode.INVALID_REQUEST)
        messages = {404: "No such route.", 405: "Method not allowed on this route."}
        response = _error(
            request, code, messages.get(exc.status_code, "Bad request."), exc.status_code
        )
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            response.headers["Allow"] = ", ".join(allowed_methods(request))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.error("unhandled error", exc_info=exc)
        return _error(request, ErrorCode.INTERNAL_ERROR, "The gateway failed to answer.")
