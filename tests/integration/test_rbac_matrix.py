"""Every route of docs/contracts.md's API table, for every role, enforced by the real stack.

Holds its own literal copy of the seed matrix (4 roles x 10 permissions). For each route and
each role, an allowed call passes authorization (whatever the handler answers next, never 401
or 403), a refused one gets 403 with the error envelope, and an anonymous one gets 401.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest

from .conftest import ADMIN_PASSWORD, Stack

MATRIX = {
    "admin": {
        "vms:browse", "jobs:view", "vms:export", "jobs:cancel", "providers:configure",
        "users:manage", "apikeys:manage", "audit:view", "secrets:manage", "system:configure",
    },
    "operator": {"vms:browse", "jobs:view", "vms:export", "jobs:cancel", "providers:configure"},
    "viewer": {"vms:browse", "jobs:view"},
    "auditor": {"vms:browse", "jobs:view", "audit:view"},
}  # fmt: skip

ANY = "authenticated"
NOBODY = "missing-" + secrets.token_hex(3)
NO_WEBHOOK = "ep_" + secrets.token_hex(12)  # well formed, registered by nobody
NO_SUBSCRIPTION = "sb_" + secrets.token_hex(12)  # well formed, created by nobody
# (method, path, permission); paths name resources that do not exist, so that an allowed call
# changes nothing, and bodies are empty (or INVALID_BODIES'), so that an allowed write stops at
# validation.
ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/api/v1/auth/me", ANY),
    ("GET", "/api/v1/auth/sessions", ANY),
    ("DELETE", f"/api/v1/auth/sessions/{NOBODY}", ANY),
    ("GET", "/api/v1/users", "users:manage"),
    ("POST", "/api/v1/users", "users:manage"),
    ("GET", f"/api/v1/users/{NOBODY}", "users:manage"),
    ("PATCH", f"/api/v1/users/{NOBODY}", "users:manage"),
    ("DELETE", f"/api/v1/users/{NOBODY}", "users:manage"),
    ("GET", "/api/v1/api-keys", "apikeys:manage"),
    ("POST", "/api/v1/api-keys", "apikeys:manage"),
    ("DELETE", f"/api/v1/api-keys/{NOBODY}", "apikeys:manage"),
    ("POST", f"/api/v1/api-keys/{NOBODY}/rotate", "apikeys:manage"),
    ("GET", "/api/v1/providers", "vms:browse"),
    ("GET", f"/api/v1/providers/{NOBODY}", "vms:browse"),
    ("POST", "/api/v1/providers", "providers:configure"),
    ("PUT", f"/api/v1/providers/{NOBODY}", "providers:configure"),
    ("DELETE", f"/api/v1/providers/{NOBODY}", "providers:configure"),
    ("GET", "/api/v1/vms", "vms:browse"),
    ("GET", f"/api/v1/vms/demo-lab/{NOBODY}", "vms:browse"),
    ("POST", "/api/v1/exports", "vms:export"),
    ("GET", "/api/v1/jobs", "jobs:view"),
    ("GET", f"/api/v1/jobs/{NOBODY}", "jobs:view"),
    ("POST", f"/api/v1/jobs/{NOBODY}/cancel", "jobs:cancel"),
    ("GET", "/api/v1/secrets", "secrets:manage"),
    ("PUT", f"/api/v1/secrets/{NOBODY}", "secrets:manage"),
    ("DELETE", f"/api/v1/secrets/{NOBODY}", "secrets:manage"),
    ("POST", f"/api/v1/secrets/{NOBODY}/rotate", "secrets:manage"),
    ("GET", "/api/v1/audit/events", "audit:view"),
    ("GET", "/api/v1/audit/verify", "audit:view"),
    ("GET", "/api/v1/audit/export", "audit:view"),
    ("GET", "/api/v1/audit/quarantine", "audit:view"),
    ("GET", "/api/v1/audit/checkpoints", "audit:view"),
    ("GET", "/api/v1/audit/checkpoints/latest", "audit:view"),
    ("POST", "/api/v1/audit/checkpoints", "audit:view"),
    ("GET", "/api/v1/audit/proofs/inclusion?sequence=1", "audit:view"),
    ("GET", "/api/v1/audit/proofs/consistency?first=1", "audit:view"),
    ("GET", "/api/v1/system/config", "system:configure"),
    ("PUT", "/api/v1/system/config", "system:configure"),
    ("GET", "/api/v1/webhooks", "system:configure"),
    ("POST", "/api/v1/webhooks", "system:configure"),
    ("DELETE", f"/api/v1/webhooks/{NOBODY}", "system:configure"),
    ("GET", f"/api/v1/webhooks/{NO_WEBHOOK}", "system:configure"),
    ("PATCH", f"/api/v1/webhooks/{NO_WEBHOOK}", "system:configure"),
    ("DELETE", f"/api/v1/webhooks/{NO_WEBHOOK}", "system:configure"),
    ("POST", f"/api/v1/webhooks/{NO_WEBHOOK}/pause", "system:configure"),
    ("POST", f"/api/v1/webhooks/{NO_WEBHOOK}/resume", "system:configure"),
    ("POST", f"/api/v1/webhooks/{NO_WEBHOOK}/rotate", "system:configure"),
    ("POST", f"/api/v1/webhooks/{NO_WEBHOOK}/test", "system:configure"),
    ("GET", f"/api/v1/webhooks/{NO_WEBHOOK}/dead-letters", "system:configure"),
    (
        "POST",
        f"/api/v1/webhooks/{NO_WEBHOOK}/dead-letters/wm_{secrets.token_hex(12)}/replay",
        "system:configure",
    ),
    ("GET", "/api/v1/subscriptions", "system:configure"),
    ("POST", "/api/v1/subscriptions", "system:configure"),
    ("GET", f"/api/v1/subscriptions/{NO_SUBSCRIPTION}", "system:configure"),
    ("DELETE", f"/api/v1/subscriptions/{NOBODY}", "system:configure"),
    ("DELETE", f"/api/v1/subscriptions/{NO_SUBSCRIPTION}", "system:configure"),
]
# Calls that end or replace the caller's session run with a session of their own.
SESSION_ROUTES = [("POST", "/api/v1/auth/refresh"), ("POST", "/api/v1/auth/logout")]


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    found = {"admin": admin}
    for role in ("operator", "viewer", "auditor"):
        username = f"rbac-{role}-{secrets.token_hex(3)}"
        password = f"matrix-{secrets.token_hex(8)}"
        status, body, _ = stack.api.call(
            "POST",
            "/api/v1/users",
            {"username": username, "password": password, "roles": [role]},
            token=admin,
        )
        assert status == 201, body
        found[role] = stack.api.login(username, password)
        found[f"{role}:credentials"] = f"{username}\n{password}"
    return found


# Writes whose every field is optional, so that an empty body is valid: a field they forbid
# stops an allowed call at validation instead (an empty body would create a subscription).
INVALID_BODIES = {("POST", "/api/v1/subscriptions"): {"unknown": True}}


def _body(method: str, path: str) -> Any:
    if method not in {"POST", "PUT", "PATCH"}:
        return None
    return INVALID_BODIES.get((method, path), {})


def test_the_matrix_is_the_design_briefs(tokens: dict[str, str]) -> None:
    assert sum(len(p) for p in MATRIX.values()) == 10 + 5 + 2 + 3
    assert {p for perms in MATRIX.values() for p in perms} == MATRIX["admin"]


@pytest.mark.parametrize(("method", "path", "permission"), ROUTES)
def test_every_role_on_every_route(
    stack: Stack, tokens: dict[str, str], method: str, path: str, permission: str
) -> None:
    status, body, _ = stack.api.call(method, path, _body(method, path))
    assert status == 401, (method, path, body)
    assert body["error"]["code"] == "unauthenticated"
    for role, granted in MATRIX.items():
        status, body, headers = stack.api.call(
            method, path, _body(method, path), token=tokens[role]
        )
        allowed = permission == ANY or permission in granted
        if allowed:
            assert status not in (401, 403), (role, method, path, status, body)
            assert status < 500 or status == 501, (role, method, path, status, body)
        else:
            assert status == 403, (role, method, path, status, body)
            assert body["error"]["code"] == "forbidden"
            assert body["error"]["request_id"] == headers["x-request-id"]


@pytest.mark.parametrize(("method", "path"), SESSION_ROUTES)
def test_session_routes_need_only_authentication(
    stack: Stack, tokens: dict[str, str], method: str, path: str
) -> None:
    status, _, _ = stack.api.call(method, path)
    assert status == 401
    for role in ("viewer", "auditor", "operator"):
        username, password = tokens[f"{role}:credentials"].split("\n")
        fresh = stack.api.login(username, password)
        status, body, _ = stack.api.call(method, path, token=fresh)
        assert status not in (401, 403), (role, method, path, status, body)


def test_every_denial_is_audited(stack: Stack, tokens: dict[str, str]) -> None:
    marker = "rbac-denial-" + secrets.token_hex(4)
    status, _, _ = stack.api.call(
        "GET", "/api/v1/secrets", token=tokens["viewer"], headers={"X-Request-ID": marker}
    )
    assert status == 403
    for _ in range(50):
        entries = stack.api.recent_audit(tokens["admin"])
        denial = [e for e in entries if e["request_id"] == marker and e["action"] == "authz.decide"]
        if denial:
            assert denial[0]["result"] == "failure: permission_denied"
            assert denial[0]["resource"] == "GET /api/v1/secrets"
            return
        time.sleep(0.2)
    raise AssertionError("the denial was not audited")
