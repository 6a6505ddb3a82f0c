"""Signed assertions: format, signature, issuer, expiry, key files (guard: test_request_seals)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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
