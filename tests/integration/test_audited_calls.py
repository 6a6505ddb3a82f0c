"""Concurrent API calls against the real platform: every answered call is in the chain once.

The gateway publishes the calls' ``gateway.request.completed`` events in CloudEvents JSON
batches and releases each response only after the message holding its event was confirmed;
the audit service reads the batches and chains one entry per event.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import httpx

from hypersdk_contracts.envelope import CLOUDEVENTS_BATCH_CONTENT_TYPE

from .conftest import ADMIN_PASSWORD, Stack, until

CALLS = 240
CLIENTS = 60


async def test_every_answered_call_is_chained_exactly_once(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    username = f"calls-{run}"
    status, body, _ = stack.api.call(
        "POST",
        "/api/v1/users",
        {"username": username, "password": ADMIN_PASSWORD, "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201, body
    token = stack.api.login(username, ADMIN_PASSWORD)
    # A queue of the test's own on the events exchange shows how the events travelled.
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        watch = await channel.declare_queue(exclusive=True)
        await watch.bind("hypersdk.events", routing_key="gateway.request.completed")
        request_ids = [f"{run}-{index:04d}" for index in range(CALLS)]
        limits = httpx.Limits(max_connections=CLIENTS)
        async with httpx.AsyncClient(
            base_url=stack.config.gateway_url, limits=limits, timeout=60
        ) as client:
            gate = asyncio.Semaphore(CLIENTS)

            async def call(request_id: str) -> int:
                async with gate:
                    response = await client.get(
                        "/api/v1/auth/me",
                        headers={"authorization": f"Bearer {token}", "x-request-id": request_id},
                    )
                    return response.status_code

            statuses = await asyncio.gather(*(call(request_id) for request_id in request_ids))
        answered = [rid for rid, code in zip(request_ids, statuses, strict=True) if code == 200]
        assert len(answered) >= CALLS * 0.9, statuses  # a 503 is allowed, a 500 never
        assert set(statuses) <= {200, 503}

        def chained() -> list[str]:
            rows = stack.db(
                "SELECT request_id FROM audit.entries WHERE request_id LIKE $1 "
                "AND action = 'api.call'",
                f"{run}-%",
            )
            return [str(row["request_id"]) for row in rows]

        assert await until(lambda: set(answered) <= set(chained()), seconds=30)
        carried: list[str] = []
        batches = 0
        while (message := await watch.get(no_ack=True, fail=False)) is not None:
            if message.content_type == CLOUDEVENTS_BATCH_CONTENT_TYPE:
                batches += 1
                events = json.loads(message.body)
            else:
                events = [json.loads(message.body)]
            carried += [str(e.get("requestid")) for e in events if e["subject"].endswith("/me")]
    finally:
        await connection.close()

    entries = chained()
    assert sorted(rid for rid in entries if rid in set(answered)) == sorted(answered)
    assert len(entries) == len(set(entries)), "a call chained twice"
    assert batches > 0, "no call's event travelled in a batch"
    ours = [rid for rid in carried if rid.startswith(run)]
    assert set(answered) <= set(ours)
    assert len(ours) == len(set(ours)), "an event published twice"
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert status == 200
    assert verdict["valid"] is True
