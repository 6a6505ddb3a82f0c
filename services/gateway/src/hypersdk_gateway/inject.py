"""Composition root of the gateway: the FastAPI app inside the seven-layer chain."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from faststream.rabbit import RabbitBroker

from hypersdk_gateway.adapters.inbound.http import ExtendApi, build_api
from hypersdk_gateway.adapters.inbound.middleware import (
    API_PREFIX,
    LOGIN_PATH,
    ASGIApp,
    AuthenticationLayer,
    CorsLayer,
    LoggingLayer,
    RateLimitLayer,
    RequestIdLayer,
    SecurityHeadersLayer,
    SizeLimitLayer,
)
from hypersdk_gateway.adapters.inbound.refusals import FailedAuthenticationThrottle, RefusalSummary
from hypersdk_gateway.adapters.inbound.revocations import RevocationFeed
from hypersdk_gateway.adapters.outbound.rabbit import RabbitBackend
from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.core.credentials import CredentialCache, InvalidatingBackend
from hypersdk_gateway.core.limits import TokenBuckets
from hypersdk_gateway.core.seals import SEAL_ISSUER, SealingBackend
from hypersdk_gateway.ports.outbound import Backend
from hypersdk_kit.bus import EventPublisher, RpcClient, build_broker
from hypersdk_kit.event_batches import BatchingEventPublisher, RabbitEventBatchSender
from hypersdk_kit.trust import AssertionSigner, load_private_key

SERVICE = "gateway"


def build_chain(
    settings: GatewaySettings,
    *,
    backend: Backend,
    events: EventPublisher,
    ready: Callable[[], Awaitable[bool]],
    cache: CredentialCache,
    seals: AssertionSigner,
    extend: ExtendApi | None = None,
    refusals: RefusalSummary | None = None,
) -> ASGIApp:
    """The API wrapped in its layers; the first layer listed here runs first.

    Every request put on the bus is sealed with ``seals`` (the gateway's key) for its queue.
    ``extend`` may add routes to the API before it is wrapped (the benchmark adds one).
    ``refusals`` summarises refused floods (its owner closes it); by default one of its own.
    """
    refusals = refusals or RefusalSummary(events, window_seconds=settings.refusal_summary_seconds)
    backend = InvalidatingBackend(SealingBackend(backend, seals), cache)
    api = build_api(backend, cache=cache, ready=ready, extend=extend)
    body_limits = {f"{API_PREFIX}/exports": settings.max_export_body_bytes, **settings.body_limits}
    app: ASGIApp = SizeLimitLayer(
        api,
        default_bytes=settings.max_body_bytes,
        limits=body_limits,
        body_timeout_seconds=settings.body_timeout_seconds,
    )
    per_minute = {LOGIN_PATH: settings.login_rate_limit_per_minute, **settings.rate_limits}
    app = RateLimitLayer(
        app,
        default=TokenBuckets(capacity=settings.rate_limit_per_minute, period_seconds=60),
        groups={
            prefix: TokenBuckets(capacity=calls, period_seconds=60)
            for prefix, calls in per_minute.items()
        },
        count_anonymous_refusal=lambda address: refusals.count(address, "rate_limited"),
    )
    app = AuthenticationLayer(app, backend=backend, cache=cache)
    app = FailedAuthenticationThrottle(
        app,
        failures=TokenBuckets(capacity=settings.auth_failures_per_minute, period_seconds=60),
        cache=cache,
        refusals=refusals,
    )
    app = SecurityHeadersLayer(app)
    app = CorsLayer(
        app, origins=settings.cors_origins, allow_credentials=settings.cors_allow_credentials
    )
    app = RequestIdLayer(app, trusted_proxies=settings.trusted_proxies)
    return LoggingLayer(
        app,
        events=events,
        routes=api.state.route_table,
        max_pending_events=settings.max_pending_events,
        pending_event_wait_seconds=settings.pending_event_wait_seconds,
    )


@asynccontextmanager
async def prepare_gateway(
    settings: GatewaySettings,
    *,
    extend: ExtendApi | None = None,
    events: EventPublisher | None = None,
) -> AsyncIterator[tuple[ASGIApp, RabbitBroker]]:
    """The gateway wired to the bus; the broker is started here and stopped on exit.

    ``events`` replaces the publisher of events (the benchmark measures the chain without them).
    """
    seals = AssertionSigner(
        load_private_key(settings.signing_key_file),
        issuer=SEAL_ISSUER,
        ttl_seconds=settings.seal_ttl_seconds,
    )
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    cache = CredentialCache(
        ttl_seconds=settings.credential_cache_seconds,
        max_entries=settings.credential_cache_entries,
    )
    feed = RevocationFeed(broker, cache)
    batches = BatchingEventPublisher(
        RabbitEventBatchSender(broker, service=SERVICE, declare_topology=settings.declare_topology),
        service=SERVICE,
        max_batch=settings.event_batch_size,
        max_wait_seconds=settings.event_batch_wait_seconds,
    )
    await broker.start()
    try:
        if settings.credential_cache_seconds > 0:
            await feed.start(declare_topology=settings.declare_topology)

        async def ready() -> bool:
            return await broker.ping(timeout=1.0)

        events = events or batches
        refusals = RefusalSummary(events, window_seconds=settings.refusal_summary_seconds)
        app = build_chain(
            settings,
            backend=RabbitBackend(RpcClient(broker, timeout_seconds=settings.rpc_timeout_seconds)),
            events=events,
            ready=ready,
            cache=cache,
            seals=seals,
            extend=extend,
            refusals=refusals,
        )
        try:
            yield app, broker
        finally:
            await refusals.close()
    finally:
        await batches.close()  # every collected event published and confirmed first
        await feed.stop()
        await broker.stop()
