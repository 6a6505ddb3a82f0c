"""API keys against the real stack, with TWO gateway processes.

A key is issued through one gateway and works on both; once ``DELETE /api-keys/{id}`` returns
on one, neither accepts it. Each gateway caches verified credentials and grants for seconds,
so these tests warm both caches first: the revocation events (decision 0015) must empty them
before the revoking call returns. The same holds for a logout and a role change. Also: shown
once, stored as a hash, scopes limited to the owner's permissions and
enforced, rotation with a grace period, last use recorded, no key in any event or log.
"""

from __future__ import annotations

import http.client
import json
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import ADMIN_PASSWORD, Api, Stack, free_port


@pytest.fixture(scope="module")
def second_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """Another gateway replica on the same bus, started as the supervisor starts one."""
    port = free_port()
    env = {**stack.config.service_env(), "HYPERSDK_GATEWAY_PORT": str(port)}
    log = tmp_path_factory.mktemp("gateway-2") / "gateway.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [stack.config.python, "-m", "hypersdk_gateway"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except (OSError, http.client.HTTPException):  # not up yet (or met itself)
                time.sleep(0.2)
        else:
            raise AssertionError(f"the second gateway did not start: {log.read_text()}")
        yield Api(base)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _me(api: Api, key: str) -> int:
    return api.call("GET", "/api/v1/auth/me", headers={"X-API-Key": key})[0]


def test_a_revoked_key_is_refused_by_every_gateway_at_once(
    stack: Stack, second_gateway: Api
) -> None:
    first_gateway = stack.api
    admin = first_gateway.login("admin", ADMIN_PASSWORD)
    status, issued, _ = first_gateway.call(
        "POST",
        "/api/v1/api-keys",
        {"name": "two-gateways", "scopes": ["vms:browse", "jobs:view"]},
        token=admin,
    )
    assert status == 201, issued
    key, key_id = issued["key"], issued["api_key"]["id"]

    for api in (first_gateway, second_gateway):
        assert _me(api, key) == 200
        status, vms, _ = api.call("GET", "/api/v1/vms", headers={"X-API-Key": key})
        assert status == 200, vms
        # The key's scopes hold even though its owner is an admin.
        assert api.call("GET", "/api/v1/secrets", headers={"X-API-Key": key})[0] == 403

    status, _, _ = second_gateway.call("DELETE", f"/api/v1/api-keys/{key_id}", token=admin)
    assert status == 204
    # Right after DELETE returned: no replica accepts the key, not even once.
    assert [_me(first_gateway, key), _me(second_gateway, key)] == [401, 401]
    status, body, _ = first_gateway.call("GET", "/api/v1/vms", headers={"X-API-Key": key})
    assert status == 401
    assert body["error"]["code"] == "unauthenticated"
    assert key not in json.dumps(body)


def _warm(api: Api, headers: dict[str, str], path: str = "/api/v1/vms") -> None:
    """Two calls: the credential and the grant are cached after the first."""
    for _ in range(2):
        status, body, _ = api.call("GET", path, headers=headers)
        assert status == 200, body


def test_revocations_hold_at_once_on_replicas_with_warm_caches(
    stack: Stack, second_gateway: Api
) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    replicas = (stack.api, second_gateway)
    refused: list[int] = []
    for round_number in range(10):
        status, issued, _ = stack.api.call(
            "POST", "/api/v1/api-keys", {"name": "warm", "scopes": ["vms:browse"]}, token=admin
        )
        assert status == 201, issued
        key = {"X-API-Key": issued["key"]}
        for api in replicas:
            _warm(api, key)
        revoker, other = replicas[round_number % 2], replicas[1 - round_number % 2]
        status, _, _ = revoker.call(
            "DELETE", f"/api/v1/api-keys/{issued['api_key']['id']}", token=admin
        )
        assert status == 204
        # The replica that did not serve the DELETE first: it only has the event to go by.
        refused += [other.call("GET", "/api/v1/vms", headers=key)[0] for _ in range(3)]
        refused.append(revoker.call("GET", "/api/v1/vms", headers=key)[0])
    assert refused == [401] * 40


def test_a_logout_on_one_replica_ends_the_session_on_the_other(
    stack: Stack, second_gateway: Api
) -> None:
    token = stack.api.login("admin", ADMIN_PASSWORD)
    for api in (stack.api, second_gateway):
        _warm(api, {"Authorization": f"Bearer {token}"}, "/api/v1/jobs")

    assert stack.api.call("POST", "/api/v1/auth/logout", token=token)[0] == 204

    assert second_gateway.call("GET", "/api/v1/jobs", token=token)[0] == 401


def test_a_role_change_narrows_a_cached_key_at_once(stack: Stack, second_gateway: Api) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username = f"narrowed-{secrets.token_hex(3)}"
    status, _, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": username, "password": f"owner-{secrets.token_hex(8)}", "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201
    status, issued, _ = stack.api.call(
        "POST",
        "/api/v1/api-keys",
        {"name": "narrowed", "scopes": ["vms:browse"], "owner": username},
        token=admin,
    )
    assert status == 201, issued
    key = {"X-API-Key": issued["key"]}
    _warm(second_gateway, key)

    status, _, _ = stack.api.call("PATCH", f"/api/v1/users/{username}", {"roles": []}, token=admin)
    assert status == 200

    # The key still authenticates (its owner exists), but the cached grant is gone.
    status, body, _ = second_gateway.call("GET", "/api/v1/vms", headers=key)
    assert (status, body["error"]["code"]) == (403, "forbidden")


def test_keys_are_shown_once_and_stored_as_hashes(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, issued, _ = stack.api.call(
        "POST", "/api/v1/api-keys", {"name": "stored", "scopes": ["vms:browse"]}, token=admin
    )
    assert status == 201
    key = issued["key"]
    assert key.startswith("hsdk_k_")
    assert len(key) == 7 + 32 + 6

    status, listed, _ = stack.api.call("GET", "/api/v1/api-keys", token=admin)
    assert status == 200
    assert key not in json.dumps(listed)
    assert any(k["id"] == issued["api_key"]["id"] and k["hint"] == key[-4:] for k in listed)
    rows = stack.db("SELECT * FROM identity.api_keys")
    assert key not in repr([dict(r) for r in rows])
    assert key[7:39] not in repr([dict(r) for r in rows])

    assert _me(stack.api, key) == 200
    used = stack.db(
        "SELECT last_used_at FROM identity.api_keys WHERE id = $1::uuid", issued["api_key"]["id"]
    )
    assert used[0]["last_used_at"] is not None


def test_scopes_must_be_the_owners_permissions(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username = f"keyowner-{secrets.token_hex(3)}"
    status, _, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": username, "password": f"owner-{secrets.token_hex(8)}", "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201

    too_much = stack.api.call(
        "POST",
        "/api/v1/api-keys",
        {"name": "x", "scopes": ["vms:browse", "vms:export"], "owner": username},
        token=admin,
    )
    fine = stack.api.call(
        "POST",
        "/api/v1/api-keys",
        {"name": "x", "scopes": ["vms:browse"], "owner": username},
        token=admin,
    )

    assert too_much[0] == 422, too_much[1]
    assert "vms:export" in too_much[1]["error"]["message"]
    assert fine[0] == 201, fine[1]
    key = fine[1]["key"]
    status, me, _ = stack.api.call("GET", "/api/v1/auth/me", headers={"X-API-Key": key})
    assert (status, me["username"], me["kind"]) == (200, username, "apikey")
    # An owner losing a permission loses it through the key too.
    assert stack.api.call("GET", "/api/v1/vms", headers={"X-API-Key": key})[0] == 200
    stack.api.call("PATCH", f"/api/v1/users/{username}", {"roles": []}, token=admin)
    assert stack.api.call("GET", "/api/v1/vms", headers={"X-API-Key": key})[0] == 403


def test_rotation_with_a_grace_period(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    _, old, _ = stack.api.call(
        "POST", "/api/v1/api-keys", {"name": "rotating", "scopes": ["jobs:view"]}, token=admin
    )
    status, graceful, _ = stack.api.call(
        "POST",
        f"/api/v1/api-keys/{old['api_key']['id']}/rotate",
        {"grace_seconds": 300},
        token=admin,
    )
    assert status == 201, graceful
    assert [_me(stack.api, old["key"]), _me(stack.api, graceful["key"])] == [200, 200]

    status, immediate, _ = stack.api.call(
        "POST", f"/api/v1/api-keys/{graceful['api_key']['id']}/rotate", token=admin
    )
    assert status == 201
    assert _me(stack.api, graceful["key"]) == 401
    assert _me(stack.api, immediate["key"]) == 200
    twice = stack.api.call("POST", f"/api/v1/api-keys/{old['api_key']['id']}/rotate", token=admin)
    assert twice[0] == 409
    # Cutting the grace period short: DELETE ends the old key now.
    assert (
        stack.api.call("DELETE", f"/api/v1/api-keys/{old['api_key']['id']}", token=admin)[0] == 204
    )
    assert _me(stack.api, old["key"]) == 401

    logs = "\n".join(p.read_text(errors="replace") for p in Path(stack.log_dir).glob("*.log"))
    events = json.dumps([dict(r) for r in stack.db("SELECT * FROM audit.entries")], default=str)
    for secret in (old["key"], graceful["key"], immediate["key"]):
        assert secret not in logs
        assert secret not in events
