"""Hostile clients against the real platform: stalled bodies, connection hoarding, token floods.

A platform of its own (isolated_stack_config + devstack.up) with short deadlines and a short
summary window, so that the floods here neither disturb other tests nor wait long. Client
addresses: 127.0.0.1 is a trusted proxy in the test stacks (its connections are not capped,
X-Forwarded-For names the client); 127.0.0.2 is another loopback address, an untrusted peer.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from .conftest import ADMIN_PASSWORD, Api, devstack, isolated_stack_config

BODY_TIMEOUT = 2.0
SUMMARY_WINDOW = 3.0
STALLED = (
    b"POST /api/v1/auth/login HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
    b"content-length: 100\r\n\r\n"
)


@dataclass(frozen=True)
class HostileStack:
    api: Api
    admin_token: str
    port: int


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileStack]:
    with isolated_stack_config(tmp_path_factory.mktemp("hostile")) as config:
        config.extra_env.update(
            {
                "HYPERSDK_GATEWAY_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
                "HYPERSDK_GATEWAY_HEADER_TIMEOUT_SECONDS": "2",
                "HYPERSDK_GATEWAY_REFUSAL_SUMMARY_SECONDS": str(SUMMARY_WINDOW),
                "HYPERSDK_GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
                "HYPERSDK_GATEWAY_AUTH_FAILURES_PER_MINUTE": "10",  # the default
            }
        )
        devstack.up(config, admin_password=ADMIN_PASSWORD)
        api = Api(config.gateway_url)
        port = urlsplit(config.gateway_url).port
        assert port is not None
        yield HostileStack(api=api, admin_token=api.login("admin", ADMIN_PASSWORD), port=port)


def stall(port: int, count: int, *, source: str) -> list[socket.socket]:
    """``count`` connections from ``source`` that declare a body of 100 bytes and send none."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        with contextlib.suppress(OSError):  # a refused connection may be closed already
            sock.sendall(STALLED)
        sockets.append(sock)
    return sockets


def until_closed(sock: socket.socket, seconds: float) -> bytes | None:
    """What the server sent before closing the connection; None if it is still open."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return received


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds the connection open (without waiting)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False


def test_stalled_bodies_hold_nothing_and_are_closed_at_their_deadline(
    hostile: HostileStack,
) -> None:
    stalled = stall(hostile.port, 300, source="127.0.0.1")
    try:
        time.sleep(0.5)  # every stalled call now waits for its body in the gateway
        started = time.perf_counter()
        status, users, _ = hostile.api.call("GET", "/api/v1/users", token=hostile.admin_token)
        admin_seconds = time.perf_counter() - started
        assert status == 200, users
        assert admin_seconds < 1.0, f"an admin call took {admin_seconds:.2f} s"
        status, _, _ = hostile.api.call(
            "POST", "/api/v1/providers", {"name": "x"}, token=hostile.admin_token
        )
        assert status == 422  # calls with bodies are served too

        deadline = time.monotonic() + BODY_TIMEOUT + 5
        answers = [until_closed(sock, max(0.1, deadline - time.monotonic())) for sock in stalled]
    finally:
        for sock in stalled:
            sock.close()

    assert all(answer is not None for answer in answers), "a stalled connection stayed open"
    assert {answer.split(b"\r\n", 1)[0] for answer in answers if answer} == {
        b"HTTP/1.1 408 Request Timeout"
    }
    assert all(b'"code": "request_timeout"' in answer for answer in answers if answer)


def test_one_untrusted_address_cannot_hoard_connections(hostile: HostileStack) -> None:
    held = stall(hostile.port, 100, source="127.0.0.2")
    try:
        time.sleep(0.5)  # well within the body deadline
        assert sum(is_open(sock) for sock in held) == 64  # the default cap; others closed
        status, _, _ = hostile.api.call("GET", "/api/v1/auth/me", token=hostile.admin_token)
        assert status == 200
    finally:
        for sock in held:
            sock.close()


def test_a_flood_of_bogus_tokens_is_throttled_and_summarised_in_the_audit_log(
    hostile: HostileStack,
) -> None:
    attacker = "203.0.113.77"
    bogus = {"X-Forwarded-For": attacker, "Authorization": "Bearer hsdk_s_" + "x" * 43}
    before = hostile.api.recent_audit(hostile.admin_token, last=1)[-1]["sequence"]

    def bogus_call(_: int) -> tuple[int, dict[str, str]]:
        status, _, headers = hostile.api.call("GET", "/api/v1/vms", headers=bogus)
        return status, headers

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(bogus_call, range(300)))
    flood_seconds = time.monotonic() - started
    neighbour = hostile.api.call(
        "GET",
        "/api/v1/vms",
        token=hostile.admin_token,
        headers={"X-Forwarded-For": "198.51.100.77"},
    )

    statuses = [status for status, _ in answers]
    assert flood_seconds < 10
    # Calls that arrive while the same bogus token is being verified get its 401 without
    # spending a token first (identity is asked once for them); each counts afterwards.
    assert statuses.count(401) + statuses.count(429) == 300
    assert statuses.count(429) >= 250
    assert all(1 <= int(headers["retry-after"]) <= 60 for s, headers in answers if s == 429)
    assert neighbour[0] == 200

    time.sleep(SUMMARY_WINDOW + 1)  # the window closes; audit chains the summary
    deadline = time.monotonic() + 15
    while True:
        entries = [
            entry
            for entry in hostile.api.recent_audit(hostile.admin_token, last=2000)
            if entry["sequence"] > before and entry["source_ip"] == attacker
        ]
        summaries = [entry for entry in entries if entry["action"] == "api.throttle"]
        one_by_one = [entry for entry in entries if entry["action"] == "api.call"]
        if (
            sum(int(s["result"].split("(")[1].split()[0]) for s in summaries)
            >= 300 - len(one_by_one)
            or time.monotonic() > deadline
        ):
            break
        time.sleep(0.5)
    assert len(entries) < 20, [entry["action"] for entry in entries]
    assert summaries, "no summary of the refusals reached the audit log"
    assert all(s["result"].startswith("failure: authentication_failures (") for s in summaries)
    refused = sum(int(s["result"].split("(")[1].split()[0]) for s in summaries)
    # The bucket of 10 and what refilled meanwhile reached identity, one entry each; every
    # other call, 401 or 429, is counted in a summary.
    assert len(one_by_one) <= 12
    assert refused == 300 - len(one_by_one)
