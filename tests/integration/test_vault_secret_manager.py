"""The SecretManager port's Vault adapter against the real OpenBao of the test platform."""

from __future__ import annotations

import secrets

import hvac

from hypersdk_secrets.adapters.outbound.vault import VaultSecretManager

from .conftest import Stack


def _manager(stack: Stack, prefix: str) -> VaultSecretManager:
    token = (stack.config.secret_dir / "vault-token").read_text().strip()
    client = hvac.Client(url=f"http://127.0.0.1:{stack.config.vault_port}", token=token)
    return VaultSecretManager(client, mount="secret", prefix=prefix)


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
    manager = VaultSecretManager(client, mount="secret", prefix="x")
    assert await manager.ready() is False
