"""Command line of the exporter: ``serve`` (default), ``migrate``, ``seed-demo-lab``."""

from __future__ import annotations

import argparse
import logging

from hypersdk_contracts.envelope import RequestContext
from hypersdk_exporter.adapters.outbound.local_lab import write_demo_vm
from hypersdk_exporter.adapters.outbound.postgres import MIGRATIONS, SCHEMA
from hypersdk_exporter.config import ExporterSettings
from hypersdk_exporter.inject import SERVICE, prepare_exporter
from hypersdk_exporter.main import serve
from hypersdk_kit.cli import ServiceCli, Subcommand

logger = logging.getLogger(SERVICE)
DEMO_PROVIDER = "demo-lab"
DEMO_DIRECTORY = "demo"


async def seed_demo_lab(settings: ExporterSettings, args: argparse.Namespace) -> None:
    """Write two demo VMs with real disk images and register the ``demo-lab`` provider."""
    directory = settings.lab_root / DEMO_DIRECTORY
    for index, name in enumerate(("web-01", "db-01")):
        write_demo_vm(directory, name=name, size_mib=args.size_mib, seed=index)
    async with prepare_exporter(settings) as (exporter, broker, _):
        await broker.connect()
        try:
            if not any(p.name == DEMO_PROVIDER for p in await exporter.list_providers()):
                await exporter.register_provider(
                    name=DEMO_PROVIDER,
                    type="local",
                    config={"directory": DEMO_DIRECTORY},
                    credential_ref=None,
                    context=RequestContext(),  # no request, so no actor: none could be sealed
                )
        finally:
            await broker.stop()
    logger.info("demo lab ready", extra={"provider": DEMO_PROVIDER, "path": str(directory)})


def _size_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size-mib", type=int, default=32)


CLI = ServiceCli(
    service=SERVICE,
    settings=ExporterSettings,  # filled from the environment
    serve=serve,
    schema=SCHEMA,
    migrations=MIGRATIONS,
    extras={
        "seed-demo-lab": Subcommand(
            help="create demo VMs with real disk images and register provider demo-lab",
            run=seed_demo_lab,
            arguments=_size_argument,
        )
    },
)


def main(argv: list[str] | None = None) -> None:
    """Run one role of the exporter service."""
    CLI.main(argv)
