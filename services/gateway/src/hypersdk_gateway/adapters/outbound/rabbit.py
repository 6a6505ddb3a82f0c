"""The gateway's backend over RabbitMQ request/reply."""

from __future__ import annotations

from typing import Any

from hypersdk_contracts.rpc import RpcRequest
from hypersdk_gateway.ports.outbound import Backend
from hypersdk_kit.bus import RpcClient


class RabbitBackend(Backend):
    """Request/reply to the service queues."""

    def __init__(self, rpc: RpcClient) -> None:
        self._rpc = rpc

    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """Send and wait for the reply."""
        return await self._rpc.call(queue, request)
