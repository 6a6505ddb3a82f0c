"""The batch consumer against the real RabbitMQ: one multiple ack per batch, restored consumers.

Every event handled once, nothing left on the queue (a delivery not covered by a batch's ack
would go back to it when the consumer stops), and after its channel is closed under it the
consumer is restored by aio-pika and goes on.
"""

from __future__ import annotations

import uuid

import aio_pika
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

from hypersdk_contracts.envelope import CLOUDEVENTS_CONTENT_TYPE, RequestContext
from hypersdk_contracts.events import JobProgressed
from hypersdk_kit.bus import BatchConsumer, Received, durable_queue, new_event

from .conftest import Stack, close_under, until


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

    async def record(self, events: list[Received]) -> None:
        self.batches.append([received.event.id for received in events])

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
        await close_under(channel)

        after = await publish(stack, consumer.name, 30)
        assert await until(lambda: set(after) <= set(consumer.handled())), "not restored"
    finally:
        await consumer.consumer.stop()

    assert set(consumer.handled()) == {*before, *after}
    assert await left_on_queue(stack, consumer.name) == 0
