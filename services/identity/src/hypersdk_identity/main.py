"""Run the identity service."""

from __future__ import annotations

from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.inject import SERVICE, prepare_identity
from hypersdk_kit.runtime import serve_until_stopped


async def serve(settings: IdentitySettings) -> None:
    """Answer identity requests until stopped."""
    async with prepare_identity(settings) as (_, broker):
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
        )
