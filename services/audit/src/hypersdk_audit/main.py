"""Run the audit service."""

from __future__ import annotations

from hypersdk_audit.config import AuditSettings
from hypersdk_audit.inject import SERVICE, prepare_audit
from hypersdk_contracts.names import AUDIT_EVENTS_QUEUE
from hypersdk_kit.bus import declare_dead_letter_queue
from hypersdk_kit.runtime import serve_until_stopped


async def serve(settings: AuditSettings) -> None:
    """Record events until stopped."""
    async with prepare_audit(settings) as (_, broker, components):
        await broker.connect()
        if settings.declare_topology:
            await declare_dead_letter_queue(broker, AUDIT_EVENTS_QUEUE)
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            components=components,
        )
