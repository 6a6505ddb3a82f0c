"""The SecretManager port's Vault adapter against the real OpenBao of the test platform."""

from __future__ import annotations

import asyncio
import json
import secrets
import stat
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hvac
import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.vault import AppRoleLogin, VaultSession
from hypersdk_secrets.adapters.outbound.vault import VaultSecretManager
from hypersdk_secrets.config import SecretsSettings
from hypersdk_secrets.inject import vault_secret_manager

from .conftest import ADMIN_PASSWORD, Stack, devstack


def _manager(stack: Stack, prefix: str) -> VaultSecretManager:
    token = (stack.config.secret_dir / "openbao-root-token").read_text().strip()
    client = hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}", token=token)
    return VaultSecretManager(VaultSession(client), mount="secret", prefix=prefix)


async def test_versions_metadata_listing_and_deletion(stack: Stack) -> None:
    manager = _manager(stack, f"test-{secrets.token_hex(4)}")
    value = "vault-planted-" + secrets.token_hex(8)
    assert await manager.ready() is True
    assert await manager.describe("vcenter/prod") is None

    first = await manager.put("vcenter/prod", {"password": value})
    second = await manager.put("vcenter/prod", {"password": value + "-2"})
    await manager.put("kvm/lab", {"key": "x"})
    assert (first.version, second.version) == (1, 2)
    described = await manager.describe("vcenter/prod")
    assert described is not None
    assert described.version == 2
    assert described.updated_at is not None

    listed = await manager.list()
    assert [m.path for m in listed] == ["kvm/lab", "vcenter/prod"]
    assert value not in "".join(m.model_dump_json() for m in [first, second, *listed])

    assert await manager.delete("vcenter/prod") is True
    assert await manager.describe("vcenter/prod") is None
    assert await manager.delete("vcenter/prod") is False
    assert [m.path for m in await manager.list()] == ["kvm/lab"]


async def test_not_ready_with_a_bad_token(stack: Stack) -> None:
    client = hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}", token="not-a-token")
    manager = VaultSecretManager(VaultSession(client), mount="secret", prefix="x")
    assert await manager.ready() is False


def _root(stack: Stack) -> hvac.Client:
    token = (stack.config.secret_dir / "openbao-root-token").read_text().strip()
    return hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}", token=token)


def test_the_secrets_service_approle_reaches_its_folder_only(stack: Stack) -> None:
    """Logged in as the secrets service (its role ID and secret ID files), the token may use
    ``secret/hypersdk/`` and nothing else: no other folder, no policy, no auth method."""
    secret_dir = stack.config.secret_dir
    for name in (
        "openbao-root-token",
        "openbao-unseal-key",
        "secrets-role-id",
        "secrets-secret-id",
    ):
        assert stat.S_IMODE((secret_dir / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((stack.config.state_dir / "openbao").stat().st_mode) == 0o700
    service = hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}")
    service.auth.approle.login(
        role_id=(secret_dir / "secrets-role-id").read_text().strip(),
        secret_id=(secret_dir / "secrets-secret-id").read_text().strip(),
    )
    kv = service.secrets.kv.v2
    path = f"hypersdk/test-{secrets.token_hex(4)}"
    kv.create_or_update_secret(path=path, secret={"k": "v"}, mount_point="secret")
    assert kv.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    _root(stack).secrets.kv.v2.create_or_update_secret(
        path="elsewhere/x", secret={"k": "v"}, mount_point="secret"
    )
    refused = [
        lambda: kv.read_secret_version(
            path="elsewhere/x", mount_point="secret", raise_on_deleted_version=True
        ),
        lambda: kv.create_or_update_secret(path="elsewhere/y", secret={}, mount_point="secret"),
        service.sys.list_policies,
        lambda: service.sys.enable_auth_method("userpass", path=f"u{secrets.token_hex(2)}"),
        lambda: service.auth.approle.generate_secret_id("hypersdk-secrets"),
    ]
    for attempt in refused:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()


async def test_an_approle_token_is_renewed_and_logged_in_again(
    stack: Stack, tmp_path: Path
) -> None:
    """A role whose tokens live 2 s (at most 5 s): calls over 8 s all succeed, through renewals,
    a login again once the maximum TTL nears, and one after the token was revoked."""
    root = _root(stack)
    role = f"test-short-{secrets.token_hex(3)}"
    root.auth.approle.create_or_update_approle(
        role, token_policies=["hypersdk-secrets"], token_ttl="2s", token_max_ttl="5s"
    )
    role_file, secret_file = tmp_path / "role-id", tmp_path / "secret-id"
    role_file.write_text(root.auth.approle.read_role_id(role)["data"]["role_id"])
    secret_file.write_text(root.auth.approle.generate_secret_id(role)["data"]["secret_id"])
    client = hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}")
    manager = VaultSecretManager(
        VaultSession(client, approle=AppRoleLogin(role_file, secret_file)),
        mount="secret",
        prefix=f"hypersdk/test-{secrets.token_hex(4)}",
    )

    tokens: set[str] = set()
    assert await manager.ready() is True
    for index in range(16):
        await manager.put("rotating", {"n": str(index)})
        value = await manager.read("rotating")
        assert value is not None
        assert value.data == {"n": str(index)}
        tokens.add(client.token)
        if index == 10:
            root.auth.token.revoke(client.token)  # revoked under the service's feet
        await asyncio.sleep(0.5)
    assert len(tokens) >= 2  # logged in again at least once (max TTL, revocation)


async def test_an_unreachable_vault_is_upstream_unavailable() -> None:
    port = devstack.free_port()
    manager = VaultSecretManager(
        VaultSession(hvac.Client(url=f"http://127.0.0.1:{port}", token="t", timeout=2)),
        mount="secret",
        prefix="x",
    )
    assert await manager.ready() is False
    with pytest.raises(ServiceError) as caught:
        await manager.describe("anything")
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "t" not in caught.value.message.split()  # no token in the sentence


def _secrets_ready(stack: Stack) -> bool:
    index = devstack.SERVICES.index("secrets")
    return devstack._ready(f"http://127.0.0.1:{stack.config.health_base_port + index}/readyz")


def test_a_sealed_vault_answers_503_then_recovers_by_itself(stack: Stack) -> None:
    """Sealed under the platform: secret calls answer 503 upstream_unavailable with
    Retry-After and the secrets service reads not ready; unsealed by the setup, the same
    calls succeed again without restarting anything."""
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, _, _ = stack.api.call("GET", "/api/v1/secrets", token=admin)
    assert status == 200
    _root(stack).sys.seal()
    try:
        status, body, headers = stack.api.call("GET", "/api/v1/secrets", token=admin)
        assert status == 503, body
        assert body["error"]["code"] == "upstream_unavailable"
        assert headers["retry-after"]
        deadline = time.monotonic() + 10
        while _secrets_ready(stack) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _secrets_ready(stack)
    finally:
        devstack.openbao_setup(stack.config)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, _, _ = stack.api.call("GET", "/api/v1/secrets", token=admin)
        if status == 200 and _secrets_ready(stack):
            break
        time.sleep(0.2)
    assert status == 200
    assert _secrets_ready(stack)


@pytest.fixture
def tls_vault(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """An OpenBao dev server on TLS with a CA of its own: (URL, CA file, token file)."""
    port = devstack.free_port()
    certs = tmp_path / "tls"
    certs.mkdir()
    token = tmp_path / "token"
    token.write_text("tls-root-" + secrets.token_hex(8))
    token.chmod(0o600)
    server = subprocess.Popen(
        [
            devstack._bao_binary(devstack.StackConfig(state_dir=tmp_path)),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={certs}",
            f"-dev-listen-address=127.0.0.1:{port}",
        ],
        env={"PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": token.read_text()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not ((certs / "vault-ca.pem").exists() and devstack._port_open("127.0.0.1", port)):
            assert time.monotonic() < deadline, "the TLS dev server did not start"
            time.sleep(0.05)
        yield f"https://127.0.0.1:{port}", certs / "vault-ca.pem", token
    finally:
        server.kill()
        server.wait()


async def test_vault_over_tls_is_checked_against_its_ca(
    tls_vault: tuple[str, Path, Path], tmp_path: Path
) -> None:
    url, ca, token = tls_vault
    keys = tmp_path / "keys"
    keys.mkdir()
    base = {
        "amqp_url": "amqp://u:p@127.0.0.1/x",
        "vault_addr": url,
        "vault_token_file": str(token),
        "policy_public_key_file": str(keys / "policy.pub"),
        "gateway_public_key_file": str(keys / "gateway.pub"),
    }
    trusted = vault_secret_manager(SecretsSettings.model_validate(base | {"vault_ca_file": ca}))
    assert await trusted.ready() is True
    assert await trusted.describe("nothing/here") is None
    unknown = vault_secret_manager(SecretsSettings.model_validate(base))  # certifi's CAs only
    assert await unknown.ready() is False
    with pytest.raises(ServiceError) as caught:
        await unknown.describe("nothing/here")
    assert caught.value.code is ErrorCode.UPSTREAM_UNAVAILABLE


async def test_versions_graces_and_destruction_in_vault(stack: Stack) -> None:
    manager = _manager(stack, f"test-{secrets.token_hex(4)}")
    await manager.put("rotating", {"v": "one"})
    await manager.put("rotating", {"v": "two"}, cas=1)
    with pytest.raises(ServiceError) as conflict:
        await manager.put("rotating", {"v": "three"}, cas=1)
    assert conflict.value.code is ErrorCode.CONFLICT
    first = await manager.read("rotating", 1)
    current = await manager.read("rotating")
    assert first is not None
    assert current is not None
    assert (first.data, first.version, current.data, current.version) == (
        {"v": "one"},
        1,
        {"v": "two"},
        2,
    )
    until = datetime.now(UTC) + timedelta(seconds=5)
    await manager.keep_until("rotating", 1, until)
    (grace,) = [g for g in await manager.graces() if g.path == "rotating"]
    assert (grace.version, grace.until) == (1, until)
    await manager.destroy("rotating", 1)
    assert await manager.read("rotating", 1) is None
    assert [g for g in await manager.graces() if g.path == "rotating"] == []
    still = await manager.read("rotating")
    assert still is not None
    assert still.data == {"v": "two"}


def test_a_rotation_through_the_api(stack: Stack) -> None:
    """POST /secrets/{path}/rotate: metadata back, the new value current, the previous one
    destroyed when the grace (3 s on the test platform) ends; audited, values nowhere."""
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    path = f"providers/rot-{secrets.token_hex(3)}"
    old, new = "rot-old-" + secrets.token_hex(6), "rot-new-" + secrets.token_hex(6)
    status, _, _ = api.call("PUT", f"/api/v1/secrets/{path}", {"data": {"p": old}}, token=admin)
    assert status == 200
    status, rotation, _ = api.call(
        "POST", f"/api/v1/secrets/{path}/rotate", {"data": {"p": new}}, token=admin
    )
    assert status == 200, rotation
    assert (rotation["version"], rotation["previous_version"]) == (2, 1)
    assert old not in json.dumps(rotation)
    assert new not in json.dumps(rotation)
    status, missing, _ = api.call(
        "POST", "/api/v1/secrets/providers/none-here/rotate", {"data": {"p": "x"}}, token=admin
    )
    assert (status, missing["error"]["code"]) == (404, "not_found")
    status, empty, _ = api.call("POST", f"/api/v1/secrets/{path}/rotate", {"data": {}}, token=admin)
    assert status == 422, empty

    manager = _manager(stack, "hypersdk")
    kept = asyncio.run(manager.read(path, 1))
    assert kept is not None
    assert kept.data == {"p": old}  # within the grace
    deadline = time.monotonic() + 15
    while asyncio.run(manager.read(path, 1)) is not None:
        assert time.monotonic() < deadline, "the rotated-from version was never destroyed"
        time.sleep(0.2)
    current = asyncio.run(manager.read(path))
    assert current is not None
    assert current.data == {"p": new}
    time.sleep(0.5)
    entries = api.recent_audit(admin, last=100)
    actions = [e["action"] for e in entries if path in json.dumps(e)]
    assert "secret.rotate" in actions
    assert "secret.destroy_version" in actions
    assert old not in json.dumps(entries)
    assert new not in json.dumps(entries)
