"""Run the secrets service."""

from __future__ import annotations

from hypersdk_kit.runtime import broker_ready, serve_until_stopped
from hypersdk_secrets.config import SecretsSettings
from hypersdk_secrets.inject import SERVICE, grace_sweeper, prepare_secrets


async def serve(settings: SecretsSettings) -> None:
    """Answer secrets requests until stopped; ready when both the bus and Vault answer."""
    async with prepare_secrets(settings) as (secrets, broker, components):
        bus_ready = broker_ready(broker)

        async def ready() -> bool:
            return await bus_ready() and await secrets.ready()

        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            ready=ready,
            components=[
                grace_sweeper(secrets, interval_seconds=settings.grace_sweep_interval_seconds),
                *components,
            ],
        )
