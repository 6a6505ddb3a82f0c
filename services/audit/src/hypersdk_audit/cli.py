"""Command line of the audit service: ``serve`` (default), ``migrate``."""

from __future__ import annotations

from hypersdk_audit.adapters.outbound.postgres import MIGRATIONS, SCHEMA
from hypersdk_audit.config import AuditSettings
from hypersdk_audit.inject import SERVICE
from hypersdk_audit.main import serve
from hypersdk_kit.cli import ServiceCli

CLI = ServiceCli(
    service=SERVICE,
    settings=AuditSettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the audit service."""
    CLI.main(argv)
