"""Sessions and users against the real stack: refresh without replay, listing and revoking
one's sessions, disabling / deleting / changing roles ends sessions at once, the periodic
sweeper, and identity events that never carry a password or token.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika

from .conftest import ADMIN_PASSWORD, Stack


def _new_user(stack: Stack, admin: str, roles: list[str]) -> tuple[str, str]:
    username = f"sess-{secrets.token_hex(4)}"
    password = f"sessions-{secrets.token_hex(8)}"
    status, body, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": username, "password": password, "roles": roles},
        token=admin,
    )
    assert status == 201, body
    return username, password


def _status(stack: Stack, token: str) -> int:
    return stack.api.call("GET", "/api/v1/auth/me", token=token)[0]


async def _capture(stack: Stack) -> tuple[Any, Any]:
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("hypersdk.events", "topic", durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="identity.#")
    return connection, queue


async def _drain(queue: Any, wanted: set[str]) -> list[aio_pika.abc.AbstractIncomingMessage]:
    messages: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        message = await queue.get(no_ack=True, fail=False, timeout=5)
        if message is None:
            if wanted <= {m.routing_key for m in messages}:
                break
            continue
        messages.append(message)
    return messages


async def test_refresh_listing_and_revocation_of_own_sessions(stack: Stack) -> None:
    connection, capture = await _capture(stack)
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, password = _new_user(stack, admin, ["viewer"])
    first = stack.api.login(username, password)
    second = stack.api.login(username, password)

    # Refresh: a new token, the old one dead at once, a replay refused.
    status, refreshed, _ = stack.api.call("POST", "/api/v1/auth/refresh", token=first)
    assert status == 200, refreshed
    renewed = refreshed["token"]
    assert renewed != first
    assert _status(stack, first) == 401
    assert stack.api.call("POST", "/api/v1/auth/refresh", token=first)[0] == 401
    assert _status(stack, renewed) == 200

    # Listing: both sessions, the current one marked, no token anywhere.
    status, sessions, _ = stack.api.call("GET", "/api/v1/auth/sessions", token=renewed)
    assert status == 200
    assert len(sessions) == 2
    current = [s for s in sessions if s["current"]]
    assert len(current) == 1
    for token in (first, second, renewed):
        assert token not in json.dumps(sessions)

    # Revoking: another user's session is not found; one's own ends at once.
    other = next(s["id"] for s in sessions if not s["current"])
    admin_sessions = stack.api.call("GET", "/api/v1/auth/sessions", token=admin)[1]
    status, _, _ = stack.api.call(
        "DELETE", f"/api/v1/auth/sessions/{admin_sessions[0]['id']}", token=renewed
    )
    assert status == 404
    assert stack.api.call("DELETE", f"/api/v1/auth/sessions/{other}", token=renewed)[0] == 204
    assert _status(stack, second) == 401
    assert _status(stack, admin) == 200

    # Logout ends the last one.
    assert stack.api.call("POST", "/api/v1/auth/logout", token=renewed)[0] == 204
    assert _status(stack, renewed) == 401

    messages = await _drain(
        capture,
        {"identity.session.created", "identity.session.refreshed", "identity.session.revoked"},
    )
    await connection.close()
    mine = [json.loads(m.body) for m in messages if username in m.body.decode()]
    kinds = [m["type"].removeprefix("io.hypersdk.") for m in mine]
    assert "identity.session.refreshed" in kinds
    reasons = {m["data"]["reason"] for m in mine if m["data"].get("reason")}
    assert {"revoked_by_owner", "logout"} <= reasons
    bodies = "\n".join(m.body.decode() for m in messages)
    for secret in (password, first, second, renewed, ADMIN_PASSWORD, admin):
        assert secret not in bodies
        assert secret.removeprefix("hsdk_s_") not in bodies


def test_disabling_deleting_and_role_changes_end_sessions_at_once(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, password = _new_user(stack, admin, ["viewer"])
    path = f"/api/v1/users/{username}"

    # A role change: assigned by policy, then every session of the user ends.
    token = stack.api.login(username, password)
    status, patched, _ = stack.api.call("PATCH", path, {"roles": ["operator"]}, token=admin)
    assert status == 200, patched
    assert patched["roles"] == ["operator"]
    assert _status(stack, token) == 401
    token = stack.api.login(username, password)
    assert stack.api.call("GET", "/api/v1/auth/me", token=token)[1]["roles"] == ["operator"]

    # Disabling ends them too, and logins are refused until enabled again.
    status, disabled, _ = stack.api.call("PATCH", path, {"disabled": True}, token=admin)
    assert status == 200
    assert disabled["user"]["disabled"] is True
    assert _status(stack, token) == 401
    status, _, _ = stack.api.call(
        "POST", "/api/v1/auth/login", {"username": username, "password": password}
    )
    assert status == 401
    assert stack.api.call("PATCH", path, {"disabled": False}, token=admin)[0] == 200
    token = stack.api.login(username, password)

    # GET shows the user; DELETE removes them, their sessions, and their role assignments.
    status, fetched, _ = stack.api.call("GET", path, token=admin)
    assert (status, fetched["user"]["username"], fetched["roles"]) == (200, username, ["operator"])
    assert stack.api.call("DELETE", path, token=admin)[0] == 204
    assert _status(stack, token) == 401
    assert stack.api.call("GET", path, token=admin)[0] == 404
    assert stack.db("SELECT 1 FROM identity.sessions WHERE username = $1", username) == []
    assert stack.db("SELECT 1 FROM policy.role_assignments WHERE username = $1", username) == []

    # An admin cannot disable or delete their own account.
    assert stack.api.call("PATCH", "/api/v1/users/admin", {"disabled": True}, token=admin)[0] == 409
    assert stack.api.call("DELETE", "/api/v1/users/admin", token=admin)[0] == 409


def test_tokens_are_stored_only_as_hashes(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    rows = stack.db("SELECT * FROM identity.sessions")
    dumped = repr([dict(r) for r in rows])
    assert admin not in dumped
    assert admin.removeprefix("hsdk_s_") not in dumped
    assert admin.encode() not in b"".join(bytes(r["token_hash"]) for r in rows)


async def test_the_sweeper_removes_expired_sessions(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username, _ = _new_user(stack, admin, [])
    now = datetime.now(UTC)
    expired, idle = str(uuid.uuid4()), str(uuid.uuid4())
    for session_id, last_seen, expires in (
        (expired, now - timedelta(hours=13), now - timedelta(hours=1)),
        (idle, now - timedelta(hours=2), now + timedelta(hours=2)),
    ):
        stack.db(
            "INSERT INTO identity.sessions (id, username, token_hash, created_at, last_seen_at,"
            " expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
            uuid.UUID(session_id),
            username,
            secrets.token_bytes(32),
            last_seen,
            last_seen,
            expires,
        )

    for _ in range(50):  # the test stack sweeps every second
        left = stack.db("SELECT id FROM identity.sessions WHERE username = $1", username)
        if not left:
            break
        await asyncio.sleep(0.2)
    assert left == []
    assert _status(stack, admin) == 200
