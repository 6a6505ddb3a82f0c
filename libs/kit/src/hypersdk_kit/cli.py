"""One command line shape for every service: ``serve`` (default), ``migrate``, extras."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import uvloop

from hypersdk_kit.database import SchemaAccess, ServiceRole, apply_migrations
from hypersdk_kit.logs import configure_logging
from hypersdk_kit.runtime import restrict_file_modes
from hypersdk_kit.settings import DatabaseSettings, ServiceSettings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Subcommand(Generic[SettingsT]):
    """An extra process role: a help line, argument setup and the coroutine to run."""

    help: str
    run: Callable[[SettingsT, argparse.Namespace], Awaitable[None]]
    arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None


@dataclass(frozen=True)
class ServiceCli(Generic[SettingsT]):
    """The command line of one service."""

    service: str
    settings: Callable[[], SettingsT]
    serve: Callable[[SettingsT], Awaitable[None]]
    schema: str | None = None
    migrations: list[str] = field(default_factory=list)
    extras: dict[str, Subcommand[SettingsT]] = field(default_factory=dict)
    access: Callable[[SettingsT], SchemaAccess] | None = None
    """A schema with an owner of its own: the grants of the service's login and of others."""

    def main(self, argv: list[str] | None = None) -> None:
        """Parse ``argv`` and run the chosen role."""
        parser = argparse.ArgumentParser(prog=f"hypersdk-{self.service}")
        sub = parser.add_subparsers(dest="command")
        sub.add_parser("serve", help="run the service until SIGTERM (default)")
        if self.schema:
            sub.add_parser("migrate", help="apply database migrations and exit")
        for name, extra in self.extras.items():
            extra.arguments(sub.add_parser(name, help=extra.help))
        args = parser.parse_args(argv)
        restrict_file_modes()
        settings = self.settings()
        configure_logging(self.service, settings.log_level)
        # uvloop: the same asyncio API, with a loop and transports in C (decision 0040).
        uvloop.run(self._run(settings, args))

    async def _run(self, settings: SettingsT, args: argparse.Namespace) -> Any:
        if args.command == "migrate":
            assert self.schema is not None
            assert isinstance(settings, DatabaseSettings)
            service_dsn = settings.database_url.get_secret_value()
            admin = settings.migration_database_url
            if admin is None and self.access is not None:
                raise SystemExit(
                    f"hypersdk-{self.service} migrate needs MIGRATION_DATABASE_URL: its schema is "
                    "owned by a role of its own, which only an administrator can act as"
                )
            count = await apply_migrations(
                service_dsn if admin is None else admin.get_secret_value(),
                schema=self.schema,
                migrations=self.migrations,
                owner=None if admin is None else ServiceRole.of_dsn(service_dsn),
                access=None if admin is None or self.access is None else self.access(settings),
            )
            logger.info("applied %d migrations to schema %s", count, self.schema)
        elif args.command in self.extras:
            await self.extras[args.command].run(settings, args)
        else:
            await self.serve(settings)
