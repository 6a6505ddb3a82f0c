"""The seven layers every request passes, outermost first, as plain ASGI middleware.

Order: logging -> request ID -> CORS -> security headers -> authentication -> rate limiting ->
request size limiting -> (authorization and the handler, in the FastAPI app).

Layers share what they learn through ``scope["state"]`` (Starlette's ``request.state``):
``request_id``, ``client``, ``principal``, ``credential`` (its cache key).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any

from starlette.routing import BaseRoute

from hypersdk_contracts.credentials import is_well_formed_api_key
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import RequestCompleted
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    AuthenticateApiKeyRequest,
    AuthenticateRequest,
    Principal,
    RpcRequest,
)
from hypersdk_gateway.adapters.inbound.errors import send_error
from hypersdk_gateway.adapters.inbound.routing import RouteIndex
from hypersdk_gateway.core.credentials import CredentialCache, credential_key
from hypersdk_gateway.core.limits import TokenBuckets, longest_prefix
from hypersdk_gateway.core.requests import (
    accept_request_id,
    accept_traceparent,
    client_address,
)
from hypersdk_gateway.ports.outbound import Backend
from hypersdk_kit.bus import EventPublisher

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("hypersdk_gateway.access")
API_PREFIX = "/api/v1"
LOGIN_PATH = f"{API_PREFIX}/auth/login"
ASYNCAPI_PATH = f"{API_PREFIX}/asyncapi.json"
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", f"{API_PREFIX}/openapi.json", ASYNCAPI_PATH})
SUMMARISED = "refusal_summarised"
"""State key: the call was refused in bulk; a summary audits it, not its own event."""


def is_public(scope: Scope) -> bool:
    """Whether a call needs no credential (probes, the API document, logging in)."""
    path = scope["path"]
    return path in PUBLIC_PATHS or (path == LOGIN_PATH and scope["method"] == "POST")


def state(scope: Scope) -> dict[str, Any]:
    """The per-request state shared by the layers."""
    return scope.setdefault("state", {})  # type: ignore[no-any-return]


def header(scope: Scope, name: bytes) -> str | None:
    """First value of a request header, decoded."""
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def with_headers(send: Send, extra: Callable[[], list[tuple[bytes, bytes]]]) -> Send:
    """Wrap ``send`` so the response start carries ``extra()`` headers."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = dict(message)
            message["headers"] = [*message.get("headers", []), *extra()]
        await send(message)

    return wrapped


def context_of(scope: Scope) -> RequestContext:
    """The request context to carry onto the bus."""
    st = state(scope)
    principal: Principal | None = st.get("principal")
    return RequestContext(
        actor=principal.username if principal else None,
        source_ip=st.get("client"),
        request_id=st.get("request_id"),
        assertion=principal.assertion if principal else None,
        grant=st.get("grant"),
        traceparent=st.get("traceparent"),
    )


class EventSlot:
    """One API call's room among the pending events: claimed at most once, then kept."""

    def __init__(self, acquire: Callable[[], Awaitable[bool]]) -> None:
        self._acquire = acquire
        self._outcome: bool | None = None
        self.refusal_sent = False

    @property
    def held(self) -> bool:
        """Whether the call holds room (to give back when it is done)."""
        return self._outcome is True

    async def claim(self) -> bool:
        """Whether the call holds room (waiting for some the first time it is asked)."""
        if self._outcome is None:
            self._outcome = await self._acquire()
        return self._outcome


async def send_unaudited_refusal(
    send: Send, *, request_id: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """The 503 of a call that found no room among the pending events."""
    await send_error(
        send,
        code=ErrorCode.UPSTREAM_UNAVAILABLE,
        request_id=request_id,
        message="The audit trail is not keeping up; retry later.",
        headers=[*(headers or []), (b"retry-after", b"1")],
    )


class LoggingLayer:
    """One structured line per request, and a ``gateway.request.completed`` event per API call.

    Never logs headers, bodies, tokens or keys; the path is logged as its route template.

    An API call's response is complete only once its event is confirmed (its last body chunk
    waits for the confirm): a client that received a whole answer finds the call in the audit
    log. When the event is not confirmed the client gets 503 instead (decision 0032).

    At most ``max_pending_events`` API calls are in progress with their events not yet
    confirmed by the broker: a call that finds none free waits for one before anything else
    happens, and after ``pending_event_wait_seconds`` gets 503 (the audit trail is not keeping
    up), so a gateway faster than its audit pipeline slows down instead of holding events in
    memory without bound. A call claims its room once it has its whole body (``SizeLimitLayer``
    claims it before the handler runs) or when it is answered before that, never while its
    body is still on the way: clients that stall their bodies hold no room (decision 0023).
    Calls refused in bulk (``SUMMARISED``) are audited by their summary, not one by one.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        events: EventPublisher,
        routes: Sequence[BaseRoute] = (),
        max_pending_events: int = 256,
        pending_event_wait_seconds: float = 5.0,
    ) -> None:
        self.app = app
        self.events = events
        self._routes = RouteIndex(routes)
        self.pending_event_wait_seconds = pending_event_wait_seconds
        self._event_slots = asyncio.Semaphore(max_pending_events)

    def route_template(self, scope: Scope) -> str:
        """The route template of the request, even when a layer answered before routing.

        A path that matches no route is recorded as ``(unmatched)``, never as itself: a client
        may have put a credential in it.
        """
        matched = getattr(scope.get("route"), "path", None)
        if matched:
            return str(matched)
        route = self._routes.route_of(scope)
        return "(unmatched)" if route is None else str(getattr(route, "path", "(unmatched)"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and record its outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        if not scope["path"].startswith(API_PREFIX):
            await self._unaudited(scope, receive, send, started)
            return
        slot = state(scope)["event_slot"] = EventSlot(self._event_slot)
        try:
            await self._audited(scope, receive, send, started, slot)
        finally:
            if slot.held:
                self._event_slots.release()

    async def _unaudited(self, scope: Scope, receive: Receive, send: Send, started: float) -> None:
        status = 500

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self._log(scope, status, (time.perf_counter() - started) * 1000, context_of(scope))

    async def _audited(
        self, scope: Scope, receive: Receive, send: Send, started: float, slot: EventSlot
    ) -> None:
        """Pass the response on, its last body chunk only once its event is confirmed.

        The response start is held until the first body chunk, and the last chunk until the
        app has returned and the call's event is confirmed. A response in one chunk (every
        JSON answer) whose event is not confirmed becomes a 503 instead; a streamed one whose
        start went out already is broken off, so that no client ever receives a complete
        response without its audit event (decision 0032). The wait happens here, after the
        app returned, not inside its ``send``: a coroutine suspended under the app's two dozen
        frames cost about twice as much CPU to resume.
        """
        status = 500
        start: Message | None = None
        last: Message | None = None
        duration_ms = 0.0

        async def watch(message: Message) -> None:
            nonlocal status, start, last, duration_ms
            if message["type"] == "http.response.start":
                status, start = message["status"], message
                return
            if message["type"] == "http.response.body" and not message.get("more_body"):
                last = message
                duration_ms = (time.perf_counter() - started) * 1000
                return
            if start is not None:
                await send(start)
                start = None
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if last is None:  # the app failed (the server answers 500) or never finished
                await self._record_unfinished(
                    scope, 500 if start is not None else status, started, slot
                )
                raise
            await self._release(
                scope, send, slot, status=status, duration_ms=duration_ms, start=start, last=last
            )
            raise
        if last is None:
            await self._record_unfinished(scope, status, started, slot)
            return
        await self._release(
            scope, send, slot, status=status, duration_ms=duration_ms, start=start, last=last
        )

    async def _release(
        self,
        scope: Scope,
        send: Send,
        slot: EventSlot,
        *,
        status: int,
        duration_ms: float,
        start: Message | None,
        last: Message,
    ) -> None:
        """Publish the call's event; once confirmed, send what was held, else refuse."""
        ctx = context_of(scope)
        if state(scope).get(SUMMARISED) or slot.refusal_sent:
            # Audited by a summary, or the size layer's 503 for want of room: no event of its own.
            self._log(scope, status, duration_ms, ctx)
            if start is not None:
                await send(start)
            await send(last)
            return
        if not await slot.claim():  # answered before its body was read (401, 413), no room now
            self._log(scope, 503, duration_ms, ctx)
            if start is None:
                raise EventNotRecordedError
            await self._refuse_unaudited(scope, send)
            return
        if not await self._publish(scope, status, duration_ms, ctx):
            self._log(scope, 503, duration_ms, ctx)
            if start is None:
                raise EventNotRecordedError
            await self._refuse_unaudited(
                scope, send, message="The call could not be audited; retry later."
            )
            return
        self._log(scope, status, duration_ms, ctx)
        if start is not None:
            await send(start)
        await send(last)

    async def _record_unfinished(
        self, scope: Scope, status: int, started: float, slot: EventSlot
    ) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        ctx = context_of(scope)
        if not state(scope).get(SUMMARISED) and not slot.refusal_sent and await slot.claim():
            await self._publish(scope, status, duration_ms, ctx)
        self._log(scope, status, duration_ms, ctx)

    async def _event_slot(self) -> bool:
        if not self._event_slots.locked():
            await self._event_slots.acquire()  # free: returns at once
            return True
        try:
            async with asyncio.timeout(self.pending_event_wait_seconds):
                await self._event_slots.acquire()
        except TimeoutError:
            return False
        return True

    async def _refuse_unaudited(
        self,
        scope: Scope,
        send: Send,
        *,
        message: str = "The audit trail is not keeping up; retry later.",
    ) -> None:
        """503 with the request ID and the security headers the other layers would add."""
        st = state(scope)
        request_id = st.get("request_id") or accept_request_id(header(scope, b"x-request-id"))
        st["request_id"] = request_id
        await send_error(
            send,
            code=ErrorCode.UPSTREAM_UNAVAILABLE,
            request_id=request_id,
            message=message,
            headers=[
                *security_headers(scope),
                (b"x-request-id", request_id.encode()),
                (b"retry-after", b"1"),
            ],
        )

    def _log(self, scope: Scope, status: int, duration_ms: float, ctx: RequestContext) -> None:
        logger.info(
            "request",
            extra={
                "method": scope["method"],
                "route": self.route_template(scope),
                "status": status,
                "duration_ms": round(duration_ms, 2),
                "principal": ctx.actor,
                "request_id": ctx.request_id,
                "client": ctx.source_ip,
            },
        )

    async def _publish(
        self, scope: Scope, status: int, duration_ms: float, ctx: RequestContext
    ) -> bool:
        """Publish the call's event; whether the broker confirmed it."""
        route = self.route_template(scope)
        try:
            await self.events.publish(
                RequestCompleted(
                    method=scope["method"],
                    route=route,
                    status=status,
                    duration_ms=round(duration_ms, 2),
                ),
                subject=f"{scope['method']} {route}",
                context=ctx,
            )
        except Exception:
            logger.exception("could not publish gateway.request.completed")
            return False
        return True


class EventNotRecordedError(Exception):
    """A streamed response's event was not confirmed after its start went out: break it off."""


class RequestIdLayer:
    """Keeps a well-formed ``X-Request-ID`` or makes one; echoes it on every response."""

    def __init__(self, app: ASGIApp, *, trusted_proxies: list[str]) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Assign the ID (and the client address, which every later layer needs)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(header(scope, b"x-request-id"))
        st = state(scope)
        st["request_id"] = request_id
        st["traceparent"] = accept_traceparent(header(scope, b"traceparent"))
        peer = scope.get("client")
        st["client"] = client_address(
            peer[0] if peer else None, header(scope, b"x-forwarded-for"), self.trusted_proxies
        )
        await self.app(
            scope, receive, with_headers(send, lambda: [(b"x-request-id", request_id.encode())])
        )


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")


def security_headers(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The security headers for a response to ``scope``."""
    if scope.get("scheme") == "https":
        return [*_SECURITY_HEADERS, _HSTS]
    return list(_SECURITY_HEADERS)


class CorsLayer:
    """CORS from an explicit allow-list; preflights are answered here, before authentication."""

    allow_methods = b"GET, POST, PUT, PATCH, DELETE"
    allow_headers = frozenset({"authorization", "content-type", "x-api-key", "x-request-id"})
    expose_headers = b"X-Request-ID, Retry-After, RateLimit, RateLimit-Policy"

    def __init__(
        self, app: ASGIApp, *, origins: list[str], allow_credentials: bool, max_age: int = 600
    ) -> None:
        self.app = app
        self.origins = frozenset(origins)
        self.allow_credentials = allow_credentials
        self.max_age = max_age

    def _allowed(self, origin: str) -> bool:
        return origin in self.origins or ("*" in self.origins and not self.allow_credentials)

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin.encode()), (b"vary", b"Origin")]
        if self.allow_credentials:
            headers.append((b"access-control-allow-credentials", b"true"))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer preflights; decorate responses to allowed origins."""
        origin = header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = self._allowed(origin)
        requested = header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and requested is not None:
            headers = [*security_headers(scope), (b"vary", b"Origin")]
            if allowed:
                wanted = [
                    h.strip().lower()
                    for h in (header(scope, b"access-control-request-headers") or "").split(",")
                    if h.strip()
                ]
                headers = [
                    *security_headers(scope),
                    *self._cors_headers(origin),
                    (b"access-control-allow-methods", self.allow_methods),
                    (
                        b"access-control-allow-headers",
                        ", ".join(h for h in wanted if h in self.allow_headers).encode(),
                    ),
                    (b"access-control-max-age", str(self.max_age).encode()),
                ]
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if not allowed:
            await self.app(scope, receive, with_headers(send, lambda: [(b"vary", b"Origin")]))
            return
        extra = [
            *self._cors_headers(origin),
            (b"access-control-expose-headers", self.expose_headers),
        ]
        await self.app(scope, receive, with_headers(send, lambda: extra))


CHALLENGE = (b"www-authenticate", b'Bearer realm="hypersdk", ApiKey header="X-API-Key"')
"""What a 401 asks for: a session token, or an API key in X-API-Key (RFC 9110 11.6.1)."""
UNAUTHORIZED = 401


class SecurityHeadersLayer:
    """Security headers on every response, errors included; the credential challenge on 401s."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Decorate the response start."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def decorated(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = security_headers(scope)
                if message["status"] == UNAUTHORIZED:
                    extra.append(CHALLENGE)
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, decorated)


class AuthenticationLayer:
    """Resolves the credential to a principal via identity; 401 when there is none.

    A session token (``Authorization: Bearer``) or an API key (``X-API-Key``), not both. What
    identity answers is kept for a few seconds in the credential cache, which any revocation
    event empties, so a logout or a key revocation holds at once on every gateway replica
    (decision 0015). Refusals are never cached. A malformed key (wrong prefix or checksum) is
    refused here.
    """

    def __init__(self, app: ASGIApp, *, backend: Backend, cache: CredentialCache) -> None:
        self.app = app
        self.backend = backend
        self.cache = cache
        self._lookups: dict[tuple[bytes, int], asyncio.Future[Principal]] = {}
        self._refreshes: set[asyncio.Task[None]] = set()

    async def _principal(
        self, credential: str, queue: str, request: Callable[[], RpcRequest], scope: Scope
    ) -> Principal:
        """The principal of a credential: from the cache, or asked of identity and cached.

        Calls that miss the cache together with the same credential share one question to
        identity (when an entry expires under load, identity is asked once, not once per call).
        A call never joins a question asked before the last revocation: its answer may predate it.
        """
        key = credential_key(credential)
        state(scope)["credential"] = key
        cached = self.cache.principal(key)
        if cached is not None:
            if self.cache.should_refresh(key):
                refresh = asyncio.create_task(
                    self._refresh(key, queue, request(), generation=self.cache.generation)
                )
                self._refreshes.add(refresh)
                refresh.add_done_callback(self._refreshes.discard)
            return cached
        flight = (key, self.cache.generation)
        lookup = self._lookups.get(flight)
        if lookup is None:
            lookup = asyncio.ensure_future(
                self._ask_identity(key, queue, request(), generation=flight[1])
            )
            self._lookups[flight] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(flight, None))
        # Shielded: a caller that goes away does not cancel the others' answer.
        return await asyncio.shield(lookup)

    async def _refresh(
        self, key: bytes, queue: str, request: RpcRequest, *, generation: int
    ) -> None:
        """Ask identity again for a cached credential while its entry keeps serving."""
        try:
            await self._ask_identity(key, queue, request, generation=generation)
        except ServiceError as exc:
            if exc.code is not ErrorCode.UPSTREAM_UNAVAILABLE:
                self.cache.forget(key, generation=generation)  # identity no longer accepts it
        except Exception:
            logger.exception("refreshing a cached credential failed")

    async def _ask_identity(
        self, key: bytes, queue: str, request: RpcRequest, *, generation: int
    ) -> Principal:
        principal = Principal.model_validate(await self.backend.ask(queue, request))
        self.cache.remember_principal(key, principal, generation=generation)
        return principal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate everything but the public paths."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        st = state(scope)
        path = scope["path"]
        if path in PUBLIC_PATHS or (path == LOGIN_PATH and scope["method"] == "POST"):
            await self.app(scope, receive, send)
            return
        authorization = header(scope, b"authorization") or ""
        scheme, _, token = authorization.partition(" ")
        api_key = header(scope, b"x-api-key")
        if api_key is not None:
            if authorization:
                await send_error(
                    send,
                    code=ErrorCode.UNAUTHENTICATED,
                    request_id=st["request_id"],
                    message="Send a session token or an API key, not both.",
                )
                return
            await self._with_api_key(api_key.strip(), scope, receive, send)
            return
        if scheme.lower() != "bearer" or not token.strip():
            await send_error(
                send,
                code=ErrorCode.UNAUTHENTICATED,
                request_id=st["request_id"],
                message="Authentication is required.",
            )
            return
        token = token.strip()[:512]
        try:
            principal = await self._principal(
                f"session:{token}",
                RpcQueue.IDENTITY_AUTHENTICATE,
                lambda: AuthenticateRequest(token=token, context=context_of(scope)),
                scope,
            )
        except ServiceError as exc:
            code: ErrorCode
            if exc.code is ErrorCode.UPSTREAM_UNAVAILABLE:
                code, message = exc.code, exc.message
            else:
                code, message = ErrorCode.UNAUTHENTICATED, "The session is missing or expired."
            await send_error(send, code=code, request_id=st["request_id"], message=message)
            return
        st["principal"] = principal
        st["token"] = token
        await self.app(scope, receive, send)

    async def _with_api_key(self, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        st = state(scope)
        refused = "The API key is not valid."
        if not is_well_formed_api_key(key):
            await send_error(
                send, code=ErrorCode.UNAUTHENTICATED, request_id=st["request_id"], message=refused
            )
            return
        try:
            principal = await self._principal(
                f"apikey:{key}",
                RpcQueue.IDENTITY_AUTHENTICATE_API_KEY,
                lambda: AuthenticateApiKeyRequest(key=key, context=context_of(scope)),
                scope,
            )
        except ServiceError as exc:
            code: ErrorCode = ErrorCode.UNAUTHENTICATED
            message = refused
            if exc.code is ErrorCode.UPSTREAM_UNAVAILABLE:
                code, message = exc.code, exc.message
            await send_error(send, code=code, request_id=st["request_id"], message=message)
            return
        st["principal"] = principal
        await self.app(scope, receive, send)


class RateLimitLayer:
    """Token buckets per endpoint group and principal (client address when anonymous).

    A call spends one token from the group of the longest path prefix in ``groups`` that it
    falls under (login is such a group, and always anonymous, so per client address), or else
    from the ``default`` group. Each group has its own buckets.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default: TokenBuckets,
        groups: Mapping[str, TokenBuckets],
        count_anonymous_refusal: Callable[[str], None] | None = None,
    ) -> None:
        self.app = app
        self.default = default
        self.groups = dict(groups)
        # Anonymous refusals are summarised per address rather than audited one by one.
        self.count_anonymous_refusal = count_anonymous_refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Spend a token or answer 429."""
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        st = state(scope)
        principal: Principal | None = st.get("principal")
        group = longest_prefix(scope["path"], self.groups)
        buckets = self.default if group is None else self.groups[group]
        who = f"user:{principal.username}" if principal else f"addr:{st['client']}"
        verdict = buckets.take(f"{group or '*'} {who}")
        headers = [
            (b"ratelimit-policy", f"{verdict.limit};w=60".encode()),
            (
                b"ratelimit",
                f"limit={verdict.limit}, remaining={verdict.remaining}, "
                f"reset={verdict.reset_seconds}".encode(),
            ),
        ]
        if not verdict.allowed:
            if principal is None and self.count_anonymous_refusal is not None:
                st[SUMMARISED] = True
                self.count_anonymous_refusal(st["client"])
            await send_error(
                send,
                code=ErrorCode.RATE_LIMITED,
                request_id=st["request_id"],
                message="Too many requests; retry later.",
                headers=[*headers, (b"retry-after", str(verdict.reset_seconds).encode())],
            )
            return
        await self.app(scope, receive, with_headers(send, lambda: headers))


class SizeLimitLayer:
    """Refuses bodies over the limit: by Content-Length before reading, else while streaming.

    A body must arrive whole within ``body_timeout_seconds``, else 408 ``request_timeout`` and
    the connection is closed. Once the body is here, the call claims its room among the
    pending events (see :class:`LoggingLayer`) before the handler runs.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        default_bytes: int,
        limits: dict[str, int],
        body_timeout_seconds: float = 30.0,
    ) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.limits = limits
        self.body_timeout_seconds = body_timeout_seconds

    def limit_for(self, path: str) -> int:
        """The limit of a path: the longest matching prefix, else the default."""
        prefix = longest_prefix(path, self.limits)
        return self.default_bytes if prefix is None else self.limits[prefix]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer up to the limit, then replay the body to the app."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        request_id = state(scope)["request_id"]
        declared = header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_error(
                    send,
                    code=ErrorCode.INVALID_REQUEST,
                    request_id=request_id,
                    message="Content-Length is not a number.",
                )
                return
            if int(declared) > limit:
                await send_error(
                    send,
                    code=ErrorCode.PAYLOAD_TOO_LARGE,
                    request_id=request_id,
                    message=f"The request body exceeds {limit} bytes.",
                )
                return
        body = await self._read_body(receive, send, request_id=request_id, limit=limit)
        if body is None:
            return
        slot: EventSlot | None = state(scope).get("event_slot")
        if slot is not None and not await slot.claim():
            slot.refusal_sent = True
            await send_unaudited_refusal(send, request_id=request_id)
            return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(
        self, receive: Receive, send: Send, *, request_id: str, limit: int
    ) -> bytes | None:
        """The whole body; None once refused (413, 408) or when the client went away."""
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout_seconds):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        await send_error(
                            send,
                            code=ErrorCode.PAYLOAD_TOO_LARGE,
                            request_id=request_id,
                            message=f"The request body exceeds {limit} bytes.",
                        )
                        return None
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            await send_error(
                send,
                code=ErrorCode.REQUEST_TIMEOUT,
                request_id=request_id,
                message=f"The request body did not arrive within {self.body_timeout_seconds:g} s.",
                headers=[(b"connection", b"close")],
            )
            return None
