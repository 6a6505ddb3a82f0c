"""Forged events on the real bus are quarantined; genuine ones from a mapped login are chained.

The platform of this module maps a RabbitMQ user of the test's own to the exporter (through
``HYPERSDK_AUDIT_PUBLISHERS``). Publishing as that user, the test replays what was reproduced:
a ``gateway.request.completed`` claiming admin, a chosen time and a chosen address. RabbitMQ
vouches for the ``user_id`` (it refuses one that is not the connection's login), so audit knows
the message came from the exporter's login, which may not emit gateway events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.events import JobProgressed, RequestCompleted
from hypersdk_kit.bus import new_event

from .conftest import (
    ADMIN_PASSWORD,
    Api,
    BusLogin,
    Stack,
    bus_login,
    devstack,
    isolated_stack_config,
    until,
)


@pytest.fixture(scope="module")
def attributed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, BusLogin]]:
    with (
        isolated_stack_config(tmp_path_factory.mktemp("attributed")) as config,
        bus_login(config, "exporter") as exporter,
    ):
        devstack.up(config, admin_password=ADMIN_PASSWORD)
        stack = Stack(
            config=config,
            api=Api(config.gateway_url),
            amqp_url=config.amqp_url(),
            database_url=config.database_url(),
        )
        yield stack, exporter


async def _publish(publisher: BusLogin, event: CloudEvent, *, user_id: str | None = None) -> None:
    await publisher.publish(
        event.model_dump_json(by_alias=True, exclude_none=True).encode(),
        routing_key=event.routing_key,
        message_id=event.id,
        user_id=user_id,
    )


def _forged_admin_call() -> CloudEvent:
    event = new_event(
        service="gateway",
        routing_key="gateway.request.completed",
        data=RequestCompleted(
            method="DELETE", route="/api/v1/users/{username}", status=204, duration_ms=3.0
        ),
        subject=None,
        context=RequestContext(
            actor="admin", source_ip="203.0.113.66", request_id=f"forged-{uuid.uuid4().hex}"
        ),
    )
    return event.model_copy(update={"time": datetime(2026, 1, 1, 3, 0, tzinfo=UTC)})


def _quarantine(api: Api, token: str) -> list[dict[str, Any]]:
    status, page, _ = api.call("GET", "/api/v1/audit/quarantine?limit=1000", token=token)
    assert status == 200, page
    assert isinstance(page, list)
    return page


async def test_a_forged_gateway_event_is_quarantined_listed_reported_and_never_chained(
    attributed: tuple[Stack, BusLogin],
) -> None:
    stack, publisher = attributed
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    forged = _forged_admin_call()

    await _publish(publisher, forged)

    listed: list[dict[str, Any]] = []

    def quarantined() -> bool:
        listed[:] = [q for q in _quarantine(stack.api, admin) if q["event_id"] == forged.id]
        return bool(listed)

    assert await until(quarantined, seconds=30)
    (record,) = listed
    assert record["reason"] == "wrong_producer"
    assert (record["login"], record["producer"]) == (publisher.login, "exporter")
    assert (record["claimed_type"], record["claimed_source"]) == (forged.type, forged.source)
    assert record["claimed_actor"] == "admin"
    assert record["envelope"]["sourceip"] == "203.0.113.66"

    entries = stack.api.recent_audit(admin, last=5000)
    assert forged.id not in {entry["event_id"] for entry in entries}
    assert not any(entry["source_ip"] == "203.0.113.66" for entry in entries)
    (reported,) = [entry for entry in entries if entry["event_id"] == record["id"]]
    assert reported["action"] == "audit.quarantine"
    assert reported["result"] == "failure: wrong_producer"
    assert reported["resource"] == f"event/{forged.id}"
    assert (reported["producer"], reported["user"]) == ("audit", None)
    assert reported["received_at"] is not None

    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert (status, verdict["valid"]) == (200, True)


@pytest.mark.parametrize(
    "query", ["after_number=99999999999999999999", "after_number=-1", "limit=0"]
)
def test_a_quarantine_page_out_of_range_is_refused_with_422(
    attributed: tuple[Stack, BusLogin], query: str
) -> None:
    stack, _ = attributed
    admin = stack.api.login("admin", ADMIN_PASSWORD)

    status, body, _ = stack.api.call("GET", f"/api/v1/audit/quarantine?{query}", token=admin)

    assert (status, body["error"]["code"]) == (422, "validation_failed")


async def test_a_genuine_event_from_the_mapped_login_is_chained_with_its_producer(
    attributed: tuple[Stack, BusLogin],
) -> None:
    stack, publisher = attributed
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    job_id = f"attributed-{uuid.uuid4().hex[:8]}"
    genuine = new_event(
        service="exporter",
        routing_key="exporter.job.progressed",
        data=JobProgressed(job_id=job_id, progress=40),
        subject=f"job/{job_id}",
        context=None,
    )

    await _publish(publisher, genuine)

    found: list[dict[str, Any]] = []

    def chained() -> bool:
        entries = stack.api.recent_audit(admin)
        found[:] = [entry for entry in entries if entry["event_id"] == genuine.id]
        return bool(found)

    assert await until(chained, seconds=30)
    (entry,) = found
    assert (entry["action"], entry["resource"]) == ("vm.export.progress", f"job/{job_id}")
    assert entry["producer"] == "exporter"
    assert datetime.fromisoformat(entry["received_at"]) >= genuine.time
    assert genuine.id not in {q["event_id"] for q in _quarantine(stack.api, admin)}


async def test_rabbitmq_refuses_a_user_id_that_is_not_the_publishers_login(
    attributed: tuple[Stack, BusLogin],
) -> None:
    _, publisher = attributed
    event = new_event(
        service="gateway",
        routing_key="gateway.request.completed",
        data=RequestCompleted(method="GET", route="/api/v1/jobs", status=200, duration_ms=1.0),
        subject=None,
        context=None,
    )

    with pytest.raises(aio_pika.exceptions.ChannelClosed):
        await _publish(publisher, event, user_id="hypersdk-gateway")
