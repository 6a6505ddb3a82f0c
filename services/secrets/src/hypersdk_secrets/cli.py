"""Command line of the secrets service: ``serve`` (default)."""

from __future__ import annotations

from hypersdk_kit.cli import ServiceCli
from hypersdk_secrets.config import SecretsSettings
from hypersdk_secrets.inject import SERVICE
from hypersdk_secrets.main import serve

CLI = ServiceCli(
    service=SERVICE,
    settings=SecretsSettings,  # filled from the environment
    serve=serve,
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the secrets service."""
    CLI.main(argv)
