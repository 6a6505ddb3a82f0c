"""The guard every service runs: grant (policy), principal (identity) and request seal (gateway).

The review's attack: a grant copied from one admin call, replayed to ``identity.rpc.create_user``
and ``policy.rpc.assign_roles``, minted a working admin. A grant now names the operations of one
route, and each request carries the gateway's seal for exactly one request ID, operation and
target, admitted once; a request without an actor is refused where a principal is required.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.operations import EXPORT_COMMAND, target_of, with_follow_ups
from hypersdk_contracts.rpc import (
    AssignRolesRequest,
    CreateApiKeyRequest,
    CreateExportRequest,
    CreateUserRequest,
    DiskFormat,
    ListUsersRequest,
    ListVmsRequest,
    ResolveCredentialRequest,
    RpcRequest,
)
from hypersdk_gateway.core.seals import seal_request
from hypersdk_kit.bus import InMemoryEventPublisher
from hypersdk_kit.guard import QueuedGrace, RequestGuard, SeenSeals, check_grant
from hypersdk_kit.trust import AssertionRejectedError, AssertionSigner, AssertionVerifier

NOW = 1_800_000_000.0
POLICY = Ed25519PrivateKey.generate()
IDENTITY = Ed25519PrivateKey.generate()
GATEWAY = Ed25519PrivateKey.generate()
USERS_MANAGE = frozenset({"users:manage"})
CREATE_USER = RpcQueue.IDENTITY_CREATE_USER
ASSIGN_ROLES = RpcQueue.POLICY_ASSIGN_ROLES


class Clock:
    """A settable clock for signers, verifiers and the seen-seal cache."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def gateway(clock: Clock, ttl_seconds: int = 30) -> AssertionSigner:
    return AssertionSigner(GATEWAY, issuer="gateway", ttl_seconds=ttl_seconds, clock=clock)


def grant(operations: list[str], *, sub: str = "root", perm: str = "users:manage") -> str:
    signer = AssertionSigner(POLICY, issuer="policy", clock=lambda: NOW)
    return signer.sign({"typ": "grant", "sub": sub, "perm": perm, "op": sorted(operations)})


def principal(sub: str = "root") -> str:
    signer = AssertionSigner(IDENTITY, issuer="identity", clock=lambda: NOW)
    return signer.sign({"typ": "principal", "sub": sub, "kind": "session"})


def make_guard(events: InMemoryEventPublisher, clock: Clock) -> RequestGuard:
    return RequestGuard(
        events=events,
        rejected=IdentityRequestRejected,
        grants=AssertionVerifier(POLICY.public_key(), issuer="policy", clock=clock),
        principals=AssertionVerifier(IDENTITY.public_key(), issuer="identity", clock=clock),
        seals=AssertionVerifier(GATEWAY.public_key(), issuer="gateway", clock=clock),
        seen=SeenSeals(clock=clock),
    )


def context(
    *, actor: str | None = "root", request_id: str = "req-1", grant_ops: list[str] | None = None
) -> RequestContext:
    return RequestContext(
        actor=actor,
        source_ip="198.51.100.7",
        request_id=request_id,
        assertion=principal(actor or "root"),
        grant=grant(grant_ops if grant_ops is not None else [CREATE_USER, ASSIGN_ROLES]),
    )


def create_user(ctx: RequestContext, username: str = "mallory") -> CreateUserRequest:
    return CreateUserRequest(username=username, password="a long enough password", context=ctx)


async def authorize(guard: RequestGuard, operation: str, request: RpcRequest) -> dict[str, Any]:
    """What a service's RPC subscriber does before its use case runs."""
    return await guard.authorize(
        operation=operation,
        context=request.context,
        permissions=USERS_MANAGE,
        target=target_of(operation, request),
    )


async def refused(guard: RequestGuard, operation: str, request: RpcRequest) -> str:
    """The reason the guard refused ``request``, as the published event names it."""
    with pytest.raises(ServiceError) as error:
        await authorize(guard, operation, request)
    assert error.value.code is ErrorCode.FORBIDDEN
    events: InMemoryEventPublisher = guard.events  # type: ignore[assignment]
    event = events.events[-1]
    assert event.routing_key == "identity.request.rejected"
    assert event.data["operation"] == operation
    return str(event.data["reason"])


async def test_a_sealed_request_with_a_grant_for_its_operation_is_admitted() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    request = seal_request(gateway(clock), CREATE_USER, create_user(context()))

    claims = await authorize(make_guard(events, clock), CREATE_USER, request)

    assert claims["sub"] == "root"
    assert events.events == []


async def test_a_grant_and_seal_from_one_call_replayed_to_other_operations_are_refused() -> None:
    """The review's attack: what ``GET /users`` sent, replayed to create a user and a role."""
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    listed = seal_request(
        gateway(clock),
        RpcQueue.IDENTITY_LIST_USERS,
        ListUsersRequest(context=context(grant_ops=[RpcQueue.IDENTITY_LIST_USERS])),
    )
    await guard.authorize(
        operation=RpcQueue.IDENTITY_LIST_USERS, context=listed.context, permissions=USERS_MANAGE
    )
    copied = listed.context

    assert await refused(guard, CREATE_USER, create_user(copied)) == "operation_mismatch"
    promote = AssignRolesRequest(username="mallory", roles=["admin"], context=copied)
    assert await refused(guard, ASSIGN_ROLES, promote) == "operation_mismatch"


async def test_a_grant_for_another_route_is_refused_even_under_a_fitting_seal() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    ctx = context(grant_ops=[RpcQueue.IDENTITY_LIST_USERS])
    request = seal_request(gateway(clock), CREATE_USER, create_user(ctx))

    assert await refused(make_guard(events, clock), CREATE_USER, request) == (
        "operation_not_granted"
    )


async def test_a_seal_for_another_request_id_is_refused() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    sealed = seal_request(gateway(clock), CREATE_USER, create_user(context(request_id="req-1")))
    moved = create_user(sealed.context.model_copy(update={"request_id": "req-2"}))

    assert await refused(make_guard(events, clock), CREATE_USER, moved) == "request_mismatch"


async def test_a_seal_for_another_target_actor_or_address_is_refused() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    sealed = seal_request(gateway(clock), CREATE_USER, create_user(context(), username="olga"))

    assert await refused(guard, CREATE_USER, create_user(sealed.context)) == "target_mismatch"
    as_bob = sealed.context.model_copy(update={"actor": "bob"})
    assert await refused(guard, CREATE_USER, create_user(as_bob, "olga")) == "actor_mismatch"
    elsewhere = sealed.context.model_copy(update={"source_ip": "203.0.113.9"})
    assert await refused(guard, CREATE_USER, create_user(elsewhere, "olga")) == ("address_mismatch")


@pytest.mark.parametrize("actor", [None, ""])
async def test_a_request_without_an_actor_is_refused_where_a_principal_is_required(
    actor: str | None,
) -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    # Everything else is genuine: the grant names root and the seal names no actor.
    request = seal_request(gateway(clock), CREATE_USER, create_user(context(actor=actor)))

    assert await refused(guard, CREATE_USER, request) == "missing_actor"
    with pytest.raises(ServiceError):
        await guard.authenticate(operation=CREATE_USER, context=request.context, target="mallory")
    assert events.events[-1].data["reason"] == "missing_actor"


async def test_a_request_without_a_seal_or_with_a_forged_one_is_refused() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    impostor = AssertionSigner(Ed25519PrivateKey.generate(), issuer="gateway", clock=clock)

    assert await refused(guard, CREATE_USER, create_user(context())) == "missing_seal"
    forged = seal_request(impostor, CREATE_USER, create_user(context()))
    assert await refused(guard, CREATE_USER, forged) == "seal_bad_signature"


async def test_an_expired_seal_is_refused() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    request = seal_request(gateway(clock, ttl_seconds=30), CREATE_USER, create_user(context()))
    clock.now += 30 + 6  # past its expiry and the clock skew allowed

    assert await refused(make_guard(events, clock), CREATE_USER, request) == "seal_expired"


async def test_a_seal_is_admitted_once_but_checked_again_within_its_request() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    request = seal_request(gateway(clock), CREATE_USER, create_user(context()))
    await authorize(guard, CREATE_USER, request)
    # The same request object, checked again by its handler: the same use of the seal.
    await guard.authenticate(operation=CREATE_USER, context=request.context, target="mallory")

    # The same message delivered again (a copy off the bus) is a replay.
    replayed = CreateUserRequest.model_validate_json(request.model_dump_json())
    assert await refused(guard, CREATE_USER, replayed) == "seal_replayed"


async def test_seen_seals_are_forgotten_once_they_can_no_longer_verify() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    for index in range(3):
        request = seal_request(
            gateway(clock), CREATE_USER, create_user(context(request_id=f"req-{index}"))
        )
        await authorize(guard, CREATE_USER, request)
    assert len(guard.seen) == 3

    clock.now += 30 + 6
    fresh = seal_request(gateway(clock), CREATE_USER, create_user(context(request_id="req-9")))
    await authorize(guard, CREATE_USER, fresh)
    assert len(guard.seen) == 1


async def test_a_follow_up_runs_under_the_seal_of_the_operation_that_made_it() -> None:
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    issuing = CreateApiKeyRequest(
        owner="olga",
        name="ci",
        scopes=["jobs:view"],
        context=context(grant_ops=sorted(with_follow_ups([RpcQueue.IDENTITY_CREATE_API_KEY]))),
    )
    sealed = seal_request(gateway(clock), RpcQueue.IDENTITY_CREATE_API_KEY, issuing).context

    # Identity asks policy for the owner's permissions with the caller's context.
    await guard.authorize(
        operation=RpcQueue.POLICY_PERMISSIONS_OF,
        context=sealed,
        permissions=USERS_MANAGE,
        target="olga",
    )
    # No other operation rides on that seal.
    assert await refused(
        guard, ASSIGN_ROLES, AssignRolesRequest(username="olga", roles=["admin"], context=sealed)
    ) == ("operation_mismatch")


def test_an_export_seal_names_the_vm_its_command_will_export() -> None:
    request = CreateExportRequest(
        provider="lab", vm="web-01", format=DiskFormat.RAW, context=RequestContext()
    )
    assert target_of(RpcQueue.EXPORTER_CREATE_EXPORT, request) == "lab/web-01"
    assert with_follow_ups([RpcQueue.EXPORTER_CREATE_EXPORT]) == {
        RpcQueue.EXPORTER_CREATE_EXPORT,
        EXPORT_COMMAND,
        RpcQueue.SECRETS_RESOLVE_CREDENTIAL,  # the provider's credential (decision 0033)
    }


def test_events_carry_the_seal_of_the_request_that_caused_them() -> None:
    seal = gateway(Clock()).sign({"typ": "request", "rid": "req-1", "op": CREATE_USER})
    ctx = RequestContext(actor="root", request_id="req-1", seal=seal, grant=grant([CREATE_USER]))
    event = new_event(
        service="identity",
        routing_key="identity.request.rejected",
        data=IdentityRequestRejected(operation=CREATE_USER, reason="x", claimed_actor="root"),
        subject=CREATE_USER,
        context=ctx,
    )

    wire = event.to_wire()
    assert wire["seal"] == seal
    assert ctx.grant is not None
    assert ctx.grant not in json.dumps(wire)
    assert CloudEvent.model_validate(wire).context.seal == seal
    assert seal not in repr(ctx)


def test_a_command_without_an_actor_is_refused() -> None:
    claims = AssertionVerifier(POLICY.public_key(), issuer="policy", clock=lambda: NOW).verify(
        grant([EXPORT_COMMAND], perm="vms:export")
    )
    with pytest.raises(AssertionRejectedError) as refused:
        check_grant(
            claims,
            context=RequestContext(request_id="req-1"),
            permissions=frozenset({"vms:export"}),
            operation=EXPORT_COMMAND,
        )
    assert refused.value.reason == "missing_actor"


# ---- a queued export's worker asks for its provider's credential --------------------------------

RESOLVE = RpcQueue.SECRETS_RESOLVE_CREDENTIAL
QUEUED = QueuedGrace(sealed_operation=RpcQueue.EXPORTER_CREATE_EXPORT, grace_seconds=3600)
READ = frozenset({"vms:browse", "vms:export"})


def _sealed(clock: Clock, operation: str, request: RpcRequest) -> RequestContext:
    return seal_request(gateway(clock), operation, request).context


def _credential_read(ctx: RequestContext) -> ResolveCredentialRequest:
    return ResolveCredentialRequest(path="providers/lab", context=ctx)


async def _read(guard: RequestGuard, ctx: RequestContext, queued: QueuedGrace | None) -> str:
    """``admitted``, or the reason the guard refused the credential read (each a new message)."""
    try:
        await guard.authorize(
            operation=RESOLVE,
            context=ctx.model_copy(),
            permissions=READ,
            target=None,
            queued=queued,
        )
    except ServiceError:
        events: InMemoryEventPublisher = guard.events  # type: ignore[assignment]
        return str(events.events[-1].data["reason"])
    return "admitted"


async def test_a_queued_exports_credential_read_is_backed_by_its_command_past_expiry() -> None:
    """The job waited in the queue for 10 minutes: its seal (30 s) and grant (60 s) expired."""
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    ops = sorted(with_follow_ups([RpcQueue.EXPORTER_CREATE_EXPORT]))
    ctx = RequestContext(
        actor="olga",
        source_ip="198.51.100.7",
        request_id="req-9",
        grant=grant(ops, sub="olga", perm="vms:export"),
    )
    export = CreateExportRequest(provider="lab", vm="web-01", format=DiskFormat.RAW, context=ctx)
    sealed = _sealed(clock, RpcQueue.EXPORTER_CREATE_EXPORT, export)

    clock.now = NOW + 600
    assert await _read(guard, sealed, QUEUED) == "admitted"
    assert await _read(guard, sealed, None) == "seal_expired"  # no grace unless asked for
    clock.now = NOW + 30 + 3600 + 120
    assert await _read(guard, sealed, QUEUED) == "seal_expired"  # nor beyond it


async def test_the_grace_is_for_the_queued_operation_only() -> None:
    """A browse request's seal, expired, backs no credential read, grace or not."""
    clock, events = Clock(), InMemoryEventPublisher()
    guard = make_guard(events, clock)
    ops = sorted(with_follow_ups([RpcQueue.EXPORTER_LIST_VMS]))
    ctx = RequestContext(
        actor="alice",
        source_ip="198.51.100.7",
        request_id="req-10",
        grant=grant(ops, sub="alice", perm="vms:browse"),
    )
    sealed = _sealed(clock, RpcQueue.EXPORTER_LIST_VMS, ListVmsRequest(provider="lab", context=ctx))

    clock.now = NOW + 5
    assert await _read(guard, sealed, QUEUED) == "admitted"
    clock.now = NOW + 600
    assert await _read(guard, sealed, QUEUED) == "seal_expired"
