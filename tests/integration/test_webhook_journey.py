"""Webhooks through the whole platform: the gateway, the bus, PostgreSQL, a real receiver.

The receiver listens on 127.0.0.2, which the session's stack allows (127.0.0.1 stays
refused), so what a subscriber sees is exactly what the service sends: signed Standard
Webhooks POSTs of CloudEvents, retried on the schedule, dead-lettered, replayed; and every
step in the audit log, never with the secret.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hypersdk_contracts.envelope import CloudEvent, event_envelope
from hypersdk_contracts.events import JobCompleted, UserCreated
from hypersdk_webhooks.core import signing

from .conftest import ADMIN_PASSWORD, WEBHOOK_RECEIVER_HOST, Stack, free_port, service_pid


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """A webhook receiver: records every POST, answers ``status`` after ``delay`` seconds."""

    port: int
    status: int = 204
    delay: float = 0.0
    posts: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{WEBHOOK_RECEIVER_HOST}:{self.port}/hook"

    def of_type(self, event_type: str) -> list[Received]:
        with self.lock:
            return [p for p in self.posts if json.loads(p.body)["type"] == event_type]

    def wait_for(self, match: Callable[[dict[str, Any]], bool], seconds: float = 20) -> Received:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                for post in self.posts:
                    if match(json.loads(post.body)):
                        return post
            time.sleep(0.05)
        raise AssertionError("the receiver got no such webhook")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with state.lock:
                state.posts.append(
                    Received({k.lower(): v for k, v in self.headers.items()}, body, time.time())
                )
            time.sleep(state.delay)
            self.send_response(state.status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return

    server = ThreadingHTTPServer((WEBHOOK_RECEIVER_HOST, state.port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def _create_user(stack: Stack, admin: str, name: str) -> None:
    status, body, _ = stack.api.call(
        "POST", "/api/v1/users", {"username": name, "password": "pw-long-" + name}, token=admin
    )
    assert status == 201, body


def _verified(post: Received, *secrets: str) -> None:
    for secret in secrets:
        signing.verify(headers=post.headers, body=post.body, secret=secret, now=int(time.time()))


def _eventually(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def test_a_subscriber_gets_signed_events_retries_dead_letters_and_replays(
    stack: Stack, receiver: Receiver
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)

    # loopback is refused; the allow-listed receiver address is accepted
    status, refused, _ = api.call(
        "POST",
        "/api/v1/webhooks",
        {"url": f"http://127.0.0.1:{receiver.port}/hook", "event_types": ["#"]},
        token=admin,
    )
    assert status == 422, refused
    assert refused["error"]["code"] == "validation_failed"
    status, issued, _ = api.call(
        "POST",
        "/api/v1/webhooks",
        {"url": receiver.url, "event_types": ["identity.user.created"], "timeout_seconds": 2},
        token=admin,
    )
    assert status == 201, issued
    secret = issued["secret"]
    endpoint = issued["webhook"]["id"]
    assert secret.startswith("whsec_")
    status, listed, _ = api.call("GET", "/api/v1/webhooks", token=admin)
    assert status == 200
    assert endpoint in [w["id"] for w in listed]
    assert secret not in json.dumps(listed)

    # an event, delivered signed, as the CloudEvent without the internal seal
    _create_user(stack, admin, "whk-first")
    post = receiver.wait_for(lambda e: e["data"].get("username") == "whk-first")
    _verified(post, secret)
    event = json.loads(post.body)
    assert event["type"] == "io.hypersdk.identity.user.created"
    assert event["actor"] == "admin"
    assert "seal" not in event
    assert post.headers["content-type"] == "application/cloudevents+json"

    # a test event now, signed the same way
    status, tested, _ = api.call("POST", f"/api/v1/webhooks/{endpoint}/test", token=admin)
    assert status == 200, tested
    assert tested["outcome"] == "delivered"
    _verified(receiver.of_type("io.hypersdk.webhooks.endpoint.tested")[-1], secret)

    # rotation: both secrets sign during the overlap
    status, rotated, _ = api.call("POST", f"/api/v1/webhooks/{endpoint}/rotate", token=admin)
    assert status == 201, rotated
    new_secret = rotated["secret"]
    assert rotated["webhook"]["previous_secret_valid_until"]
    _create_user(stack, admin, "whk-rotated")
    post = receiver.wait_for(lambda e: e["data"].get("username") == "whk-rotated")
    assert len(post.headers["webhook-signature"].split()) == 2
    _verified(post, secret, new_secret)

    # a failing receiver: attempts at 0, 1 and 2 s, then a dead letter; a replay delivers it
    receiver.status = 503
    _create_user(stack, admin, "whk-failing")
    receiver.wait_for(lambda e: e["data"].get("username") == "whk-failing")

    def dead() -> list[dict[str, Any]]:
        status, letters, _ = api.call(
            "GET", f"/api/v1/webhooks/{endpoint}/dead-letters", token=admin
        )
        assert status == 200, letters
        return list(letters)

    _eventually(lambda: bool(dead()))
    (letter,) = dead()
    assert letter["attempts"] == 3
    assert letter["last_attempt"]["outcome"] == "http_error"
    assert letter["last_attempt"]["status"] == 503
    tries = [
        p for p in receiver.posts if json.loads(p.body)["data"].get("username") == "whk-failing"
    ]
    assert len(tries) == 3
    assert {p.headers["webhook-id"] for p in tries} == {letter["webhook_id"]}
    receiver.status = 200
    status, replayed, _ = api.call(
        "POST",
        f"/api/v1/webhooks/{endpoint}/dead-letters/{letter['id']}/replay",
        token=admin,
    )
    assert status == 200, replayed
    assert replayed["state"] == "pending"
    _eventually(lambda: len(receiver.of_type("io.hypersdk.identity.user.created")) >= 6)
    assert receiver.posts[-1].headers["webhook-id"] == letter["webhook_id"]
    assert not dead()
    status, again, _ = api.call(
        "POST",
        f"/api/v1/webhooks/{endpoint}/dead-letters/{letter['id']}/replay",
        token=admin,
    )
    assert status == 409, again

    # paused: nothing goes out; resumed: what waited does
    status, paused, _ = api.call("POST", f"/api/v1/webhooks/{endpoint}/pause", token=admin)
    assert (status, paused["status"]) == (200, "paused")
    _create_user(stack, admin, "whk-paused")
    time.sleep(1.5)
    assert not [
        p for p in receiver.posts if json.loads(p.body)["data"].get("username") == "whk-paused"
    ]
    api.call("POST", f"/api/v1/webhooks/{endpoint}/resume", token=admin)
    receiver.wait_for(lambda e: e["data"].get("username") == "whk-paused")

    # every step is audited, and no secret is in the log, the events or the service's log file
    def audited() -> set[str]:
        return {entry["action"] for entry in api.recent_audit(admin, last=300)}

    wanted = {
        "webhook.create",
        "webhook.deliver",
        "webhook.test",
        "webhook.rotate_secret",
        "webhook.dead_letter",
        "webhook.replay",
        "webhook.pause",
        "webhook.resume",
    }
    _eventually(lambda: wanted <= audited())
    entries = json.dumps(api.recent_audit(admin, last=300))
    for value in (secret, new_secret, secret.removeprefix("whsec_")):
        assert value not in entries
        for log in stack.log_dir.glob("*.log"):
            assert value not in log.read_text(errors="replace"), log
    # at rest, sealed: the table holds neither secret, nor its key bytes in base64
    stored = json.dumps(
        [dict(r) for r in stack.db("SELECT * FROM webhooks.endpoints")], default=str
    )
    for value in (secret, new_secret, secret.removeprefix("whsec_")):
        assert value not in stored

    status, _, _ = api.call("DELETE", f"/api/v1/webhooks/{endpoint}", token=admin)
    assert status == 204
    status, gone, _ = api.call("GET", f"/api/v1/webhooks/{endpoint}", token=admin)
    assert (status, gone["error"]["code"]) == (404, "not_found")


def test_bad_input_gets_clear_errors_and_a_viewer_is_refused(stack: Stack) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", "/api/v1/webhooks", {"url": "ftp://x.example/", "event_types": ["#"]}, 422),
        ("POST", "/api/v1/webhooks", {"url": "https://a@127.0.0.1/", "event_types": ["#"]}, 422),
        ("POST", "/api/v1/webhooks", {"url": "http://2130706433/", "event_types": ["#"]}, 422),
        ("POST", "/api/v1/webhooks", {"url": "https://x.example/", "event_types": ["A..b"]}, 422),
        ("POST", "/api/v1/webhooks", {"url": "https://x.example/", "event_types": []}, 422),
        ("POST", "/api/v1/webhooks", {"url": "https://x.example/", "extra": 1}, 422),
        ("GET", "/api/v1/webhooks/not-an-id", None, 422),
        ("GET", "/api/v1/webhooks/ep_" + "0" * 24, None, 404),
        ("PATCH", "/api/v1/webhooks/ep_" + "0" * 24, {"description": "x"}, 404),
        ("POST", "/api/v1/webhooks/ep_" + "0" * 24 + "/dead-letters/wm_1/replay", None, 422),
    ]
    for method, path, body, expected in cases:
        status, answer, _ = api.call(method, path, body, token=admin)
        assert status == expected, (method, path, answer)
        assert answer["error"]["code"] in {"validation_failed", "not_found"}, answer
    status, created, _ = api.call(
        "POST",
        "/api/v1/users",
        {"username": "whk-viewer", "password": "pw-viewer-0001x", "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201, created
    viewer = api.login("whk-viewer", "pw-viewer-0001x")
    status, denied, _ = api.call("GET", "/api/v1/webhooks", token=viewer)
    assert (status, denied["error"]["code"]) == (403, "forbidden")


def test_a_delivery_cut_short_by_kill_9_is_made_again(stack: Stack, receiver: Receiver) -> None:
    """At least once: the worker dies mid-attempt; its claim lapses; the restart delivers."""
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    status, issued, _ = api.call(
        "POST",
        "/api/v1/webhooks",
        {"url": receiver.url, "event_types": ["identity.user.created"], "timeout_seconds": 5},
        token=admin,
    )
    assert status == 201, issued
    endpoint = issued["webhook"]["id"]
    receiver.delay = 3.0  # the attempt is in flight when the worker dies
    _create_user(stack, admin, "whk-killed")
    first = receiver.wait_for(lambda e: e["data"].get("username") == "whk-killed")
    victim = service_pid(stack, "webhooks")
    assert victim is not None
    # what any local user sees of it: no URL, key or password on its command line
    cmdline = Path(f"/proc/{victim}/cmdline").read_bytes().split(b"\0")
    assert cmdline[1:3] == [b"-m", b"hypersdk_webhooks"]
    assert [arg for arg in cmdline[3:] if arg] == []
    os.kill(victim, signal.SIGKILL)
    receiver.delay = 0.0
    _eventually(lambda: service_pid(stack, "webhooks") not in (None, victim), seconds=30)

    def delivered() -> bool:
        rows = stack.db(
            "SELECT state, attempts FROM webhooks.messages WHERE endpoint_id = $1", endpoint
        )
        return [(r["state"], r["attempts"]) for r in rows] == [("delivered", 1)]

    _eventually(delivered, seconds=40)  # the lease (6 s) lapses, the new worker claims it
    tries = [
        p for p in receiver.posts if json.loads(p.body)["data"].get("username") == "whk-killed"
    ]
    assert len(tries) == 2  # the cut-short attempt and the one after: the same webhook-id
    assert tries[0].headers["webhook-id"] == tries[1].headers["webhook-id"]
    assert tries[1].at - first.at >= 5
    api.call("DELETE", f"/api/v1/webhooks/{endpoint}", token=admin)


def test_an_endpoint_failing_for_long_is_disabled_with_an_event(
    stack: Stack, receiver: Receiver
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    receiver.status = 500
    status, issued, _ = api.call(
        "POST",
        "/api/v1/webhooks",
        {"url": receiver.url, "event_types": ["identity.user.created"]},
        token=admin,
    )
    assert status == 201, issued
    endpoint = issued["webhook"]["id"]
    _create_user(stack, admin, "whk-down-1")
    time.sleep(2.5)  # failing for longer than the 2 s of the session's disable rule
    _create_user(stack, admin, "whk-down-2")

    def disabled() -> bool:
        status, found, _ = api.call("GET", f"/api/v1/webhooks/{endpoint}", token=admin)
        return bool(status == 200 and found["status"] == "disabled")

    _eventually(disabled, seconds=30)
    _, found, _ = api.call("GET", f"/api/v1/webhooks/{endpoint}", token=admin)
    assert found["consecutive_failures"] >= 5
    assert "in a row" in found["disabled_reason"]
    _eventually(lambda: "webhook.disable" in {e["action"] for e in api.recent_audit(admin, 200)})
    status, resumed, _ = api.call("POST", f"/api/v1/webhooks/{endpoint}/resume", token=admin)
    assert (status, resumed["status"], resumed["consecutive_failures"]) == (200, "active", 0)
    api.call("DELETE", f"/api/v1/webhooks/{endpoint}", token=admin)


async def test_only_genuine_events_are_delivered(stack: Stack, receiver: Receiver) -> None:
    """A bus login may publish only what its service emits, and claim no request unsealed."""
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    publisher = stack.identity_login
    assert publisher is not None
    status, issued, _ = api.call(
        "POST",
        "/api/v1/webhooks",
        {"url": receiver.url, "event_types": ["identity.user.created", "exporter.job.completed"]},
        token=admin,
    )
    assert status == 201, issued

    def envelope(data: Any, service: str, **claims: str) -> CloudEvent:
        event = event_envelope(data, service=service, subject=None, context=None)
        return event.model_copy(update=claims)

    forged = [
        # identity's login speaking for the exporter
        envelope(JobCompleted(job_id="j-forged", artifacts=[]), "exporter"),
        # a request's actor claimed without the gateway's seal
        envelope(
            UserCreated(username="whk-forged-actor"),
            "identity",
            actor="admin",
            request_id="r-forged",
        ),
    ]
    genuine = envelope(UserCreated(username="whk-genuine"), "identity")
    for event in [*forged, genuine]:  # in this order: the genuine one comes out last
        await publisher.publish(
            event.model_dump_json(by_alias=True, exclude_none=True).encode(),
            routing_key=event.routing_key,
            message_id=event.id,
        )
    await asyncio.to_thread(receiver.wait_for, lambda e: e["id"] == genuine.id)
    await asyncio.sleep(1.0)
    ids = {json.loads(p.body)["id"] for p in receiver.posts}
    assert genuine.id in ids
    assert not ids & {event.id for event in forged}
    api.call("DELETE", f"/api/v1/webhooks/{issued['webhook']['id']}", token=admin)
