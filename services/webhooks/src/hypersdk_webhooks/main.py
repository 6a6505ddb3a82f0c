"""Run the webhooks service."""

from __future__ import annotations

from hypersdk_contracts.names import WEBHOOKS_EVENTS_QUEUE
from hypersdk_kit.bus import declare_dead_letter_queue
from hypersdk_kit.runtime import serve_until_stopped
from hypersdk_webhooks.config import WebhooksSettings
from hypersdk_webhooks.core.service import SERVICE
from hypersdk_webhooks.inject import prepare_webhooks


async def serve(settings: WebhooksSettings) -> None:
    """Take events and deliver them until stopped."""
    async with prepare_webhooks(settings) as (_, broker, components):
        await broker.connect()
        if settings.declare_topology:
            await declare_dead_letter_queue(broker, WEBHOOKS_EVENTS_QUEUE)
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            components=components,
        )
