"""Run the policy service."""

from __future__ import annotations

from hypersdk_contracts.names import POLICY_USER_DELETIONS_QUEUE
from hypersdk_kit.bus import declare_dead_letter_queue
from hypersdk_kit.runtime import serve_until_stopped
from hypersdk_policy.config import PolicySettings
from hypersdk_policy.inject import SERVICE, prepare_policy


async def serve(settings: PolicySettings) -> None:
    """Answer decisions until stopped; first make sure someone holds the admin role."""
    async with prepare_policy(settings) as (policy, broker, components):
        await broker.connect()
        if settings.declare_topology:
            await declare_dead_letter_queue(broker, POLICY_USER_DELETIONS_QUEUE)
        await policy.ensure_bootstrap_admin(settings.bootstrap_admin)
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            components=components,
        )
