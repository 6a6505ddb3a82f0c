"""Command line of the webhooks service: ``serve`` (default), ``migrate``."""

from __future__ import annotations

from hypersdk_kit.cli import ServiceCli
from hypersdk_webhooks.adapters.outbound.postgres import MIGRATIONS, SCHEMA
from hypersdk_webhooks.config import WebhooksSettings
from hypersdk_webhooks.core.service import SERVICE
from hypersdk_webhooks.main import serve

CLI = ServiceCli(
    service=SERVICE,
    settings=WebhooksSettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the webhooks service."""
    CLI.main(argv)
