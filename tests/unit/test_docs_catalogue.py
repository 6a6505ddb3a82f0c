"""docs/architecture.md names every event and every request queue the code defines."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypersdk_contracts.events import EVENT_TYPES
from hypersdk_contracts.names import RoutingKey, RpcQueue

ARCHITECTURE = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()


@pytest.mark.parametrize("routing_key", [key.value for key in RoutingKey])
def test_every_event_is_in_the_catalogue(routing_key: str) -> None:
    assert f"`{routing_key}`" in ARCHITECTURE
    assert EVENT_TYPES[routing_key].audit_action in ARCHITECTURE


@pytest.mark.parametrize("queue", [queue.value for queue in RpcQueue])
def test_every_request_queue_is_documented(queue: str) -> None:
    assert f"`{queue}`" in ARCHITECTURE
