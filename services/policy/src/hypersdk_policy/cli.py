"""Command line of the policy service: ``serve`` (default), ``migrate``."""

from __future__ import annotations

from hypersdk_kit.cli import ServiceCli
from hypersdk_policy.adapters.outbound.postgres import MIGRATIONS, SCHEMA
from hypersdk_policy.config import PolicySettings
from hypersdk_policy.inject import SERVICE
from hypersdk_policy.main import serve

CLI = ServiceCli(
    service=SERVICE,
    settings=PolicySettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the policy service."""
    CLI.main(argv)
