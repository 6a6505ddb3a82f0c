"""The revocation feed: identity's and policy's revocation events empty the credential cache.

Each gateway replica binds a queue of its own (exclusive, gone with its connection) to the
events exchange for the routing keys that end or narrow a credential. Identity and policy
publish those events with publisher confirms before they answer, so once a revocation call
returns, the event is already in every live replica's queue.

The cache serves only while this feed is live: when its channel closes (the connection was
lost, the queue deleted) the cache is suspended and emptied, and it resumes only once the
channel, queue, bindings and consumer are restored (decision 0015).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import aio_pika
from faststream.rabbit import RabbitBroker

from hypersdk_contracts.names import EVENTS_EXCHANGE, RoutingKey
from hypersdk_gateway.core.credentials import CredentialCache
from hypersdk_kit.bus import broker_connection, events_exchange

logger = logging.getLogger(__name__)

REVOKING_EVENTS = (
    RoutingKey.SESSION_REVOKED,
    RoutingKey.SESSION_REFRESHED,
    RoutingKey.USER_UPDATED,
    RoutingKey.USER_DISABLED,
    RoutingKey.USER_DELETED,
    RoutingKey.APIKEY_ROTATED,
    RoutingKey.APIKEY_REVOKED,
    RoutingKey.ROLE_ASSIGNED,
    RoutingKey.ROLE_REMOVED,
)
"""Events after which a cached principal or grant may no longer be true."""

QUEUE_PREFIX = "gateway.revocations."


class RevocationFeed:
    """Keeps one replica's credential cache honest: any revocation event empties it."""

    def __init__(self, broker: RabbitBroker, cache: CredentialCache) -> None:
        self._broker = broker
        self._cache = cache
        self.queue_name = f"{QUEUE_PREFIX}{uuid.uuid4().hex}"
        self._channel: aio_pika.abc.AbstractRobustChannel | None = None

    async def start(self, *, declare_topology: bool) -> None:
        """Bind this replica's queue and start consuming; then the cache may serve.

        The events exchange is declared, or only checked when ``declare_topology`` is off.
        """
        await self._broker.declare_exchange(events_exchange(declare=declare_topology))
        channel: Any = await broker_connection(self._broker).channel()
        channel.close_callbacks.add(self._suspend)
        channel.reopen_callbacks.add(self._resume)
        queue = await channel.declare_queue(
            self.queue_name,
            durable=False,
            exclusive=True,
            auto_delete=True,
            arguments={"x-queue-type": "classic"},
        )
        for routing_key in REVOKING_EVENTS:
            await queue.bind(EVENTS_EXCHANGE, routing_key=routing_key.value)
        await queue.consume(self._on_revocation, no_ack=True)
        self._channel = channel
        self._cache.resume()

    async def stop(self) -> None:
        """Stop serving from the cache, then close the channel."""
        self._cache.suspend()
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()

    async def _on_revocation(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # Whatever the event says, forgetting everything is always safe.
        self._cache.invalidate()

    def _suspend(self, *_: object) -> None:
        if self._cache.live:
            logger.warning("revocation feed closed: credential cache suspended")
        self._cache.suspend()

    def _resume(self, *_: object) -> None:
        logger.info("revocation feed restored: credential cache resumed")
        self._cache.resume()
