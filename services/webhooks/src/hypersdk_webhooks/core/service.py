"""Webhook use cases: endpoints, the messages each event makes, and their delivery.

Every event the service consumes becomes one message per endpoint whose filters match it,
stored before the event is acknowledged; a message is attempted until an answer of 2xx, on
the retry schedule (``core/schedule.py``), then dead-lettered, listable and replayable. Each
attempt is signed (Standard Webhooks, ``core/signing.py``) with every key of the endpoint that
is active (both during a rotation's overlap), POSTed to an address checked when it connects
(``core/ssrf.py``), and told to the platform as an event, without the secret or the body.

Only genuine events are dispatched: each is attributed as audit attributes it (the broker
login, the catalogue, the request seal), and what goes out is its envelope without the seal.
Every change of state and the event that tells it commit together (the unit of work's
outbox), so nothing the audit log should hold is lost to a crash between the two.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from hypersdk_contracts.catalogue import source_of
from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import (
    DeliveryAttempted,
    DeliveryDeadLettered,
    DeliveryReplayed,
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookPaused,
    WebhookResumed,
    WebhookSecretRotated,
    WebhookTested,
    WebhookUpdated,
)
from hypersdk_contracts.names import EVENT_TYPE_PREFIX, RoutingKey
from hypersdk_kit.attribution import Attribution, NotGenuineError
from hypersdk_kit.bus import Received
from hypersdk_kit.ports import UnitOfWork
from hypersdk_webhooks.core import signing, topics
from hypersdk_webhooks.core.models import (
    Attempt,
    Endpoint,
    EndpointStatus,
    Incoming,
    Message,
    MessageState,
    Outcome,
)
from hypersdk_webhooks.core.schedule import DisablePolicy, RetryPolicy
from hypersdk_webhooks.core.ssrf import AddressPolicy, Target, TargetRefusedError, parse_target
from hypersdk_webhooks.ports.outbound import Delivery, EndpointStore, MessageStore, PublicFeed

logger = logging.getLogger(__name__)
SERVICE = "webhooks"
MIN_TIMEOUT_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = 30.0
MAX_IN_FLIGHT = 16
MAX_DESCRIPTION = 500
MAX_ENDPOINTS = 200
"""Endpoints at most: every event is matched against each one's filters."""
CONTENT_TYPE = "application/cloudevents+json"
USER_AGENT = "HyperSDK-Webhooks/0.1"
TEST_EVENT_TYPE = RoutingKey.WEBHOOK_TESTED.value
OWN_EVENTS = "webhooks.#"
"""The service's own events are never delivered: an endpoint filtering ``#`` would otherwise
make one attempt event per attempt, each a message, without end."""


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def subject_of(endpoint_id: str) -> str:
    """The CloudEvents subject (and audit resource) of an endpoint's events."""
    return f"webhooks/{endpoint_id}"


def target_of(url: str) -> str:
    """Scheme, host and port of a URL: what events say of it (a path may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


class WebhookService:
    """Endpoints and the delivery of their messages."""

    def __init__(
        self,
        *,
        endpoints: EndpointStore,
        messages: MessageStore,
        delivery: Delivery,
        uow: UnitOfWork,
        attribution: Attribution,
        policy: AddressPolicy,
        retry: RetryPolicy | None = None,
        disable: DisablePolicy | None = None,
        rotation_overlap: timedelta = timedelta(hours=24),
        lease: timedelta = timedelta(seconds=120),
        public: PublicFeed | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._messages = messages
        self._delivery = delivery
        self._uow = uow
        self._attribution = attribution
        self._policy = policy
        self._retry = retry or RetryPolicy()
        self._disable = disable or DisablePolicy()
        self._overlap = rotation_overlap
        self._lease = lease
        self._public = public
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._in_flight: dict[str, int] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self.wakeup = asyncio.Event()
        """Set when something may have come due: new messages, a freed slot, a resume."""

    # ---- endpoints -------------------------------------------------------------------------

    async def register(
        self,
        *,
        url: str,
        event_types: list[str],
        description: str = "",
        timeout_seconds: float = 10.0,
        max_in_flight: int = 4,
        context: RequestContext | None = None,
    ) -> tuple[Endpoint, str]:
        """A new active endpoint and its signing secret, which is shown this once."""
        target = self._target(url)
        patterns = _patterns(event_types)
        _check_limits(description, timeout_seconds, max_in_flight)
        if len(await self._endpoints.list()) >= MAX_ENDPOINTS:
            raise ServiceError(
                ErrorCode.CONFLICT,
                f"At most {MAX_ENDPOINTS} webhook endpoints; delete one that is not needed.",
            )
        secret = signing.generate_secret()
        now = self._clock()
        endpoint = Endpoint(
            id=_new_id("ep"),
            url=target.url,
            event_types=patterns,
            description=description,
            status=EndpointStatus.ACTIVE,
            keys=signing.SigningKeys(current=secret, previous=None, previous_until=None),
            timeout_seconds=timeout_seconds,
            max_in_flight=max_in_flight,
            created_at=now,
            updated_at=now,
        )
        async with self._uow.transaction():
            await self._endpoints.add(endpoint)
            await self._uow.record(
                WebhookCreated(
                    endpoint_id=endpoint.id,
                    target=target_of(endpoint.url),
                    event_types=list(patterns),
                ),
                subject=subject_of(endpoint.id),
                context=context,
            )
        return endpoint, secret

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint:
        """The endpoint, or not_found (locked until the transaction ends, ``for_update``)."""
        endpoint = await self._endpoints.get(endpoint_id, for_update=for_update)
        if endpoint is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "No webhook endpoint with that id.")
        return endpoint

    async def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint."""
        return await self._endpoints.list()

    async def update(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: list[str] | None = None,
        description: str | None = None,
        timeout_seconds: float | None = None,
        max_in_flight: int | None = None,
        context: RequestContext | None = None,
    ) -> Endpoint:
        """Change what is given; the rest stays."""
        given = {
            "url": url,
            "event_types": event_types,
            "description": description,
            "timeout_seconds": timeout_seconds,
            "max_in_flight": max_in_flight,
        }
        new_url = self._target(url).url if url is not None else None
        patterns = _patterns(event_types) if event_types is not None else None
        async with self._uow.transaction():
            endpoint = await self.get(endpoint_id, for_update=True)
            changed = replace(
                endpoint,
                url=new_url or endpoint.url,
                event_types=patterns or endpoint.event_types,
                description=description if description is not None else endpoint.description,
                timeout_seconds=timeout_seconds or endpoint.timeout_seconds,
                max_in_flight=max_in_flight or endpoint.max_in_flight,
                updated_at=self._clock(),
            )
            _check_limits(changed.description, changed.timeout_seconds, changed.max_in_flight)
            await self._endpoints.save(changed)
            await self._uow.record(
                WebhookUpdated(
                    endpoint_id=endpoint_id,
                    target=target_of(changed.url),
                    event_types=list(changed.event_types),
                    changed=sorted(name for name, value in given.items() if value is not None),
                ),
                subject=subject_of(endpoint_id),
                context=context,
            )
        return changed

    async def pause(self, endpoint_id: str, *, context: RequestContext | None = None) -> Endpoint:
        """Stop sending: its messages wait (and come due again) until it is resumed."""
        return await self._set_status(endpoint_id, EndpointStatus.PAUSED, context)

    async def resume(self, endpoint_id: str, *, context: RequestContext | None = None) -> Endpoint:
        """Send again, a paused or a disabled endpoint; its failure count starts over."""
        resumed = await self._set_status(endpoint_id, EndpointStatus.ACTIVE, context)
        self.wakeup.set()
        return resumed

    async def delete(self, endpoint_id: str, *, context: RequestContext | None = None) -> None:
        """Remove the endpoint and its messages, or not_found."""
        async with self._uow.transaction():
            if not await self._endpoints.delete(endpoint_id):
                raise ServiceError(ErrorCode.NOT_FOUND, "No webhook endpoint with that id.")
            await self._uow.record(
                WebhookDeleted(endpoint_id=endpoint_id),
                subject=subject_of(endpoint_id),
                context=context,
            )

    async def rotate_secret(
        self, endpoint_id: str, *, context: RequestContext | None = None
    ) -> tuple[Endpoint, str]:
        """A new signing secret, shown once; the old one still signs during the overlap."""
        secret = signing.generate_secret()
        async with self._uow.transaction():
            endpoint = await self.get(endpoint_id, for_update=True)
            now = self._clock()
            rotated = replace(
                endpoint,
                keys=endpoint.keys.rotated(secret, now=now, overlap=self._overlap),
                updated_at=now,
            )
            await self._endpoints.save(rotated)
            assert rotated.keys.previous_until is not None
            await self._uow.record(
                WebhookSecretRotated(
                    endpoint_id=endpoint_id, previous_valid_until=rotated.keys.previous_until
                ),
                subject=subject_of(endpoint_id),
                context=context,
            )
        return rotated, secret

    async def _set_status(
        self, endpoint_id: str, status: EndpointStatus, context: RequestContext | None
    ) -> Endpoint:
        async with self._uow.transaction():
            endpoint = await self.get(endpoint_id, for_update=True)
            changed = replace(endpoint, status=status, updated_at=self._clock())
            if status is EndpointStatus.ACTIVE:  # a resumed endpoint's failures start over
                changed = replace(
                    changed, failing_since=None, consecutive_failures=0, disabled_reason=""
                )
            await self._endpoints.save(changed)
            event = (
                WebhookResumed(endpoint_id=endpoint_id)
                if status is EndpointStatus.ACTIVE
                else WebhookPaused(endpoint_id=endpoint_id)
            )
            await self._uow.record(event, subject=subject_of(endpoint_id), context=context)
        return changed

    def _target(self, url: str) -> Target:
        try:
            return parse_target(url, self._policy)
        except TargetRefusedError as exc:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"{exc.message} ({exc.code})") from exc

    # ---- events in -------------------------------------------------------------------------

    async def take(self, batch: Sequence[Received]) -> int:
        """Dispatch the genuine events of a batch from the bus; how many messages were new.

        Each genuine event is then published to the public exchange (with ``public``), for
        AMQP subscriptions, before the batch is acknowledged: a failure makes the bus deliver
        the batch again (no message is made twice; subscribers may see an event twice).
        A forged event (a login publishing what its service may not, a request claim no seal
        backs) is logged and never sent out; audit keeps it in its quarantine.
        """
        genuine = []
        for received in batch:
            event = received.event
            try:
                self._attribution.producer_of(event, login=received.user_id)
            except NotGenuineError as refusal:
                logger.warning(
                    "event %s (%s) not delivered: %s",
                    event.id[:64],
                    event.type[:128],
                    refusal.reason,
                )
                continue
            genuine.append(Incoming(event.id, event.routing_key, delivered_body(event)))
        made = await self.dispatch_batch(genuine)
        if self._public is not None and genuine:
            await self._public.publish(genuine)
        return made

    async def dispatch(self, *, event_id: str, event_type: str, body: bytes) -> int:
        """One message per endpoint (active or paused) whose filters match; how many were new.

        Idempotent on the event id: a redelivered event makes no second message.
        """
        return await self.dispatch_batch([Incoming(event_id, event_type, body)])

    async def dispatch_batch(self, events: Sequence[Incoming]) -> int:
        """:meth:`dispatch` for several events, with one look at the endpoints and one write."""
        wanted = [e for e in events if not topics.matches(OWN_EVENTS, e.event_type)]
        if not wanted:
            return 0
        now = self._clock()
        endpoints = [
            endpoint
            for endpoint in await self._endpoints.list()
            if endpoint.status is not EndpointStatus.DISABLED
        ]
        messages = [
            Message(
                id=_new_id("wm"),
                endpoint_id=endpoint.id,
                event_id=event.event_id,
                event_type=event.event_type,
                message_id=signing.message_id_for(event.event_id, endpoint.id),
                body=event.body,
                created_at=now,
                next_attempt_at=now,
            )
            for event in wanted
            for endpoint in endpoints
            if topics.matches_any(endpoint.event_types, event.event_type)
        ]
        made = await self._messages.add_new(messages) if messages else 0
        if made:
            self.wakeup.set()
        return made

    # ---- delivery --------------------------------------------------------------------------

    async def deliver_due(self, *, limit: int = 100) -> int:
        """Claim what is due within each endpoint's free slots and start attempting it.

        How many were claimed; the attempts run on in the background (:meth:`drain` waits
        for them). An endpoint never has more than its limit in flight in this process, and
        nothing is claimed that could not start at once, so a claim's lease runs only while
        its attempt does.
        """
        now = self._clock()
        capacity = {
            endpoint.id: endpoint.max_in_flight - self._in_flight.get(endpoint.id, 0)
            for endpoint in await self._endpoints.list()
            if endpoint.status is EndpointStatus.ACTIVE
        }
        capacity = {endpoint_id: free for endpoint_id, free in capacity.items() if free > 0}
        if not capacity:
            return 0
        due = await self._messages.claim_due(
            now=now, capacity=capacity, limit=limit, lease=self._lease
        )
        for message in due:
            self._in_flight[message.endpoint_id] = self._in_flight.get(message.endpoint_id, 0) + 1
            task = asyncio.create_task(self._run_attempt(message), name=f"webhook {message.id}")
            self._attempts.add(task)
            task.add_done_callback(self._attempts.discard)
        return len(due)

    @property
    def in_flight(self) -> int:
        """Attempts running in this process."""
        return len(self._attempts)

    async def drain(self, *, timeout_seconds: float | None = None) -> None:
        """Wait for the attempts in flight; past the timeout, cancel them (their leases lapse)."""
        pending = set(self._attempts)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_seconds)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    async def _run_attempt(self, message: Message) -> None:
        try:
            await self._attempt(message)
        except Exception:  # its lease lapses and it comes due again: at least once
            logger.exception("webhook message %s not attempted", message.id)
        finally:
            left = self._in_flight.get(message.endpoint_id, 1) - 1
            if left > 0:
                self._in_flight[message.endpoint_id] = left
            else:
                self._in_flight.pop(message.endpoint_id, None)
            self.wakeup.set()

    async def _attempt(self, message: Message) -> None:
        endpoint = await self._endpoints.get(message.endpoint_id)
        if endpoint is None:  # deleted meanwhile: its messages went with it
            return
        attempt = await self._post(endpoint, message.message_id, message.body)
        now = self._clock()
        attempts = message.attempts + 1
        following = None
        if not attempt.delivered:
            following = self._retry.next_attempt_at(attempts_made=attempts, now=now, rng=self._rng)
        if attempt.delivered:
            state = MessageState.DELIVERED
        else:
            state = MessageState.PENDING if following else MessageState.DEAD
        done = replace(
            message,
            state=state,
            attempts=attempts,
            next_attempt_at=following,
            leased_until=None,
            last_attempt=attempt,
        )
        subject = subject_of(endpoint.id)
        async with self._uow.transaction():
            # The endpoint's row first, as deleting it does (then its messages): two
            # transactions never take the two in opposite orders.
            if await self._endpoints.get(endpoint.id, for_update=True) is None:
                return
            if not await self._messages.settle(done, claimed_until=message.leased_until):
                # Its lease lapsed and another worker claimed it (or it was deleted): that
                # worker's attempt tells; this one is only logged.
                logger.warning("webhook message %s was claimed again; result dropped", done.id)
                return
            await self._uow.record(
                DeliveryAttempted(
                    endpoint_id=endpoint.id,
                    message_id=done.id,
                    webhook_id=done.message_id,
                    event_id=done.event_id,
                    event_type=done.event_type,
                    attempt=attempts,
                    outcome=attempt.outcome.value,
                    status=attempt.status,
                    latency_ms=round(attempt.latency_ms, 3),
                    next_attempt_at=following,
                ),
                subject=f"{subject}/messages/{done.id}",
                context=None,
            )
            if state is MessageState.DEAD:
                await self._uow.record(
                    DeliveryDeadLettered(
                        endpoint_id=endpoint.id,
                        message_id=done.id,
                        event_id=done.event_id,
                        event_type=done.event_type,
                        attempts=attempts,
                    ),
                    subject=f"{subject}/messages/{done.id}",
                    context=None,
                )
            await self._record_health(endpoint.id, attempt, now)

    async def _record_health(self, endpoint_id: str, attempt: Attempt, now: datetime) -> None:
        if attempt.delivered:
            await self._endpoints.record_success(endpoint_id)
            return
        failing = await self._endpoints.record_failure(endpoint_id, now=now)
        if failing is None or failing.status is not EndpointStatus.ACTIVE:
            return
        assert failing.failing_since is not None
        if not self._disable.should_disable(
            failing_since=failing.failing_since,
            consecutive_failures=failing.consecutive_failures,
            now=now,
        ):
            return
        reason = (
            f"failing since {failing.failing_since:%Y-%m-%dT%H:%M:%SZ}, "
            f"{failing.consecutive_failures} attempts in a row"
        )
        if await self._endpoints.disable(endpoint_id, reason=reason, now=now):
            await self._uow.record(
                WebhookDisabled(
                    endpoint_id=endpoint_id,
                    failing_since=failing.failing_since,
                    consecutive_failures=failing.consecutive_failures,
                    reason=reason,
                ),
                subject=subject_of(endpoint_id),
                context=None,
            )

    async def _post(self, endpoint: Endpoint, message_id: str, body: bytes) -> Attempt:
        now = self._clock()
        headers = signing.headers(
            message_id=message_id,
            timestamp=int(now.timestamp()),
            body=body,
            secrets=endpoint.keys.active(now),
        )
        headers["content-type"] = CONTENT_TYPE
        headers["user-agent"] = USER_AGENT
        # the URL was checked when it was stored; the address is checked again at connect
        try:
            target = parse_target(endpoint.url, self._policy)
        except TargetRefusedError as exc:  # the policy changed since: refused, then retried
            return Attempt(outcome=Outcome.BLOCKED_ADDRESS, latency_ms=0.0, detail=exc.message)
        return await self._delivery.post(
            target, headers=headers, body=body, timeout_seconds=endpoint.timeout_seconds
        )

    async def send_test(
        self, endpoint_id: str, *, context: RequestContext | None = None
    ) -> Attempt:
        """One signed attempt of a test event now, whatever the endpoint's status; no retry."""
        endpoint = await self.get(endpoint_id)
        event_id = _new_id("test")
        body = probe_body(event_id, endpoint.id, self._clock())
        attempt = await self._post(endpoint, signing.message_id_for(event_id, endpoint.id), body)
        await self._uow.record(
            WebhookTested(
                endpoint_id=endpoint.id,
                outcome=attempt.outcome.value,
                status=attempt.status,
                latency_ms=round(attempt.latency_ms, 3),
            ),
            subject=subject_of(endpoint.id),
            context=context,
        )
        return attempt

    async def purge(self, *, delivered_after: timedelta, dead_after: timedelta) -> int:
        """Forget delivered messages and dead letters older than these; how many went."""
        now = self._clock()
        return await self._messages.purge(
            delivered_before=now - delivered_after, dead_before=now - dead_after
        )

    # ---- dead letters ----------------------------------------------------------------------

    async def dead_letters(self, endpoint_id: str, *, limit: int = 100) -> list[Message]:
        """An endpoint's messages whose every retry failed, newest first."""
        await self.get(endpoint_id)
        return await self._messages.dead(endpoint_id=endpoint_id, limit=limit)

    async def replay(
        self, endpoint_id: str, message_id: str, *, context: RequestContext | None = None
    ) -> Message:
        """A dead letter back to pending, due now, its retries started over (same message id)."""
        async with self._uow.transaction():
            message = await self._messages.get(message_id)
            if message is None or message.endpoint_id != endpoint_id:
                raise ServiceError(ErrorCode.NOT_FOUND, "No webhook message with that id.")
            if message.state is not MessageState.DEAD:
                raise ServiceError(ErrorCode.CONFLICT, "Only a dead letter can be replayed.")
            replayed = replace(
                message,
                state=MessageState.PENDING,
                attempts=0,
                next_attempt_at=self._clock(),
                leased_until=None,
            )
            if not await self._messages.replay(replayed):
                raise ServiceError(ErrorCode.CONFLICT, "Only a dead letter can be replayed.")
            await self._uow.record(
                DeliveryReplayed(
                    endpoint_id=endpoint_id, message_id=message_id, event_id=message.event_id
                ),
                subject=f"{subject_of(endpoint_id)}/messages/{message_id}",
                context=context,
            )
        self.wakeup.set()
        return replayed


def delivered_body(event: CloudEvent) -> bytes:
    """The event as receivers get it: its CloudEvents JSON without the internal request seal."""
    return event.model_dump_json(by_alias=True, exclude_none=True, exclude={"seal"}).encode()


def probe_body(event_id: str, endpoint_id: str, now: datetime) -> bytes:
    """The CloudEvent a test sends: shaped as every delivery, its data saying it is a test."""
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "source": source_of(SERVICE),
            "type": EVENT_TYPE_PREFIX + TEST_EVENT_TYPE,
            "time": now.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "subject": subject_of(endpoint_id),
            "datacontenttype": "application/json",
            "data": {"endpoint_id": endpoint_id, "test": True},
        },
        separators=(",", ":"),
    ).encode()


def _patterns(event_types: list[str]) -> tuple[str, ...]:
    try:
        return topics.check_patterns(event_types)
    except topics.PatternError as exc:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, str(exc)) from exc


def _check_limits(description: str, timeout_seconds: float, max_in_flight: int) -> None:
    if len(description) > MAX_DESCRIPTION:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"A description is at most {MAX_DESCRIPTION} characters."
        )
    if not MIN_TIMEOUT_SECONDS <= timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"The timeout is {MIN_TIMEOUT_SECONDS:g} to {MAX_TIMEOUT_SECONDS:g} seconds.",
        )
    if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED, f"At most {MAX_IN_FLIGHT} attempts in flight per endpoint."
        )
