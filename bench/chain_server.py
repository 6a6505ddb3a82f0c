"""The benchmark's server: a gateway replica plus a bare endpoint, on one uvicorn process.

Started by bench/run.py with the platform's environment (``HYPERSDK_GATEWAY_*``) and a port.

- ``GET /bare``: a FastAPI route outside the chain, answering ``[]``.
- ``GET /api/v1/bench/jobs``: the same handler inside the whole chain: the seven layers,
  authentication (identity, or the credential cache) and authorization for ``jobs:view``
  (policy's grant, or the cache). The difference between the two is the chain's cost.
- every route of the API, e.g. ``GET /api/v1/jobs`` (which also asks the exporter).

``--without events`` and ``--without access-log`` switch off, for diagnostic rows only, the
``gateway.request.completed`` event (still built, never sent) and the access log line.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn
import uvloop
from fastapi import APIRouter, FastAPI

from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.events import EventData
from hypersdk_contracts.permissions import Permission
from hypersdk_gateway.adapters.inbound.http import guarded
from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.inject import SERVICE, prepare_gateway
from hypersdk_kit.bus import EventPublisher
from hypersdk_kit.logs import configure_logging

PARTS = ("events", "access-log")


def add_bench_route(router: APIRouter) -> None:
    """``GET /api/v1/bench/jobs``: authorized for jobs:view, answers what /bare answers."""

    @router.get("/bench/jobs", openapi_extra=guarded(Permission.JOBS_VIEW), tags=["bench"])
    async def bench_jobs() -> list[dict[str, str]]:
        return []


class UnsentEvents(EventPublisher):
    """Builds each event as the real publisher does, and sends none (``--without events``)."""

    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """The envelope, serialized, as if published."""
        event = new_event(
            service=SERVICE,
            routing_key=data.routing_key.value,
            data=data,
            subject=subject,
            context=context,
        )
        event.model_dump_json(by_alias=True, exclude_none=True)
        return event


async def serve(port: int, without: set[str]) -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    if "access-log" in without:
        logging.getLogger("hypersdk_gateway.access").setLevel(logging.WARNING)
    bare = FastAPI(telemetry={"tracing": False, "metrics": False, "logs": False})  # as the API

    @bare.get("/bare")
    async def bare_jobs() -> list[dict[str, str]]:
        return []

    events = UnsentEvents() if "events" in without else None
    async with prepare_gateway(settings, extend=add_bench_route, events=events) as (chain, _):

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/bare":
                await bare(scope, receive, send)
            else:
                await chain(scope, receive, send)

        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            # h11 as the gateway (its slow-client limits subclass it), even where httptools is
            # installed; without the per-address connection cap, which 100 clients on loopback
            # would exceed.
            http="h11",
        )
        await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="chain_server")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--without", action="append", choices=PARTS, default=[])
    args = parser.parse_args()
    uvloop.run(serve(args.port, set(args.without)))  # as the gateway runs (decision 0040)


if __name__ == "__main__":
    main()
