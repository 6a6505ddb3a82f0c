"""Signed assertions and the guard every consumer runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import ExporterRequestRejected
from hypersdk_kit.bus import InMemoryEventPublisher
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import (
    AssertionRejectedError,
    AssertionSigner,
    AssertionVerifier,
    generate_key_pair,
    load_private_key,
    load_public_key,
)

NOW = 1_800_000_000.0
KEY = Ed25519PrivateKey.generate()


def signer(
    issuer: str = "policy", at: float = NOW, key: Ed25519PrivateKey = KEY
) -> AssertionSigner:
    return AssertionSigner(key, issuer=issuer, ttl_seconds=60, clock=lambda: at)


def verifier(issuer: str = "policy", at: float = NOW) -> AssertionVerifier:
    return AssertionVerifier(KEY.public_key(), issuer=issuer, clock=lambda: at)


GRANT = {"typ": "grant", "sub": "alice", "perm": "vms:export"}


def test_a_signed_assertion_verifies_and_carries_its_claims() -> None:
    token = signer().sign(GRANT)
    claims = verifier().verify(token)
    assert claims["sub"] == "alice"
    assert claims["iss"] == "policy"
    assert claims["exp"] - claims["iat"] == 60
    assert len(claims["jti"]) == 32
    assert token.startswith("v1.")


def test_two_assertions_of_the_same_claims_differ() -> None:
    assert signer().sign(GRANT) != signer().sign(GRANT)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (None, "missing_assertion"),
        ("", "missing_assertion"),
        ("v2.abc.def", "malformed_assertion"),
        ("not-a-token", "malformed_assertion"),
    ],
)
def test_malformed_tokens_are_rejected(token: str | None, reason: str) -> None:
    with pytest.raises(AssertionRejectedError) as rejected:
        verifier().verify(token)
    assert rejected.value.reason == reason


def test_a_changed_claim_breaks_the_signature() -> None:
    version, _payload, signature = signer().sign(GRANT).split(".")
    forged = signer(key=Ed25519PrivateKey.generate()).sign({**GRANT, "perm": "users:manage"})
    with pytest.raises(AssertionRejectedError) as rejected:
        verifier().verify(f"{version}.{forged.split('.')[1]}.{signature}")
    assert rejected.value.reason == "bad_signature"


def test_another_key_or_issuer_is_rejected() -> None:
    with pytest.raises(AssertionRejectedError) as other_key:
        verifier().verify(signer(key=Ed25519PrivateKey.generate()).sign(GRANT))
    assert other_key.value.reason == "bad_signature"
    with pytest.raises(AssertionRejectedError) as other_issuer:
        verifier(issuer="identity").verify(signer().sign(GRANT))
    assert other_issuer.value.reason == "wrong_issuer"


def test_expiry_and_future_issue_are_enforced_with_small_skew() -> None:
    token = signer().sign(GRANT)
    assert verifier(at=NOW + 64).verify(token)
    with pytest.raises(AssertionRejectedError) as late:
        verifier(at=NOW + 66).verify(token)
    assert late.value.reason == "expired"
    assert verifier(at=NOW + 3600).verify(token, check_expiry=False)
    with pytest.raises(AssertionRejectedError) as early:
        verifier(at=NOW - 10).verify(token)
    assert early.value.reason == "not_yet_valid"


def test_key_files_are_written_private_and_refused_when_readable(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    generate_key_pair(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    key = load_private_key(private)
    token = AssertionSigner(key, issuer="x").sign({"typ": "grant"})
    assert AssertionVerifier(load_public_key(public), issuer="x").verify(token)
    os.chmod(private, 0o440)  # a Kubernetes Secret mounted for the pod's fsGroup
    assert load_private_key(private)
    for loose in (0o644, 0o660):
        os.chmod(private, loose)
        with pytest.raises(PermissionError):
            load_private_key(private)


def guard(events: InMemoryEventPublisher) -> RequestGuard:
    return RequestGuard(
        events=events,
        rejected=ExporterRequestRejected,
        grants=verifier(at=NOW + 1),
        principals=AssertionVerifier(KEY.public_key(), issuer="identity", clock=lambda: NOW + 1),
    )


CONTEXT = RequestContext(actor="alice", request_id="req-00000001")


async def test_the_guard_accepts_a_grant_for_this_actor_and_permission_in_any_request() -> None:
    events = InMemoryEventPublisher()
    grant = signer().sign(GRANT)
    for request_id in ("req-00000001", "req-00000002"):
        context = CONTEXT.model_copy(update={"grant": grant, "request_id": request_id})
        claims = await guard(events).authorize(
            operation="exporter.rpc.create_export",
            context=context,
            permissions=frozenset({"vms:export"}),
        )
        assert claims["sub"] == "alice"
    assert events.events == []


@pytest.mark.parametrize(
    ("grant_claims", "context_update", "reason"),
    [
        ({**GRANT, "perm": "jobs:view"}, {}, "permission_not_granted"),
        (GRANT, {"actor": "mallory"}, "actor_mismatch"),
        ({**GRANT, "typ": "principal"}, {}, "malformed_assertion"),
    ],
)
async def test_the_guard_refuses_and_publishes_why(
    grant_claims: dict[str, str], context_update: dict[str, str], reason: str
) -> None:
    events = InMemoryEventPublisher()
    context = CONTEXT.model_copy(update={"grant": signer().sign(grant_claims), **context_update})
    with pytest.raises(ServiceError) as refused:
        await guard(events).authorize(
            operation="exporter.rpc.create_export",
            context=context,
            permissions=frozenset({"vms:export"}),
        )
    assert refused.value.code is ErrorCode.FORBIDDEN
    (event,) = events.events
    assert event.routing_key == "exporter.request.rejected"
    assert event.data["reason"] == reason
    assert event.data["operation"] == "exporter.rpc.create_export"
    assert context.grant is not None
    assert context.grant.split(".")[1] not in event.model_dump_json()
    assert context.grant.split(".")[2] not in event.model_dump_json()


async def test_a_guard_without_a_trust_anchor_refuses_everything() -> None:
    events = InMemoryEventPublisher()
    bare = RequestGuard(events=events, rejected=ExporterRequestRejected)
    context = CONTEXT.model_copy(update={"grant": signer().sign(GRANT)})
    with pytest.raises(ServiceError):
        await bare.authorize(operation="op", context=context, permissions=frozenset({"vms:export"}))
    assert events.events[0].data["reason"] == "no_trust_anchor"


async def test_principal_assertions_are_checked_against_the_actor() -> None:
    events = InMemoryEventPublisher()
    identity = signer(issuer="identity")
    token = identity.sign({"typ": "principal", "sub": "alice"})
    claims = await guard(events).authenticate(
        operation="policy.rpc.decide", context=CONTEXT.model_copy(update={"assertion": token})
    )
    assert claims["sub"] == "alice"
    with pytest.raises(ServiceError):
        await guard(events).authenticate(
            operation="policy.rpc.decide",
            context=CONTEXT.model_copy(update={"assertion": token, "actor": "bob"}),
        )
    assert events.events[-1].data["reason"] == "actor_mismatch"
