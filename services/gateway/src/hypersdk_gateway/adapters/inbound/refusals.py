"""Floods of refused calls: failed authentications throttled per address, refusals summarised.

Every call that fails authentication spends a token of its client address's bucket (spent
before identity is asked, given back when the call authenticates); an address with none left
gets 429 with ``Retry-After`` before identity is asked (so before any hash is computed),
unless its credential is one the gateway already verified (cached). Such
refusals, and anonymous calls over their rate limit, are not audited one by one: they are
counted per address and reason, and each window ends with one ``gateway.refusals.summarized``
event per address and reason, with the count (decision 0024).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Literal

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode
from hypersdk_contracts.events import RefusalsSummarized
from hypersdk_gateway.adapters.inbound.errors import send_error
from hypersdk_gateway.adapters.inbound.middleware import (
    API_PREFIX,
    SUMMARISED,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    header,
    is_public,
    state,
)
from hypersdk_gateway.core.credentials import CredentialCache, credential_key
from hypersdk_gateway.core.limits import TokenBuckets
from hypersdk_kit.bus import EventPublisher

logger = logging.getLogger(__name__)

Reason = Literal["authentication_failures", "rate_limited"]
UNAUTHORIZED = 401


class RefusalSummary:
    """Counts refused calls per client address and reason; one event each per window.

    A window opens with the first refusal counted after the last one closed and lasts
    ``window_seconds``. At most ``max_addresses`` addresses are told apart in a window; the
    refusals of any further ones are counted together, without an address.
    """

    def __init__(
        self, events: EventPublisher, *, window_seconds: float, max_addresses: int = 10_000
    ) -> None:
        self._events = events
        self._window_seconds = window_seconds
        self._max_addresses = max_addresses
        self._counts: dict[tuple[str | None, Reason], tuple[datetime, int]] = {}
        self._window: asyncio.Task[None] | None = None

    def count(self, address: str, reason: Reason) -> None:
        """Count one refused call from ``address``."""
        key: tuple[str | None, Reason] = (address, reason)
        if key not in self._counts and len(self._counts) >= self._max_addresses:
            key = (None, reason)
        started, refused = self._counts.get(key, (datetime.now(UTC), 0))
        self._counts[key] = (started, refused + 1)
        if self._window is None:
            self._window = asyncio.get_running_loop().create_task(self._close_window_later())

    async def _close_window_later(self) -> None:
        await asyncio.sleep(self._window_seconds)
        self._window = None
        await self.flush()

    async def flush(self) -> None:
        """Publish what was counted so far, one event per address and reason, all at once.

        Together, not one confirm after another: a flood from many addresses (a summary each)
        would otherwise hold up shutdown for as many round trips.
        """
        counts, self._counts = self._counts, {}
        ended = datetime.now(UTC)
        outcomes = await asyncio.gather(
            *(
                self._events.publish(
                    RefusalsSummarized(
                        reason=reason,
                        refused=refused,
                        window_started_at=started,
                        window_ended_at=ended,
                    ),
                    subject=API_PREFIX,
                    context=RequestContext(source_ip=address),
                )
                for (address, reason), (started, refused) in counts.items()
            ),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.error(
                    "could not publish gateway.refusals.summarized: %s", type(outcome).__name__
                )

    async def close(self) -> None:
        """End the current window now (on shutdown)."""
        if self._window is not None:
            self._window.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._window
            self._window = None
        await self.flush()


class FailedAuthenticationThrottle:
    """Around the authentication layer: 429 for addresses that failed authentication too often.

    Public paths pass untouched (logins have their own limit and identity's throttling).

    A call that arrives with the same credential while an earlier call is verifying it spends
    no token first: the authentication layer asks identity once for all of them, so it costs
    identity nothing. If that verdict is a refusal, the call's 401 is counted as a failure
    afterwards and summarised rather than audited one by one. Before this, a client whose
    cached credential expired under load (100 calls at once, 10 tokens) got 429 for the 90
    calls that found the bucket empty, though its credential was good.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        failures: TokenBuckets,
        cache: CredentialCache,
        refusals: RefusalSummary,
    ) -> None:
        self.app = app
        self.failures = failures
        self.cache = cache
        self.refusals = refusals
        self._verifying: set[bytes] = set()

    @staticmethod
    def _credential(scope: Scope) -> bytes | None:
        """The call's credential as the cache keys it; None when it sends none."""
        api_key = header(scope, b"x-api-key")
        if api_key is not None:
            return credential_key(f"apikey:{api_key.strip()}")
        scheme, _, token = (header(scope, b"authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        return credential_key(f"session:{token.strip()[:512]}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a throttled address, or authenticate and count a failure."""
        if scope["type"] != "http" or is_public(scope):
            await self.app(scope, receive, send)
            return
        key = self._credential(scope)
        if key is not None and self.cache.holds(key):
            await self.app(scope, receive, send)  # identity is not asked: nothing to spend
            return
        st = state(scope)
        address: str = st["client"]
        if key is not None and key in self._verifying:
            await self.app(scope, receive, self._counting_refusal(scope, send, address))
            return
        # Spent before identity is asked and given back unless the call fails authentication:
        # however many calls arrive at once, at most the bucket's worth reach identity.
        verdict = self.failures.take(address)
        if not verdict.allowed:
            st[SUMMARISED] = True
            self.refusals.count(address, "authentication_failures")
            await send_error(
                send,
                code=ErrorCode.RATE_LIMITED,
                request_id=st["request_id"],
                message="Too many failed authentications from this address; retry later.",
                headers=[(b"retry-after", str(verdict.reset_seconds).encode())],
            )
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] != UNAUTHORIZED:
                self.failures.refund(address)
            await send(message)

        if key is None:
            await self.app(scope, receive, watch)
            return
        self._verifying.add(key)  # calls with this credential join until this one is done
        try:
            await self.app(scope, receive, watch)
        finally:
            self._verifying.discard(key)

    def _counting_refusal(self, scope: Scope, send: Send, address: str) -> Send:
        """``send`` for a call that joined a verification: a 401 counts, summarised."""

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == UNAUTHORIZED:
                state(scope)[SUMMARISED] = True
                self.refusals.count(address, "authentication_failures")
                self.failures.take(address)  # a failure of this address, spent afterwards
            await send(message)

        return watch
