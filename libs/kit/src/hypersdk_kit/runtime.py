"""Process life cycle: umask, signals, health endpoint, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from faststream.rabbit import RabbitBroker

logger = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]


class Component(Protocol):
    """Something on the broker's connection that starts after the broker and stops before it."""

    async def start(self) -> None:
        """Start (the broker is connected)."""

    async def stop(self) -> None:
        """Stop (the broker is still connected)."""


@runtime_checkable
class Reporting(Protocol):
    """A component whose state counts toward the service's readiness (``/readyz``)."""

    async def ready(self) -> bool:
        """Whether the service can do its work as far as this component goes."""
        ...


class Periodic(Component):
    """Runs ``action`` every ``interval_seconds`` (the first after one interval), as a component.

    A failed run is logged and tried again at the next interval; ``stop`` cancels the loop.
    Sweepers use it: every replica runs one, so their actions must be safe to overlap.
    """

    def __init__(
        self, name: str, action: Callable[[], Awaitable[object]], *, interval_seconds: float
    ) -> None:
        self._name = name
        self._action = action
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Cancel the loop and wait for it."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self._action()
            except Exception:  # the next run tries again
                logger.warning("%s failed", self._name, exc_info=True)


def restrict_file_modes() -> None:
    """Files the process creates are 0600 and directories 0700, whatever creates them."""
    os.umask(0o077)


async def start_health_server(
    *, host: str, port: int, ready: ReadinessCheck
) -> asyncio.Server | None:
    """Serve ``GET /healthz`` (alive) and ``GET /readyz`` (dependencies reachable)."""
    if port == 0:
        return None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), timeout=5)
            _method, path, *_ = [*request_line.decode("latin-1").split(), "", ""]
            if path == "/healthz":
                status, body = "200 OK", b'{"status":"ok"}'
            elif path == "/readyz":
                ok = await ready()
                status = "200 OK" if ok else "503 Service Unavailable"
                body = b'{"status":"ready"}' if ok else b'{"status":"not_ready"}'
            else:
                status, body = "404 Not Found", b'{"status":"not_found"}'
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)


def broker_ready(broker: RabbitBroker) -> ReadinessCheck:
    """Readiness: the broker connection answers."""

    async def check() -> bool:
        return await broker.ping(timeout=1.0)

    return check


async def serve_until_stopped(
    broker: RabbitBroker,
    *,
    service: str,
    health_host: str,
    health_port: int,
    ready: ReadinessCheck | None = None,
    components: Sequence[Component] = (),
) -> None:
    """Start ``broker``'s subscribers, then ``components``; run until SIGTERM or SIGINT.

    Stops in the reverse order: the components, then the broker.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    for component in components:
        await component.start()
    checks = [ready or broker_ready(broker)]
    checks += [component.ready for component in components if isinstance(component, Reporting)]

    async def all_ready() -> bool:
        return all([await check() for check in checks])

    server = await start_health_server(host=health_host, port=health_port, ready=all_ready)
    logger.info("%s started", service)
    try:
        await stop.wait()
    finally:
        logger.info("%s stopping", service)
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()
        for component in reversed(components):
            with contextlib.suppress(Exception):
                await component.stop()
        await broker.stop()
