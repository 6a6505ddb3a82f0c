"""Publishing events several to one message (CloudEvents JSON batch format), one confirm each.

The gateway publishes one ``gateway.request.completed`` per API call and holds the call's
response until that event is confirmed. One confirmed message per event cost more CPU than the
call itself (in the gateway, RabbitMQ and audit's consumer). :class:`BatchingEventPublisher`
collects the events of concurrent calls and publishes them as one message: each caller still
waits until the message holding its event is confirmed, and fails if it is not.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence

import aio_pika
import aiormq
from pamqp.common import FieldValue

from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CLOUDEVENTS_CONTENT_TYPE,
    CloudEvent,
    RequestContext,
    batch_to_json,
    event_envelope,
)
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import EventData
from hypersdk_contracts.names import EVENTS_EXCHANGE
from hypersdk_kit.bus import (
    CONNECTION_LOST,
    EventPublisher,
    RabbitEventPublisher,
    broker_connection,
    bus_login,
    bus_unavailable,
)

logger = logging.getLogger(__name__)


class EventsNotConfirmedError(Exception):
    """The broker did not confirm the message that held this event (it may not be kept)."""


class EventBatchSender(ABC):
    """Sends events of one routing key as one message and waits for the broker's confirm."""

    @abstractmethod
    async def send(self, routing_key: str, events: Sequence[CloudEvent]) -> None:
        """Publish ``events`` together; return once confirmed, raise if not."""


class BatchingEventPublisher(EventPublisher):
    """Collects events and publishes them in batches; each ``publish`` returns on its confirm.

    An event goes out at once (with whatever else was published in the same turn of the event
    loop) while no batch of this publisher is waiting for its confirm. While one is, events
    are collected until that confirm arrives, ``max_wait_seconds`` passed, or ``max_batch``
    are waiting; so a light load adds no wait, and a heavy one makes batches as large as the
    events that arrive during one confirm. Events of different routing keys never share a
    message. When a message is not confirmed, every ``publish`` whose event it held raises
    :class:`EventsNotConfirmedError`.
    """

    def __init__(
        self,
        sender: EventBatchSender,
        *,
        service: str,
        max_batch: int = 100,
        max_wait_seconds: float = 0.005,
    ) -> None:
        self._sender = sender
        self._service = service
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._pending: dict[str, list[tuple[CloudEvent, asyncio.Future[None]]]] = {}
        self._waiting = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._flush_soon: asyncio.Handle | None = None
        self._closed = False

    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Queue the event for the next batch; return once its batch is confirmed.

        Raises :class:`EventsNotConfirmedError` when it was not, or when the publisher is closed.
        """
        if self._closed:
            raise EventsNotConfirmedError("The event publisher is closed.")
        event = event_envelope(data, service=self._service, subject=subject, context=context)
        confirmed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(event.routing_key, []).append((event, confirmed))
        self._waiting += 1
        if self._waiting >= self._max_batch:
            self.flush()
        elif self._flush_soon is None:
            loop = asyncio.get_running_loop()
            if self._in_flight:
                self._flush_soon = loop.call_later(self._max_wait, self.flush)
            else:
                self._flush_soon = loop.call_soon(self.flush)
        # A caller that goes away cancels only its wait: its event stays in the batch.
        await confirmed
        return event

    def flush(self) -> None:
        """Send everything collected now, one message per routing key."""
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        pending, self._pending, self._waiting = self._pending, {}, 0
        for routing_key, batch in pending.items():
            task = asyncio.get_running_loop().create_task(self._send(routing_key, batch))
            self._in_flight.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if self._waiting and not self._in_flight:
            self.flush()  # what was collected during the confirm goes at once

    async def _send(
        self, routing_key: str, batch: list[tuple[CloudEvent, asyncio.Future[None]]]
    ) -> None:
        try:
            await self._sender.send(routing_key, [event for event, _ in batch])
        except Exception as exc:
            logger.warning(
                "a batch of %d %s events was not confirmed: %s",
                len(batch),
                routing_key,
                type(exc).__name__,
            )
            for _, confirmed in batch:
                if not confirmed.done():
                    error = EventsNotConfirmedError("The broker did not confirm the event.")
                    error.__cause__ = exc
                    confirmed.set_exception(error)
                    confirmed.exception()  # retrieved: a caller that went away is no error
            return
        for _, confirmed in batch:
            if not confirmed.done():
                confirmed.set_result(None)

    async def close(self) -> None:
        """Refuse new events; send what was collected and wait for every confirm."""
        self._closed = True
        self.flush()
        while self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)


class RabbitEventBatchSender(RabbitEventPublisher, EventBatchSender):
    """Sends a batch to the events exchange as one persistent message, with a confirm.

    Several events travel as ``application/cloudevents-batch+json`` (a JSON array of
    structured envelopes) under their shared routing key; a lone event travels as a plain
    structured envelope, as :class:`RabbitEventPublisher` sends it. Same channel handling
    and confirm timeout as that publisher.
    """

    async def send(self, routing_key: str, events: Sequence[CloudEvent]) -> None:
        """Publish the batch and wait for its confirm (``TimeoutError`` after the timeout).

        Raises ``ServiceError(upstream_unavailable)`` at once without a connection to the broker,
        when it is lost before the confirm, or when the broker refuses the message (a nack).
        """
        if not broker_connection(self._broker).connected.is_set():
            raise bus_unavailable()
        try:
            confirmation = await self._send_batch(routing_key, events)
        except CONNECTION_LOST as exc:
            raise bus_unavailable() from exc
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "The message bus refused an event.")

    async def _send_batch(self, routing_key: str, events: Sequence[CloudEvent]) -> object:
        channel = await self._ready()
        headers: dict[str, FieldValue] = {}
        if len(events) == 1:
            (event,) = events
            body = event.model_dump_json(by_alias=True, exclude_none=True).encode()
            content_type, message_id = CLOUDEVENTS_CONTENT_TYPE, event.id
            if event.traceparent:  # as every single event: trace context as a header too
                headers["traceparent"] = event.traceparent
        else:
            body = batch_to_json(list(events))
            # The first event's id: unique too, and names the message in logs and DLQs.
            content_type, message_id = CLOUDEVENTS_BATCH_CONTENT_TYPE, f"batch-{events[0].id}"
        return await channel.basic_publish(
            body,
            exchange=EVENTS_EXCHANGE,
            routing_key=routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type=content_type,
                message_id=message_id,
                message_type=events[0].type,
                headers=headers,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                # The broker checks it against the connection's login; audit attributes by it.
                user_id=bus_login(self._broker),
            ),
            mandatory=False,
            timeout=self._confirm_timeout_seconds,
            wait=False,  # as RabbitEventPublisher: wait for the confirm only (decision 0018)
        )
