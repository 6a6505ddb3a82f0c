"""Outbound port of the gateway."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from hypersdk_contracts.rpc import RpcRequest


class Backend(ABC):
    """Asks the owning service a question; raises ServiceError with its error code."""

    @abstractmethod
    async def ask(self, queue: str, request: RpcRequest) -> Any:
        """The JSON result of the request sent to ``queue``."""
