"""Composition root of the audit service."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from faststream.rabbit import RabbitBroker

from hypersdk_audit.adapters.inbound.bus import checkpoint_view, register_consumers
from hypersdk_audit.adapters.outbound.postgres import PostgresAuditLog
from hypersdk_audit.adapters.outbound.signers import KeyFileSigner, TransitCheckpointSigner
from hypersdk_audit.adapters.outbound.verifier import ChildProcessVerifier
from hypersdk_audit.config import AuditSettings
from hypersdk_audit.core.proofs import CheckpointSigner
from hypersdk_audit.core.service import AuditService
from hypersdk_auditproof.checkpoint import SignedCheckpoint
from hypersdk_contracts.events import AuditRequestRejected, CheckpointSigned
from hypersdk_kit.bus import RabbitEventPublisher, build_broker
from hypersdk_kit.database import create_pool
from hypersdk_kit.guard import RequestGuard
from hypersdk_kit.runtime import Component, Periodic
from hypersdk_kit.transit import TrustKeys
from hypersdk_kit.trust import AssertionVerifier, load_private_key, load_public_key

SERVICE = "audit"
logger = logging.getLogger(__name__)


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
        # Audit's own events come back on its queue under its own login.
        attribution = settings.attribution(
            service=SERVICE,
            amqp_url=settings.amqp_url.get_secret_value(),
            seals=AssertionVerifier(
                load_public_key(settings.gateway_public_key_file), issuer="gateway"
            ),
        )
        log = PostgresAuditLog(pool)
        caught_up = await log.catch_up_tree()
        if caught_up:
            logger.info("gave %d entries chained before the Merkle tree their leaves", caught_up)
        keys = TrustKeys(settings)
        events_out = RabbitEventPublisher(
            broker, service=SERVICE, declare_topology=settings.declare_topology
        )
        audit = AuditService(
            log=log,
            attribution=attribution,
            signer=await checkpoint_signer(settings, keys),
            verifier=ChildProcessVerifier(),
            origin=settings.origin,
            published=functools.partial(_publish_checkpoint, events_out),
        )
        policy_keys = await keys.public(
            "policy",
            file=settings.policy_public_key_file,
            transit_key=settings.policy_transit_key,
        )
        guard = RequestGuard(
            events=events_out,
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
        checkpoints = Periodic(
            "signing a checkpoint",
            audit.checkpoint,
            interval_seconds=settings.checkpoint_interval_seconds,
        )
        yield audit, broker, [events, checkpoints, *keys.components]
    finally:
        await pool.close()


async def checkpoint_signer(settings: AuditSettings, keys: TrustKeys) -> CheckpointSigner:
    """The audit key: Vault transit, or a local key file."""
    if settings.checkpoint_transit_key is not None:
        return TransitCheckpointSigner(
            await keys.transit_signer(
                settings.checkpoint_transit_key, issuer=SERVICE, readiness=False
            )
        )
    assert settings.checkpoint_key_file is not None
    return KeyFileSigner(load_private_key(settings.checkpoint_key_file))


async def _publish_checkpoint(events: RabbitEventPublisher, signed: SignedCheckpoint) -> None:
    """For witnesses: the checkpoint as an event (confirmed by the broker)."""
    view = checkpoint_view(signed)
    await events.publish(
        CheckpointSigned(**view.model_dump()), subject=f"checkpoint/{view.size}", context=None
    )
