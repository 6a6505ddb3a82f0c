"""Gateway: clients that stall their headers or bodies, or open too many connections.

The chain's part (body deadline, room among the pending events claimed only once the body is
here) over ASGI with the in-memory services; the connection part (header deadline, connections
per address) on a real uvicorn server on a loopback port with a tiny app.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn

from hypersdk_gateway.adapters.inbound.connections import ConnectionLimits, limited_h11
from tests.unit.test_gateway_chain import GatewayFactory, HeldEvents, assert_envelope, bearer


def stalled_post(token: str, path: str = "/api/v1/providers") -> dict[str, Any]:
    """The scope of a POST that declares 100 bytes of body."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"100"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def never() -> dict[str, Any]:
    """A receive() whose body never comes."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


# ---- the chain -------------------------------------------------------------------------------


async def test_calls_stalling_their_bodies_hold_no_room_among_pending_events(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(
        events=HeldEvents(), max_pending_events=2, pending_event_wait_seconds=0.5
    )
    token = await gateway.login("olga")
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    stalled = [
        asyncio.ensure_future(gateway.chain(stalled_post(token), never, send)) for _ in range(5)
    ]
    await asyncio.sleep(0.05)
    try:
        started = time.perf_counter()
        answer = await gateway.client.get("/api/v1/vms", headers=bearer(token))
        elapsed = time.perf_counter() - started
    finally:
        for task in stalled:
            task.cancel()
        await asyncio.gather(*stalled, return_exceptions=True)

    assert answer.status_code == 200, answer.text
    assert elapsed < 0.4  # did not wait for room
    assert sent == []  # the stalled calls are still waiting for their bodies, unanswered


async def test_a_body_that_does_not_arrive_in_time_gets_408_and_a_closed_connection(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway(body_timeout_seconds=0.2)
    token = await gateway.login("olga")
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    started = time.perf_counter()
    await asyncio.wait_for(gateway.chain(stalled_post(token), never, send), timeout=5)

    assert 0.2 <= time.perf_counter() - started < 2
    assert sent[0]["status"] == 408
    headers = dict(sent[0]["headers"])
    assert headers[b"connection"] == b"close"
    assert headers[b"x-content-type-options"] == b"nosniff"
    error = json.loads(sent[1]["body"])["error"]
    assert error["code"] == "request_timeout"
    assert error["request_id"] == headers[b"x-request-id"].decode()
    (event,) = [e for e in gateway.completed() if e.data["route"] == "/api/v1/providers"]
    assert event.data["status"] == 408


async def test_a_call_answered_before_its_body_still_waits_for_room_and_may_get_503(
    make_gateway: GatewayFactory,
) -> None:
    events = HeldEvents()
    gateway = await make_gateway(
        events=events, max_pending_events=1, pending_event_wait_seconds=0.1
    )
    token = await gateway.login("alice")
    events.confirm.clear()
    held = asyncio.create_task(gateway.client.get("/api/v1/vms", headers=bearer(token)))
    await asyncio.sleep(0.05)
    try:
        anonymous = await asyncio.wait_for(gateway.client.get("/api/v1/vms"), timeout=5)
    finally:
        events.confirm.set()

    assert_envelope(anonymous, 503, "upstream_unavailable")  # not an unaudited 401
    assert anonymous.headers["retry-after"] == "1"
    assert anonymous.headers["cache-control"] == "no-store"
    assert (await held).status_code == 200


# ---- the connections -------------------------------------------------------------------------


async def hello(scope: Any, receive: Any, send: Any) -> None:
    """A tiny ASGI app: 200 "hello" to every request."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    servers: list[tuple[uvicorn.Server, asyncio.Task[None]]] = []

    async def start(limits: ConnectionLimits) -> int:
        config = uvicorn.Config(
            hello,
            host="127.0.0.1",
            port=0,
            http=limited_h11(limits),
            lifespan="off",
            log_config=None,
            access_log=False,
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event to wait on
            await asyncio.sleep(0.01)
        servers.append((server, task))
        port: int = server.servers[0].sockets[0].getsockname()[1]
        return port

    yield start
    for server, task in servers:
        server.should_exit = True
        await task


REQUEST = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n"


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within ``seconds`` (no answer on the way)."""
    try:
        data = await asyncio.wait_for(reader.read(), timeout=seconds)
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return b"HTTP/1.1 200" not in data


async def answered(port: int) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    return status.startswith(b"HTTP/1.1 200")


def limits(*, header_timeout: float = 30.0, per_address: int = 64, trusted: Any = ()) -> Any:
    return ConnectionLimits(
        header_timeout_seconds=header_timeout, per_address=per_address, trusted_proxies=[*trusted]
    )


async def test_headers_that_never_finish_get_the_connection_closed(serve: Any) -> None:
    port = await serve(limits(header_timeout=0.3))
    silent_reader, silent = await asyncio.open_connection("127.0.0.1", port)
    partial_reader, partial = await asyncio.open_connection("127.0.0.1", port)
    partial.write(b"GET / HTTP/1.1\r\nhost: test\r\n")  # no blank line: headers never end
    await partial.drain()

    assert await closed_within(silent_reader, 2)
    assert await closed_within(partial_reader, 2)
    assert await answered(port)  # a client that sends its request is served
    silent.close()
    partial.close()


async def test_the_next_request_on_a_kept_alive_connection_has_its_header_deadline_too(
    serve: Any,
) -> None:
    port = await serve(limits(header_timeout=0.3))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readuntil(b"hello")
    started = time.perf_counter()
    try:  # a byte every 50 ms, well within keep-alive, for up to 3 s: headers never finished
        for byte in b"GET / HTTP/1.1\r\nx-trickle: " + b"a" * 60:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    except ConnectionError:
        pass

    assert await closed_within(reader, 2)
    assert time.perf_counter() - started < 2
    writer.close()


async def test_connections_from_one_address_are_capped(serve: Any) -> None:
    port = await serve(limits(per_address=3))
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]

    extra_reader, extra = await asyncio.open_connection("127.0.0.1", port)
    extra.write(REQUEST)
    assert await closed_within(extra_reader, 2)

    held.pop()[1].close()
    await asyncio.sleep(0.1)
    assert await answered(port)  # room again once one closed
    for _, writer in held:
        writer.close()


async def test_a_trusted_proxy_is_not_capped(serve: Any) -> None:
    port = await serve(limits(per_address=1, trusted=["127.0.0.0/8"]))
    held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]

    assert await answered(port)
    for _, writer in held:
        writer.close()
