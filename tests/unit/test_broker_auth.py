"""The broker authorizer over real sockets on loopback: RabbitMQ's questions, and bad clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_webhooks.adapters.inbound import broker_auth
from hypersdk_webhooks.adapters.inbound.broker_auth import BrokerAuthServer
from hypersdk_webhooks.adapters.outbound.memory import InMemorySubscriptionStore, InMemoryTaps
from hypersdk_webhooks.core.models import Subscription
from hypersdk_webhooks.core.subscriptions import SubscriptionService

VHOST = "hypersdk"


class BrokenStore(InMemorySubscriptionStore):
    async def get(self, subscription_id: str) -> Subscription | None:
        raise ConnectionError("the database is down")


@pytest.fixture
async def rig() -> AsyncIterator[tuple[BrokerAuthServer, SubscriptionService]]:
    service = SubscriptionService(
        store=InMemorySubscriptionStore(),
        taps=InMemoryTaps(),
        uow=InMemoryUnitOfWork(service="webhooks"),
        vhost=VHOST,
        clock=lambda: datetime(2026, 12, 7, tzinfo=UTC),
    )
    server = BrokerAuthServer(service, host="127.0.0.1", port=0)
    await server.start()
    yield server, service
    await server.stop()


async def _exchange(port: int, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), timeout=5)
    finally:
        writer.close()


def _post(path: str, form: dict[str, str], *, extra: str = "") -> bytes:
    body = urlencode(form).encode()
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n"
    ).encode() + body


async def _ask(port: int, path: str, form: dict[str, str]) -> bytes:
    answer = await _exchange(port, _post(path, form))
    status, _, body = answer.partition(b"\r\n")[0], None, answer.split(b"\r\n\r\n", 1)[1]
    assert status.startswith(b"HTTP/1.1 200"), answer
    return body


async def test_the_broker_is_told_allow_only_for_the_right_password_and_resources(
    rig: tuple[BrokerAuthServer, SubscriptionService],
) -> None:
    server, service = rig
    assert server.port
    sub, password = await service.create()
    user = {"username": sub.id}
    assert await _ask(server.port, "/auth/user", {**user, "password": password}) == b"allow"
    assert await _ask(server.port, "/auth/user", {**user, "password": "nope"}) == b"deny"
    assert await _ask(server.port, "/auth/vhost", {**user, "vhost": VHOST, "ip": "x"}) == b"allow"
    queue = {**user, "vhost": VHOST, "resource": "queue", "name": f"sub.{sub.id}.q"}
    assert await _ask(server.port, "/auth/resource", {**queue, "permission": "configure"}) == (
        b"allow"
    )
    other = {**queue, "name": "audit.events", "permission": "read"}
    assert await _ask(server.port, "/auth/resource", other) == b"deny"
    topic = {**user, "vhost": VHOST, "resource": "topic", "name": f"sub.{sub.id}"}
    assert (
        await _ask(server.port, "/auth/topic", {**topic, "permission": "read", "routing_key": "#"})
        == b"allow"
    )
    assert (
        await _ask(server.port, "/auth/topic", {**topic, "permission": "write", "routing_key": "x"})
        == b"deny"
    )


async def test_one_connection_serves_several_requests(
    rig: tuple[BrokerAuthServer, SubscriptionService],
) -> None:
    server, service = rig
    assert server.port
    sub, password = await service.create()
    body = urlencode({"username": sub.id, "password": password}).encode()
    request = (
        f"POST /auth/user HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for _ in range(3):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            assert head.startswith(b"HTTP/1.1 200")
            assert b"keep-alive" in head
            assert await reader.readexactly(5) == b"allow"
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET /auth/user HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
        (_post("/auth/admin", {"username": "x"}), b"404"),
        (
            b"POST /auth/user HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 0\r\n\r\nhello",
            b"400",
        ),
        (b"POST /auth/user HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
        (b"POST /auth/user HTTP/1.1\r\nContent-Length: 99999\r\n\r\n", b"400"),
        (b"POST /auth/user HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST /auth/user HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"NONSENSE\r\n\r\n", b"400"),
        (b"POST /auth/user HTTP/1.1\r\nHost: " + b"x" * 8000 + b"\r\n\r\n", b"431"),
        # a field twice: the broker never sends that
        (b"POST /auth/user HTTP/1.1\r\nContent-Length: 21\r\n\r\nusername=a&username=b", b"400"),
        (b"POST /auth/user HTTP/1.1\r\nContent-Length: 2\r\n\r\n\xff\xfe", b"400"),
    ],
)
async def test_malformed_requests_get_a_client_error_and_never_allow(
    rig: tuple[BrokerAuthServer, SubscriptionService], raw: bytes, status: bytes
) -> None:
    server, _ = rig
    assert server.port
    answer = await _exchange(server.port, raw)
    assert answer.split(b" ")[1] == status, answer
    assert not answer.endswith(b"allow")


async def test_a_store_that_fails_is_a_server_error_never_an_allow(
    rig: tuple[BrokerAuthServer, SubscriptionService],
) -> None:
    service = SubscriptionService(
        store=BrokenStore(), taps=InMemoryTaps(), uow=InMemoryUnitOfWork(service="w"), vhost=VHOST
    )
    server = BrokerAuthServer(service, host="127.0.0.1", port=0)
    await server.start()
    try:
        assert server.port
        answer = await _exchange(
            server.port, _post("/auth/user", {"username": "sb_" + "a" * 24, "password": "p"})
        )
        assert answer.startswith(b"HTTP/1.1 503")
        assert answer.endswith(b"deny")
    finally:
        await server.stop()


async def test_a_silent_client_is_dropped_and_others_are_still_answered(
    rig: tuple[BrokerAuthServer, SubscriptionService], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, service = rig
    assert server.port
    monkeypatch.setattr(broker_auth, "IDLE_SECONDS", 0.2)
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", server.port)
    slow_writer.write(b"POST /auth/user HTTP/1.1\r\n")  # and nothing more
    sub, password = await service.create()
    assert await _ask(server.port, "/auth/user", {"username": sub.id, "password": password}) == (
        b"allow"
    )
    assert await asyncio.wait_for(slow_reader.read(), timeout=5) == b""  # closed by the server
    slow_writer.close()


async def test_beyond_the_connection_limit_a_client_is_told_busy(
    rig: tuple[BrokerAuthServer, SubscriptionService], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = rig
    assert server.port
    monkeypatch.setattr(broker_auth, "MAX_CONNECTIONS", 2)
    held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
    await asyncio.sleep(0.05)
    answer = await _exchange(server.port, _post("/auth/user", {"username": "x"}))
    assert answer.startswith(b"HTTP/1.1 503")
    for _, writer in held:
        writer.close()


async def test_stopping_closes_open_connections_without_an_error_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = SubscriptionService(
        store=InMemorySubscriptionStore(), taps=InMemoryTaps(),
        uow=InMemoryUnitOfWork(service="w"), vhost=VHOST,
    )  # fmt: skip
    server = BrokerAuthServer(service, host="127.0.0.1", port=0)
    await server.start()
    assert server.port
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"POST /auth/user HTTP/1.1\r\n")  # a request in the middle, idle
    await asyncio.sleep(0.05)
    await asyncio.wait_for(server.stop(), timeout=5)
    assert await asyncio.wait_for(reader.read(), timeout=5) == b""
    writer.close()
    await asyncio.sleep(0.05)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
