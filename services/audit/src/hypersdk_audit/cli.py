"""Command line of the audit service: ``serve`` (default), ``migrate``, ``retain``."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

from hypersdk_audit.adapters.outbound.postgres import GRANTS, MIGRATIONS, SCHEMA
from hypersdk_audit.adapters.outbound.postgres_retention import PostgresRetentionStore
from hypersdk_audit.config import AuditSettings
from hypersdk_audit.core.retention import Retention, RetentionPolicy
from hypersdk_audit.inject import SERVICE, checkpoint_signer
from hypersdk_audit.main import serve
from hypersdk_kit.cli import ServiceCli, Subcommand
from hypersdk_kit.database import SchemaAccess, ServiceRole, create_pool
from hypersdk_kit.transit import TrustKeys

logger = logging.getLogger(__name__)


def access(settings: AuditSettings) -> SchemaAccess:
    """Audit's schema has an owner of its own: the service appends, retention cuts (0048)."""
    others = {}
    if settings.retention_database_url is not None:
        others["retention"] = ServiceRole.of_dsn(settings.retention_database_url.get_secret_value())
    return SchemaAccess(grants=GRANTS, others=others)


def retention_policy(settings: AuditSettings) -> RetentionPolicy:
    """The limits configured."""
    days = settings.retention_max_age_days
    return RetentionPolicy(
        max_age=None if days is None else timedelta(days=days),
        max_entries=settings.retention_max_entries,
    )


async def retain(settings: AuditSettings, _args: argparse.Namespace) -> None:
    """One retention run as the retention role (a CronJob's, or an operator's)."""
    if settings.retention_database_url is None:
        raise SystemExit("hypersdk-audit retain needs HYPERSDK_AUDIT_RETENTION_DATABASE_URL")
    pool = await create_pool(settings.retention_database_url.get_secret_value(), size=1)
    keys = TrustKeys(settings)
    try:
        retention = Retention(
            store=PostgresRetentionStore(pool),
            signer=await checkpoint_signer(settings, keys),
            policy=retention_policy(settings),
            origin=settings.origin,
        )
        outcome = await retention.run()
        if outcome.cut:
            assert outcome.genesis is not None
            logger.info(
                "cut %d audit entries by %s; the log now starts at size %d",
                outcome.removed,
                outcome.reason,
                outcome.genesis.checkpoint.size,
            )
        else:
            logger.info("retention cut nothing (%s)", outcome.reason)
    finally:
        await pool.close()


CLI = ServiceCli(
    service=SERVICE,
    settings=AuditSettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
    access=access,
    extras={"retain": Subcommand("cut what the retention policy no longer keeps, once", retain)},
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the audit service."""
    CLI.main(argv)
