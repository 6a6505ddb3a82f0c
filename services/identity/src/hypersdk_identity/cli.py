"""Command line of the identity service: ``serve`` (default), ``migrate``, ``bootstrap-admin``."""

from __future__ import annotations

import argparse
import logging
import os

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ServiceError
from hypersdk_identity.adapters.outbound.postgres import MIGRATIONS, SCHEMA
from hypersdk_identity.config import IdentitySettings
from hypersdk_identity.inject import SERVICE, prepare_identity
from hypersdk_identity.main import serve
from hypersdk_kit.cli import ServiceCli, Subcommand

logger = logging.getLogger(SERVICE)


async def bootstrap_admin(settings: IdentitySettings, args: argparse.Namespace) -> None:
    """Create the first admin user, password from HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD."""
    password = os.environ.get("HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD", "")
    if not password:
        raise SystemExit("HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD is not set")
    async with prepare_identity(settings) as (identity, broker, _):
        await broker.connect()
        try:
            created = await identity.ensure_user(
                args.username, password, RequestContext(actor="bootstrap")
            )
        except ServiceError as exc:
            raise SystemExit(f"bootstrap admin refused: {exc.message}") from exc
        finally:
            await broker.stop()
    logger.info(
        "bootstrap admin %s",
        "created" if created else "already present",
        extra={"username": args.username},
    )


def _username_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--username", default="admin")


CLI = ServiceCli(
    service=SERVICE,
    settings=IdentitySettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
    extras={
        "bootstrap-admin": Subcommand(
            help="create the first admin from HYPERSDK_BOOTSTRAP_ADMIN_PASSWORD if absent",
            run=bootstrap_admin,
            arguments=_username_argument,
        )
    },
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the identity service."""
    CLI.main(argv)
