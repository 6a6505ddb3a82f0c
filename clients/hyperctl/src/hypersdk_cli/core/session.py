"""Credentials a call carries: an API key, or a context's session token kept fresh."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from hypersdk_cli.core.errors import CliError, ExitCode, api_error
from hypersdk_cli.core.models import StoredSession
from hypersdk_cli.ports.outbound import ConfigStore, PlatformApi

REFRESH_AFTER = timedelta(minutes=5)
"""A token older than this is swapped for a new one (POST /auth/refresh) before it is used.

The platform keeps a session's absolute expiry on refresh (decision 0014): refreshing limits
how long one token is exposed and keeps the session clear of the idle timeout; after the
absolute expiry only ``hyperctl login`` helps.
"""

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, UTC."""
    return datetime.now(UTC)


def not_logged_in(context: str, server: str) -> CliError:
    """The error of a command that needs a session the context does not have."""
    return CliError(
        "not_logged_in",
        f"No session for {server} in context {context!r}: run 'hyperctl login'"
        " (or pass an API key with HYPERSDK_API_KEY).",
        exit_code=ExitCode.NOT_AUTHENTICATED,
    )


def parse_instant(value: object) -> datetime:
    """An RFC 3339 time of the API as an aware datetime."""
    parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def session_of(server: str, answer: Any, *, now: datetime) -> StoredSession:
    """The session a login or refresh answered."""
    try:
        return StoredSession(
            server=server,
            username=str(answer["user"]["username"]),
            token=str(answer["token"]),
            expires_at=parse_instant(answer["expires_at"]),
            refreshed_at=now,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CliError(
            "bad_response", "The server's login answer lacks a token, expiry or user."
        ) from exc


class Credentials:
    """The credential of every call of one run.

    An API key (``--api-key``, ``HYPERSDK_API_KEY`` or the context's) wins; otherwise the
    context's session, which is sent only to the server it was issued by, never after its
    expiry, and refreshed once it is older than :data:`REFRESH_AFTER`.
    """

    def __init__(
        self,
        *,
        api: PlatformApi,
        store: ConfigStore,
        context: str,
        server: str,
        api_key: str | None,
        clock: Clock = utc_now,
    ) -> None:
        self._api = api
        self._store = store
        self._context = context
        self._server = server
        self._api_key = api_key
        self._clock = clock
        self._session: StoredSession | None = None

    @property
    def uses_api_key(self) -> bool:
        """Whether calls carry an API key rather than a session token."""
        return self._api_key is not None

    def headers(self) -> dict[str, str]:
        """The header that authenticates a call."""
        if self._api_key is not None:
            return {"X-API-Key": self._api_key}
        return self.session_headers()

    def session_headers(self) -> dict[str, str]:
        """The session's header, for calls only a session may make (an API key never does)."""
        return {"Authorization": f"Bearer {self.session().token}"}

    def session(self) -> StoredSession:
        """The context's session, refreshed if due; CliError (exit 3) if there is none."""
        session = self._session or self._stored()
        if self._clock() - session.refreshed_at >= REFRESH_AFTER:
            session = self._refreshed()
        self._session = session
        return session

    def forget(self) -> None:
        """Drop the stored session (after logout, or once the server refused it)."""
        self._store.delete_session(self._context)
        self._session = None

    def _stored(self) -> StoredSession:
        session = self._store.load_session(self._context)
        if session is None or session.server != self._server:
            # A session is only ever sent to the server that issued it: --server pointing
            # elsewhere must not carry this context's token there.
            raise not_logged_in(self._context, self._server)
        if session.expires_at <= self._clock():
            self._store.delete_session(self._context)
            raise CliError(
                "session_expired",
                f"The session of context {self._context!r} has expired: run 'hyperctl login'.",
                exit_code=ExitCode.NOT_AUTHENTICATED,
            )
        return session

    def _refreshed(self) -> StoredSession:
        with self._store.session_lock(self._context):
            session = self._stored()  # another run may have refreshed it meanwhile
            if self._clock() - session.refreshed_at < REFRESH_AFTER:
                return session
            reply = self._api.call(
                "POST", "/auth/refresh", headers={"Authorization": f"Bearer {session.token}"}
            )
            if reply.status == 200:  # noqa: PLR2004 - HTTP OK
                fresh = session_of(self._server, reply.body, now=self._clock())
                self._store.save_session(self._context, fresh)
                return fresh
            if reply.status == 401:  # noqa: PLR2004 - the session ended (revoked, idle, expired)
                self._store.delete_session(self._context)
                error = api_error(reply.status, reply.body)
                error.message += " Run 'hyperctl login'."
                raise error
            return session  # the platform could not refresh now; the token still works
