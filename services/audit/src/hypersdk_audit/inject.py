"""Composition root of the audit service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import unquote, urlsplit

import asyncpg
from faststream.rabbit import RabbitBroker

from hypersdk_audit.adapters.inbound.bus import register_consumers
from hypersdk_audit.adapters.outbound.postgres import PostgresAuditLog
from hypersdk_audit.config import AuditSettings
from hypersdk_audit.core.attribution import Attribution
from hypersdk_audit.core.service import AuditService
from hypersdk_contracts.events import AuditRequestRejected
from hypersdk_kit.bus import RabbitEventPublisher, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.runtime import Component
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key

SERVICE = "audit"


async def create_audit_pool(dsn: str, *, size: int) -> asyncpg.Pool:
    """The audit service's pool, every execution planned for the chain as it is now.

    A batch's duplicate check then uses the event_id index however long the chain has grown
    since the statement was prepared (decision 0016).
    """
    return await create_pool(dsn, size=size, custom_plans=True)


@asynccontextmanager
async def prepare_audit(
    settings: AuditSettings,
) -> AsyncIterator[tuple[AuditService, RabbitBroker, list[Component]]]:
    """The audit use cases wired to PostgreSQL and the bus (broker and consumer not started)."""
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    pool = await create_audit_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    try:
        amqp_url = settings.amqp_url.get_secret_value()
        attribution = Attribution(
            # Audit's own events come back on its queue under its own login.
            publishers={**settings.publishers, _login_of(amqp_url): SERVICE},
            seals=AssertionVerifier(
                load_public_key(settings.gateway_public_key_file), issuer="gateway"
            ),
        )
        audit = AuditService(log=PostgresAuditLog(pool), attribution=attribution)
        keys = TrustKeys(settings)
        policy_keys = await keys.public(
            "policy",
            file=settings.policy_public_key_file,
            transit_key=settings.policy_transit_key,
        )
        guard = RequestGuard(
            events=RabbitEventPublisher(
                broker, service=SERVICE, declare_topology=settings.declare_topology
            ),
            rejected=AuditRequestRejected,
            grants=AssertionVerifier(policy_keys, issuer="policy"),
            seals=AssertionVerifier(
                load_public_key(settings.gateway_public_key_file), issuer="gateway"
            ),
        )
        events = register_consumers(
            broker,
            audit,
            prefetch=settings.prefetch,
            batch_size=settings.batch_size,
            batch_wait_seconds=settings.batch_wait_seconds,
            guard=guard,
            declare_topology=settings.declare_topology,
        )
        yield audit, broker, [events, *keys.components]
    finally:
        await pool.close()


def _login_of(amqp_url: str) -> str:
    """The broker login in an AMQP URL (RabbitMQ's default, guest, when it names none)."""
    return unquote(urlsplit(amqp_url).username or "guest")
