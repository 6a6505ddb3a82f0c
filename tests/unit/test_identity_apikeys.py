"""Identity: API keys. Format and checksum, shown once, stored as a hash, scopes (checked by
identity itself against the owner's permissions and the calling key's scopes), expiry,
rotation with and without a grace period, revocation, last use, events without the key.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.credentials import (
    API_KEY_PATTERN,
    api_key_checksum,
    is_well_formed_api_key,
    new_api_key,
)
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import CreateApiKeyRequest, ListSessionsRequest, Principal, RpcRequest
from hypersdk_gateway.core.seals import seal_request
from hypersdk_identity.adapters.inbound.rpc import (
    caller_of,
    own_session_claims,
    principal_claims,
)
from hypersdk_identity.adapters.outbound.bus import RpcPermissionDirectory
from hypersdk_identity.adapters.outbound.memory import (
    InMemoryApiKeyStore,
    InMemoryPermissionDirectory,
    InMemorySessionStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.apikeys import ApiKeyService, Caller
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_kit.bus import InMemoryEventPublisher, RpcClient
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier
from tests.unit.fake_backend import gateway_seals, seal_verifier

from .test_identity_sessions import Clock

ADMIN = RequestContext(actor="admin", source_ip="192.0.2.10", request_id="req-keys")
KEY_FORMAT = re.compile(r"^hsdk_k_[0-9A-Za-z]{38}$")
AS_ADMIN = Caller(username="admin")  # a session of admin (all permissions)


@dataclass
class World:
    keys: ApiKeyService
    store: InMemoryApiKeyStore
    identity: IdentityService
    events: InMemoryUnitOfWork
    clock: Clock
    permissions: InMemoryPermissionDirectory

    async def issue(self, **overrides: object) -> tuple[str, str]:
        arguments: dict[str, object] = {
            "owner": "olga",
            "name": "ci",
            "scopes": ["vms:browse", "vms:export"],
            "expires_at": None,
            "caller": AS_ADMIN,
            "context": ADMIN,
        }
        arguments.update(overrides)
        issued = await self.keys.create(**arguments)  # type: ignore[arg-type]
        return issued.key, issued.api_key.id

    def published(self) -> str:
        return "\n".join(e.model_dump_json(by_alias=True) for e in self.events.events)


@pytest.fixture
async def world() -> World:
    clock = Clock()
    users = InMemoryUserStore()
    store = InMemoryApiKeyStore()
    events = InMemoryUnitOfWork(service="identity")
    hasher = InsecureFastHasher()
    identity = IdentityService(
        users=users,
        sessions=InMemorySessionStore(),
        hasher=hasher,
        uow=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        clock=clock,
        api_keys=store,
    )
    for name in ("admin", "olga"):
        await identity.create_user(name, f"{name}'s long password", ADMIN)
    events.events.clear()
    permissions = InMemoryPermissionDirectory({"admin": ["admin"], "olga": ["operator"]})
    keys = ApiKeyService(keys=store, users=users, uow=events, permissions=permissions, clock=clock)
    return World(keys, store, identity, events, clock, permissions)


# ---- the format ---------------------------------------------------------------------------


def test_keys_have_a_prefix_190_random_bits_and_a_checksum() -> None:
    keys = {new_api_key() for _ in range(200)}

    assert len(keys) == 200
    for key in keys:
        assert KEY_FORMAT.fullmatch(key)
        assert API_KEY_PATTERN.fullmatch(key)
        assert key[-6:] == api_key_checksum(key[7:39])
        assert is_well_formed_api_key(key)


def test_a_typo_or_a_look_alike_fails_the_checksum() -> None:
    key = new_api_key()
    flipped = key[:20] + ("A" if key[20] != "A" else "B") + key[21:]

    assert not is_well_formed_api_key(flipped)
    assert not is_well_formed_api_key("hsdk_k_" + "A" * 38)
    assert not is_well_formed_api_key(key.replace("hsdk_k_", "hsdk_s_"))
    assert not is_well_formed_api_key(key + "x")
    assert not is_well_formed_api_key("")


# ---- issuing ------------------------------------------------------------------------------


async def test_a_key_is_shown_once_and_stored_only_as_its_hash(world: World) -> None:
    key, key_id = await world.issue()

    stored = world.store.keys[key_id]
    assert stored.key_hash == hashlib.sha256(key.encode()).digest()
    assert stored.hint == key[-4:]
    for value in vars(stored).values():
        assert key not in str(value)
        assert key[7:39] not in str(value)
    listed = await world.keys.list_keys(owner=None, caller=AS_ADMIN, context=ADMIN)
    assert [k.id for k in listed] == [key_id]
    assert key not in listed[0].model_dump_json()
    assert stored.created_by == "admin"


async def test_every_key_event_is_free_of_the_key(world: World) -> None:
    key, key_id = await world.issue()
    rotated = await world.keys.rotate(key_id, grace_seconds=60, caller=AS_ADMIN, context=ADMIN)
    await world.keys.revoke(rotated.api_key.id, caller=AS_ADMIN, context=ADMIN)

    assert world.events.types() == [
        "identity.apikey.created",
        "identity.apikey.rotated",
        "identity.apikey.revoked",
    ]
    created = world.events.events[0]
    assert created.data == {
        "key_id": key_id,
        "owner": "olga",
        "name": "ci",
        "scopes": ["vms:browse", "vms:export"],
        "expires_at": None,
    }
    assert created.actor == "admin"
    for secret in (key, key[7:39], rotated.key, rotated.key[7:39]):
        assert secret not in world.published()


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"scopes": ["vms:teleport"]}, ErrorCode.VALIDATION_FAILED),
        ({"scopes": []}, ErrorCode.VALIDATION_FAILED),
        ({"owner": "nobody"}, ErrorCode.NOT_FOUND),
    ],
)
async def test_bad_requests_issue_nothing(
    world: World, overrides: dict[str, object], code: ErrorCode
) -> None:
    with pytest.raises(ServiceError) as error:
        await world.issue(**overrides)
    assert error.value.code is code
    assert world.store.keys == {}
    assert world.events.events == []


async def test_an_expiry_in_the_past_is_refused(world: World) -> None:
    with pytest.raises(ServiceError) as error:
        await world.issue(expires_at=world.clock.now)
    assert error.value.code is ErrorCode.VALIDATION_FAILED


# ---- scopes: identity checks them itself (zero trust), whoever calls ----------------------


async def test_scopes_beyond_the_owners_permissions_are_refused_without_a_gateway(
    world: World,
) -> None:
    with pytest.raises(ServiceError) as error:
        await world.issue(scopes=["vms:export", "users:manage", "secrets:manage"])

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert error.value.message == (
        "A key's scopes must be permissions both its owner and you hold; "
        "not held: secrets:manage, users:manage."
    )
    assert world.store.keys == {}
    assert world.events.events == []
    # Asked about the caller and the owner, on behalf of the request being served.
    assert world.permissions.asked == [("admin", [], ADMIN), ("olga", [], ADMIN)]


async def test_an_owner_who_lost_a_permission_cannot_put_it_in_a_key(world: World) -> None:
    await world.issue(scopes=["vms:export"])
    world.permissions.roles["olga"] = ["viewer"]

    with pytest.raises(ServiceError) as error:
        await world.issue(scopes=["vms:export"])

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert len(world.store.keys) == 1


async def test_a_key_cannot_mint_a_key_broader_than_itself(world: World) -> None:
    calling_key = Caller(username="admin", key_scopes=("apikeys:manage", "vms:browse"))

    with pytest.raises(ServiceError) as error:
        await world.issue(owner="admin", scopes=["secrets:manage"], caller=calling_key)
    _, narrower = await world.issue(owner="admin", scopes=["vms:browse"], caller=calling_key)

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "secrets:manage" in error.value.message
    assert world.store.keys[narrower].scopes == ("vms:browse",)
    with pytest.raises(ServiceError):
        await world.issue(
            owner="admin", scopes=["vms:browse"], caller=Caller(username="admin", key_scopes=())
        )


IDENTITY_KEY = Ed25519PrivateKey.generate()


def _guard() -> RequestGuard:
    return RequestGuard(
        events=InMemoryEventPublisher(service="identity"),
        rejected=IdentityRequestRejected,
        principals=AssertionVerifier(IDENTITY_KEY.public_key(), issuer="identity"),
        seals=seal_verifier(),
    )


def _signed(signer: AssertionSigner, principal: Principal) -> Principal:
    return principal.model_copy(update={"assertion": signer.sign(principal_claims(principal))})


def _context(principal: Principal, key: Ed25519PrivateKey = IDENTITY_KEY) -> RequestContext:
    signed = _signed(AssertionSigner(key, issuer="identity"), principal)
    request = CreateApiKeyRequest(
        owner="admin",
        name="ci",
        scopes=["vms:browse"],
        context=RequestContext(
            actor=principal.username, request_id="req-key", assertion=signed.assertion
        ),
    )
    return seal_request(gateway_seals(), RpcQueue.IDENTITY_CREATE_API_KEY, request).context


async def test_the_caller_comes_from_its_verified_assertion() -> None:
    operation = RpcQueue.IDENTITY_CREATE_API_KEY
    key = Principal(
        username="admin", kind="apikey", key_id="k1", scopes=["vms:browse"], external_roles=["x"]
    )
    session = Principal(username="admin", kind="session", session_id="s1")

    assert await caller_of(_guard(), operation, _context(key), target="admin") == Caller(
        username="admin", key_scopes=("vms:browse",), external_roles=("x",)
    )
    assert await caller_of(_guard(), operation, _context(session), target="admin") == Caller(
        username="admin"
    )
    for unverifiable in (
        RequestContext(actor="admin"),
        _context(session, key=Ed25519PrivateKey.generate()),
    ):
        with pytest.raises(ServiceError) as error:
            await caller_of(_guard(), operation, unverifiable, target="admin")
        assert error.value.code is ErrorCode.FORBIDDEN


async def test_identity_lists_and_ends_sessions_only_for_a_session_of_their_owner() -> None:
    guard = _guard()
    operation = RpcQueue.IDENTITY_LIST_SESSIONS
    session = Principal(username="admin", kind="session", session_id="s1")
    key = Principal(username="admin", kind="apikey", key_id="k1", scopes=["users:manage"])

    def sealed(principal: Principal, owner: str) -> RequestContext:
        signed = _signed(AssertionSigner(IDENTITY_KEY, issuer="identity"), principal)
        request = ListSessionsRequest(
            username=owner,
            context=RequestContext(
                actor=principal.username, request_id="req-sessions", assertion=signed.assertion
            ),
        )
        return seal_request(gateway_seals(), operation, request).context

    claims = await own_session_claims(
        guard, operation, sealed(session, "admin"), "admin", target="admin"
    )
    with pytest.raises(ServiceError) as by_key:
        await own_session_claims(guard, operation, sealed(key, "admin"), "admin", target="admin")
    with pytest.raises(ServiceError) as others:
        await own_session_claims(guard, operation, sealed(session, "olga"), "olga", target="olga")

    assert claims["sid"] == "s1"
    assert by_key.value.code is others.value.code is ErrorCode.FORBIDDEN
    assert isinstance(guard.events, InMemoryEventPublisher)
    reasons = [event.data["reason"] for event in guard.events.events]
    assert reasons == ["session_required", "actor_mismatch"]


class RecordingRpc(RpcClient):
    """Records the question and answers as policy would."""

    def __init__(self) -> None:
        super().__init__(RabbitBroker())
        self.calls: list[tuple[str, RpcRequest]] = []

    async def call(self, queue: str, request: RpcRequest) -> object:
        self.calls.append((queue, request))
        return {"username": "olga", "permissions": ["jobs:view", "vms:browse"]}


async def test_the_policy_adapter_asks_permissions_of_with_the_callers_grant() -> None:
    rpc = RecordingRpc()
    context = RequestContext(actor="admin", assertion="v1.a.b", grant="v1.c.d")

    held = await RpcPermissionDirectory(rpc).permissions_of(
        "olga", external_roles=["operator"], context=context
    )

    assert held == {"jobs:view", "vms:browse"}
    ((queue, request),) = rpc.calls
    assert queue == RpcQueue.POLICY_PERMISSIONS_OF
    assert request.model_dump() == {
        "username": "olga",
        "external_roles": ["operator"],
        "context": context.model_dump(),
    }


# ---- authenticating -----------------------------------------------------------------------


async def test_a_key_authenticates_as_its_owner_limited_to_its_scopes(world: World) -> None:
    key, key_id = await world.issue(scopes=["vms:export", "vms:browse", "vms:browse"])

    principal = await world.keys.authenticate(key)

    assert principal.kind == "apikey"
    assert principal.username == "olga"
    assert principal.key_id == key_id
    assert principal.scopes == ["vms:browse", "vms:export"]
    assert principal.session_id is None


@pytest.mark.parametrize("candidate", ["", "hsdk_k_nonsense", "hsdk_s_" + "A" * 43])
async def test_malformed_keys_are_refused(world: World, candidate: str) -> None:
    with pytest.raises(ServiceError) as error:
        await world.keys.authenticate(candidate)
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_a_well_formed_unknown_key_is_refused(world: World) -> None:
    await world.issue()
    with pytest.raises(ServiceError) as error:
        await world.keys.authenticate(new_api_key())
    assert error.value.code is ErrorCode.UNAUTHENTICATED


async def test_last_use_is_kept(world: World) -> None:
    key, key_id = await world.issue()
    assert world.store.keys[key_id].last_used_at is None
    world.clock.advance(90)

    await world.keys.authenticate(key)

    assert world.store.keys[key_id].last_used_at == world.clock.now
    (view,) = await world.keys.list_keys(owner="olga", caller=AS_ADMIN, context=ADMIN)
    assert view.last_used_at == world.clock.now


async def test_a_key_dies_at_its_expiry(world: World) -> None:
    key, _ = await world.issue(expires_at=world.clock.now + timedelta(hours=1))
    world.clock.advance(3599)
    await world.keys.authenticate(key)
    world.clock.advance(1)

    with pytest.raises(ServiceError):
        await world.keys.authenticate(key)


async def test_a_revoked_key_dies_at_once(world: World) -> None:
    key, key_id = await world.issue()
    other, _ = await world.issue(name="other")

    await world.keys.revoke(key_id, caller=AS_ADMIN, context=ADMIN)

    with pytest.raises(ServiceError) as error:
        await world.keys.authenticate(key)
    assert error.value.code is ErrorCode.UNAUTHENTICATED
    assert (await world.keys.authenticate(other)).username == "olga"
    assert [
        k.name for k in await world.keys.list_keys(owner=None, caller=AS_ADMIN, context=ADMIN)
    ] == ["other"]
    with pytest.raises(ServiceError) as again:
        await world.keys.revoke(key_id, caller=AS_ADMIN, context=ADMIN)
    assert again.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize("key_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_revoking_an_unknown_key_is_not_found(world: World, key_id: str) -> None:
    with pytest.raises(ServiceError) as error:
        await world.keys.revoke(key_id, caller=AS_ADMIN, context=ADMIN)
    assert error.value.code is ErrorCode.NOT_FOUND


async def test_the_key_of_a_deleted_owner_stops_working(world: World) -> None:
    key, _ = await world.issue()

    await world.identity.delete_user("olga", ADMIN)

    with pytest.raises(ServiceError):
        await world.keys.authenticate(key)
    assert await world.keys.list_keys(owner=None, caller=AS_ADMIN, context=ADMIN) == []
    revoked = [e.data for e in world.events.events if e.routing_key == "identity.apikey.revoked"]
    assert [data["reason"] for data in revoked] == ["owner_deleted"]


async def test_disabling_an_owner_revokes_their_keys_and_enabling_restores_none(
    world: World,
) -> None:
    key, key_id = await world.issue()
    graced, graced_id = await world.issue(name="graced")
    rotated = await world.keys.rotate(graced_id, grace_seconds=600, caller=AS_ADMIN, context=ADMIN)
    admins_key, _ = await world.issue(owner="admin", scopes=["vms:browse"])
    world.events.events.clear()

    await world.identity.set_disabled("olga", disabled=True, context=ADMIN)
    await world.identity.set_disabled("olga", disabled=False, context=ADMIN)

    for dead in (key, graced, rotated.key):
        with pytest.raises(ServiceError) as error:
            await world.keys.authenticate(dead)
        assert error.value.code is ErrorCode.UNAUTHENTICATED
    assert (await world.keys.authenticate(admins_key)).username == "admin"
    assert await world.keys.list_keys(owner="olga", caller=AS_ADMIN, context=ADMIN) == []
    revoked = [e.data for e in world.events.events if e.routing_key == "identity.apikey.revoked"]
    assert sorted(data["key_id"] for data in revoked) == sorted(
        [key_id, graced_id, rotated.api_key.id]
    )
    assert {data["reason"] for data in revoked} == {"owner_disabled"}
    (disabled,) = [e.data for e in world.events.events if e.routing_key == "identity.user.disabled"]
    assert disabled["api_keys_revoked"] == 3
    # A key issued after enabling works: enabling gives back the account, not old credentials.
    fresh, _ = await world.issue()
    assert (await world.keys.authenticate(fresh)).username == "olga"


# ---- who may manage which key (decision 0025) -----------------------------------------------

KEYS_ONLY = Caller(username="admin", key_scopes=("apikeys:manage",))


async def _with_ada(world: World) -> tuple[str, str]:
    """Another admin, ada, and her key with users:manage."""
    await world.identity.create_user("ada", "ada's long password", ADMIN)
    world.permissions.roles["ada"] = ["admin"]
    return await world.issue(owner="ada", scopes=["users:manage", "vms:browse"])


async def test_a_key_scoped_apikeys_manage_cannot_rotate_another_users_key(world: World) -> None:
    adas_key, adas_id = await _with_ada(world)
    world.events.events.clear()

    with pytest.raises(ServiceError) as error:
        await world.keys.rotate(adas_id, grace_seconds=0, caller=KEYS_ONLY, context=ADMIN)

    assert error.value.code is ErrorCode.NOT_FOUND
    assert (await world.keys.authenticate(adas_key)).scopes == ["users:manage", "vms:browse"]
    assert world.store.keys[adas_id].replaced_by is None
    assert len(world.store.keys) == 1
    assert world.events.events == []


async def test_rotating_ones_own_key_never_yields_more_than_the_calling_key(
    world: World,
) -> None:
    _, own_id = await world.issue(owner="admin", scopes=["users:manage"])

    with pytest.raises(ServiceError) as error:
        await world.keys.rotate(own_id, grace_seconds=0, caller=KEYS_ONLY, context=ADMIN)

    assert error.value.code is ErrorCode.FORBIDDEN
    assert "users:manage" in error.value.message
    assert world.store.keys[own_id].replaced_by is None
    within = Caller(username="admin", key_scopes=("apikeys:manage", "users:manage"))
    rotated = await world.keys.rotate(own_id, grace_seconds=0, caller=within, context=ADMIN)
    assert rotated.api_key.scopes == ["users:manage"]


async def test_a_rotation_is_refused_when_the_owner_lost_a_scope(world: World) -> None:
    _, key_id = await world.issue(scopes=["vms:export"])
    world.permissions.roles["olga"] = ["viewer"]

    with pytest.raises(ServiceError) as error:
        await world.keys.rotate(key_id, grace_seconds=0, caller=AS_ADMIN, context=ADMIN)

    assert error.value.code is ErrorCode.FORBIDDEN
    assert "vms:export" in error.value.message


async def test_another_users_key_is_out_of_reach_without_users_manage(world: World) -> None:
    adas_key, adas_id = await _with_ada(world)
    _, own_id = await world.issue(owner="admin", scopes=["vms:browse"])

    with pytest.raises(ServiceError) as revoking:
        await world.keys.revoke(adas_id, caller=KEYS_ONLY, context=ADMIN)
    with pytest.raises(ServiceError) as issuing:
        await world.issue(owner="ada", scopes=["vms:browse"], caller=KEYS_ONLY)
    with pytest.raises(ServiceError) as listing:
        await world.keys.list_keys(owner="ada", caller=KEYS_ONLY, context=ADMIN)
    everyone = await world.keys.list_keys(owner=None, caller=KEYS_ONLY, context=ADMIN)

    assert revoking.value.code is ErrorCode.NOT_FOUND
    assert issuing.value.code is ErrorCode.FORBIDDEN
    assert listing.value.code is ErrorCode.FORBIDDEN
    assert [view.id for view in everyone] == [own_id]  # its own keys only
    assert (await world.keys.authenticate(adas_key)).username == "ada"
    await world.keys.revoke(own_id, caller=KEYS_ONLY, context=ADMIN)


async def test_users_manage_reaches_others_keys_but_never_grants_beyond_the_caller(
    world: World,
) -> None:
    adas_key, adas_id = await _with_ada(world)
    _, adas_secrets_id = await world.issue(owner="ada", scopes=["secrets:manage"], name="vault")
    manager = Caller(username="admin", key_scopes=("apikeys:manage", "users:manage", "vms:browse"))

    listed = await world.keys.list_keys(owner="ada", caller=manager, context=ADMIN)
    with pytest.raises(ServiceError) as issuing:
        await world.issue(owner="ada", scopes=["secrets:manage"], caller=manager)
    with pytest.raises(ServiceError) as rotating:
        await world.keys.rotate(adas_secrets_id, grace_seconds=0, caller=manager, context=ADMIN)
    rotated = await world.keys.rotate(adas_id, grace_seconds=0, caller=manager, context=ADMIN)
    await world.keys.revoke(adas_secrets_id, caller=manager, context=ADMIN)

    assert {view.id for view in listed} == {adas_id, adas_secrets_id}
    assert issuing.value.code is ErrorCode.VALIDATION_FAILED
    assert "secrets:manage" in issuing.value.message
    assert rotating.value.code is ErrorCode.FORBIDDEN
    assert rotated.api_key.owner == "ada"
    assert rotated.api_key.scopes == ["users:manage", "vms:browse"]
    with pytest.raises(ServiceError):
        await world.keys.authenticate(adas_key)
    assert await world.keys.list_keys(owner="ada", caller=manager, context=ADMIN) == [
        rotated.api_key
    ]


# ---- rotation -----------------------------------------------------------------------------


async def test_rotation_without_grace_kills_the_old_key_at_once(world: World) -> None:
    old, old_id = await world.issue()

    rotated = await world.keys.rotate(old_id, grace_seconds=0, caller=AS_ADMIN, context=ADMIN)

    assert rotated.key != old
    assert KEY_FORMAT.fullmatch(rotated.key)
    assert rotated.api_key.scopes == ["vms:browse", "vms:export"]
    assert rotated.api_key.name == "ci"
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)
    assert (await world.keys.authenticate(rotated.key)).key_id == rotated.api_key.id
    assert world.events.events[-1].data["old_key_valid_until"] == "2025-03-01T09:00:00Z"


async def test_rotation_with_grace_keeps_the_old_key_until_then(world: World) -> None:
    old, old_id = await world.issue()

    rotated = await world.keys.rotate(old_id, grace_seconds=600, caller=AS_ADMIN, context=ADMIN)

    world.clock.advance(599)
    await world.keys.authenticate(old)
    await world.keys.authenticate(rotated.key)
    listed = {
        k.id: k for k in await world.keys.list_keys(owner=None, caller=AS_ADMIN, context=ADMIN)
    }
    assert listed[old_id].replaced_by == rotated.api_key.id
    world.clock.advance(1)
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)
    await world.keys.authenticate(rotated.key)


async def test_a_key_is_rotated_once_and_a_grace_period_can_be_cut_short(world: World) -> None:
    old, old_id = await world.issue()
    await world.keys.rotate(old_id, grace_seconds=600, caller=AS_ADMIN, context=ADMIN)

    with pytest.raises(ServiceError) as twice:
        await world.keys.rotate(old_id, grace_seconds=0, caller=AS_ADMIN, context=ADMIN)
    await world.keys.revoke(old_id, caller=AS_ADMIN, context=ADMIN)

    assert twice.value.code is ErrorCode.CONFLICT
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)


async def test_the_grace_period_never_outlives_the_key(world: World) -> None:
    old, old_id = await world.issue(expires_at=world.clock.now + timedelta(seconds=100))

    rotated = await world.keys.rotate(old_id, grace_seconds=3600, caller=AS_ADMIN, context=ADMIN)

    assert rotated.api_key.expires_at == world.clock.now + timedelta(seconds=100)
    world.clock.advance(100)
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)


async def test_issuing_for_another_user_tells_nothing_of_who_exists_without_users_manage(
    world: World,
) -> None:
    await _with_ada(world)

    answers = []
    for owner in ("ada", "nobody-of-that-name"):
        with pytest.raises(ServiceError) as error:
            await world.issue(owner=owner, scopes=["vms:browse"], caller=KEYS_ONLY)
        answers.append(error.value.code)

    assert answers == [ErrorCode.FORBIDDEN, ErrorCode.FORBIDDEN]  # not 403 vs 404
