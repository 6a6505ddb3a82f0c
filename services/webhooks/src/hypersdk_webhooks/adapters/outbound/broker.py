"""RabbitMQ adapters of AMQP subscriptions: the public exchange and each subscription's tap.

Both act with the service's own login, which may write ``hypersdk.public`` and configure
``sub.sb_<hex>`` names only (deploy/rabbitmq/definitions.json).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import cast

import aio_pika
import aiormq
from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

from hypersdk_contracts.envelope import CLOUDEVENTS_CONTENT_TYPE
from hypersdk_contracts.names import EVENT_TYPE_PREFIX, PUBLIC_EXCHANGE
from hypersdk_kit.bus import CONNECTION_LOST, broker_connection, bus_login, bus_unavailable
from hypersdk_webhooks.core.models import Incoming
from hypersdk_webhooks.core.subscriptions import tap_of
from hypersdk_webhooks.ports.outbound import BrokerTaps, PublicFeed

logger = logging.getLogger(__name__)


def public_exchange(*, declare: bool = True) -> RabbitExchange:
    """``hypersdk.public``: durable topic; only checked (passive) without topology rights."""
    return RabbitExchange(PUBLIC_EXCHANGE, type=ExchangeType.TOPIC, durable=True, declare=declare)


class RabbitPublicFeed(PublicFeed):
    """Publishes to ``hypersdk.public`` with confirms, on a channel of its own.

    A *nack* means a queue bound through some tap refused the message (a subscriber's full
    queue declared with ``x-overflow: reject-publish``): every other queue has it, and sending
    it again cannot help, so it is logged and counted, never retried. A lost connection or a
    confirm that does not come raises, and the batch is delivered to the service again.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        *,
        declare_topology: bool = True,
        confirm_timeout_seconds: float = 30.0,
    ) -> None:
        self._broker = broker
        self._exchange = public_exchange(declare=declare_topology)
        self._timeout = confirm_timeout_seconds
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._opening = asyncio.Lock()
        self.refused = 0
        """Messages some subscriber's queue refused (nacked), since the start."""

    async def _ready(self) -> aiormq.Channel:
        if self._channel is not None and self._channel.is_closed:
            raise bus_unavailable()  # aio-pika restores this same channel
        async with self._opening:
            if self._channel is None:
                await self._broker.declare_exchange(self._exchange)
                connection = broker_connection(self._broker)
                self._channel = await connection.channel(publisher_confirms=True)
        return cast(aiormq.Channel, await self._channel.get_underlay_channel())

    async def publish(self, events: Sequence[Incoming]) -> None:
        """Publish all, then wait for every confirm."""
        if not broker_connection(self._broker).connected.is_set():
            raise bus_unavailable()
        try:
            channel = await self._ready()
            login = bus_login(self._broker)
            confirmations = await asyncio.gather(
                *(self._send(channel, event, login) for event in events)
            )
        except CONNECTION_LOST as exc:
            raise bus_unavailable() from exc
        refused = [
            event.event_id
            for event, confirmation in zip(events, confirmations, strict=True)
            if not isinstance(confirmation, aiormq.spec.Basic.Ack)
        ]
        if refused:
            self.refused += len(refused)
            logger.warning(
                "%d public events refused by a subscriber's queue (first: %s)",
                len(refused),
                refused[0],
            )

    async def _send(self, channel: aiormq.Channel, event: Incoming, login: str) -> object:
        return await channel.basic_publish(
            event.body,
            exchange=PUBLIC_EXCHANGE,
            routing_key=event.event_type,
            properties=aiormq.spec.Basic.Properties(
                content_type=CLOUDEVENTS_CONTENT_TYPE,
                message_id=event.event_id,
                message_type=EVENT_TYPE_PREFIX + event.event_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                user_id=login,
            ),
            mandatory=False,
            timeout=self._timeout,
            wait=False,
        )


class RabbitTaps(BrokerTaps):
    """Declares, binds and deletes subscriptions' taps and queues; a channel per change.

    Changes are rare (a subscription created or deleted), and a refused step closes its
    channel: each gets a fresh one.
    """

    def __init__(self, broker: RabbitBroker, *, declare_topology: bool = True) -> None:
        self._broker = broker
        self._public = public_exchange(declare=declare_topology)

    async def open(self, subscription_id: str) -> None:
        """Declare the tap (durable topic, internal: nobody publishes to it) and bind it."""
        await self._broker.declare_exchange(self._public)
        connection = broker_connection(self._broker)
        async with connection.channel() as channel:
            tap = await channel.declare_exchange(
                tap_of(subscription_id),
                aio_pika.ExchangeType.TOPIC,
                durable=True,
                internal=True,
            )
            await tap.bind(PUBLIC_EXCHANGE, routing_key="#")

    async def close(self, subscription_id: str, *, queues: Sequence[str]) -> None:
        """Delete the queues (cancelling their consumers), then the tap and its bindings.

        A queue that another connection holds exclusively cannot be deleted: it goes when
        that connection closes, and deleting the tap next cuts it off meanwhile.
        """
        connection = broker_connection(self._broker)
        for queue in queues:
            try:
                async with connection.channel() as channel:
                    await channel.queue_delete(queue)
            except aiormq.exceptions.ChannelLockedResource:
                logger.info("queue %s is exclusive to a connection; it goes with it", queue)
        async with connection.channel() as channel:
            await channel.exchange_delete(tap_of(subscription_id))
