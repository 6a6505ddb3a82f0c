"""Connection-level limits of the gateway's HTTP server: below the ASGI chain, per socket.

uvicorn's h11 protocol waits for a request's headers without any deadline (its keep-alive
timer stops at a connection's first byte) and accepts any number of connections from one
address. A client could hold connections open for free and starve everyone else. This
protocol closes a connection that has not sent complete request headers within the header
timeout (counted from when the connection opened, or from the first byte of each next
request), and closes at once a connection from an address that already holds the most
connections allowed. Trusted proxies are not capped: every client behind them shares their
address. The body's own deadline is the chain's (``SizeLimitLayer``): it can answer 408.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState


class ConnectionLimits:
    """The limits every connection of one server shares, and its count per address."""

    def __init__(
        self, *, header_timeout_seconds: float, per_address: int, trusted_proxies: list[str]
    ) -> None:
        self.header_timeout_seconds = header_timeout_seconds
        self.per_address = per_address
        self._trusted = [ipaddress.ip_network(net, strict=False) for net in trusted_proxies]
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        """Count a new connection from ``address``, unless that address is at its cap."""
        if self.open[address] >= self.per_address and not self._is_trusted(address):
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        """A connection admitted by :meth:`admit` closed."""
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._trusted)


def limited_h11(limits: ConnectionLimits) -> type[H11Protocol]:
    """The h11 protocol class of uvicorn with ``limits`` applied (as ``Config(http=...)``)."""

    class LimitedH11Protocol(H11Protocol):
        """H11 with a header deadline and a cap on connections per client address."""

        def __init__(
            self,
            config: Config,
            server_state: ServerState,
            app_state: dict[str, Any],
            _loop: asyncio.AbstractEventLoop | None = None,
        ) -> None:
            super().__init__(config, server_state, app_state, _loop)
            self._address: str | None = None
            self._header_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            if address is not None and not limits.admit(address):
                transport.abort()  # refused before a byte is read: nothing to answer yet
                return
            self._address = address
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_header_deadline()
            if self._address is not None:
                limits.release(self._address)
                self._address = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self.cycle is None or self.cycle.response_complete:
                self._await_headers()  # bytes of a next request: its headers are now due
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self._stop_header_deadline()  # a request's headers arrived

        def on_response_complete(self) -> None:
            super().on_response_complete()
            # Idle now: uvicorn's keep-alive timer closes the connection unless a next request
            # begins, and the next request's first bytes start its header deadline.
            self._stop_header_deadline()

        def _await_headers(self) -> None:
            if self._header_deadline is None:
                self._header_deadline = self.loop.call_later(
                    limits.header_timeout_seconds, self._headers_too_slow
                )

        def _stop_header_deadline(self) -> None:
            if self._header_deadline is not None:
                self._header_deadline.cancel()
                self._header_deadline = None

        def _headers_too_slow(self) -> None:
            self._header_deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return LimitedH11Protocol
