"""Composition root of the policy service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import PolicyRequestRejected
from hypersdk_kit.bus import RabbitEventPublisher, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.outbox import build_outbox
from hypersdk_kit.ports import EnvelopePublisher
from hypersdk_kit.runtime import Component
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_public_key
from hypersdk_policy.adapters.inbound.bus import register_subscribers
from hypersdk_policy.adapters.inbound.rpc import register_rpc
from hypersdk_policy.adapters.outbound.postgres import SCHEMA, PostgresRoleStore
from hypersdk_policy.config import PolicySettings
from hypersdk_policy.core.service import PolicyService

SERVICE = "policy"


@asynccontextmanager
async def prepare_policy(
    settings: PolicySettings, *, events: EnvelopePublisher | None = None
) -> AsyncIterator[tuple[PolicyService, RabbitBroker, Sequence[Component]]]:
    """The policy use cases wired to PostgreSQL and the bus (broker not started yet).

    Also the components to start with the broker: the outbox relay (publishing through
    ``events`` if given).
    """
    broker = build_broker(
        settings.amqp_url.get_secret_value(), service=SERVICE, tls=settings.amqp_tls
    )
    pool = await create_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    try:
        publisher = events or RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        outbox = build_outbox(
            pool, settings=settings, schema=SCHEMA, service=SERVICE, publisher=publisher
        )
        policy = PolicyService(roles=PostgresRoleStore(outbox.database), uow=outbox.unit_of_work)
        keys = TrustKeys(settings)
        signer, own_keys = await keys.signer(
            file=settings.signing_key_file,
            transit_key=settings.transit_key,
            issuer=SERVICE,
            ttl_seconds=settings.grant_ttl_seconds,
        )
        identity_keys = await keys.public(
            "identity",
            file=settings.identity_public_key_file,
            transit_key=settings.identity_transit_key,
        )
        guard = RequestGuard(
            events=outbox.unit_of_work,
            rejected=PolicyRequestRejected,
            grants=AssertionVerifier(own_keys, issuer=SERVICE),
            principals=AssertionVerifier(identity_keys, issuer="identity"),
            seals=AssertionVerifier(
                load_public_key(settings.gateway_public_key_file), issuer="gateway"
            ),
        )
        register_rpc(broker, policy, guard=guard, signer=signer)
        register_subscribers(broker, policy, declare_topology=settings.declare_topology)
        yield policy, broker, [outbox.relay, *keys.components]
    finally:
        await pool.close()
