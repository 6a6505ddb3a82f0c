"""What every command shares: the run's state, options, help with examples, error lines.

The root command is the one place where a failure becomes an error line and an exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import click

from hypersdk_cli.adapters.inbound.output import FORMATS, note
from hypersdk_cli.config import GlobalOptions
from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.platform import Platform
from hypersdk_cli.core.text import printable
from hypersdk_cli.inject import Runtime, Wiring, build, default_wiring
from hypersdk_cli.ports.outbound import ConfigStore

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """The state of one run: options, output format, and the adapters once built."""

    wiring: Wiring
    options: GlobalOptions = field(default_factory=GlobalOptions)
    output: str = "table"
    _store: ConfigStore | None = None
    _runtime: Runtime | None = None

    def store(self) -> ConfigStore:
        """The configuration store (built once)."""
        if self._store is None:
            self._store = self.wiring.store()
        return self._store

    def runtime(self) -> Runtime:
        """The platform client of this run (built once, on first use)."""
        if self._runtime is None:
            self._runtime = build(self.options, self.wiring, self.store())
        return self._runtime

    @property
    def platform(self) -> Platform:
        """The platform's operations."""
        return self.runtime().platform

    def close(self) -> None:
        """Release the API client's connections."""
        if self._runtime is not None:
            self._runtime.api.close()


def app_of(ctx: click.Context) -> App:
    """The run's :class:`App` (a real run's, unless a test passed its own as ``obj``)."""
    app = ctx.find_object(App)
    if app is None:
        app = ctx.find_root().obj = new_app()
    return app


class ExamplesHelp:
    """Help that ends with an ``Examples:`` section, its lines kept as written."""

    examples: Sequence[str] = ()

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Write the examples, then any epilog."""
        if self.examples:
            formatter.write_paragraph()
            formatter.write_text("Examples:")
            formatter.indent()
            for line in self.examples:
                formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
            formatter.dedent()
        super().format_epilog(ctx, formatter)  # type: ignore[misc]


API_KEY_WARNING = "warning: --api-key shows the key in the process list; prefer HYPERSDK_API_KEY."


def _set_option(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _: click.Parameter, value: Any) -> None:
        if value is None:
            return
        app = app_of(ctx)
        app.options = replace(app.options, **{name: value})
        if name == "api_key":
            note(API_KEY_WARNING)

    return callback


def _set_output(ctx: click.Context, _: click.Parameter, value: str | None) -> None:
    if value is not None:
        app_of(ctx).output = value


def global_options() -> list[click.Option]:
    """The options every command accepts, before or after its name (like kubectl's flags)."""
    return [
        click.Option(
            ["--context"],
            expose_value=False,
            callback=_set_option("context"),
            help="Context of the configuration file to use.",
        ),
        click.Option(
            ["--server"],
            expose_value=False,
            callback=_set_option("server"),
            help="Platform URL, e.g. https://hypersdk.example.com (overrides the context's).",
        ),
        click.Option(
            ["--ca-bundle"],
            type=click.Path(exists=True, dir_okay=False),
            expose_value=False,
            callback=_set_option("ca_bundle"),
            help="PEM file of the CAs that sign the server's certificate.",
        ),
        click.Option(
            ["--pin-sha256"],
            expose_value=False,
            callback=_set_option("pin_sha256"),
            help="SHA-256 fingerprint of the server's certificate (the only one accepted).",
        ),
        click.Option(
            ["--api-key"],
            expose_value=False,
            callback=_set_option("api_key"),
            help="API key (X-API-Key). Visible in the process list: prefer HYPERSDK_API_KEY.",
        ),
        click.Option(
            ["--timeout"],
            type=click.FloatRange(1, 600),
            expose_value=False,
            callback=_set_option("timeout_seconds"),
            help="Seconds an answer may take (default 30).",
        ),
        click.Option(
            ["-o", "--output"],
            type=click.Choice(FORMATS),
            expose_value=False,
            callback=_set_output,
            help="Output format (default: table; json and yaml are the API's JSON).",
        ),
    ]


def _with_global_options(params: list[click.Parameter]) -> None:
    """Add the global options a command does not define itself (``set-context --server``)."""
    taken = {opt for param in params for opt in param.opts}
    params.extend(option for option in global_options() if not taken & set(option.opts))


class Command(ExamplesHelp, click.Command):
    """A hyperctl command; it accepts the global options too."""

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = examples
        _with_global_options(self.params)


class Group(ExamplesHelp, click.Group):
    """A hyperctl command group; its commands and subgroups are hyperctl's too."""

    command_class = Command
    group_class: type[click.Group] | type[type] | None = type

    def __init__(self, *args: Any, examples: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.examples = examples
        _with_global_options(self.params)


class Root(Group):
    """``hyperctl``: turns every failure into one line on stderr and an exit code."""

    group_class = Group

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a failure prints one line, never a stack trace."""
        try:
            return super().invoke(ctx)
        except CliError as error:
            click.echo(printable(error.line(), one_line=True), err=True)
            ctx.exit(error.exit_code)
        except (KeyboardInterrupt, click.Abort):
            click.echo("\nerror: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException):
            raise
        except Exception as exc:  # never a stack trace, whatever went wrong
            click.echo(
                f"error: internal_error: hyperctl failed unexpectedly ({type(exc).__name__}).",
                err=True,
            )
            ctx.exit(ExitCode.ERROR)
        finally:
            app = ctx.find_object(App)
            if app is not None:
                app.close()


def new_app() -> App:
    """The state of a real run."""
    return App(wiring=default_wiring())
