"""An in-process stand-in for the gateway's bus backend, shared by the gateway's unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import RpcRequest
from hypersdk_gateway.core.seals import SEAL_ISSUER
from hypersdk_gateway.ports.outbound import Backend
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier

Handler = Callable[[Any], Awaitable[Any]]
Routes = dict[str, tuple[type[RpcRequest], Handler]]

UNUSED_KEY = Path("unused-gateway.key")
"""A ``signing_key_file`` setting that is never read: tests hand ``build_chain`` its signer."""
GATEWAY_KEY = Ed25519PrivateKey.generate()


def gateway_seals() -> AssertionSigner:
    """The gateway's request sealer, with the tests' gateway key."""
    return AssertionSigner(GATEWAY_KEY, issuer=SEAL_ISSUER)


def seal_verifier() -> AssertionVerifier:
    """What a service checks the gateway's seals with."""
    return AssertionVerifier(GATEWAY_KEY.public_key(), issuer=SEAL_ISSUER)


class InProcessBackend(Backend):
    """Answers request queues in process, as the services' RPC subscribers would.

    Each request is dumped to JSON and parsed with the model the owning service expects on
    that queue, and each answer is returned as the JSON the reply would carry. A queue without
    a route is answered as an unreachable service would be.
    """

    def __init__(self, routes: Routes) -> None:
        self.asked: list[str] = []
        self.requests: list[tuple[str, RpcRequest]] = []
        self.reply_delays: dict[str, float] = {}  # queue -> how long its answers take
        self._routes = routes

    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """Parse as the owner would, answer, and return the reply's JSON result."""
        self.asked.append(queue)
        self.requests.append((queue, request))
        if queue not in self._routes:
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, f"No fake answers {queue}.")
        model, handler = self._routes[queue]
        result = await handler(model.model_validate(request.model_dump(mode="json")))
        if queue in self.reply_delays:
            await asyncio.sleep(self.reply_delays[queue])
        return as_json(result)


def as_json(result: Any) -> Any:
    """What a reply carries for ``result``: models as JSON, lists item by item."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [as_json(item) for item in result]
    return result
