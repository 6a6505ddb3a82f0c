"""Command line of the gateway: ``serve`` (default)."""

from __future__ import annotations

from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.inject import SERVICE
from hypersdk_gateway.main import serve
from hypersdk_kit.cli import ServiceCli

CLI = ServiceCli(
    service=SERVICE,
    settings=GatewaySettings,  # filled from the environment
    serve=serve,
)


def main(argv: list[str] | None = None) -> None:
    """Run the gateway."""
    CLI.main(argv)
