"""Composition root of the identity service: builds real adapters, or takes overrides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import bcrypt
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.events import IdentityRequestRejected
from hypersdk_identity.adapters.inbound.rpc import register_rpc
from hypersdk_identity.adapters.outbound.bcrypt_hasher import BcryptPasswordHasher
from hypersdk_identity.adapters.outbound.postgres import (
    PostgresSessionStore,
    PostgresUserStore,
)
from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.core.service import IdentityService, SessionPolicy
from hypersdk_kit.bus import EventPublisher, RabbitEventPublisher, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.trust import (
    AssertionSigner,
    AssertionVerifier,
    load_private_key,
    load_public_key,
)

SERVICE = "identity"


@asynccontextmanager
async def prepare_identity(
    settings: IdentitySettings, *, events: EventPublisher | None = None
) -> AsyncIterator[tuple[IdentityService, RabbitBroker]]:
    """The identity use cases wired to PostgreSQL and the bus (broker not started yet)."""
    broker = build_broker(settings.amqp_url.get_secret_value(), service=SERVICE)
    pool = await create_pool(
        settings.database_url.get_secret_value(), size=settings.database_pool_size
    )
    try:
        hasher = BcryptPasswordHasher(cost=settings.bcrypt_cost)
        publisher = events or RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        identity = IdentityService(
            users=PostgresUserStore(pool),
            sessions=PostgresSessionStore(pool),
            hasher=hasher,
            events=publisher,
            session_policy=SessionPolicy(
                idle_seconds=settings.session_idle_seconds,
                lifetime_seconds=settings.session_lifetime_seconds,
            ),
            dummy_hash=bcrypt.hashpw(
                b"dummy-password-for-timing", bcrypt.gensalt(settings.bcrypt_cost)
            ),
        )
        signer = AssertionSigner(
            load_private_key(settings.signing_key_file),
            issuer=SERVICE,
            ttl_seconds=settings.assertion_ttl_seconds,
        )
        guard = RequestGuard(
            events=publisher,
            rejected=IdentityRequestRejected,
            grants=AssertionVerifier(
                load_public_key(settings.policy_public_key_file), issuer="policy"
            ),
        )
        register_rpc(broker, identity, signer=signer, guard=guard)
        yield identity, broker
    finally:
        await pool.close()
