"""AMQP subscriptions through the whole platform: the API, RabbitMQ's HTTP auth backend asking
the webhooks service, the public exchange, and what a subscriber may not do.

The subscriber connects to the real broker with the credentials the API showed once; the
broker asks the webhooks service's authorizer about every login, virtual host, resource and
topic (devstack points its auth backend there), so each refusal below is the broker's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aio_pika
import aiormq
import pytest

from .conftest import ADMIN_PASSWORD, Stack, service_pid, until

# a refused login closes the connection at once; a refused virtual host answers its open
# with a close (aiormq's InvalidFrameError)
REFUSED_CONNECTION = (aio_pika.exceptions.AMQPConnectionError, aiormq.exceptions.AMQPError)
Op = Callable[[aio_pika.abc.AbstractChannel], Awaitable[object]]


def _url(issued: dict[str, Any], *, password: str | None = None, vhost: str | None = None) -> str:
    user = quote(issued["username"], safe="")
    secret = quote(password if password is not None else issued["password"], safe="")
    return f"amqp://{user}:{secret}@127.0.0.1:5672/{quote(vhost or issued['vhost'], safe='')}"


async def _refused(connection: aio_pika.abc.AbstractConnection, op: Op) -> str:
    """Run ``op`` on a fresh channel: the broker must refuse it (ACCESS_REFUSED)."""
    channel = await connection.channel()
    try:
        await op(channel)
        # a refused publish closes the channel afterwards: the next call sees it
        await channel.declare_queue("amq.rabbitmq.reply-to", passive=True)
    except aiormq.exceptions.ChannelAccessRefused as refusal:
        return str(refusal)
    raise AssertionError("the broker allowed it")


def _create(stack: Stack, admin: str, **body: Any) -> dict[str, Any]:
    status, issued, _ = stack.api.call("POST", "/api/v1/subscriptions", body, token=admin)
    assert status == 201, issued
    return dict(issued)


async def test_a_subscriber_reads_public_events_from_its_own_queue_and_nothing_else(
    stack: Stack,
) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    issued = _create(stack, admin, description="siem")
    sub = issued["subscription"]
    sub_id = sub["id"]
    assert issued["username"] == sub_id
    assert sub["exchange"] == f"sub.{sub_id}"
    assert sub["queue_prefix"] == f"sub.{sub_id}."
    password = issued["password"]
    queue_name = f"sub.{sub_id}.users"

    connection = await aio_pika.connect(_url(issued))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(sub["exchange"], routing_key="identity.user.*")
        got: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            await got.put(message)

        await queue.consume(take)
        status, _, _ = api.call(
            "POST",
            "/api/v1/users",
            {"username": "sub-first", "password": "pw-long-sub-first"},
            token=admin,
        )
        assert status == 201
        message = await asyncio.wait_for(got.get(), timeout=20)
        event = json.loads(message.body)
        assert event["type"] == "io.hypersdk.identity.user.created"
        assert event["data"]["username"] == "sub-first"
        assert event["actor"] == "admin"
        assert "seal" not in event
        assert message.content_type == "application/cloudevents+json"
        assert message.message_id == event["id"]
        assert message.routing_key == "identity.user.created"

        # what the subscriber may not do, each refused by the broker
        refusals = {
            "another queue": lambda ch: ch.declare_queue("mine", auto_delete=True),
            "a server-named queue": lambda ch: ch.declare_queue("", exclusive=True),
            "another subscriber's prefix": lambda ch: ch.declare_queue(
                "sub.sb_000000000000000000000000.x"
            ),
            "an exchange": lambda ch: ch.declare_exchange(f"sub.{sub_id}.x", auto_delete=True),
            "its tap, redeclared": lambda ch: ch.declare_exchange(
                sub["exchange"], aio_pika.ExchangeType.TOPIC, durable=True, internal=True
            ),
            "binding to the internal events": lambda ch: _bind(ch, queue_name, "hypersdk.events"),
            "binding to the public exchange": lambda ch: _bind(ch, queue_name, "hypersdk.public"),
            "reading the audit queue": lambda ch: _consume(ch, "audit.events"),
            "dead-lettering into the events": lambda ch: ch.declare_queue(
                f"sub.{sub_id}.dlx", arguments={"x-dead-letter-exchange": "hypersdk.events"}
            ),
            "publishing to its queue": lambda ch: ch.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key=queue_name
            ),
            "publishing to the events": lambda ch: _publish(ch, "hypersdk.events", "identity.x"),
            "deleting its tap": lambda ch: ch.exchange_delete(sub["exchange"]),
        }
        for what, op in refusals.items():
            assert "ACCESS_REFUSED" in await _refused(connection, op), what
        # and the check itself tells an allowed operation apart
        with pytest.raises(AssertionError, match="allowed"):
            await _refused(connection, lambda ch: ch.declare_queue(queue_name, durable=True))

        # the API lists what it declared, never the password
        status, found, _ = api.call("GET", f"/api/v1/subscriptions/{sub_id}", token=admin)
        assert status == 200, found
        assert queue_name in found["queues"]
        status, listed, _ = api.call("GET", "/api/v1/subscriptions", token=admin)
        assert sub_id in [s["id"] for s in listed]
        assert password not in json.dumps(listed) + json.dumps(found)
    finally:
        await connection.close()

    # wrong password, another virtual host: no connection at all
    for url in (_url(issued, password=password + "x"), _url(issued, vhost="/")):
        with pytest.raises(REFUSED_CONNECTION):
            await aio_pika.connect(url, timeout=10)

    # deleted: a consumer connected before stops getting events, and nobody logs in again
    connection = await aio_pika.connect(_url(issued))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)

        async def ack(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()

        await queue.consume(ack)
        status, _, _ = api.call("DELETE", f"/api/v1/subscriptions/{sub_id}", token=admin)
        assert status == 204
        # its queue was deleted under the consumer, its tap with it
        assert await until(lambda: _queue_gone(stack, queue_name), seconds=10)
    finally:
        await connection.close()
    with pytest.raises(REFUSED_CONNECTION):
        await aio_pika.connect(_url(issued), timeout=10)
    status, gone, _ = api.call("GET", f"/api/v1/subscriptions/{sub_id}", token=admin)
    assert (status, gone["error"]["code"]) == (404, "not_found")

    # audited, and the password is nowhere: the log, the service logs, the table
    def audited() -> set[str]:
        return {e["action"] for e in api.recent_audit(admin, last=300)}

    assert await until(lambda: {"subscription.create", "subscription.delete"} <= audited(), 20)
    assert password not in json.dumps(api.recent_audit(admin, last=300))
    for log in stack.log_dir.glob("*.log"):
        assert password not in log.read_text(errors="replace"), log
    assert not stack.db("SELECT 1 FROM webhooks.subscriptions WHERE id = $1", sub_id)


def _queue_gone(stack: Stack, name: str) -> bool:
    listed = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", stack.config.amqp_vhost, "name"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return name not in listed.split()


async def _bind(channel: aio_pika.abc.AbstractChannel, queue: str, exchange: str) -> None:
    declared = await channel.get_queue(queue)
    await declared.bind(exchange, routing_key="#")


async def _consume(channel: aio_pika.abc.AbstractChannel, queue: str) -> None:
    declared = await channel.get_queue(queue, ensure=False)

    async def drop(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        return None

    await declared.consume(drop)


async def _publish(channel: aio_pika.abc.AbstractChannel, exchange: str, key: str) -> None:
    target = await channel.get_exchange(exchange, ensure=False)
    await target.publish(aio_pika.Message(b"{}"), routing_key=key)


def test_subscription_requests_are_checked(stack: Stack) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    status, body, _ = api.call(
        "POST", "/api/v1/subscriptions", {"description": "x", "queues": 3}, token=admin
    )
    assert status == 422, body
    status, body, _ = api.call(
        "POST", "/api/v1/subscriptions", {"description": "x" * 501}, token=admin
    )
    assert status == 422, body
    status, body, _ = api.call("GET", "/api/v1/subscriptions/not-an-id", token=admin)
    assert status == 422, body
    status, body, _ = api.call(
        "DELETE", "/api/v1/subscriptions/sb_000000000000000000000000", token=admin
    )
    assert (status, body["error"]["code"]) == (404, "not_found")


async def test_kill_9_of_the_webhooks_service_loses_no_public_event_and_logins_fail_closed(
    stack: Stack,
) -> None:
    """Events published while the service is dead reach the subscriber after its restart; a
    login meanwhile is refused (the broker cannot ask), one connected before keeps reading."""
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    issued = _create(stack, admin, description="fault")
    sub_id = issued["subscription"]["id"]
    queue_name = f"sub.{sub_id}.users"
    connection = await aio_pika.connect(_url(issued))
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(f"sub.{sub_id}", routing_key="identity.user.created")
        got: list[str] = []

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            await message.ack()
            got.append(json.loads(message.body)["data"]["username"])

        await queue.consume(take)  # checked now; a running consumer is never asked again
        victim = service_pid(stack, "webhooks")
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        names = [f"sub-killed-{n}" for n in range(5)]
        for name in names:  # published while nothing forwards them
            status, body, _ = api.call(
                "POST",
                "/api/v1/users",
                {"username": name, "password": "pw-long-" + name},
                token=admin,
            )
            assert status == 201, body
        if service_pid(stack, "webhooks") in (None, victim):  # not restarted yet: nobody can log in
            with pytest.raises(REFUSED_CONNECTION):
                await aio_pika.connect(_url(issued), timeout=10)
        # the restarted service forwards what waited in webhooks.events to the running consumer
        assert await until(lambda: set(names) <= set(got), seconds=40), got
    finally:
        await connection.close()
    status, _, _ = api.call("DELETE", f"/api/v1/subscriptions/{sub_id}", token=admin)
    assert status == 204
