"""Webhook delivery over HTTP/1.1 with httpcore, checked at the moment it connects.

httpcore asks its network backend to ``connect_tcp(host, port)``. ``CheckedNetworkBackend``
answers that by resolving the name once through the Resolver port, checking every answer
with the AddressPolicy and connecting to the checked IP. The name is never looked up again
(no second lookup a rebinding zone could answer differently), while TLS still verifies the
name (httpcore passes it to ``start_tls`` as the server name) and the Host header carries it.
One fresh connection per attempt; redirects are never followed (httpcore has no such logic,
and a 3xx is recorded as ``http_error``); the answer's body is read up to a bound and dropped.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpcore

from hypersdk_webhooks.core.models import Attempt, Outcome
from hypersdk_webhooks.core.ssrf import (
    BLOCKED_ADDRESS,
    UNRESOLVABLE,
    AddressPolicy,
    IPAddress,
    Target,
    TargetRefusedError,
)
from hypersdk_webhooks.ports.outbound import Delivery, Resolver

DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0
# Set by the delivery itself: a caller's value would contradict the target or the body.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class _CountingStream(httpcore.AsyncNetworkStream):
    """A network stream that counts the bytes it read (so "no answer" is told from "bad")."""

    def __init__(self, inner: httpcore.AsyncNetworkStream, backend: CheckedNetworkBackend) -> None:
        self._inner = inner
        self._backend = backend

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        data = await self._inner.read(max_bytes, timeout)
        self._backend.bytes_received += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        self._backend.tls_started = True
        secured = await self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _CountingStream(secured, self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class CheckedNetworkBackend(httpcore.AsyncNetworkBackend):
    """An httpcore backend that connects only to addresses the policy allows.

    One instance per attempt: it records the address it connected to (``address``), how many
    lookups it made (``lookups``) and what it read. An IP literal host is checked as it is; a
    name is resolved once, every answer is checked, and ``inner`` connects to the first answer
    by its IP string. Refusals raise TargetRefusedError (blocked_address or unresolvable).
    """

    def __init__(
        self,
        *,
        resolver: Resolver,
        policy: AddressPolicy,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._policy = policy
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()
        self.address: IPAddress | None = None
        self.lookups = 0
        self.bytes_received = 0
        self.tls_started = False

    async def checked_address(self, host: str) -> IPAddress:
        """The address to connect to for ``host``, after the policy looked at every answer."""
        try:
            literal: IPAddress | None = ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return self._policy.check(str(literal), [literal])
        reason = self._policy.refuses_name(host)
        if reason is not None:
            raise TargetRefusedError(
                BLOCKED_ADDRESS, f"The host is in a blocked range ({reason}).", reason=reason
            )
        self.lookups += 1
        return self._policy.check(host, await self._resolver.resolve(host))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve once, check every answer, connect to the checked address."""
        address = await self.checked_address(host)
        self.address = address
        stream = await self._inner.connect_tcp(
            str(address),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )
        return _CountingStream(stream, self)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Never: a webhook only goes over TCP to a checked address."""
        raise TargetRefusedError(BLOCKED_ADDRESS, "Unix sockets are not webhook targets.")

    async def sleep(self, seconds: float) -> None:
        """Wait (httpcore's retry back-off; retries are off here)."""
        await asyncio.sleep(seconds)


@dataclass
class _Exchange:
    status: int | None = None
    oversized: bool = False


def _request_headers(
    target: Target, headers: Mapping[str, str], body: bytes
) -> list[tuple[bytes, bytes]]:
    """The headers to send; ValueError (naming the header, never its value) for a bad one."""
    sent: list[tuple[bytes, bytes]] = [
        (b"Host", target.host_header.encode("ascii")),
        (b"Content-Length", str(len(body)).encode("ascii")),
        (b"Connection", b"close"),
    ]
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError("A webhook header name is not an HTTP token.")
        if name.lower() in _RESERVED_HEADERS:
            continue
        if not value.isascii() or _BAD_VALUE_CHARACTERS.search(value):
            raise ValueError(f"The value of the webhook header {name} is not printable ASCII.")
        sent.append((name.encode("ascii"), value.encode("ascii")))
    return sent


# What an attempt can fail with, first match wins (ssl.SSLError is an OSError: it goes first).
_Kinds = type[BaseException] | tuple[type[BaseException], ...]
_FAILURE_TABLE: tuple[tuple[_Kinds, Outcome, str], ...] = (
    ((TimeoutError, httpcore.TimeoutException), Outcome.TIMEOUT, "No complete answer in time."),
    (httpcore.ConnectError, Outcome.CONNECT_FAILED, "The connection was refused or unreachable."),
    (httpcore.RemoteProtocolError, Outcome.INVALID_RESPONSE, "The answer is not valid HTTP/1.1."),
    (ssl.SSLError, Outcome.TLS_FAILED, "The TLS connection failed."),
    (
        (httpcore.NetworkError, OSError),
        Outcome.CONNECT_FAILED,
        "The connection failed before an answer.",
    ),
    (httpcore.ProtocolError, Outcome.INVALID_RESPONSE, "The exchange broke the HTTP protocol."),
)
_FAILURES = (
    TargetRefusedError,
    TimeoutError,
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    OSError,
)


def _failure(error: BaseException, backend: CheckedNetworkBackend) -> tuple[Outcome, str]:
    """The outcome of an attempt that ended in ``error`` (never its text: it may hold data)."""
    if isinstance(error, TargetRefusedError):
        refused = Outcome.UNRESOLVABLE if error.code == UNRESOLVABLE else Outcome.BLOCKED_ADDRESS
        return refused, error.message
    if isinstance(error, httpcore.ConnectError) and backend.tls_started:
        return Outcome.TLS_FAILED, "The TLS handshake or the certificate failed."
    if isinstance(error, httpcore.RemoteProtocolError) and backend.bytes_received == 0:
        return Outcome.CONNECT_FAILED, "The endpoint closed the connection without answering."
    for kinds, outcome, detail in _FAILURE_TABLE:
        if isinstance(error, kinds):
            return outcome, detail
    raise error  # not reached: _FAILURES lists only what the table covers


class HttpDelivery(Delivery):
    """POSTs webhooks with httpcore through a CheckedNetworkBackend, one connection each.

    ``connect_timeout_seconds`` bounds the TCP connect and the TLS handshake (never beyond the
    attempt's own timeout); ``max_response_bytes`` bounds how much of the answer's body is read
    (past it the attempt is ``invalid_response`` and the connection is closed). ``ssl_context``
    defaults to the system's trust store with certificate and host name verification.
    ``network_backend`` is what finally connects to the checked address (httpcore's AnyIO
    backend by default; tests pass httpcore's mock backend).
    """

    def __init__(
        self,
        *,
        resolver: Resolver,
        policy: AddressPolicy,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self._resolver = resolver
        self._policy = policy
        self._ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()
        self._connect_timeout = connect_timeout_seconds
        self._max_response_bytes = max_response_bytes
        self._network_backend = network_backend

    def backend(self) -> CheckedNetworkBackend:
        """A fresh checked backend, as one attempt uses."""
        return CheckedNetworkBackend(
            resolver=self._resolver, policy=self._policy, inner=self._network_backend
        )

    async def post(
        self,
        target: Target,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float,
    ) -> Attempt:
        """One attempt; the outcome says what the network or the endpoint did.

        Raises ValueError only for headers that cannot be sent (a caller's mistake).
        """
        request_headers = _request_headers(target, headers, body)
        backend = self.backend()
        exchange = _Exchange()
        started = time.perf_counter()

        def attempt(outcome: Outcome, detail: str) -> Attempt:
            return Attempt(
                outcome=outcome,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                status=exchange.status,
                address=None if backend.address is None else str(backend.address),
                detail=detail,
            )

        try:
            async with asyncio.timeout(timeout_seconds):
                await self._exchange(
                    target,
                    headers=request_headers,
                    body=body,
                    backend=backend,
                    exchange=exchange,
                    timeout_seconds=timeout_seconds,
                )
        except _FAILURES as error:
            return attempt(*_failure(error, backend))
        return attempt(*self._answered(exchange))

    def _answered(self, exchange: _Exchange) -> tuple[Outcome, str]:
        status = exchange.status
        assert status is not None
        if exchange.oversized:
            limit = self._max_response_bytes
            return Outcome.INVALID_RESPONSE, f"The answer's body exceeds {limit} bytes; not read."
        if 200 <= status < 300:  # noqa: PLR2004
            return Outcome.DELIVERED, f"The endpoint answered {status}."
        if 300 <= status < 400:  # noqa: PLR2004
            return (
                Outcome.HTTP_ERROR,
                f"The endpoint answered {status}; redirects are not followed.",
            )
        return Outcome.HTTP_ERROR, f"The endpoint answered {status}."

    async def _exchange(
        self,
        target: Target,
        *,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        backend: CheckedNetworkBackend,
        exchange: _Exchange,
        timeout_seconds: float,
    ) -> None:
        scheme = target.scheme.encode("ascii")
        host = target.host.encode("ascii")
        connect = min(self._connect_timeout, timeout_seconds)
        request = httpcore.Request(
            b"POST",
            httpcore.URL(scheme=scheme, host=host, port=target.port, target=target.path),
            headers=headers,
            content=body,
            extensions={
                "timeout": {
                    "connect": connect,
                    "read": timeout_seconds,
                    "write": timeout_seconds,
                    "pool": timeout_seconds,
                }
            },
        )
        connection = httpcore.AsyncHTTPConnection(
            origin=httpcore.Origin(scheme=scheme, host=host, port=target.port),
            ssl_context=self._ssl_context if target.scheme == "https" else None,
            http1=True,
            http2=False,
            retries=0,
            network_backend=backend,
        )
        async with connection:
            response = await connection.handle_async_request(request)
            exchange.status = response.status
            try:
                received = 0
                async for chunk in response.aiter_stream():
                    received += len(chunk)
                    if received > self._max_response_bytes:
                        exchange.oversized = True
                        break
            finally:
                await response.aclose()


__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_SECONDS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "CheckedNetworkBackend",
    "HttpDelivery",
]
