"""Ports: the platform's HTTP API, and where contexts and sessions are kept."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from hypersdk_cli.core.models import CliConfig, StoredSession


@dataclass(frozen=True)
class ApiReply:
    """An answer of the API: status, parsed JSON body (None when empty), headers (lowercase)."""

    status: int
    body: Any
    headers: Mapping[str, str] = field(default_factory=dict)


class PlatformApi(ABC):
    """The platform's public HTTP API (``/api/v1``), one call at a time.

    An answer of any status is returned; a call that got no usable answer (connection refused,
    TLS failure, timeout, a body that is not JSON or too large) raises
    :class:`hypersdk_cli.core.errors.CliError`.
    """

    @abstractmethod
    def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> ApiReply:
        """Send one request to ``/api/v1`` + ``path``."""

    def close(self) -> None:  # noqa: B027 - most adapters hold nothing to release
        """Release connections."""


class ConfigStore(ABC):
    """The configuration file and the session of each context.

    Adapters refuse files others may read, so a token never sits where another user sees it.
    """

    @abstractmethod
    def load_config(self) -> CliConfig:
        """The configuration (empty if there is none yet)."""

    @abstractmethod
    def save_config(self, config: CliConfig) -> None:
        """Replace the configuration."""

    @abstractmethod
    def load_session(self, context: str) -> StoredSession | None:
        """The session stored for ``context``, if any."""

    @abstractmethod
    def save_session(self, context: str, session: StoredSession) -> None:
        """Store ``context``'s session, replacing any other."""

    @abstractmethod
    def delete_session(self, context: str) -> None:
        """Forget ``context``'s session."""

    @abstractmethod
    def session_lock(self, context: str) -> AbstractContextManager[None]:
        """Held while a session is refreshed, so two hyperctl runs never refresh one token."""
