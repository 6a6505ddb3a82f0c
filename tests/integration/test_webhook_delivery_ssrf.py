"""Webhook deliveries over real sockets on 127.0.0.1: what the SSRF defences let through.

Everything here listens on 127.0.0.1 only: HTTP receivers (asyncio servers, one TLS), and a
real UDP DNS server written with dnspython's message API, which DnsResolver asks.

No test reaches outside 127.0.0.1. Some DNS answers are public addresses (93.184.216.34), as
an attacker's zone would give, and the policy rightly allows them: a delivery then connects
to that address. The last step of every connection here is ``LoopbackOnly``, handed to
HttpDelivery as its network backend (the one that finally opens the socket, after the
resolve-and-check step under test): it records the address asked for, opens real sockets to
127.0.0.1, and refuses every other address with httpcore's ConnectError, as an unreachable
host would, at once. Nothing is monkeypatched, nothing waits for a timeout to find out, and a
test's assertion on what was connected to is exact. A TEST-NET address cannot play the public
answer: the policy blocks those ranges (documentation) before any connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import httpcore
import pytest

from hypersdk_webhooks.adapters.outbound.http_delivery import HttpDelivery
from hypersdk_webhooks.adapters.outbound.resolvers import DnsResolver
from hypersdk_webhooks.core.models import Attempt, Outcome
from hypersdk_webhooks.core.ssrf import AddressPolicy, Target, TargetRefusedError, parse_target
from tests.pki import make_authority

PUBLIC = "93.184.216.34"
LOOPBACK_ONLY = AddressPolicy.from_strings(networks=["127.0.0.1/32"])
DEFAULT = AddressPolicy()
SIGNATURE = "t=1700000000,v1=9c1f-planted-signature-value"
BODY = b'{"event":"vm.exported","id":"e-1","bytes":"\\u00ff"}\x00\xff tail'
TEN_MB = 10 * 1024 * 1024


# --- what finally connects ------------------------------------------------------------------------


class LoopbackOnly(httpcore.AsyncNetworkBackend):
    """Real sockets to 127.0.0.1; any other address is refused at once (and recorded)."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.connects: list[tuple[str, int]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        if host != "127.0.0.1":
            raise httpcore.ConnectError("the tests reach nothing outside 127.0.0.1")
        return await self._inner.connect_tcp(host, port, timeout=timeout)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise AssertionError("never a unix socket")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# --- an HTTP receiver -----------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


Behaviour = Callable[["Receiver", asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def no_content(_: Receiver, __: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    await writer.drain()


@dataclass
class Receiver:
    """A one-request-per-connection HTTP/1.1 server on 127.0.0.1."""

    behaviour: Behaviour = no_content
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    closed_by_client: bool = False
    server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            method, path, _ = request_line.split(" ")
            headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines]
            received = Received(method, path, [(k, v) for k, v in headers], b"")
            length = int(received.header("content-length")[0])
            received.body = await reader.readexactly(length)
            self.requests.append(received)
            await self.behaviour(self, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@pytest.fixture
async def receivers() -> AsyncIterator[Callable[..., Awaitable[Receiver]]]:
    started: list[Receiver] = []

    async def start(behaviour: Behaviour = no_content, **kwargs: Any) -> Receiver:
        receiver = await Receiver(behaviour).start(**kwargs)
        started.append(receiver)
        return receiver

    yield start
    for receiver in started:
        await receiver.stop()


# --- a DNS server ---------------------------------------------------------------------------------


class ZoneServer(asyncio.DatagramProtocol):
    """Answers A and AAAA from a small zone; ``rebind.test`` answers public once, then loopback."""

    ZONE: dict[str, dict[str, list[str]]] = {
        "mixed.test.": {"A": [PUBLIC, "127.0.0.1"]},
        "mixed6.test.": {"A": [PUBLIC], "AAAA": ["::1"]},
        "receiver.test.": {"A": ["127.0.0.1"]},
        "public.test.": {"A": ["127.0.0.1"]},
        "localhost.": {"A": ["127.0.0.1"]},
        "other-name.test.": {"A": ["127.0.0.1"]},
        "metadata.test.": {"A": ["169.254.169.254"]},
    }

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.queries: list[tuple[str, str]] = []
        self.port = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # the selector loop's datagram transport does not subclass DatagramTransport on 3.11
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    def count(self, name: str, rdtype: str = "A") -> int:
        return self.queries.count((name, rdtype))

    def answers(self, name: str, rdtype: str) -> list[str] | None:
        if name == "rebind.test.":
            if rdtype != "A":
                return []
            return [PUBLIC] if self.count(name) == 1 else ["127.0.0.1"]
        if name not in self.ZONE:
            return None
        return self.ZONE[name].get(rdtype, [])

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        question = query.question[0]
        name = question.name.to_text().lower()
        rdtype = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, rdtype))
        response = dns.message.make_response(query)
        answers = self.answers(name, rdtype)
        if answers is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif answers:
            response.answer.append(
                dns.rrset.from_text_list(
                    question.name, 0, dns.rdataclass.IN, question.rdtype, answers
                )
            )
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[ZoneServer]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        ZoneServer, local_addr=("127.0.0.1", 0)
    )
    yield protocol
    transport.close()


def resolver_for(server: ZoneServer) -> DnsResolver:
    return DnsResolver([("127.0.0.1", server.port)], lifetime_seconds=2.0)


def sender(
    server: ZoneServer,
    policy: AddressPolicy,
    *,
    connect_timeout: float = 0.5,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[HttpDelivery, LoopbackOnly]:
    guard = LoopbackOnly()
    delivery = HttpDelivery(
        resolver=resolver_for(server),
        policy=policy,
        connect_timeout_seconds=connect_timeout,
        ssl_context=ssl_context,
        network_backend=guard,
    )
    return delivery, guard


async def post(delivery: HttpDelivery, target: Target, timeout_seconds: float = 3.0) -> Attempt:
    return await delivery.post(
        target,
        headers={
            "Content-Type": "application/json",
            "X-Hypersdk-Signature": SIGNATURE,
            "X-Hypersdk-Event": "vm.exported",
            "X-Spaces": "a value, with  spaces",
        },
        body=BODY,
        timeout_seconds=timeout_seconds,
    )


# --- (a) a loopback receiver: refused unless allow-listed -----------------------------------------


async def test_a_loopback_receiver_is_refused_without_an_allow_list(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers()
    with pytest.raises(TargetRefusedError) as caught:
        parse_target(f"http://127.0.0.1:{receiver.port}/hook", DEFAULT)
    assert caught.value.code == "blocked_address"

    delivery, guard = sender(dns_server, DEFAULT)
    # registered under an allow-list that has since been removed: the connect check decides
    literal = parse_target(f"http://127.0.0.1:{receiver.port}/hook", LOOPBACK_ONLY)
    # a name passes registration (no lookup then) and is refused when it resolves
    name = parse_target(f"http://receiver.test:{receiver.port}/hook", DEFAULT)
    for target in (literal, name):
        attempt = await post(delivery, target)
        assert attempt.outcome is Outcome.BLOCKED_ADDRESS
        assert attempt.address is None
    assert dns_server.count("receiver.test.") == 1
    assert guard.connects == []
    assert receiver.connections == 0


async def test_an_allow_listed_loopback_receiver_gets_the_post_intact(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers()
    delivery, guard = sender(dns_server, LOOPBACK_ONLY)
    target = parse_target(f"http://127.0.0.1:{receiver.port}/hooks/in?tenant=7", LOOPBACK_ONLY)

    attempt = await post(delivery, target)

    assert (attempt.outcome, attempt.status, attempt.address) == (
        Outcome.DELIVERED,
        204,
        "127.0.0.1",
    )
    assert attempt.latency_ms > 0
    assert SIGNATURE not in attempt.detail
    [received] = receiver.requests
    assert received.method == "POST"
    assert received.path == "/hooks/in?tenant=7"
    assert received.header("host") == [f"127.0.0.1:{receiver.port}"]
    assert received.header("x-hypersdk-signature") == [SIGNATURE]
    assert received.header("x-hypersdk-event") == ["vm.exported"]
    assert received.header("content-type") == ["application/json"]
    assert received.header("x-spaces") == ["a value, with  spaces"]
    assert received.header("content-length") == [str(len(BODY))]
    assert received.body == BODY
    assert guard.connects == [("127.0.0.1", receiver.port)]


async def test_an_allow_listed_name_is_sent_its_own_host_header(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers()
    policy = AddressPolicy.from_strings(hosts=["receiver.test"])
    delivery, guard = sender(dns_server, policy)
    attempt = await post(delivery, parse_target(f"http://receiver.test:{receiver.port}/", policy))
    assert attempt.outcome is Outcome.DELIVERED
    assert receiver.requests[0].header("host") == [f"receiver.test:{receiver.port}"]
    assert guard.connects == [("127.0.0.1", receiver.port)]
    # the same address under another name is still refused
    other = await post(delivery, parse_target(f"http://other-name.test:{receiver.port}/", policy))
    assert other.outcome is Outcome.BLOCKED_ADDRESS
    assert receiver.connections == 1


# --- (b) rebinding and mixed answers from a real DNS server ---------------------------------------


async def test_a_rebinding_name_connects_only_to_the_address_it_checked(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers()
    delivery, guard = sender(dns_server, DEFAULT, connect_timeout=0.5)
    target = parse_target(f"http://rebind.test:{receiver.port}/hook", DEFAULT)

    started = time.perf_counter()
    first = await post(delivery, target)
    assert time.perf_counter() - started < 2.0
    # one lookup (public), then a connect to exactly that address: no second lookup at
    # connect time that the zone could answer with 127.0.0.1
    assert first.outcome in {Outcome.CONNECT_FAILED, Outcome.TIMEOUT}
    assert first.address == PUBLIC
    assert dns_server.count("rebind.test.") == 1
    assert guard.connects == [(PUBLIC, receiver.port)]

    # the next attempt looks up again, gets 127.0.0.1, and refuses it
    second = await post(delivery, target)
    assert second.outcome is Outcome.BLOCKED_ADDRESS
    assert dns_server.count("rebind.test.") == 2
    assert guard.connects == [(PUBLIC, receiver.port)]
    assert receiver.connections == 0


@pytest.mark.parametrize("name", ["mixed.test", "mixed6.test", "metadata.test"])
async def test_a_name_with_a_blocked_answer_is_refused_entirely(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer, name: str
) -> None:
    receiver = await receivers()
    delivery, guard = sender(dns_server, DEFAULT)
    target = parse_target(f"http://{name}:{receiver.port}/", DEFAULT)
    for _ in range(3):
        attempt = await post(delivery, target)
        assert attempt.outcome is Outcome.BLOCKED_ADDRESS
        assert "127.0.0.1" not in attempt.detail
    assert guard.connects == []
    assert receiver.connections == 0


async def test_an_unknown_name_is_unresolvable(dns_server: ZoneServer) -> None:
    delivery, guard = sender(dns_server, DEFAULT)
    attempt = await post(delivery, parse_target("http://nowhere.test/", DEFAULT))
    assert attempt.outcome is Outcome.UNRESOLVABLE
    assert dns_server.count("nowhere.test.") == 1
    assert guard.connects == []


async def test_the_dns_resolver_returns_every_answer(dns_server: ZoneServer) -> None:
    resolver = resolver_for(dns_server)
    # dnspython shuffles an RRset when it writes one: compare the answers, not their order
    assert sorted(str(a) for a in await resolver.resolve("mixed.test")) == ["127.0.0.1", PUBLIC]
    assert [str(a) for a in await resolver.resolve("mixed6.test")] == [PUBLIC, "::1"]
    with pytest.raises(TargetRefusedError) as caught:
        await resolver.resolve("nowhere.test")
    assert caught.value.code == "unresolvable"


async def test_a_silent_name_server_is_unresolvable_within_the_lifetime() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        port = transport.get_extra_info("sockname")[1]
        resolver = DnsResolver([("127.0.0.1", port)], lifetime_seconds=0.3)
        started = time.perf_counter()
        with pytest.raises(TargetRefusedError) as caught:
            await resolver.resolve("anything.test")
        assert caught.value.code == "unresolvable"
        assert time.perf_counter() - started < 1.5
    finally:
        transport.close()


# --- (c) redirects are not followed ---------------------------------------------------------------


async def test_a_redirect_to_loopback_is_recorded_not_followed(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    inner = await receivers()

    async def redirect(_: Receiver, __: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(
            f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{inner.port}/\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await w.drain()

    public = await receivers(redirect)
    # "public.test" stands for a public server; it is reached through the allow-list
    policy = AddressPolicy.from_strings(hosts=["public.test"], networks=[])
    delivery, guard = sender(dns_server, policy)
    attempt = await post(delivery, parse_target(f"http://public.test:{public.port}/in", policy))

    assert (attempt.outcome, attempt.status) == (Outcome.HTTP_ERROR, 302)
    assert "redirect" in attempt.detail
    assert len(public.requests) == 1
    assert inner.connections == 0
    assert guard.connects == [("127.0.0.1", public.port)]


# --- (d) timeouts ---------------------------------------------------------------------------------


async def never_answer(_: Receiver, reader: asyncio.StreamReader, __: asyncio.StreamWriter) -> None:
    await reader.read()  # until the client gives up and closes


async def test_a_server_that_never_answers_times_out_within_the_bound(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers(never_answer)
    delivery, _ = sender(dns_server, LOOPBACK_ONLY)
    target = parse_target(f"http://127.0.0.1:{receiver.port}/", LOOPBACK_ONLY)
    started = time.perf_counter()
    attempt = await post(delivery, target, timeout_seconds=0.5)
    elapsed = time.perf_counter() - started
    assert attempt.outcome is Outcome.TIMEOUT
    assert 0.4 < elapsed < 1.5
    assert 400 < attempt.latency_ms < 1500
    assert len(receiver.requests) == 1  # it did get the request


async def trickle(_: Receiver, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    """A header byte every 0.1 s: each read is quick, the whole answer never comes."""
    w.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _tick in range(100):
        if reader.at_eof():
            return
        w.write(b"a")
        await w.drain()
        await asyncio.sleep(0.1)


async def test_a_trickling_server_is_cut_at_the_attempts_deadline(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    receiver = await receivers(trickle)
    delivery, _ = sender(dns_server, LOOPBACK_ONLY)
    target = parse_target(f"http://127.0.0.1:{receiver.port}/", LOOPBACK_ONLY)
    started = time.perf_counter()
    attempt = await post(delivery, target, timeout_seconds=0.5)
    assert attempt.outcome is Outcome.TIMEOUT
    assert time.perf_counter() - started < 1.2


async def test_a_refused_port_is_connect_failed(dns_server: ZoneServer) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    delivery, guard = sender(dns_server, LOOPBACK_ONLY)
    attempt = await post(delivery, parse_target(f"http://127.0.0.1:{port}/", LOOPBACK_ONLY))
    assert attempt.outcome is Outcome.CONNECT_FAILED
    assert guard.connects == [("127.0.0.1", port)]


# --- (e) a huge answer is not read whole ----------------------------------------------------------


async def huge_answer(receiver: Receiver, _: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {TEN_MB}\r\n\r\n".encode())
    chunk = b"x" * 65536
    for _chunk in range(TEN_MB // len(chunk)):
        w.write(chunk)
        await w.drain()


async def stalled_huge_answer(
    receiver: Receiver, reader: asyncio.StreamReader, w: asyncio.StreamWriter
) -> None:
    """Announce 10 MB, send 256 KiB, then wait: only a reader that stops early finishes."""
    w.write(f"HTTP/1.1 200 OK\r\nContent-Length: {TEN_MB}\r\n\r\n".encode() + b"x" * 262144)
    await w.drain()
    with contextlib.suppress(ConnectionError):  # a close with unread data arrives as a reset
        await reader.read()
    receiver.closed_by_client = True


async def test_a_ten_megabyte_answer_is_cut_short(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer
) -> None:
    delivery, _ = sender(dns_server, LOOPBACK_ONLY)
    for behaviour in (huge_answer, stalled_huge_answer):
        receiver = await receivers(behaviour)
        target = parse_target(f"http://127.0.0.1:{receiver.port}/", LOOPBACK_ONLY)
        started = time.perf_counter()
        attempt = await post(delivery, target, timeout_seconds=5.0)
        assert (attempt.outcome, attempt.status) == (Outcome.INVALID_RESPONSE, 200)
        assert time.perf_counter() - started < 2.0
        assert "65536" in attempt.detail
    # the stalled server saw the client close the connection instead of waiting for the rest
    for _ in range(100):
        if receiver.closed_by_client:
            break
        await asyncio.sleep(0.01)
    assert receiver.closed_by_client


# --- TLS: the certificate is checked against the name, not the address ----------------------------


async def test_tls_verifies_the_name_while_connecting_to_the_checked_address(
    receivers: Callable[..., Awaitable[Receiver]], dns_server: ZoneServer, tmp_path: Path
) -> None:
    authority = make_authority(tmp_path, "webhooks")
    issued = authority.issue("localhost", server=True)  # names localhost and 127.0.0.1
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(issued.cert_file, issued.key_file)
    client_context = ssl.create_default_context(cafile=str(authority.cert_file))
    receiver = await receivers(ssl_context=server_context)
    policy = AddressPolicy.from_strings(hosts=["localhost", "other-name.test"])
    delivery, guard = sender(dns_server, policy, ssl_context=client_context)

    ok = await post(delivery, parse_target(f"https://localhost:{receiver.port}/tls", policy))
    assert (ok.outcome, ok.address) == (Outcome.DELIVERED, "127.0.0.1")
    assert receiver.requests[0].header("host") == [f"localhost:{receiver.port}"]
    assert receiver.requests[0].body == BODY

    # same address, which the certificate does name, but the name it does not: refused
    wrong = await post(delivery, parse_target(f"https://other-name.test:{receiver.port}/", policy))
    assert wrong.outcome is Outcome.TLS_FAILED
    assert len(receiver.requests) == 1
    assert guard.connects == [("127.0.0.1", receiver.port)] * 2
