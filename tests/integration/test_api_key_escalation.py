"""API key escalation through the real API (decision 0025).

Reproduced before: a key scoped only ``apikeys:manage`` rotated another admin's key and got
back a working key with ``users:manage``; any key listed and revoked its owner's sessions; a
disabled user's keys came back when the user was enabled again.
"""

from __future__ import annotations

import secrets
from typing import Any

from .conftest import ADMIN_PASSWORD, Api, Stack


def _key(api: Api, token: str, scopes: list[str], owner: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "escalation", "scopes": scopes}
    if owner is not None:
        body["owner"] = owner
    status, issued, _ = api.call("POST", "/api/v1/api-keys", body, token=token)
    assert status == 201, issued
    return dict(issued)


def _with_key(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_a_key_scoped_apikeys_manage_cannot_turn_another_users_key_into_its_own(
    stack: Stack,
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    other = f"ada-{secrets.token_hex(3)}"
    password = f"escalation-{secrets.token_hex(8)}"
    status, body, _ = api.call(
        "POST",
        "/api/v1/users",
        {"username": other, "password": password, "roles": ["admin"]},
        token=admin,
    )
    assert status == 201, body
    adas = _key(api, api.login(other, password), ["users:manage"])
    narrow = _key(api, admin, ["apikeys:manage"])["key"]
    admins_broad = _key(api, admin, ["users:manage"])

    rotated = api.call(
        "POST", f"/api/v1/api-keys/{adas['api_key']['id']}/rotate", headers=_with_key(narrow)
    )
    revoked = api.call(
        "DELETE", f"/api/v1/api-keys/{adas['api_key']['id']}", headers=_with_key(narrow)
    )
    own_broader = api.call(
        "POST",
        f"/api/v1/api-keys/{admins_broad['api_key']['id']}/rotate",
        headers=_with_key(narrow),
    )
    listed = api.call("GET", f"/api/v1/api-keys?owner={other}", headers=_with_key(narrow))

    assert rotated[0] == 404, rotated[1]
    assert "key" not in rotated[1]
    assert revoked[0] == 404, revoked[1]
    assert own_broader[0] == 403, own_broader[1]
    assert "users:manage" in own_broader[1]["error"]["message"]
    assert listed[0] == 403, listed[1]
    # Ada's key still works as it was; the admin's broad key was not replaced.
    status, users, _ = api.call("GET", "/api/v1/users", headers=_with_key(adas["key"]))
    assert status == 200, users
    assert api.call("GET", "/api/v1/users", headers=_with_key(admins_broad["key"]))[0] == 200
    # An admin's session (users:manage) reaches ada's key, but only to what it holds itself.
    status, replaced, _ = api.call(
        "POST", f"/api/v1/api-keys/{adas['api_key']['id']}/rotate", token=admin
    )
    assert status == 201, replaced
    assert replaced["api_key"]["owner"] == other
    assert api.call("GET", "/api/v1/users", headers=_with_key(adas["key"]))[0] == 401


def test_sessions_are_not_reachable_with_a_key_of_any_scope(stack: Stack) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    every_scope = [
        "vms:browse", "jobs:view", "vms:export", "jobs:cancel", "providers:configure",
        "users:manage", "apikeys:manage", "audit:view", "secrets:manage", "system:configure",
    ]  # fmt: skip
    key = _key(api, admin, every_scope)["key"]
    session_id = api.call("GET", "/api/v1/auth/me", token=admin)[1]["session_id"]

    listed = api.call("GET", "/api/v1/auth/sessions", headers=_with_key(key))
    revoked = api.call("DELETE", f"/api/v1/auth/sessions/{session_id}", headers=_with_key(key))

    assert listed[0] == 403, listed[1]
    assert revoked[0] == 403, revoked[1]
    assert api.call("GET", "/api/v1/auth/me", token=admin)[0] == 200
    assert api.call("GET", "/api/v1/auth/sessions", token=admin)[0] == 200


def test_enabling_a_user_again_restores_none_of_their_keys(stack: Stack) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    name = f"paused-{secrets.token_hex(3)}"
    password = f"paused-{secrets.token_hex(8)}"
    status, body, _ = api.call(
        "POST",
        "/api/v1/users",
        {"username": name, "password": password, "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201, body
    key = _key(api, admin, ["vms:browse"], owner=name)["key"]
    assert api.call("GET", "/api/v1/vms", headers=_with_key(key))[0] == 200

    for disabled in (True, False):
        status, body, _ = api.call(
            "PATCH", f"/api/v1/users/{name}", {"disabled": disabled}, token=admin
        )
        assert status == 200, body

    assert api.call("GET", "/api/v1/vms", headers=_with_key(key))[0] == 401
    assert api.call("GET", f"/api/v1/api-keys?owner={name}", token=admin)[1] == []
    assert api.call("GET", "/api/v1/vms", token=api.login(name, password))[0] == 200
