"""The benchmark's server: a gateway replica plus a bare endpoint, on one uvicorn process.

Started by bench/run.py with the platform's environment (``HYPERSDK_GATEWAY_*``) and a port.

- ``GET /bare``: a FastAPI route outside the chain, answering ``[]``.
- ``GET /api/v1/bench/jobs``: the same handler inside the whole chain: the seven layers,
  authentication (identity, or the credential cache) and authorization for ``jobs:view``
  (policy's grant, or the cache). The difference between the two is the chain's cost.
- every route of the API, e.g. ``GET /api/v1/jobs`` (which also asks the exporter).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import uvicorn
from fastapi import APIRouter, FastAPI

from hypersdk_contracts.permissions import Permission
from hypersdk_gateway.adapters.inbound.http import guarded
from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.inject import prepare_gateway
from hypersdk_kit.logs import configure_logging


def add_bench_route(router: APIRouter) -> None:
    """``GET /api/v1/bench/jobs``: authorized for jobs:view, answers what /bare answers."""

    @router.get("/bench/jobs", openapi_extra=guarded(Permission.JOBS_VIEW), tags=["bench"])
    async def bench_jobs() -> list[dict[str, str]]:
        return []


async def serve(port: int) -> None:
    settings = GatewaySettings()
    configure_logging("gateway", settings.log_level)
    bare = FastAPI()

    @bare.get("/bare")
    async def bare_jobs() -> list[dict[str, str]]:
        return []

    async with prepare_gateway(settings, extend=add_bench_route) as (chain, _):

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
        )
        await uvicorn.Server(config).serve()


def main() -> None:
    parser = argparse.ArgumentParser(prog="chain_server")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
