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
from hypersdk_contracts.rpc import CreateApiKeyRequest, Principal, RpcRequest
from hypersdk_gateway.core.seals import seal_request
from hypersdk_identity.adapters.inbound.rpc import calling_key_scopes, sign_principal
from hypersdk_identity.adapters.outbound.bus import RpcPermissionDirectory
from hypersdk_identity.adapters.outbound.memory import (
    InMemoryApiKeyStore,
    InMemoryPermissionDirectory,
    InMemorySessionStore,
    InMemoryUserStore,
    InsecureFastHasher,
)
from hypersdk_identity.core.apikeys import ApiKeyService
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_kit.bus import InMemoryEventPublisher, RpcClient
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier
from tests.unit.fake_backend import gateway_seals, seal_verifier

from .test_identity_sessions import Clock

ADMIN = RequestContext(actor="admin", source_ip="192.0.2.10", request_id="req-keys")
KEY_FORMAT = re.compile(r"^hsdk_k_[0-9A-Za-z]{38}$")


@dataclass
class World:
    keys: ApiKeyService
    store: InMemoryApiKeyStore
    identity: IdentityService
    events: InMemoryEventPublisher
    clock: Clock
    permissions: InMemoryPermissionDirectory

    async def issue(self, **overrides: object) -> tuple[str, str]:
        arguments: dict[str, object] = {
            "owner": "olga",
            "name": "ci",
            "scopes": ["vms:browse", "vms:export"],
            "expires_at": None,
            "calling_key_scopes": None,
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
    events = InMemoryEventPublisher(service="identity")
    hasher = InsecureFastHasher()
    identity = IdentityService(
        users=users,
        sessions=InMemorySessionStore(),
        hasher=hasher,
        events=events,
        session_policy=SessionPolicy(idle_seconds=1800, lifetime_seconds=43200),
        dummy_hash=await hasher.hash("dummy password for timing"),
        clock=clock,
        api_keys=store,
    )
    for name in ("admin", "olga"):
        await identity.create_user(name, f"{name}'s long password", ADMIN)
    events.events.clear()
    permissions = InMemoryPermissionDirectory({"admin": ["admin"], "olga": ["operator"]})
    keys = ApiKeyService(
        keys=store, users=users, events=events, permissions=permissions, clock=clock
    )
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
    listed = await world.keys.list_keys(owner=None)
    assert [k.id for k in listed] == [key_id]
    assert key not in listed[0].model_dump_json()
    assert stored.created_by == "admin"


async def test_every_key_event_is_free_of_the_key(world: World) -> None:
    key, key_id = await world.issue()
    rotated = await world.keys.rotate(key_id, grace_seconds=60, context=ADMIN)
    await world.keys.revoke(rotated.api_key.id, ADMIN)

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
        "A key's scopes must be permissions its owner holds (and the calling key's); "
        "not held: secrets:manage, users:manage."
    )
    assert world.store.keys == {}
    assert world.events.events == []
    # Asked about the owner (not the caller), on behalf of the request being served.
    assert world.permissions.asked == [("olga", [], ADMIN)]


async def test_an_owner_who_lost_a_permission_cannot_put_it_in_a_key(world: World) -> None:
    await world.issue(scopes=["vms:export"])
    world.permissions.roles["olga"] = ["viewer"]

    with pytest.raises(ServiceError) as error:
        await world.issue(scopes=["vms:export"])

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert len(world.store.keys) == 1


async def test_a_key_cannot_mint_a_key_broader_than_itself(world: World) -> None:
    calling_key = ["apikeys:manage", "vms:browse"]

    with pytest.raises(ServiceError) as error:
        await world.issue(owner="admin", scopes=["secrets:manage"], calling_key_scopes=calling_key)
    _, narrower = await world.issue(
        owner="admin", scopes=["vms:browse"], calling_key_scopes=calling_key
    )

    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert "secrets:manage" in error.value.message
    assert world.store.keys[narrower].scopes == ("vms:browse",)
    with pytest.raises(ServiceError):
        await world.issue(owner="admin", scopes=["vms:browse"], calling_key_scopes=[])


IDENTITY_KEY = Ed25519PrivateKey.generate()


def _guard() -> RequestGuard:
    return RequestGuard(
        events=InMemoryEventPublisher(service="identity"),
        rejected=IdentityRequestRejected,
        principals=AssertionVerifier(IDENTITY_KEY.public_key(), issuer="identity"),
        seals=seal_verifier(),
    )


def _context(principal: Principal, key: Ed25519PrivateKey = IDENTITY_KEY) -> RequestContext:
    signed = sign_principal(AssertionSigner(key, issuer="identity"), principal)
    request = CreateApiKeyRequest(
        owner="admin",
        name="ci",
        scopes=["vms:browse"],
        context=RequestContext(
            actor=principal.username, request_id="req-key", assertion=signed.assertion
        ),
    )
    return seal_request(gateway_seals(), RpcQueue.IDENTITY_CREATE_API_KEY, request).context


async def test_the_calling_keys_scopes_come_from_its_verified_assertion() -> None:
    operation = RpcQueue.IDENTITY_CREATE_API_KEY
    key = Principal(username="admin", kind="apikey", key_id="k1", scopes=["vms:browse"])
    session = Principal(username="admin", kind="session", session_id="s1")

    assert await calling_key_scopes(_guard(), operation, _context(key), target="admin") == [
        "vms:browse"
    ]
    assert await calling_key_scopes(_guard(), operation, _context(session), target="admin") is None
    for unverifiable in (
        RequestContext(actor="admin"),
        _context(session, key=Ed25519PrivateKey.generate()),
    ):
        with pytest.raises(ServiceError) as error:
            await calling_key_scopes(_guard(), operation, unverifiable, target="admin")
        assert error.value.code is ErrorCode.FORBIDDEN


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
    (view,) = await world.keys.list_keys(owner="olga")
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

    await world.keys.revoke(key_id, ADMIN)

    with pytest.raises(ServiceError) as error:
        await world.keys.authenticate(key)
    assert error.value.code is ErrorCode.UNAUTHENTICATED
    assert (await world.keys.authenticate(other)).username == "olga"
    assert [k.name for k in await world.keys.list_keys(owner=None)] == ["other"]
    with pytest.raises(ServiceError) as again:
        await world.keys.revoke(key_id, ADMIN)
    assert again.value.code is ErrorCode.NOT_FOUND


@pytest.mark.parametrize("key_id", ["not-a-uuid", str(uuid.uuid4())])
async def test_revoking_an_unknown_key_is_not_found(world: World, key_id: str) -> None:
    with pytest.raises(ServiceError) as error:
        await world.keys.revoke(key_id, ADMIN)
    assert error.value.code is ErrorCode.NOT_FOUND


async def test_the_key_of_a_disabled_or_deleted_owner_stops_working(world: World) -> None:
    key, _ = await world.issue()
    await world.identity.set_disabled("olga", disabled=True, context=ADMIN)
    with pytest.raises(ServiceError):
        await world.keys.authenticate(key)
    await world.identity.set_disabled("olga", disabled=False, context=ADMIN)
    await world.keys.authenticate(key)

    await world.identity.delete_user("olga", ADMIN)

    with pytest.raises(ServiceError):
        await world.keys.authenticate(key)
    assert await world.keys.list_keys(owner=None) == []
    revoked = [e.data for e in world.events.events if e.routing_key == "identity.apikey.revoked"]
    assert [data["reason"] for data in revoked] == ["owner_deleted"]


# ---- rotation -----------------------------------------------------------------------------


async def test_rotation_without_grace_kills_the_old_key_at_once(world: World) -> None:
    old, old_id = await world.issue()

    rotated = await world.keys.rotate(old_id, grace_seconds=0, context=ADMIN)

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

    rotated = await world.keys.rotate(old_id, grace_seconds=600, context=ADMIN)

    world.clock.advance(599)
    await world.keys.authenticate(old)
    await world.keys.authenticate(rotated.key)
    listed = {k.id: k for k in await world.keys.list_keys(owner=None)}
    assert listed[old_id].replaced_by == rotated.api_key.id
    world.clock.advance(1)
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)
    await world.keys.authenticate(rotated.key)


async def test_a_key_is_rotated_once_and_a_grace_period_can_be_cut_short(world: World) -> None:
    old, old_id = await world.issue()
    await world.keys.rotate(old_id, grace_seconds=600, context=ADMIN)

    with pytest.raises(ServiceError) as twice:
        await world.keys.rotate(old_id, grace_seconds=0, context=ADMIN)
    await world.keys.revoke(old_id, ADMIN)

    assert twice.value.code is ErrorCode.CONFLICT
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)


async def test_the_grace_period_never_outlives_the_key(world: World) -> None:
    old, old_id = await world.issue(expires_at=world.clock.now + timedelta(seconds=100))

    rotated = await world.keys.rotate(old_id, grace_seconds=3600, context=ADMIN)

    assert rotated.api_key.expires_at == world.clock.now + timedelta(seconds=100)
    world.clock.advance(100)
    with pytest.raises(ServiceError):
        await world.keys.authenticate(old)
