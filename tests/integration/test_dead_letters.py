"""Messages that fail validation are dead-lettered, never lost, never looped, never acted on."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika

from .conftest import ADMIN_PASSWORD, Stack


def _envelope(type_: str, data: dict[str, Any], *, source: str = "/test/forger") -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": source,
            "type": type_,
            "time": datetime.now(UTC).isoformat(),
            "data": data,
        }
    ).encode()


async def _collect(channel: Any, queue_name: str, wanted: set[str]) -> dict[str, Any]:
    queue = await channel.get_queue(queue_name, ensure=True)
    found: dict[str, Any] = {}
    for _ in range(100):
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is None:
            if wanted <= found.keys():
                break
            await asyncio.sleep(0.2)
            continue
        if message.message_id in wanted:
            found[message.message_id] = message
            await message.ack()
        else:
            await message.nack(requeue=True)
        if wanted <= found.keys():
            break
    return found


async def test_malformed_messages_go_to_dead_letter_queues(stack: Stack) -> None:
    jobs_before = stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"]
    exports = stack.config.state_dir / "exports"
    dirs_before = set(exports.iterdir())
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    events = await channel.get_exchange("hypersdk.events")
    sends = {
        # Not JSON at all, straight onto the work queue.
        "garbage-job": (channel.default_exchange, "exporter.jobs", b"\x00not json"),
        # A well-formed envelope whose command payload is not a VmExportRequested.
        "bad-command": (
            channel.default_exchange,
            "exporter.jobs",
            _envelope("io.hypersdk.exporter.vm.export.requested", {"vm": "web-01"}),
        ),
        # An envelope missing required attributes, published as an event.
        "garbage-event": (events, "identity.login.succeeded", b'{"specversion": "1.0"}'),
    }
    for message_id, (exchange, routing_key, body) in sends.items():
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
    # A known event type whose payload breaks its contract, from identity's own login (from any
    # other, audit quarantines it before reading the payload).
    bad_event = _envelope(
        "io.hypersdk.identity.login.failed",
        {"username": 7, "reason": "nope"},
        source="/hypersdk/identity",
    )
    sends["bad-event"] = (events, "identity.login.failed", bad_event)
    assert stack.identity_login is not None
    await stack.identity_login.publish(
        bad_event, routing_key="identity.login.failed", message_id="bad-event"
    )

    jobs_dlq = await _collect(channel, "exporter.jobs.dlq", {"garbage-job", "bad-command"})
    audit_dlq = await _collect(channel, "audit.events.dlq", {"garbage-event", "bad-event"})
    await connection.close()

    assert set(jobs_dlq) == {"garbage-job", "bad-command"}
    assert set(audit_dlq) == {"garbage-event", "bad-event"}
    for message in [*jobs_dlq.values(), *audit_dlq.values()]:
        death = message.headers["x-death"][0]
        assert death["reason"] == "rejected"
        assert death["queue"] in {"exporter.jobs", "audit.events"}
    assert jobs_dlq["bad-command"].body == sends["bad-command"][2]  # kept byte for byte

    # Nothing was exported, the audit chain did not record the poison and still verifies.
    assert stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"] == jobs_before
    assert set(exports.iterdir()) == dirs_before
    token = stack.api.login("admin", ADMIN_PASSWORD)
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=token)
    assert status == 200
    assert verdict["valid"] is True
    rows = stack.db("SELECT count(*) AS n FROM audit.entries WHERE event_id = ANY($1)", list(sends))
    assert rows[0]["n"] == 0
