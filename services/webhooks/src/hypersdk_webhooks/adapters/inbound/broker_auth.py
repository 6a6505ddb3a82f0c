"""The broker authorizer: RabbitMQ's HTTP auth backend asks it about subscription users.

RabbitMQ (``rabbitmq_auth_backend_http``, ``http_method = post``) POSTs a form to
``/auth/user`` (username, password), ``/auth/vhost``, ``/auth/resource`` (resource, name,
permission) and ``/auth/topic`` (also routing_key), and takes a 200 answer of ``allow`` as a
yes; anything else is a no. The broker asks only about logins its internal database does
not know, so the platform's own users never reach this server.

A small HTTP/1.1 server on asyncio streams, keep-alive (the broker reuses its connections),
bounded: request heads of 4 KiB, bodies of 4 KiB, 64 connections, idle ones closed after
60 s. It should listen where only the broker reaches it (loopback, or a NetworkPolicy): its
answers say no more than the broker's would, but every login it is asked about costs a
lookup. A password is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import parse_qs

from hypersdk_webhooks.core.subscriptions import SubscriptionService

logger = logging.getLogger(__name__)

MAX_HEAD = 4096
MAX_BODY = 4096
MAX_CONNECTIONS = 64
IDLE_SECONDS = 60.0
READ_SECONDS = 5.0
ALLOW, DENY = b"allow", b"deny"
HTTP_SERVER_ERROR = 500


class BadRequestError(Exception):
    """What the client sent is not a request this server takes."""


class BrokerAuthServer:
    """Serves the broker's questions about subscription users (a runtime component)."""

    def __init__(self, subscriptions: SubscriptionService, *, host: str, port: int) -> None:
        self._subscriptions = subscriptions
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port: int | None = None
        """The port listened on, once started (``port=0`` asks the system for one)."""

    async def start(self) -> None:
        """Listen."""
        self._server = await asyncio.start_server(
            self._serve, self._host, self._port, limit=MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("broker authorizer on %s:%d", self._host, self.port)

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None:
            return
        self._server.close()
        # Closing each connection ends its handler (it reads EOF). Cancelling the handlers
        # instead would make asyncio log each one as an error.
        for writer in list(self._writers):
            writer.close()
        if self._handlers:
            _, stuck = await asyncio.wait(set(self._handlers), timeout=5)
            for task in stuck:
                task.cancel()
        await self._server.wait_closed()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        try:
            if len(self._handlers) > MAX_CONNECTIONS:
                await _answer(writer, 503, b"busy", keep_alive=False)
                return
            while await self._one(reader, writer):
                pass
        except asyncio.LimitOverrunError:  # a head over MAX_HEAD
            with contextlib.suppress(ConnectionError):
                await _answer(writer, 431, DENY, keep_alive=False)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._handlers.discard(task)
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; whether to keep the connection."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=IDLE_SECONDS)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                await _answer(writer, 400, DENY, keep_alive=False)
            return False
        try:
            method, path, length, keep_alive = _parse_head(head)
            form = _parse_form(
                await asyncio.wait_for(reader.readexactly(length), timeout=READ_SECONDS)
            )
        except BadRequestError:
            await _answer(writer, 400, DENY, keep_alive=False)
            return False
        status, allowed = await self._status(method, path, form)
        keep_alive = keep_alive and status < HTTP_SERVER_ERROR
        await _answer(writer, status, ALLOW if allowed else DENY, keep_alive=keep_alive)
        return keep_alive

    async def _status(self, method: str, path: str, form: dict[str, str]) -> tuple[int, bool]:
        """The answer's status, and whether it allows."""
        if method != "POST":
            return 405, False
        try:
            return 200, await self._decide(path, form)
        except KeyError:
            return 404, False
        except Exception:  # the store is down, say: the broker refuses (not 200 = no)
            logger.exception("the broker authorizer could not decide %s", path)
            return 503, False

    async def _decide(self, path: str, form: dict[str, str]) -> bool:
        """Raises KeyError for an unknown path."""
        subs = self._subscriptions
        username = form.get("username", "")
        if path == "/auth/user":
            allowed = await subs.authenticate(username, form.get("password", ""))
            logger.debug("login of %r: %s", username[:64], "allowed" if allowed else "refused")
            return allowed
        if path == "/auth/vhost":
            return await subs.may_enter(username, form.get("vhost", ""))
        if path == "/auth/resource":
            return await subs.may_use(
                username,
                vhost=form.get("vhost", ""),
                resource=form.get("resource", ""),
                name=form.get("name", ""),
                permission=form.get("permission", ""),
            )
        if path == "/auth/topic":
            return form.get("resource") == "topic" and await subs.may_route(
                username,
                vhost=form.get("vhost", ""),
                exchange=form.get("name", ""),
                permission=form.get("permission", ""),
                routing_key=form.get("routing_key", ""),
            )
        raise KeyError(path)


def _parse_head(head: bytes) -> tuple[str, str, int, bool]:
    """Method, path, body length and keep-alive of a request head."""
    try:
        lines = head.decode("ascii").split("\r\n")
    except UnicodeDecodeError:
        raise BadRequestError from None
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] not in {"HTTP/1.1", "HTTP/1.0"}:  # noqa: PLR2004
        raise BadRequestError
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise BadRequestError
        key = name.strip().lower()
        if key in headers and key in {"content-length", "transfer-encoding"}:
            raise BadRequestError  # two lengths: a smuggling attempt, never a broker
        headers[key] = value.strip()
    if "transfer-encoding" in headers:
        raise BadRequestError  # the broker always sends a length
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequestError from None
    if not 0 <= length <= MAX_BODY:
        raise BadRequestError
    connection = headers.get("connection", "").lower()
    keep_alive = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
    return method, target.partition("?")[0], length, keep_alive


def _parse_form(body: bytes) -> dict[str, str]:
    """A urlencoded form whose every field appears once."""
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadRequestError from None
    if any(len(values) != 1 for values in fields.values()):
        raise BadRequestError  # a field twice: which one would the broker mean?
    return {name: values[0] for name, values in fields.items()}


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    503: "Service Unavailable",
}


async def _answer(
    writer: asyncio.StreamWriter, status: int, body: bytes, *, keep_alive: bool
) -> None:
    connection = "keep-alive" if keep_alive else "close"
    writer.write(
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
