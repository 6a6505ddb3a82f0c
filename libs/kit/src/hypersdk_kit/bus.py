"""Bus wiring shared by the services: topology, publishing, consuming and request/reply.

Nothing here connects at import time; a service's composition root builds a broker with
:func:`build_broker` and registers its subscribers on it before starting it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import aio_pika
import aio_pika.abc
import aio_pika.exceptions
import aiormq
from faststream import AckPolicy
from faststream.rabbit import (
    Channel,
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
    RabbitResponse,
)
from faststream.rabbit.annotations import RabbitMessage
from faststream.security import BaseSecurity
from pamqp.common import FieldValue
from pydantic import BaseModel, ValidationError

from hypersdk_contracts.base import Message
from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CLOUDEVENTS_CONTENT_TYPE,
    CloudEvent,
    RequestContext,
    batch_from_json,
    child_traceparent,
    event_envelope,
    new_event,
)
from hypersdk_contracts.errors import ErrorBody, ErrorCode, ServiceError
from hypersdk_contracts.events import EventData
from hypersdk_contracts.names import DEAD_LETTER_EXCHANGE, EVENTS_EXCHANGE, dead_letter_queue
from hypersdk_contracts.operations import target_of
from hypersdk_contracts.rpc import RpcReply, RpcRequest
from hypersdk_kit.ports import EnvelopePublisher
from hypersdk_kit.ports import EventPublisher as EventPublisher  # noqa: PLC0414 - re-export
from hypersdk_kit.settings import AmqpTls

logger = logging.getLogger(__name__)

DLX = RabbitExchange(DEAD_LETTER_EXCHANGE, type=ExchangeType.DIRECT, durable=True)


def events_exchange(*, declare: bool) -> RabbitExchange:
    """The events exchange; declared, or only checked (passive) where it is provisioned."""
    return RabbitExchange(EVENTS_EXCHANGE, type=ExchangeType.TOPIC, durable=True, declare=declare)


DELIVERY_LIMIT = 10
"""A message redelivered this often after transient failures is dead-lettered, not looped."""

RequestT = TypeVar("RequestT", bound=RpcRequest)


def build_broker(amqp_url: str, *, service: str, tls: AmqpTls | None = None) -> RabbitBroker:
    """A broker for ``service``; per-message log lines are off (they carry no value here).

    With ``tls`` the connection is amqps, verified against its CA, with the client
    certificate presented (an ``amqps://`` URL without ``tls`` verifies against the system CAs).
    """
    security = None if tls is None else BaseSecurity(ssl_context=tls.ssl_context())
    return RabbitBroker(
        amqp_url,
        app_id=f"hypersdk-{service}",
        logger=None,
        graceful_timeout=30,
        security=security,
    )


def durable_queue(name: str, *, routing_key: str = "") -> RabbitQueue:
    """A quorum queue whose rejected or too-often-redelivered messages go to ``<name>.dlq``."""
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key or name,
        arguments={
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": DELIVERY_LIMIT,
        },
    )


async def declare_dead_letter_queue(broker: RabbitBroker, queue: str) -> None:
    """Declare the dead-letter exchange and the DLQ that keeps what ``queue`` rejects."""
    dlx = await broker.declare_exchange(DLX)
    dlq = await broker.declare_queue(
        RabbitQueue(dead_letter_queue(queue), durable=True, routing_key=queue)
    )
    await dlq.bind(dlx, routing_key=queue)


# ---- publishing events ------------------------------------------------------------------------


class RabbitEventPublisher(EventPublisher, EnvelopePublisher):
    """Publishes CloudEvents (structured mode) with publisher confirms and persistence.

    On a channel of its own on the broker's connection, through aiormq (under aio-pika):
    FastStream's publish path costs about half as much CPU again per message, and the gateway
    publishes one event per API call.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        *,
        service: str,
        declare_topology: bool = True,
        confirm_timeout_seconds: float = 30.0,
    ) -> None:
        self._broker = broker
        self._service = service
        self._exchange = events_exchange(declare=declare_topology)
        self._confirm_timeout_seconds = confirm_timeout_seconds
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._opening: asyncio.Lock | None = None

    async def _ready(self) -> aiormq.Channel:
        if self._channel is not None and self._channel.is_closed:
            raise bus_unavailable()  # aio-pika restores this same channel; no second one
        if self._channel is None:
            self._opening = self._opening or asyncio.Lock()
            async with self._opening:
                if self._channel is None:
                    # Declared (or only checked, without topology rights) once, through
                    # FastStream.
                    await self._broker.declare_exchange(self._exchange)
                    connection = broker_connection(self._broker)
                    self._channel = await connection.channel(publisher_confirms=True)
        # aio-pika's robust channel swaps its aiormq channel when it reconnects. The concrete
        # class, for basic_publish's ``wait``, which the abstract one does not declare.
        return cast(aiormq.Channel, await self._channel.get_underlay_channel())

    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Publish and wait for the confirm (declaring or checking the exchange on first use).

        Raises ``TimeoutError`` when the broker has not confirmed within the confirm timeout,
        and ``ServiceError(upstream_unavailable)`` at once when there is no connection to the
        broker, or it is lost before the confirm arrives.
        """
        if not broker_connection(self._broker).connected.is_set():
            raise bus_unavailable()
        try:
            return await self._publish(data, subject=subject, context=context)
        except CONNECTION_LOST as exc:
            raise bus_unavailable() from exc

    async def _publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        channel = await self._ready()
        event = event_envelope(data, service=self._service, subject=subject, context=context)
        if not isinstance(await self._send(channel, event), aiormq.spec.Basic.Ack):
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "The message bus refused an event.")
        return event

    async def publish_envelopes(self, events: Sequence[CloudEvent]) -> None:
        """Publish envelopes built earlier (an outbox's), in order; raise unless all are acked.

        All are written to the channel before any confirm is awaited, in the given order.
        Refused at once (``upstream_unavailable``) without a connection, as :meth:`publish` is.
        """
        if not broker_connection(self._broker).connected.is_set():
            raise bus_unavailable()
        channel = await self._ready()
        confirmations = await asyncio.gather(*(self._send(channel, event) for event in events))
        if not all(isinstance(c, aiormq.spec.Basic.Ack) for c in confirmations):
            raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "The message bus refused an event.")

    async def _send(self, channel: aiormq.Channel, event: CloudEvent) -> object:
        return await channel.basic_publish(
            event.model_dump_json(by_alias=True, exclude_none=True).encode(),
            exchange=EVENTS_EXCHANGE,
            routing_key=event.routing_key,
            properties=aiormq.spec.Basic.Properties(
                content_type=CLOUDEVENTS_CONTENT_TYPE,
                message_id=event.id,
                message_type=event.type,
                headers=_trace_headers(event),
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT.value,
                user_id=bus_login(self._broker),
            ),
            mandatory=False,
            timeout=self._confirm_timeout_seconds,
            # Wait for the broker's confirm only, not for the frames to leave first: aiormq
            # waits for that while holding the channel's lock, which lets one publish out at a
            # time and queued thousands of them behind it under load (decision 0018).
            wait=False,
        )


class InMemoryEventPublisher(EventPublisher):
    """Keeps published events in a list; for unit tests."""

    def __init__(self, *, service: str = "test") -> None:
        self.events: list[CloudEvent] = []
        self._service = service

    async def publish(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Record the event."""
        event = event_envelope(data, service=self._service, subject=subject, context=context)
        self.events.append(event)
        return event

    def types(self) -> list[str]:
        """Routing keys published, in order."""
        return [event.routing_key for event in self.events]


async def send_command(
    broker: RabbitBroker,
    *,
    queue: str,
    command: Message,
    context: RequestContext,
    declare_queue: bool = True,
) -> CloudEvent:
    """Send a command to a durable work queue, in an envelope, confirmed.

    With ``declare_queue`` the queue is declared first (idempotent), so a command sent before
    any worker started is kept; without it, an unroutable command fails (mandatory publish).
    """
    if declare_queue:
        await broker.declare_queue(durable_queue(queue))
    command_type: str = getattr(command, "command_type")  # noqa: B009 - ClassVar on commands
    service = command_type.split(".", 1)[0]
    event = new_event(
        service=service, routing_key=command_type, data=command, subject=None, context=context
    )
    await broker.publish(
        event.model_dump_json(by_alias=True, exclude_none=True).encode(),
        routing_key=queue,
        content_type=CLOUDEVENTS_CONTENT_TYPE,
        message_id=event.id,
        message_type=event.type,
        headers=_trace_headers(event),
        persist=True,
        mandatory=True,
        user_id=bus_login(broker),
    )
    return event


def _trace_headers(event: CloudEvent) -> dict[str, FieldValue]:
    """W3C trace context as AMQP headers, as well as inside the envelope."""
    return {"traceparent": event.traceparent} if event.traceparent else {}


# ---- consuming --------------------------------------------------------------------------------


class PoisonMessageError(Exception):
    """The message can never be processed; dead-letter it."""


def envelope_consumer(
    handle: Callable[[CloudEvent], Awaitable[None]],
) -> Callable[[RabbitMessage], Awaitable[None]]:
    """Wrap an envelope handler with the one ack policy of the platform.

    - parsed and handled: ack (the handler made its effect durable before returning);
    - not an envelope, or the handler says it is poison: reject, so it is dead-lettered;
    - anything else (a database outage, say): back off, then requeue; the queue's delivery
      limit dead-letters a message that keeps failing, so nothing loops forever.
    """

    async def consume(msg: RabbitMessage) -> None:
        event = await _envelope_or_reject(msg)
        if event is None:
            return
        try:
            await handle(event)
        except (PoisonMessageError, ValidationError) as exc:
            logger.warning("dead-lettering event %s: %s", event.id, type(exc).__name__)
            await msg.reject(requeue=False)
            return
        except Exception:
            deliveries = _delivery_count(msg)
            logger.exception("event %s failed (delivery %d); requeueing", event.id, deliveries + 1)
            await _back_off(deliveries)
            await msg.nack(requeue=True)
            return
        await msg.ack()

    return consume


async def _envelope_or_reject(delivery: Delivery) -> CloudEvent | None:
    """The envelope of a delivery; a body that is none is dead-lettered (None returned)."""
    try:
        return CloudEvent.model_validate_json(delivery.body)
    except ValidationError:
        logger.warning(
            "dead-lettering a message that is not a valid envelope",
            extra={"message_id": delivery.message_id},
        )
        await delivery.reject(requeue=False)
        return None


async def _envelopes_or_reject(delivery: Delivery) -> list[CloudEvent] | None:
    """The envelopes of a single-event or batch message; dead-letters anything else."""
    if delivery.content_type != CLOUDEVENTS_BATCH_CONTENT_TYPE:
        event = await _envelope_or_reject(delivery)
        return None if event is None else [event]
    try:
        return batch_from_json(delivery.body)
    except ValidationError:
        logger.warning(
            "dead-lettering a batch message that is not a non-empty array of envelopes",
            extra={"message_id": delivery.message_id},
        )
        await delivery.reject(requeue=False)
        return None


def _delivery_count(delivery: Delivery) -> int:
    """How often RabbitMQ delivered it before (a quorum queue's ``x-delivery-count``)."""
    return int((delivery.headers or {}).get("x-delivery-count", 0) or 0)


async def _back_off(deliveries: int) -> None:
    """Wait before requeueing: 0.2 s, doubling with each delivery, at most 5 s."""
    await asyncio.sleep(min(0.2 * 2**deliveries, 5.0))


def subscribe_envelopes(
    broker: RabbitBroker,
    queue: RabbitQueue,
    handle: Callable[[CloudEvent], Awaitable[None]],
    *,
    exchange: RabbitExchange | None = None,
    prefetch: int = 10,
) -> None:
    """Register ``handle`` on ``queue`` with manual acks via :func:`envelope_consumer`."""
    consume = envelope_consumer(handle)

    async def consume_current() -> None:
        await consume(current_message(broker))

    broker.subscriber(
        queue,
        exchange,
        ack_policy=AckPolicy.MANUAL,
        channel=Channel(prefetch_count=prefetch),
    )(consume_current)


def current_message(broker: RabbitBroker) -> RabbitMessage:
    """The message being handled, from the broker's context.

    Handlers take no arguments and read the message here: FastStream injects a ``RabbitMessage``
    argument through a synchronous dependency that it runs in a worker thread, one thread hop
    per message (about 0.5 ms of every request/reply round trip on a 2-core machine).
    """
    message: RabbitMessage = broker.context.get_local("message")
    return message


class Delivery(Protocol):
    """What a batch consumer needs of a delivered message (aio-pika's incoming message is one)."""

    @property
    def body(self) -> bytes:
        """The message body."""

    @property
    def message_id(self) -> str | None:
        """The AMQP message id."""

    @property
    def content_type(self) -> str | None:
        """The AMQP content type (a batch message's is ``CLOUDEVENTS_BATCH_CONTENT_TYPE``)."""

    @property
    def headers(self) -> Any:
        """The AMQP headers (``x-delivery-count`` on quorum queues)."""

    async def ack(self, multiple: bool = False) -> None:
        """Done with: remove it (``multiple``: and every unsettled earlier one) from the queue."""

    async def nack(self, *, requeue: bool = True) -> None:
        """Not done: put it back (or dead-letter it)."""

    async def reject(self, *, requeue: bool = False) -> None:
        """Never processable: dead-letter it."""


class PublishedDelivery(Delivery, Protocol):
    """A delivery that names its publisher (aio-pika's incoming message is one)."""

    @property
    def user_id(self) -> str | None:
        """The AMQP ``user_id``: RabbitMQ refuses one that is not the publisher's login."""


@dataclass(frozen=True)
class Received:
    """An envelope as delivered, with the broker-validated login of its publisher (if any)."""

    event: CloudEvent
    user_id: str | None


class EnvelopeBatcher:
    """Hands envelopes to ``handle_batch`` in batches, with the ack policy of envelope_consumer.

    Each envelope comes with the ``user_id`` of the message that carried it (:class:`Received`).

    A delivery is added and the consumer moves on; a batch is handled when it reaches
    ``max_batch`` envelopes or ``max_wait_seconds`` after its first, one batch at a time, in
    delivery order. A delivery holds one envelope, or several in the CloudEvents JSON batch
    format (all of them go into the same batch; one that is not a non-empty array of
    envelopes is dead-lettered). Each delivery of a batch is acked once the handler returned
    (its effect is durable); a handler that calls a batch poison is retried delivery by
    delivery, and a batch message envelope by envelope, so that only the message with the
    poison is dead-lettered (whole, after its other envelopes were handled); any other
    failure requeues the whole batch after a backoff (the queue's delivery limit still
    dead-letters what keeps failing).
    """

    def __init__(
        self,
        handle_batch: Callable[[list[Received]], Awaitable[None]],
        *,
        max_batch: int,
        max_wait_seconds: float,
    ) -> None:
        self._handle_batch = handle_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_seconds
        self._pending: list[tuple[PublishedDelivery, list[Received]]] = []
        self._pending_events = 0
        self._flushing = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def add(self, delivery: PublishedDelivery) -> None:
        """Take a delivery: dead-letter it if it is no envelope, else queue it for a batch."""
        events = await _envelopes_or_reject(delivery)
        if events is None:
            return
        self._pending.append((delivery, [Received(event, delivery.user_id) for event in events]))
        self._pending_events += len(events)
        if self._pending_events >= self._max_batch:
            self._spawn_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait, self._spawn_flush)

    def _spawn_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Handle what is pending now (after any batch being handled)."""
        async with self._flushing:
            batch, self._pending, self._pending_events = self._pending, [], 0
            if self._timer is not None:  # set for envelopes this batch now takes
                self._timer.cancel()
                self._timer = None
            if batch:
                await self._deliver(batch)

    async def _deliver(self, batch: list[tuple[PublishedDelivery, list[Received]]]) -> None:
        try:
            await self._handle_batch([item for _, received in batch for item in received])
        except (PoisonMessageError, ValidationError) as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._deliver([item])
                return
            delivery, received = batch[0]
            if len(received) > 1:
                await self._deliver_alone(delivery, received)
                return
            logger.warning("dead-lettering event %s: %s", received[0].event.id, type(exc).__name__)
            await _settle(delivery.reject(requeue=False))
            return
        except Exception:
            deliveries = max(_delivery_count(delivery) for delivery, _ in batch)
            logger.exception(
                "a batch of %d deliveries failed (delivery %d); requeueing",
                len(batch),
                deliveries + 1,
            )
            await _back_off(deliveries)
            for delivery, _ in batch:
                await _settle(delivery.nack(requeue=True))
            return
        # One frame for the whole batch: deliveries reach the batcher in the channel's order,
        # batches are handled one at a time, and everything earlier was settled before, so
        # the last delivery's tag covers exactly this batch.
        last, _ = batch[-1]
        await _settle(last.ack(multiple=len(batch) > 1))

    async def _deliver_alone(self, delivery: PublishedDelivery, received: list[Received]) -> None:
        """Handle a batch message's envelopes one by one; dead-letter it if any is poison."""
        poison = []
        for item in received:
            try:
                await self._handle_batch([item])
            except (PoisonMessageError, ValidationError):
                poison.append(item.event.id)
            except Exception:
                deliveries = _delivery_count(delivery)
                logger.exception("a batch message failed (delivery %d); requeueing", deliveries + 1)
                await _back_off(deliveries)
                await _settle(delivery.nack(requeue=True))
                return
        if poison:
            logger.warning(
                "dead-lettering a batch message of %d events, %d poison: %s",
                len(received),
                len(poison),
                ", ".join(poison),
            )
            await _settle(delivery.reject(requeue=False))
            return
        await _settle(delivery.ack())


async def _settle(action: Awaitable[None]) -> None:
    """Ack, nack or reject; if the channel is gone, RabbitMQ redelivers the message anyway."""
    try:
        await action
    except Exception:
        logger.warning("could not settle a delivery; RabbitMQ will redeliver it", exc_info=True)


class BatchConsumer:
    """Consumes a queue through an :class:`EnvelopeBatcher`, on a channel of its own.

    Not through a FastStream subscriber: FastStream's per-message path (decoding, dependency
    injection, its middlewares, one ack frame per message) took about 40 % of the audit
    service's CPU per event. Deliveries are taken one at a time in the channel's order, and
    the channel is this consumer's alone, so a stored batch is settled with one ``multiple``
    ack. ``prefetch`` bounds how many envelopes are unacknowledged at once, so also a batch.
    aio-pika's robust channel restores the consumer after a reconnection.
    """

    def __init__(
        self,
        broker: RabbitBroker,
        queue: RabbitQueue,
        handle_batch: Callable[[list[Received]], Awaitable[None]],
        *,
        exchange: RabbitExchange,
        prefetch: int,
        max_batch: int,
        max_wait_seconds: float,
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._exchange = exchange
        self._prefetch = prefetch
        self.batcher = EnvelopeBatcher(
            handle_batch, max_batch=max_batch, max_wait_seconds=max_wait_seconds
        )
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._taking: asyncio.Lock = asyncio.Lock()

    async def start(self) -> None:
        """Declare (or check) the exchange, the queue and its binding; then consume."""
        await self._broker.declare_exchange(self._exchange)
        declared = await self._broker.declare_queue(self._queue)
        await declared.bind(self._exchange.name, routing_key=self._queue.routing())
        channel = await broker_connection(self._broker).channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        # Checked (passively declared) on this channel, so that aio-pika restores the consumer
        # with the channel after a reconnection.
        queue = await channel.get_queue(self._queue.name)
        await queue.consume(self._take)
        self._channel = channel

    async def _take(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        # aio-pika runs a callback per delivery as it arrives; the lock keeps them in order.
        async with self._taking:
            await self.batcher.add(message)

    async def stop(self) -> None:
        """Stop consuming: close the channel (what is not acked yet goes back to the queue)."""
        if self._channel is None or self._channel.is_closed:
            return
        await self._channel.close()
        self._channel = None


# ---- request/reply ----------------------------------------------------------------------------

Answer = Message | Sequence[Message] | None


class Authorizer(Protocol):
    """Checks a request's grant before a use case runs (see ``hypersdk_kit.guard``)."""

    async def authorize(
        self,
        *,
        operation: str,
        context: RequestContext,
        permissions: frozenset[str],
        target: str | None = None,
    ) -> dict[str, Any]:
        """Claims of a valid grant for this sealed request, or raise ServiceError(forbidden)."""


def rpc_responder(
    request_model: type[RequestT],
    answer: Callable[[RequestT], Awaitable[Answer]],
    *,
    operation: str = "",
    permissions: frozenset[str] = frozenset(),
    authorizer: Authorizer | None = None,
) -> Callable[[RabbitMessage], Awaitable[dict[str, Any]]]:
    """Turn a use case into a request/reply subscriber that always replies.

    With ``permissions``, the request must carry a grant for one of them and the gateway's seal
    for this operation and its target (checked by ``authorizer``; none configured means
    refused). Bad requests and domain errors become error
    replies; unexpected errors an ``internal_error`` reply without details (logged here).
    """

    async def respond(msg: RabbitMessage) -> dict[str, Any]:
        try:
            request = request_model.model_validate_json(msg.body)
        except ValidationError as exc:
            fields = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
            return _error(ErrorCode.VALIDATION_FAILED, f"Invalid fields: {', '.join(fields)}.")
        try:
            if permissions:
                if authorizer is None:
                    raise ServiceError(ErrorCode.FORBIDDEN, "This service cannot check grants.")
                await authorizer.authorize(
                    operation=operation,
                    context=request.context,
                    permissions=permissions,
                    target=target_of(operation, request),
                )
            result = await answer(request)
        except ServiceError as exc:
            return RpcReply(ok=False, error=exc.body()).model_dump(mode="json")
        except Exception:
            logger.exception("request on %s failed", msg.raw_message.routing_key)
            return _error(ErrorCode.INTERNAL_ERROR, "The service failed to answer.")
        return RpcReply(ok=True, result=_dump(result)).model_dump(mode="json")

    return respond


def _dump(result: Answer) -> Any:
    if result is None:
        return None
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    return [item.model_dump(mode="json") for item in result]


def _error(code: ErrorCode, message: str) -> dict[str, Any]:
    return RpcReply(ok=False, error=ErrorBody(code=code, message=message)).model_dump(mode="json")


def serve_rpc(
    broker: RabbitBroker,
    queue: str,
    request_model: type[RequestT],
    answer: Callable[[RequestT], Awaitable[Answer]],
    *,
    permissions: frozenset[str] = frozenset(),
    authorizer: Authorizer | None = None,
) -> None:
    """Register a request/reply subscriber on ``queue``, guarded by ``permissions`` if any."""
    respond = rpc_responder(
        request_model, answer, operation=queue, permissions=permissions, authorizer=authorizer
    )

    async def respond_current() -> RabbitResponse:
        # The reply carries this connection's login as its broker-validated user_id too.
        return RabbitResponse(await respond(current_message(broker)), user_id=bus_login(broker))

    broker.subscriber(RabbitQueue(queue, durable=True), ack_policy=AckPolicy.ACK)(respond_current)


DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"


class RpcClient:
    """Asks other services questions over RabbitMQ request/reply, many at a time.

    FastStream's ``broker.request`` holds one lock for a whole round trip, so every question a
    process asks would wait for the previous answer: one slow login would stall every other
    call through the gateway. This client keeps its own channel on the broker's connection,
    consumes RabbitMQ's direct reply-to pseudo-queue, and matches answers to questions by
    correlation id, so questions overlap freely.
    """

    def __init__(self, broker: RabbitBroker, *, timeout_seconds: float = 10.0) -> None:
        self._broker = broker
        self._timeout = timeout_seconds
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._opening: asyncio.Lock | None = None

    async def _ready(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is not None:
            if self._channel.is_closed:
                raise bus_unavailable()  # aio-pika restores this same channel; no second one
            return self._channel
        self._opening = self._opening or asyncio.Lock()
        async with self._opening:
            if self._channel is None:
                connection = broker_connection(self._broker)
                channel = await connection.channel(publisher_confirms=True)
                # Checked (passively declared) on the channel, so that aio-pika consumes it
                # again when it restores the channel after a reconnection.
                replies = await channel.get_queue(DIRECT_REPLY_TO)
                await replies.consume(self._on_reply, no_ack=True)
                # Replies to questions asked on a channel never arrive once it closed (the
                # reply-to address dies with it): their callers learn it at once.
                channel.close_callbacks.add(self._fail_pending)
                self._channel = channel
        return self._channel

    def _fail_pending(self, _channel: object, _reason: BaseException | None) -> None:
        pending, self._pending = self._pending, {}
        for waiter in pending.values():
            if not waiter.done():
                waiter.set_exception(bus_unavailable())

    async def _on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        waiter = self._pending.pop(message.correlation_id or "", None)
        if waiter is not None and not waiter.done():
            waiter.set_result(message.body)

    async def call(self, queue: str, request: RpcRequest) -> Any:
        """Send ``request`` and return the reply's result, or raise :class:`ServiceError`.

        Without a connection to the broker (it is being restored), or when it is lost while
        the question waits for its answer, ``upstream_unavailable`` is raised at once, with a
        retry delay, not after the timeout.
        """
        if not broker_connection(self._broker).connected.is_set():
            raise bus_unavailable()
        channel = await self._ready()
        correlation_id = uuid.uuid4().hex
        waiter: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = waiter
        try:
            await channel.default_exchange.publish(
                aio_pika.Message(
                    request.model_dump_json().encode(),
                    content_type="application/json",
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    expiration=self._timeout,
                    user_id=bus_login(self._broker),
                    headers={"traceparent": child_traceparent(request.context.traceparent)},
                ),
                routing_key=queue,
                mandatory=True,
            )
            body = await asyncio.wait_for(waiter, timeout=self._timeout)
        except (TimeoutError, aio_pika.exceptions.DeliveryError) as exc:
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "A backing service did not answer in time."
            ) from exc
        except CONNECTION_LOST as exc:
            raise bus_unavailable() from exc
        finally:
            self._pending.pop(correlation_id, None)
        try:
            reply = RpcReply.model_validate_json(body)
        except ValidationError as exc:
            raise ServiceError(
                ErrorCode.INTERNAL_ERROR, "A backing service answered in an unexpected form."
            ) from exc
        if not reply.ok:
            error = reply.error or ErrorBody(
                code=ErrorCode.INTERNAL_ERROR, message="The service failed to answer."
            )
            raise ServiceError.from_body(error)  # keeps retry_after_seconds
        return reply.result

    async def close(self) -> None:
        """Close the channel (the broker owns the connection)."""
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
        self._channel = None


CONNECTION_LOST = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError)
"""What aio-pika and aiormq raise when a channel or the connection is gone (delivery errors,
answers of the broker, are among them: catch those first where they mean something else)."""


def bus_unavailable() -> ServiceError:
    """The error of a call that cannot reach the broker now: retry in a second."""
    return ServiceError(
        ErrorCode.UPSTREAM_UNAVAILABLE,
        "The message bus connection was lost; retry shortly.",
        retry_after_seconds=1,
    )


def broker_connection(broker: RabbitBroker) -> aio_pika.abc.AbstractRobustConnection:
    """The aio-pika connection of a started broker (FastStream keeps it private)."""
    connection = getattr(broker, "_connection", None)
    if connection is None:
        raise ServiceError(ErrorCode.UPSTREAM_UNAVAILABLE, "The message bus is not connected.")
    return connection  # type: ignore[no-any-return]


def bus_login(broker: RabbitBroker) -> str:
    """The RabbitMQ login of a started broker's connection: the ``user_id`` of what it publishes.

    RabbitMQ refuses a message whose ``user_id`` is not the login of the connection that
    published it, so a consumer may take ``user_id`` as the producing account.
    """
    connection = cast(aio_pika.RobustConnection, broker_connection(broker))
    return connection.url.user or "guest"  # AMQP's default login
