"""Gateway routes of identity, over ASGI against the real identity and policy use cases.

Auth (refresh, sessions), users (create local or PAM, get, PATCH roles/disabled, delete,
unlock), API keys (X-API-Key, scopes within the owner's permissions, rotation, revocation),
and the 429 with Retry-After of a throttled login. No RabbitMQ: a fake backend parses each
request as the owning service would and calls its use case; principals carry real signed
assertions, which identity verifies to learn a calling key's scopes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.credentials import new_api_key
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    ApiKeyIdRequest,
    AssignRolesRequest,
    AuthenticateApiKeyRequest,
    AuthenticateRequest,
    CreateApiKeyRequest,
    CreateUserRequest,
    DecideRequest,
    ListApiKeysRequest,
    ListSessionsRequest,
    ListUsersRequest,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RevokeSessionRequest,
    RevokeUserSessionsRequest,
    RoleList,
    RolesOfRequest,
    RotateApiKeyRequest,
    UpdateUserRequest,
    UserNameRequest,
)
from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.core.credentials import CredentialCache
from hypersdk_gateway.inject import build_chain
from hypersdk_identity.adapters.inbound.rpc import (
    caller_of,
    own_session_claims,
    sign_principal,
)
from hypersdk_identity.adapters.outbound.memory import (
    InMemoryApiKeyStore,
    InMemoryPam,
    InMemorySessionStore,
    InMemoryThrottleStore,
    InMemoryUserStore,
)
from hypersdk_identity.core.apikeys import ApiKeyService
from hypersdk_identity.core.pam import PamSupport
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_identity.core.throttle import LoginThrottle, ThrottleRule
from hypersdk_identity.ports.outbound import PermissionDirectory
from hypersdk_kit.bus import InMemoryEventPublisher
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier
from hypersdk_policy.adapters.outbound.memory import InMemoryRoleStore
from hypersdk_policy.core.service import PolicyService
from tests.unit.fake_backend import (
    UNUSED_KEY,
    InProcessBackend,
    Routes,
    gateway_seals,
    seal_verifier,
)
from tests.unit.test_identity_login_capacity import SaturableHasher

PASSWORD = "correct horse battery staple"
LINUX_PASSWORD = "penguins on the ice floe"
USERS = {"root": "admin", "olga": "operator", "vera": "viewer"}


class PolicyPermissions(PermissionDirectory):
    """Identity's question to policy, answered by the policy use case in process."""

    def __init__(self, policy: PolicyService) -> None:
        self.policy = policy

    async def permissions_of(
        self, username: str, *, external_roles: list[str], context: RequestContext
    ) -> frozenset[str]:
        """What policy.rpc.permissions_of would answer."""
        return frozenset(await self.policy.permissions_of(username, external_roles))


class IdentityBackend(InProcessBackend):
    """Answers identity and policy queues in process, as their RPC subscribers would.

    Principals come back with an assertion signed as identity signs them, and key creation
    reads the calling key's scopes from that assertion once verified, as identity's
    subscriber does.
    """

    def __init__(
        self, *, identity: IdentityService, keys: ApiKeyService, policy: PolicyService
    ) -> None:
        identity_key = Ed25519PrivateKey.generate()
        signer = AssertionSigner(identity_key, issuer="identity")
        guard = RequestGuard(
            events=InMemoryEventPublisher(service="identity"),
            rejected=IdentityRequestRejected,
            principals=AssertionVerifier(identity_key.public_key(), issuer="identity"),
            seals=seal_verifier(),
        )

        async def decide(r: DecideRequest) -> Any:
            return await policy.decide(
                username=r.username,
                permission=r.permission,
                resource=r.resource,
                context=r.context,
            )

        async def roles_of(r: RolesOfRequest) -> RoleList:
            return RoleList(username=r.username, roles=await policy.roles_of(r.username))

        async def assign(r: AssignRolesRequest) -> RoleList:
            roles = await policy.assign_roles(
                username=r.username, roles=r.roles, generation=r.generation, context=r.context
            )
            return RoleList(username=r.username, roles=roles)

        async def authenticate(r: AuthenticateRequest) -> Any:
            return await sign_principal(signer, await identity.authenticate(r.token))

        async def authenticate_api_key(r: AuthenticateApiKeyRequest) -> Any:
            return await sign_principal(signer, await keys.authenticate(r.key))

        async def create_api_key(r: CreateApiKeyRequest) -> Any:
            return await keys.create(
                owner=r.owner,
                name=r.name,
                scopes=r.scopes,
                expires_at=r.expires_at,
                caller=await caller_of(
                    guard, RpcQueue.IDENTITY_CREATE_API_KEY, r.context, target=r.owner
                ),
                context=r.context,
            )

        async def list_sessions(r: ListSessionsRequest) -> Any:
            claims = await own_session_claims(
                guard, RpcQueue.IDENTITY_LIST_SESSIONS, r.context, r.username, target=r.username
            )
            return await identity.list_sessions(r.username, current_session_id=claims.get("sid"))

        async def revoke_session(r: RevokeSessionRequest) -> None:
            await own_session_claims(
                guard, RpcQueue.IDENTITY_REVOKE_SESSION, r.context, r.username, target=r.session_id
            )
            await identity.revoke_session(r.username, r.session_id, r.context)

        async def list_api_keys(r: ListApiKeysRequest) -> Any:
            caller = await caller_of(
                guard, RpcQueue.IDENTITY_LIST_API_KEYS, r.context, target=r.owner
            )
            return await keys.list_keys(owner=r.owner, caller=caller, context=r.context)

        async def revoke_api_key(r: ApiKeyIdRequest) -> None:
            caller = await caller_of(
                guard, RpcQueue.IDENTITY_REVOKE_API_KEY, r.context, target=r.key_id
            )
            await keys.revoke(r.key_id, caller=caller, context=r.context)

        async def rotate_api_key(r: RotateApiKeyRequest) -> Any:
            caller = await caller_of(
                guard, RpcQueue.IDENTITY_ROTATE_API_KEY, r.context, target=r.key_id
            )
            return await keys.rotate(
                r.key_id, grace_seconds=r.grace_seconds, caller=caller, context=r.context
            )

        routes: Routes = {
            RpcQueue.IDENTITY_LOGIN: (
                LoginRequest,
                lambda r: identity.login(r.username, r.password, r.context),
            ),
            RpcQueue.IDENTITY_AUTHENTICATE: (AuthenticateRequest, authenticate),
            RpcQueue.IDENTITY_LOGOUT: (
                LogoutRequest,
                lambda r: identity.logout(r.token, r.context),
            ),
            RpcQueue.IDENTITY_REFRESH: (
                RefreshRequest,
                lambda r: identity.refresh(r.token, r.context),
            ),
            RpcQueue.IDENTITY_LIST_SESSIONS: (ListSessionsRequest, list_sessions),
            RpcQueue.IDENTITY_REVOKE_SESSION: (RevokeSessionRequest, revoke_session),
            RpcQueue.IDENTITY_CREATE_USER: (
                CreateUserRequest,
                lambda r: identity.create_user(r.username, r.password, r.context, source=r.source),
            ),
            RpcQueue.IDENTITY_LIST_USERS: (ListUsersRequest, lambda r: identity.list_users()),
            RpcQueue.IDENTITY_GET_USER: (UserNameRequest, lambda r: identity.get_user(r.username)),
            RpcQueue.IDENTITY_UPDATE_USER: (
                UpdateUserRequest,
                lambda r: identity.set_disabled(r.username, disabled=r.disabled, context=r.context),
            ),
            RpcQueue.IDENTITY_DELETE_USER: (
                UserNameRequest,
                lambda r: identity.delete_user(r.username, r.context),
            ),
            RpcQueue.IDENTITY_UNLOCK_USER: (
                UserNameRequest,
                lambda r: identity.unlock_user(r.username, r.context),
            ),
            RpcQueue.IDENTITY_REVOKE_USER_SESSIONS: (
                RevokeUserSessionsRequest,
                lambda r: identity.revoke_user_sessions(r.username, r.context),
            ),
            RpcQueue.IDENTITY_AUTHENTICATE_API_KEY: (
                AuthenticateApiKeyRequest,
                authenticate_api_key,
            ),
            RpcQueue.IDENTITY_CREATE_API_KEY: (CreateApiKeyRequest, create_api_key),
            RpcQueue.IDENTITY_LIST_API_KEYS: (ListApiKeysRequest, list_api_keys),
            RpcQueue.IDENTITY_REVOKE_API_KEY: (ApiKeyIdRequest, revoke_api_key),
            RpcQueue.IDENTITY_ROTATE_API_KEY: (RotateApiKeyRequest, rotate_api_key),
            RpcQueue.POLICY_DECIDE: (DecideRequest, decide),
            RpcQueue.POLICY_ROLES_OF: (RolesOfRequest, roles_of),
            RpcQueue.POLICY_ASSIGN_ROLES: (AssignRolesRequest, assign),
        }
        super().__init__(routes)


@dataclass
class Gateway:
    client: httpx.AsyncClient
    backend: IdentityBackend
    identity_events: InMemoryUnitOfWork
    linux: InMemoryPam
    hasher: SaturableHasher

    async def login(self, username: str, password: str = PASSWORD) -> str:
        response = await self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


async def _ready() -> bool:
    return True


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    identity_events = InMemoryUnitOfWork(service="identity")
    policy_events = InMemoryUnitOfWork(service="policy")
    hasher = SaturableHasher()
    users = InMemoryUserStore()
    key_store = InMemoryApiKeyStore()
    linux = InMemoryPam()
    linux.add("penny", LINUX_PASSWORD, groups=["penny", "hypersdk-ops"])
    pam = PamSupport(
        authenticator=linux, directory=linux, group_roles={"hypersdk-ops": ["operator"]}
    )
    identity = IdentityService(
        users=users,
        sessions=InMemorySessionStore(),
        hasher=hasher,
        uow=identity_events,
        session_policy=SessionPolicy(idle_seconds=900, lifetime_seconds=3600),
        dummy_hash=await hasher.hash("dummy password for timing"),
        throttle=LoginThrottle(
            store=InMemoryThrottleStore(),
            username_rule=ThrottleRule(
                max_failures=2,
                window_seconds=60,
                lockout_seconds=120,
                free_failures=1,
                delay_base_seconds=1,
                delay_max_seconds=10,
            ),
            address_rule=None,
            uow=identity_events,
            clock=lambda: datetime.now(UTC),
        ),
        pam=pam,
        api_keys=key_store,
    )
    policy = PolicyService(roles=InMemoryRoleStore(), uow=policy_events)
    keys = ApiKeyService(
        keys=key_store,
        users=users,
        uow=identity_events,
        permissions=PolicyPermissions(policy),
        pam=pam,
    )
    setup = RequestContext(actor="setup")
    for username, role in USERS.items():
        await identity.create_user(username, PASSWORD, setup)
        await policy.assign_roles(username=username, roles=[role], context=setup)
    identity_events.events.clear()
    backend = IdentityBackend(identity=identity, keys=keys, policy=policy)
    cache = CredentialCache(ttl_seconds=10)
    cache.resume()
    chain = build_chain(
        GatewaySettings(amqp_url="amqp://unused", signing_key_file=UNUSED_KEY),
        backend=backend,
        events=InMemoryEventPublisher(service="gateway"),
        ready=_ready,
        cache=cache,
        seals=gateway_seals(),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=chain), base_url="http://testserver"
    ) as client:
        yield Gateway(client, backend, identity_events, linux, hasher)


# ---- auth -----------------------------------------------------------------------------------


async def test_refresh_returns_a_new_token_and_the_old_one_stops(gateway: Gateway) -> None:
    old = await gateway.login("vera")

    refreshed = await gateway.client.post("/api/v1/auth/refresh", headers=bearer(old))
    new = refreshed.json()["token"]
    with_old = await gateway.client.get("/api/v1/auth/me", headers=bearer(old))
    with_new = await gateway.client.get("/api/v1/auth/me", headers=bearer(new))

    assert refreshed.status_code == 200, refreshed.text
    assert new != old
    assert refreshed.json()["user"]["username"] == "vera"
    assert with_old.status_code == 401
    assert with_new.status_code == 200


async def test_sessions_are_listed_and_revoked_by_their_owner_only(gateway: Gateway) -> None:
    first = await gateway.login("vera")
    second = await gateway.login("vera")
    others = await gateway.login("olga")

    listed = await gateway.client.get("/api/v1/auth/sessions", headers=bearer(second))
    sessions = listed.json()
    current = next(s for s in sessions if s["current"])
    other_id = next(s["id"] for s in sessions if not s["current"])
    olga_id = (await gateway.client.get("/api/v1/auth/me", headers=bearer(others))).json()[
        "session_id"
    ]
    not_mine = await gateway.client.delete(
        f"/api/v1/auth/sessions/{olga_id}", headers=bearer(second)
    )
    mine = await gateway.client.delete(f"/api/v1/auth/sessions/{other_id}", headers=bearer(second))

    assert listed.status_code == 200
    assert len(sessions) == 2
    assert set(sessions[0]) == {
        "id",
        "created_at",
        "last_seen_at",
        "expires_at",
        "idle_expires_at",
        "current",
    }
    assert first not in listed.text
    assert second not in listed.text
    assert current["id"] != other_id
    assert not_mine.status_code == 404
    assert mine.status_code == 204
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(first))).status_code == 401
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(others))).status_code == 200


async def test_a_throttled_login_gets_429_with_retry_after(gateway: Gateway) -> None:
    wrong = {"username": "vera", "password": "not the right password"}
    first = await gateway.client.post("/api/v1/auth/login", json=wrong)
    second = await gateway.client.post("/api/v1/auth/login", json=wrong)
    third = await gateway.client.post("/api/v1/auth/login", json=wrong)

    assert [first.status_code, second.status_code] == [401, 401]
    assert third.status_code == 429
    assert error_code(third) == "rate_limited"
    assert int(third.headers["retry-after"]) >= 1
    assert set(third.json()["error"]) == {"code", "message", "request_id"}


async def test_a_login_while_identity_is_at_capacity_gets_503_with_retry_after(
    gateway: Gateway,
) -> None:
    gateway.hasher.busy = True
    busy = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "vera", "password": PASSWORD}
    )
    gateway.hasher.busy = False

    assert busy.status_code == 503
    assert error_code(busy) == "service_busy"
    assert busy.headers["retry-after"] == "2"
    assert busy.headers["x-request-id"] == busy.json()["error"]["request_id"]
    await gateway.login("vera")  # and the refusal cost vera nothing on the throttle


# ---- users ----------------------------------------------------------------------------------


async def test_patching_roles_assigns_them_and_ends_the_users_sessions(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    vera = await gateway.login("vera")

    patched = await gateway.client.patch(
        "/api/v1/users/vera", json={"roles": ["operator"]}, headers=bearer(admin)
    )

    assert patched.status_code == 200, patched.text
    assert patched.json()["roles"] == ["operator"]
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(vera))).status_code == 401
    again = await gateway.login("vera")
    me = await gateway.client.get("/api/v1/auth/me", headers=bearer(again))
    assert me.json()["roles"] == ["operator"]
    assert gateway.backend.asked.index(RpcQueue.POLICY_ASSIGN_ROLES) < gateway.backend.asked.index(
        RpcQueue.IDENTITY_REVOKE_USER_SESSIONS
    )


async def test_disabling_and_enabling_through_patch(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    vera = await gateway.login("vera")

    disabled = await gateway.client.patch(
        "/api/v1/users/vera", json={"disabled": True}, headers=bearer(admin)
    )
    refused = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "vera", "password": PASSWORD}
    )
    enabled = await gateway.client.patch(
        "/api/v1/users/vera", json={"disabled": False}, headers=bearer(admin)
    )

    assert disabled.status_code == 200
    assert disabled.json()["user"]["disabled"] is True
    assert disabled.json()["roles"] == ["viewer"]
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(vera))).status_code == 401
    assert refused.status_code == 401
    assert enabled.json()["user"]["disabled"] is False
    await gateway.login("vera")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/api/v1/users/vera", {}, 422),
        ("/api/v1/users/nobody", {"roles": ["viewer"]}, 404),
        ("/api/v1/users/nobody", {"disabled": True}, 404),
        ("/api/v1/users/vera", {"roles": ["wizard"]}, 422),
        ("/api/v1/users/root", {"disabled": True}, 409),
        ("/api/v1/users/" + "x" * 65, {"disabled": True}, 422),
    ],
)
async def test_patch_refusals(gateway: Gateway, path: str, body: Any, status: int) -> None:
    admin = await gateway.login("root")
    response = await gateway.client.patch(path, json=body, headers=bearer(admin))
    assert response.status_code == status, response.text


async def test_delete_removes_the_user_and_clears_their_roles(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    vera = await gateway.login("vera")

    deleted = await gateway.client.delete("/api/v1/users/vera", headers=bearer(admin))
    fetched = await gateway.client.get("/api/v1/users/vera", headers=bearer(admin))
    recreated = await gateway.client.post(
        "/api/v1/users",
        json={"username": "vera", "password": "a completely new password"},
        headers=bearer(admin),
    )

    assert deleted.status_code == 204
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(vera))).status_code == 401
    assert fetched.status_code == 404
    assert recreated.status_code == 201
    assert recreated.json()["roles"] == []


async def test_a_pam_user_is_created_without_a_password(gateway: Gateway) -> None:
    admin = await gateway.login("root")

    created = await gateway.client.post(
        "/api/v1/users",
        json={"username": "penny", "source": "pam", "roles": ["viewer"]},
        headers=bearer(admin),
    )
    penny = await gateway.login("penny", LINUX_PASSWORD)
    me = await gateway.client.get("/api/v1/auth/me", headers=bearer(penny))
    fetched = await gateway.client.get("/api/v1/users/penny", headers=bearer(admin))

    assert created.status_code == 201, created.text
    assert created.json()["user"]["source"] == "pam"
    assert me.json()["roles"] == ["viewer"]
    assert me.json()["external_roles"] == ["operator"]
    assert fetched.json()["user"]["external_roles"] == ["operator"]


async def test_an_admin_unlocks_a_locked_user(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    for _ in range(2):
        await gateway.client.post(
            "/api/v1/auth/login", json={"username": "olga", "password": "wrong password!"}
        )
    locked = await gateway.client.post(
        "/api/v1/auth/login", json={"username": "olga", "password": PASSWORD}
    )
    assert locked.status_code == 429
    assert int(locked.headers["retry-after"]) > 60
    gateway.identity_events.events.clear()

    unlocked = await gateway.client.post("/api/v1/users/olga/unlock", headers=bearer(admin))

    assert unlocked.status_code == 204
    await gateway.login("olga")
    assert gateway.identity_events.types()[0] == "identity.account.unlocked"


async def test_a_viewer_may_not_unlock(gateway: Gateway) -> None:
    vera = await gateway.login("vera")
    response = await gateway.client.post("/api/v1/users/olga/unlock", headers=bearer(vera))
    assert response.status_code == 403


# ---- API keys -------------------------------------------------------------------------------


async def _issue(gateway: Gateway, token: str, **body: Any) -> httpx.Response:
    payload = {"name": "ci", "scopes": ["vms:browse"], **body}
    return await gateway.client.post("/api/v1/api-keys", json=payload, headers=bearer(token))


async def test_an_api_key_authenticates_with_its_scopes(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    issued = await _issue(gateway, admin, scopes=["vms:browse", "jobs:view"])
    key = issued.json()["key"]

    me = await gateway.client.get("/api/v1/auth/me", headers=key_header(key))
    browse = await gateway.client.get("/api/v1/users", headers=key_header(key))

    assert issued.status_code == 201, issued.text
    assert issued.json()["api_key"]["owner"] == "root"
    assert me.status_code == 200
    assert me.json()["kind"] == "apikey"
    assert me.json()["scopes"] == ["jobs:view", "vms:browse"]
    assert me.json()["key_id"] == issued.json()["api_key"]["id"]
    # This fake policy ignores scopes (the real one narrows them); the route passed.
    assert browse.status_code in (200, 403)
    listed = await gateway.client.get("/api/v1/api-keys", headers=bearer(admin))
    assert key not in listed.text
    assert listed.json()[0]["hint"] == key[-4:]


async def test_scopes_beyond_the_owners_permissions_are_a_422(gateway: Gateway) -> None:
    admin = await gateway.login("root")

    for_olga = await _issue(gateway, admin, owner="olga", scopes=["vms:export", "users:manage"])
    fine = await _issue(gateway, admin, owner="olga", scopes=["vms:export"])
    unknown_owner = await _issue(gateway, admin, owner="nobody")
    unknown_scope = await _issue(gateway, admin, scopes=["vms:teleport"])

    assert for_olga.status_code == 422
    assert error_code(for_olga) == "validation_failed"
    assert "users:manage" in for_olga.json()["error"]["message"]
    assert "vms:export" not in for_olga.json()["error"]["message"]
    assert fine.status_code == 201
    assert fine.json()["api_key"]["owner"] == "olga"
    assert unknown_owner.status_code == 404
    assert unknown_scope.status_code == 422
    assert gateway.identity_events.types().count("identity.apikey.created") == 1
    # The gateway only forwards: identity checks the scopes (zero trust).
    assert RpcQueue.POLICY_PERMISSIONS_OF not in gateway.backend.asked
    assert RpcQueue.IDENTITY_GET_USER not in gateway.backend.asked


async def test_a_scoped_key_cannot_mint_a_broader_key(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    narrow = (await _issue(gateway, admin, scopes=["apikeys:manage", "vms:browse"])).json()["key"]

    broader = await gateway.client.post(
        "/api/v1/api-keys",
        json={"name": "escalate", "scopes": ["secrets:manage"]},
        headers=key_header(narrow),
    )
    same = await gateway.client.post(
        "/api/v1/api-keys",
        json={"name": "same", "scopes": ["vms:browse"]},
        headers=key_header(narrow),
    )

    assert broader.status_code == 422
    assert error_code(broader) == "validation_failed"
    assert "secrets:manage" in broader.json()["error"]["message"]
    assert same.status_code == 201
    assert same.json()["api_key"]["scopes"] == ["vms:browse"]


async def test_a_pam_owners_group_roles_count_for_their_keys(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    created = await gateway.client.post(
        "/api/v1/users", json={"username": "penny", "source": "pam"}, headers=bearer(admin)
    )

    by_group = await _issue(gateway, admin, owner="penny", scopes=["vms:export"])
    beyond = await _issue(gateway, admin, owner="penny", scopes=["users:manage"])
    gateway.linux.add("penny", LINUX_PASSWORD, groups=["penny"])
    after_leaving = await _issue(gateway, admin, owner="penny", scopes=["vms:export"])

    assert created.status_code == 201, created.text
    assert created.json()["roles"] == []
    assert by_group.status_code == 201, by_group.text
    assert beyond.status_code == 422
    assert after_leaving.status_code == 422
    assert "vms:export" in after_leaving.json()["error"]["message"]


async def test_revoked_and_rotated_keys_stop_working(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    first = (await _issue(gateway, admin)).json()
    second = (await _issue(gateway, admin, name="rotating")).json()

    revoked = await gateway.client.delete(
        f"/api/v1/api-keys/{first['api_key']['id']}", headers=bearer(admin)
    )
    rotated = await gateway.client.post(
        f"/api/v1/api-keys/{second['api_key']['id']}/rotate", headers=bearer(admin)
    )
    graceful = await gateway.client.post(
        f"/api/v1/api-keys/{rotated.json()['api_key']['id']}/rotate",
        json={"grace_seconds": 300},
        headers=bearer(admin),
    )

    assert revoked.status_code == 204
    assert rotated.status_code == 201
    for dead in (first["key"], second["key"]):
        response = await gateway.client.get("/api/v1/auth/me", headers=key_header(dead))
        assert response.status_code == 401
        assert dead not in response.text
    assert graceful.status_code == 201
    for alive in (rotated.json()["key"], graceful.json()["key"]):
        response = await gateway.client.get("/api/v1/auth/me", headers=key_header(alive))
        assert response.status_code == 200


async def test_key_credentials_are_refused_without_asking_when_malformed(
    gateway: Gateway,
) -> None:
    token = await gateway.login("vera")
    gateway.backend.asked.clear()

    malformed = await gateway.client.get("/api/v1/vms", headers=key_header("hsdk_k_nope"))
    both = await gateway.client.get(
        "/api/v1/vms", headers={**bearer(token), **key_header(new_api_key())}
    )
    unknown = await gateway.client.get("/api/v1/vms", headers=key_header(new_api_key()))

    assert [malformed.status_code, both.status_code, unknown.status_code] == [401, 401, 401]
    assert gateway.backend.asked == [RpcQueue.IDENTITY_AUTHENTICATE_API_KEY]


async def test_session_only_calls_refuse_an_api_key(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    key = (await _issue(gateway, admin)).json()["key"]

    for path in ("/api/v1/auth/logout", "/api/v1/auth/refresh"):
        response = await gateway.client.post(path, headers=key_header(key))
        assert response.status_code == 400, path
        assert error_code(response) == "invalid_request"


async def test_sessions_are_listed_and_revoked_with_a_session_never_a_key(
    gateway: Gateway,
) -> None:
    admin = await gateway.login("root")
    every_scope = [
        "vms:browse", "jobs:view", "vms:export", "jobs:cancel", "providers:configure",
        "users:manage", "apikeys:manage", "audit:view", "secrets:manage", "system:configure",
    ]  # fmt: skip
    issued = await _issue(gateway, admin, scopes=every_scope)
    key = issued.json()["key"]
    session_id = (await gateway.client.get("/api/v1/auth/me", headers=bearer(admin))).json()[
        "session_id"
    ]
    gateway.backend.asked.clear()

    listed = await gateway.client.get("/api/v1/auth/sessions", headers=key_header(key))
    revoked = await gateway.client.delete(
        f"/api/v1/auth/sessions/{session_id}", headers=key_header(key)
    )

    assert issued.status_code == 201, issued.text
    assert [listed.status_code, revoked.status_code] == [403, 403]
    assert error_code(listed) == error_code(revoked) == "forbidden"
    assert RpcQueue.IDENTITY_LIST_SESSIONS not in gateway.backend.asked
    assert RpcQueue.IDENTITY_REVOKE_SESSION not in gateway.backend.asked
    assert (await gateway.client.get("/api/v1/auth/me", headers=bearer(admin))).status_code == 200
    assert session_id not in listed.text


async def test_a_key_scoped_apikeys_manage_cannot_take_over_another_users_key(
    gateway: Gateway,
) -> None:
    root = await gateway.login("root")
    created = await gateway.client.post(
        "/api/v1/users",
        json={"username": "ada", "password": PASSWORD, "roles": ["admin"]},
        headers=bearer(root),
    )
    adas = (await _issue(gateway, await gateway.login("ada"), scopes=["users:manage"])).json()
    narrow = (await _issue(gateway, root, scopes=["apikeys:manage"])).json()["key"]

    rotated = await gateway.client.post(
        f"/api/v1/api-keys/{adas['api_key']['id']}/rotate", headers=key_header(narrow)
    )
    revoked = await gateway.client.delete(
        f"/api/v1/api-keys/{adas['api_key']['id']}", headers=key_header(narrow)
    )
    listed = await gateway.client.get("/api/v1/api-keys", headers=key_header(narrow))

    assert created.status_code == 201, created.text
    assert [rotated.status_code, revoked.status_code] == [404, 404]
    assert "key" not in rotated.json()
    assert {key["owner"] for key in listed.json()} == {"root"}
    me = await gateway.client.get("/api/v1/auth/me", headers=key_header(adas["key"]))
    assert me.status_code == 200
    assert me.json()["scopes"] == ["users:manage"]


async def test_no_identity_event_carries_a_password_token_or_key(gateway: Gateway) -> None:
    admin = await gateway.login("root")
    issued = (await _issue(gateway, admin)).json()
    rotated = (
        await gateway.client.post(
            f"/api/v1/api-keys/{issued['api_key']['id']}/rotate", headers=bearer(admin)
        )
    ).json()
    refreshed = (await gateway.client.post("/api/v1/auth/refresh", headers=bearer(admin))).json()[
        "token"
    ]
    await gateway.client.post(
        "/api/v1/users",
        json={"username": "newbie", "password": "newbie's long password"},
        headers=bearer(refreshed),
    )
    await gateway.client.post(
        "/api/v1/auth/login", json={"username": "newbie", "password": "wrong guess here"}
    )
    await gateway.client.patch(
        "/api/v1/users/newbie", json={"disabled": True}, headers=bearer(refreshed)
    )
    await gateway.client.delete("/api/v1/users/newbie", headers=bearer(refreshed))

    published = "\n".join(e.model_dump_json(by_alias=True) for e in gateway.identity_events.events)
    secrets_used = [
        PASSWORD,
        "newbie's long password",
        "wrong guess here",
        admin,
        refreshed,
        issued["key"],
        rotated["key"],
    ]
    for secret in secrets_used:
        assert secret not in published
        assert secret.removeprefix("hsdk_s_").removeprefix("hsdk_k_") not in published
    assert {
        "identity.apikey.created",
        "identity.apikey.rotated",
        "identity.session.refreshed",
        "identity.user.created",
        "identity.user.disabled",
        "identity.user.deleted",
        "identity.login.failed",
    } <= set(gateway.identity_events.types())
