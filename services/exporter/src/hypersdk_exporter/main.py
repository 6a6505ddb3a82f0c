"""Run the exporter service."""

from __future__ import annotations

from hypersdk_contracts.names import EXPORT_JOBS_QUEUE
from hypersdk_exporter.config import ExporterSettings
from hypersdk_exporter.inject import SERVICE, prepare_exporter
from hypersdk_kit.bus import declare_dead_letter_queue
from hypersdk_kit.runtime import serve_until_stopped


async def serve(settings: ExporterSettings) -> None:
    """Answer questions and run export jobs until stopped."""
    async with prepare_exporter(settings) as (_, broker, components):
        await broker.connect()
        if settings.declare_topology:
            await declare_dead_letter_queue(broker, EXPORT_JOBS_QUEUE)
        await serve_until_stopped(
            broker,
            service=SERVICE,
            health_host=settings.health_host,
            health_port=settings.health_port,
            components=components,
        )
