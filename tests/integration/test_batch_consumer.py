"""The batch consumer against the real RabbitMQ: one multiple ack per batch, restored consumers.

Every event handled once, nothing left on the queue (a delivery not covered by a batch's ack
would go back to it when the consumer stops), and after its channel is closed under it the
consumer is restored by aio-pika and goes on.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import aio_pika
import pytest
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

from hypersdk_contracts.envelope import CLOUDEVENTS_CONTENT_TYPE, CloudEvent, RequestContext
from hypersdk_contracts.events import JobProgressed
from hypersdk_kit.bus import BatchConsumer, build_broker, durable_queue, new_event

from .conftest import Stack


@pytest.fixture
async def broker(stack: Stack) -> AsyncIterator[RabbitBroker]:
    broker = build_broker(stack.amqp_url, service="audit")
    await broker.start()
    yield broker
    await broker.stop()


class Consumer:
    """A batch consumer on a queue and exchange of this test's own, recording what it got.

    Not on the events exchange: the stack's audit service would record every test event.
    """

    def __init__(self, broker: RabbitBroker) -> None:
        self.name = f"test.batches.{uuid.uuid4().hex[:8]}"
        self.batches: list[list[str]] = []
        self.consumer = BatchConsumer(
            broker,
            durable_queue(self.name, routing_key="#"),
            self.record,
            exchange=RabbitExchange(self.name, type=ExchangeType.TOPIC, auto_delete=True),
            prefetch=100,
            max_batch=20,
            max_wait_seconds=0.02,
        )

    async def record(self, events: list[CloudEvent]) -> None:
        self.batches.append([event.id for event in events])

    def handled(self) -> list[str]:
        return [event_id for batch in self.batches for event_id in batch]


async def publish(stack: Stack, exchange_name: str, count: int) -> list[str]:
    connection = await aio_pika.connect(stack.amqp_url)
    ids = []
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(exchange_name)
        for index in range(count):
            event = new_event(
                service="exporter",
                routing_key="exporter.job.progressed",
                data=JobProgressed(job_id=f"j-{index}", progress=index % 100),
                subject=f"job/j-{index}",
                context=RequestContext(actor="batch-test"),
            )
            body = event.model_dump_json(by_alias=True, exclude_none=True).encode()
            message = aio_pika.Message(body, content_type=CLOUDEVENTS_CONTENT_TYPE)
            await exchange.publish(message, routing_key="exporter.job.progressed")
            ids.append(event.id)
    finally:
        await connection.close()
    return ids


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def left_on_queue(stack: Stack, name: str) -> int:
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    finally:
        await connection.close()


async def test_every_event_is_handled_once_and_acked_by_its_batch(
    stack: Stack, broker: RabbitBroker
) -> None:
    consumer = Consumer(broker)
    await consumer.consumer.start()
    try:
        ids = await publish(stack, consumer.name, 100)
        assert await until(lambda: len(consumer.handled()) >= len(ids))
    finally:
        await consumer.consumer.stop()

    assert consumer.handled() == ids
    assert len(consumer.batches) > 1
    assert await left_on_queue(stack, consumer.name) == 0  # unacked ones would be back


async def test_a_consumer_whose_channel_closed_is_restored(
    stack: Stack, broker: RabbitBroker
) -> None:
    consumer = Consumer(broker)
    await consumer.consumer.start()
    try:
        before = await publish(stack, consumer.name, 30)
        assert await until(lambda: len(consumer.handled()) >= len(before))
        channel = consumer.consumer._channel
        assert channel is not None
        with pytest.raises(aio_pika.exceptions.ChannelClosed):
            # Any channel error closes the channel on the server's side, like a lost connection.
            await channel.declare_exchange("hypersdk.no-such-exchange", passive=True)

        after = await publish(stack, consumer.name, 30)
        assert await until(lambda: set(after) <= set(consumer.handled())), "not restored"
    finally:
        await consumer.consumer.stop()

    assert set(consumer.handled()) == {*before, *after}
    assert await left_on_queue(stack, consumer.name) == 0
