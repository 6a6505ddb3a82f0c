"""Request seals: the gateway vouches for each request it puts on the bus (decision 0027).

A grant says that a principal holds a permission for the operations of one API route, and the
gateway reuses it for a minute (decision 0015). What ties one use of it to one request is the
seal: signed with the gateway's own key for exactly one request on one queue, naming the
request ID, the client address, the actor, the operation and its target. A service admits a
seal once (per replica), so neither a grant nor a seal copied off the bus drives another
operation, another target or the same operation again.
"""

from __future__ import annotations

from typing import Any

from hypersdk_contracts.operations import target_of
from hypersdk_contracts.rpc import RpcRequest
from hypersdk_gateway.ports.outbound import Backend
from hypersdk_kit.guard import SEAL_TYPE
from hypersdk_kit.trust import AssertionSigner

SEAL_ISSUER = "gateway"


def seal_request(signer: AssertionSigner, operation: str, request: RpcRequest) -> RpcRequest:
    """``request`` with its context sealed for ``operation`` (a request queue)."""
    context = request.context
    seal = signer.sign(
        {
            "typ": SEAL_TYPE,
            "rid": context.request_id,
            "ip": context.source_ip,
            "sub": context.actor,
            "op": operation,
            "res": target_of(operation, request),
        }
    )
    return request.model_copy(update={"context": context.model_copy(update={"seal": seal})})


class SealingBackend(Backend):
    """Seals every request for the queue it is sent to, then sends it."""

    def __init__(self, backend: Backend, signer: AssertionSigner) -> None:
        self._backend = backend
        self._signer = signer

    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """Seal ``request`` for ``queue`` and ask."""
        return await self._backend.ask(queue, seal_request(self._signer, queue, request))
