"""What hyperctl keeps between runs: named contexts and the session of each."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime


@dataclass(frozen=True)
class Context:
    """One platform to talk to, like a kubectl context.

    ``pin_sha256`` is the SHA-256 of the server's certificate (DER), lowercase hex without
    colons; with it the certificate must be that one, whoever signed it.
    """

    name: str
    server: str
    ca_bundle: str | None = None
    pin_sha256: str | None = None
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CliConfig:
    """The configuration file: the contexts and which one is current."""

    current_context: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)

    def with_context(self, context: Context) -> CliConfig:
        """The configuration with ``context`` added or replaced."""
        return replace(self, contexts={**self.contexts, context.name: context})


@dataclass(frozen=True)
class StoredSession:
    """A session token and what is known about it; only ever sent to ``server``."""

    server: str
    username: str
    token: str = field(repr=False)
    expires_at: datetime
    refreshed_at: datetime
