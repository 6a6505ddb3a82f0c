"""The audit service records a burst of events in batches against the real RabbitMQ and PostgreSQL.

Every event once, in one unbroken chain, a redelivered event not twice, and a poison event in
the middle of a burst dead-lettered alone while its neighbours are recorded.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import aio_pika

from .conftest import ADMIN_PASSWORD, Stack

BURST = 400


def _event(event_id: str, data: dict[str, object]) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": "/hypersdk/identity",
            "type": "io.hypersdk.identity.login.failed",
            "time": datetime.now(UTC).isoformat(),
            "subject": "user/burst",
            "datacontenttype": "application/json",
            "data": data,
        }
    ).encode()


async def _dead_lettered(channel: aio_pika.abc.AbstractChannel, message_id: str) -> bool:
    """Whether ``message_id`` reached the audit DLQ (others' messages are left there)."""
    queue = await channel.get_queue("audit.events.dlq", ensure=True)
    for _ in range(100):
        message = await queue.get(no_ack=False, fail=False, timeout=5)
        if message is None:
            await asyncio.sleep(0.2)
            continue
        if message.message_id == message_id:
            await message.ack()
            return True
        # Left unacknowledged so the next get moves on; closing the channel puts it back.
    return False


async def test_a_burst_is_recorded_once_each_in_one_chain(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    ids = [f"burst-{run}-{index:04d}" for index in range(BURST)]
    poison_id = f"burst-{run}-poison"
    good = {"username": "burst", "reason": "invalid_credentials"}
    identity = stack.identity_login
    assert identity is not None
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)

        async def send(event_id: str, data: dict[str, object]) -> None:
            # As identity, so that audit attributes the events to it (decision 0029).
            await identity.publish(
                _event(event_id, data), routing_key="identity.login.failed", message_id=event_id
            )

        sends = [send(event_id, good) for event_id in ids]
        sends.insert(BURST // 2, send(poison_id, {"username": 7}))
        sends.insert(BURST // 3, send(ids[10], good))  # the same event id again
        await asyncio.gather(*sends)

        rows: list[dict[str, object]] = []
        for _ in range(300):
            rows = stack.db(
                "SELECT event_id, sequence FROM audit.entries WHERE event_id LIKE $1",
                f"burst-{run}-%",
            )
            if len(rows) >= BURST:
                break
            await asyncio.sleep(0.1)
        dead_lettered = await _dead_lettered(channel, poison_id)
    finally:
        await connection.close()

    assert sorted(str(row["event_id"]) for row in rows) == sorted(ids)
    assert dead_lettered
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, verified, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert status == 200, verified
    assert verified["valid"] is True
    total = stack.db("SELECT count(*) AS n, max(sequence) AS top FROM audit.entries")[0]
    assert total["n"] == total["top"], "the chain has a gap"
