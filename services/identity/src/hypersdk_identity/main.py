"""Run the identity service: answer requests, and sweep expired sessions and lockouts."""

from __future__ import annotations

import logging

from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.core.service import IdentityService
from hypersdk_identity.inject import SERVICE, prepare_identity
from hypersdk_kit.runtime import Periodic, serve_until_stopped

logger = logging.getLogger(__name__)


def sweeper(identity: IdentityService, *, interval_seconds: float) -> Periodic:
    """Sweeps expired sessions and lockouts every ``interval_seconds``.

    The first sweep runs after one interval (once the bus is up); a failed sweep is logged and
    tried again at the next. Every replica sweeps: the deletes are idempotent, and each expired
    lockout is returned (and its unlock published) by exactly one of them.
    """

    async def sweep() -> None:
        result = await identity.sweep()
        if result.sessions_deleted or result.lockouts_ended:
            logger.info(
                "swept",
                extra={
                    "sessions_deleted": result.sessions_deleted,
                    "lockouts_ended": result.lockouts_ended,
                },
            )

    return Periodic(
        "sweeping expired sessions and lockouts", sweep, interval_seconds=interval_seconds
    )


async def serve(settings: IdentitySettings) -> None:
    """Answer identity requests until stopped."""
    async with prepare_identity(settings) as (identity, broker, components):
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            components=[
                *components,
                sweeper(identity, interval_seconds=settings.sweep_interval_seconds),
            ],
        )
