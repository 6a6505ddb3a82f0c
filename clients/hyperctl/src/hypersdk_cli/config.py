"""Which platform a run talks to, and with which credential: flags, environment, context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hypersdk_cli.core.errors import CliError, ExitCode
from hypersdk_cli.core.models import CliConfig

ENV_API_KEY = "HYPERSDK_API_KEY"
ENV_SERVER = "HYPERSDK_SERVER"
ENV_CONTEXT = "HYPERCTL_CONTEXT"
DEFAULT_CONTEXT = "default"


@dataclass(frozen=True)
class GlobalOptions:
    """The options every command takes (before or after its name)."""

    context: str | None = None
    server: str | None = None
    ca_bundle: str | None = None
    pin_sha256: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0


@dataclass(frozen=True)
class Target:
    """Where calls go: the context's name (whose session they may use) and its settings."""

    context: str
    server: str
    ca_bundle: str | None
    pin_sha256: str | None
    api_key: str | None = field(repr=False)


def context_name(options: GlobalOptions, config: CliConfig, environ: Mapping[str, str]) -> str:
    """``--context``, else ``$HYPERCTL_CONTEXT``, else the current context, else ``default``."""
    return options.context or environ.get(ENV_CONTEXT) or config.current_context or DEFAULT_CONTEXT


def resolve_target(options: GlobalOptions, config: CliConfig, environ: Mapping[str, str]) -> Target:
    """The target of a run.

    A context's API key is only sent to the context's own server: ``--server`` elsewhere
    keeps the context's name (and TLS settings) but not its credential.
    """
    name = context_name(options, config, environ)
    context = config.contexts.get(name)
    explicit = options.context or environ.get(ENV_CONTEXT)
    server = options.server or environ.get(ENV_SERVER) or (context.server if context else None)
    if context is None and explicit and server is None:
        raise CliError(
            "no_such_context",
            f"No context {name!r}: see 'hyperctl config get-contexts'.",
            exit_code=ExitCode.NOT_FOUND,
        )
    if server is None:
        raise CliError(
            "no_server",
            "No server: pass --server URL, set HYPERSDK_SERVER, or run"
            " 'hyperctl config set-context NAME --server URL'.",
            exit_code=ExitCode.USAGE,
        )
    server = server.rstrip("/")
    if not server.startswith(("http://", "https://")):
        raise CliError(
            "invalid_argument",
            "A server is an http:// or https:// URL.",
            exit_code=ExitCode.USAGE,
        )
    same_server = context is not None and context.server.rstrip("/") == server
    api_key = options.api_key or environ.get(ENV_API_KEY) or None
    if api_key is None and same_server and context is not None:
        api_key = context.api_key
    return Target(
        context=name,
        server=server,
        ca_bundle=options.ca_bundle or (context.ca_bundle if context else None),
        pin_sha256=options.pin_sha256 or (context.pin_sha256 if same_server and context else None),
        api_key=api_key,
    )
