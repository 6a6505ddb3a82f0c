"""Principals and grants signed in the platform's OpenBao transit, with AppRoles per service.

Decision 0046: identity's and policy's keys are transit keys that never leave OpenBao; each
service logs in with its own AppRole, whose policy reaches only what it needs; a rotated key
verifies in both versions until the old one is retired; a sealed OpenBao makes the calls
that need a signature answer 503 and they recover by themselves.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import time
from pathlib import Path

import hvac
import pytest
from hvac.exceptions import Forbidden, InvalidPath, InvalidRequest

from hypersdk_kit.transit import TransitKeyRing, TransitSigner
from hypersdk_kit.trust import AssertionRejectedError, AssertionVerifier
from hypersdk_kit.vault import AppRoleLogin, VaultSession

from .conftest import ADMIN_PASSWORD, Stack, devstack, process_tree

GRANT = {"typ": "grant", "sub": "admin", "perm": "jobs:view", "op": ["exporter.rpc.list_jobs"]}


def _url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.config.vault_port}"


def _root(stack: Stack) -> hvac.Client:
    token = (stack.config.secret_dir / "openbao-root-token").read_text().strip()
    return hvac.Client(url=_url(stack), token=token, timeout=5)


def _as_service(stack: Stack, service: str) -> hvac.Client:
    """A client logged in with ``service``'s own AppRole, as the service logs in."""
    secret_dir = stack.config.secret_dir
    session = VaultSession(
        hvac.Client(url=_url(stack), timeout=5),
        approle=AppRoleLogin(
            secret_dir / f"{service}-role-id", secret_dir / f"{service}-secret-id"
        ),
    )
    session.fresh()
    return session.client


def _allowed(action: object) -> bool:
    assert callable(action)
    try:
        action()
    except Forbidden:
        return False
    return True


def test_no_private_key_of_identity_or_policy_is_on_disk(stack: Stack) -> None:
    """Only the gateway's seal key is a file; the transit keys cannot be exported."""
    private_keys = []
    for path in Path(stack.config.state_dir).rglob("*"):
        small = path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20
        if small and b"PRIVATE KEY" in path.read_bytes():
            private_keys.append(path.name)
    assert private_keys == ["gateway.key"]
    root = _root(stack)
    for key in devstack.TRANSIT_KEYS.values():
        data = root.secrets.transit.read_key(key)["data"]
        assert data["type"] == "ed25519"
        assert data["exportable"] is False
        with pytest.raises((InvalidRequest, InvalidPath, Forbidden)):
            root.secrets.transit.export_key(key, key_type="signing-key")
    # The platform authenticates (identity signs) and authorizes (policy signs) all the same.
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, body, _ = stack.api.call("GET", "/api/v1/jobs", token=admin)
    assert status == 200, body


def test_each_service_reaches_only_what_its_approle_allows(stack: Stack) -> None:
    """Real calls with each service's AppRole: KV, signing and public keys, one by one."""
    planted = f"hypersdk/approle-probe-{secrets.token_hex(4)}"
    _root(stack).secrets.kv.v2.create_or_update_secret(
        path=planted, secret={"password": "probe-" + secrets.token_hex(8)}, mount_point="secret"
    )
    message = base64.b64encode(b"probe").decode()
    found: dict[str, dict[str, bool]] = {}
    for service in ("identity", "policy", "secrets", "exporter", "audit"):
        client = _as_service(stack, service)
        transit = client.secrets.transit
        found[service] = {
            "read KV": _allowed(
                lambda c=client: c.secrets.kv.v2.read_secret_version(
                    path=planted, mount_point="secret", raise_on_deleted_version=True
                )
            ),
            "sign as identity": _allowed(
                lambda t=transit: t.sign_data("hypersdk-identity", hash_input=message)
            ),
            "sign as policy": _allowed(
                lambda t=transit: t.sign_data("hypersdk-policy", hash_input=message)
            ),
            "sign as audit": _allowed(
                lambda t=transit: t.sign_data("hypersdk-audit", hash_input=message)
            ),
            "identity's public keys": _allowed(lambda t=transit: t.read_key("hypersdk-identity")),
            "policy's public keys": _allowed(lambda t=transit: t.read_key("hypersdk-policy")),
            "list policies": _allowed(lambda c=client: c.sys.list_acl_policies()),
        }
    assert found == {
        "identity": {
            "read KV": False,
            "sign as identity": True,
            "sign as policy": False,
            "sign as audit": False,
            "identity's public keys": True,
            "policy's public keys": True,
            "list policies": False,
        },
        "policy": {
            "read KV": False,
            "sign as identity": False,
            "sign as policy": True,
            "sign as audit": False,
            "identity's public keys": True,
            "policy's public keys": True,
            "list policies": False,
        },
        "secrets": {
            "read KV": True,
            "sign as identity": False,
            "sign as policy": False,
            "sign as audit": False,
            "identity's public keys": False,
            "policy's public keys": True,
            "list policies": False,
        },
        "exporter": {
            "read KV": False,
            "sign as identity": False,
            "sign as policy": False,
            "sign as audit": False,
            "identity's public keys": False,
            "policy's public keys": True,
            "list policies": False,
        },
        "audit": {
            "read KV": False,
            "sign as identity": False,
            "sign as policy": False,
            "sign as audit": True,
            "identity's public keys": False,
            "policy's public keys": True,
            "list policies": False,
        },
    }
    # The gateway has no Vault login at all.
    assert not (stack.config.secret_dir / "gateway-role-id").exists()
    env = stack.config.service_env()
    assert not [name for name in env if name.startswith("HYPERSDK_GATEWAY_VAULT")]


async def test_a_rotated_key_verifies_in_both_versions_until_the_old_one_is_retired(
    stack: Stack,
) -> None:
    """Against the real transit engine, on a key of the test's own."""
    root = _root(stack)
    key = f"test-rotation-{secrets.token_hex(4)}"
    root.secrets.transit.create_key(key, key_type="ed25519")
    session = VaultSession(root)
    ring = TransitKeyRing(session, key)
    await ring.refresh()
    verifier = AssertionVerifier(ring, issuer="policy")
    # Signs with the newest version once it is an hour old, else with the oldest one.
    cautious = TransitSigner(session, ring, issuer="policy", publish_seconds=3600)
    eager = TransitSigner(session, ring, issuer="policy", publish_seconds=0)
    before = await cautious.assert_claims(GRANT)

    root.secrets.transit.rotate_key(key)
    stale = AssertionVerifier(TransitKeyRing(session, key), issuer="policy")
    await ring.refresh()
    assert [version.version for version in ring.versions] == [2, 1]
    during_old = await cautious.assert_claims(GRANT)
    during_new = await eager.assert_claims(GRANT)
    for token in (before, during_old, during_new):
        assert verifier.verify(token)["perm"] == "jobs:view"
    # A verifier that has not read the new version yet cannot check it: hence the delay.
    only_first = AssertionVerifier(ring.versions[1].public_key, issuer="policy")
    only_first.verify(during_old)
    with pytest.raises(AssertionRejectedError, match="bad_signature"):
        only_first.verify(during_new)
    with pytest.raises(AssertionRejectedError, match="bad_signature"):
        stale.verify(during_new)  # a ring never read holds nothing

    root.secrets.transit.update_key_configuration(key, min_decryption_version=2)
    await ring.refresh()
    assert [version.version for version in ring.versions] == [2]
    for token in (before, during_old):
        with pytest.raises(AssertionRejectedError, match="bad_signature"):
            verifier.verify(token)
    assert verifier.verify(during_new)["sub"] == "admin"
    assert verifier.verify(await cautious.assert_claims(GRANT))["sub"] == "admin"


def test_a_sealed_vault_makes_authentication_answer_503_then_it_recovers(stack: Stack) -> None:
    """Identity cannot sign while OpenBao is sealed: a credential the gateway has not seen
    answers 503 upstream_unavailable with Retry-After (not 401, not 500); once unsealed, the
    same credential works without restarting anything."""
    token = stack.api.login("admin", ADMIN_PASSWORD)  # not yet verified by the gateway
    assert _ready(stack, "identity")
    assert _ready(stack, "policy")
    _root(stack).sys.seal()
    try:
        status, body, headers = stack.api.call("GET", "/api/v1/jobs", token=token)
        assert status == 503, body
        assert body["error"]["code"] == "upstream_unavailable"
        assert headers["retry-after"]
        # The signers read not ready; the services that only check keep the keys they hold.
        assert not _ready(stack, "identity")
        assert not _ready(stack, "policy")
        assert _ready(stack, "exporter")
        assert _ready(stack, "audit")
    finally:
        devstack.openbao_setup(stack.config)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body, _ = stack.api.call("GET", "/api/v1/jobs", token=token)
        if status == 200:
            break
        time.sleep(0.2)
    assert status == 200, body
    assert _ready(stack, "identity")
    assert _ready(stack, "policy")


def _children(stack: Stack) -> dict[str, int]:
    """The supervisor's children by name: ``openbao`` and each service."""
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None
    found: dict[str, int] = {}
    for pid in process_tree(supervisor)[1:]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(argv[0].decode()).name == "bao":
            found["openbao"] = pid
        for service in devstack.SERVICES:
            if f"hypersdk_{service}".encode() in argv:
                found[service] = pid
    return found


def _works_again(stack: Stack, seconds: float) -> tuple[int, object]:
    """A credential the gateway has never seen, until it is served (identity signs anew)."""
    deadline = time.monotonic() + seconds
    while True:
        status, body, _ = stack.api.call("POST", "/api/v1/auth/login", ADMIN_LOGIN)
        if status == 200:
            status, body, _ = stack.api.call("GET", "/api/v1/jobs", token=body["token"])
            if status == 200 or time.monotonic() > deadline:
                return status, body
        elif time.monotonic() > deadline:
            return status, body
        time.sleep(0.2)


ADMIN_LOGIN = {"username": "admin", "password": ADMIN_PASSWORD}


def test_openbao_killed_is_restarted_and_unsealed_and_the_services_sign_again(
    stack: Stack,
) -> None:
    """kill -9 of OpenBao, then of identity: the supervisor restarts each (OpenBao unsealed
    by the setup, fresh secret IDs), the other services keep running, and new credentials are
    signed again without any other restart."""
    before = _children(stack)
    os.kill(before["openbao"], signal.SIGKILL)
    status, body = _works_again(stack, 30)
    assert status == 200, body
    after = _children(stack)
    assert after["openbao"] != before["openbao"]
    assert {name: after[name] for name in devstack.SERVICES} == {
        name: before[name] for name in devstack.SERVICES
    }
    # identity killed: restarted, it logs in with the secret ID the last setup wrote and
    # reads its keys before serving.
    os.kill(after["identity"], signal.SIGKILL)
    status, body = _works_again(stack, 30)
    assert status == 200, body
    assert _children(stack)["identity"] != after["identity"]


def _ready(stack: Stack, service: str) -> bool:
    port = stack.config.health_base_port + devstack.SERVICES.index(service)
    return devstack._ready(f"http://127.0.0.1:{port}/readyz")
