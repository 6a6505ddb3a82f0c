"""Webhook use cases: endpoints, the messages each event makes, and their delivery.

Every event the service consumes becomes one message per endpoint whose filters match it,
stored before the event is acknowledged; a message is attempted until an answer of 2xx, on
the retry schedule (``core/schedule.py``), then dead-lettered, listable and replayable. Each
attempt is signed (Standard Webhooks, ``core/signing.py``) with every key of the endpoint that
is active (both during a rotation's overlap), POSTed to an address checked when it connects
(``core/ssrf.py``), and told to the platform as an event, without the secret or the body.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_webhooks.core import signing, topics
from hypersdk_webhooks.core.models import (
    Attempt,
    Endpoint,
    EndpointStatus,
    Message,
    MessageState,
    Outcome,
)
from hypersdk_webhooks.core.schedule import DisablePolicy, RetryPolicy
from hypersdk_webhooks.core.ssrf import AddressPolicy, Target, TargetRefusedError, parse_target
from hypersdk_webhooks.ports.outbound import Delivery, EndpointStore, MessageStore, WebhookEvents

logger = logging.getLogger(__name__)
MIN_TIMEOUT_SECONDS = 1.0
MAX_TIMEOUT_SECONDS = 30.0
MAX_IN_FLIGHT = 16
MAX_DESCRIPTION = 500
CONTENT_TYPE = "application/cloudevents+json"
USER_AGENT = "HyperSDK-Webhooks/0.1"
TEST_EVENT_TYPE = "webhooks.endpoint.tested"
OWN_EVENTS = "webhooks.#"
"""The service's own events are never delivered: an endpoint filtering ``#`` would otherwise
make one attempt event per attempt, each a message, without end."""


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


class WebhookService:
    """Endpoints and the delivery of their messages."""

    def __init__(
        self,
        *,
        endpoints: EndpointStore,
        messages: MessageStore,
        delivery: Delivery,
        events: WebhookEvents,
        policy: AddressPolicy,
        retry: RetryPolicy | None = None,
        disable: DisablePolicy | None = None,
        rotation_overlap: timedelta = timedelta(hours=24),
        lease: timedelta = timedelta(seconds=120),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._messages = messages
        self._delivery = delivery
        self._events = events
        self._policy = policy
        self._retry = retry or RetryPolicy()
        self._disable = disable or DisablePolicy()
        self._overlap = rotation_overlap
        self._lease = lease
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not security

    # ---- endpoints -------------------------------------------------------------------------

    async def register(
        self,
        *,
        url: str,
        event_types: list[str],
        description: str = "",
        timeout_seconds: float = 10.0,
        max_in_flight: int = 4,
    ) -> tuple[Endpoint, str]:
        """A new active endpoint and its signing secret, which is shown this once."""
        target = self._target(url)
        patterns = _patterns(event_types)
        _check_limits(description, timeout_seconds, max_in_flight)
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
        await self._endpoints.add(endpoint)
        return endpoint, secret

    async def get(self, endpoint_id: str) -> Endpoint:
        """The endpoint, or not_found."""
        endpoint = await self._endpoints.get(endpoint_id)
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
    ) -> Endpoint:
        """Change what is given; the rest stays."""
        endpoint = await self.get(endpoint_id)
        changed = replace(
            endpoint,
            url=self._target(url).url if url is not None else endpoint.url,
            event_types=_patterns(event_types) if event_types is not None else endpoint.event_types,
            description=description if description is not None else endpoint.description,
            timeout_seconds=timeout_seconds or endpoint.timeout_seconds,
            max_in_flight=max_in_flight or endpoint.max_in_flight,
            updated_at=self._clock(),
        )
        _check_limits(changed.description, changed.timeout_seconds, changed.max_in_flight)
        await self._endpoints.save(changed)
        return changed

    async def pause(self, endpoint_id: str) -> Endpoint:
        """Stop sending: its messages wait (and come due again) until it is resumed."""
        return await self._set_status(endpoint_id, EndpointStatus.PAUSED)

    async def resume(self, endpoint_id: str) -> Endpoint:
        """Send again, a paused or a disabled endpoint; its failure count starts over."""
        return await self._set_status(endpoint_id, EndpointStatus.ACTIVE)

    async def delete(self, endpoint_id: str) -> None:
        """Remove the endpoint and its messages, or not_found."""
        if not await self._endpoints.delete(endpoint_id):
            raise ServiceError(ErrorCode.NOT_FOUND, "No webhook endpoint with that id.")

    async def rotate_secret(self, endpoint_id: str) -> tuple[Endpoint, str]:
        """A new signing secret, shown once; the old one still signs during the overlap."""
        endpoint = await self.get(endpoint_id)
        secret = signing.generate_secret()
        now = self._clock()
        rotated = replace(
            endpoint,
            keys=endpoint.keys.rotated(secret, now=now, overlap=self._overlap),
            updated_at=now,
        )
        await self._endpoints.save(rotated)
        return rotated, secret

    async def _set_status(self, endpoint_id: str, status: EndpointStatus) -> Endpoint:
        endpoint = await self.get(endpoint_id)
        changed = replace(endpoint, status=status, updated_at=self._clock())
        if status is EndpointStatus.ACTIVE:  # a resumed endpoint's failures start over
            changed = replace(
                changed, failing_since=None, consecutive_failures=0, disabled_reason=""
            )
        await self._endpoints.save(changed)
        return changed

    def _target(self, url: str) -> Target:
        try:
            return parse_target(url, self._policy)
        except TargetRefusedError as exc:
            raise ServiceError(ErrorCode.VALIDATION_FAILED, f"{exc.message} ({exc.code})") from exc

    # ---- events in -------------------------------------------------------------------------

    async def dispatch(self, *, event_id: str, event_type: str, body: bytes) -> int:
        """One message per endpoint (active or paused) whose filters match; how many were new.

        Idempotent on the event id: a redelivered event makes no second message.
        """
        if topics.matches(OWN_EVENTS, event_type):
            return 0
        now = self._clock()
        messages = [
            Message(
                id=_new_id("wm"),
                endpoint_id=endpoint.id,
                event_id=event_id,
                event_type=event_type,
                message_id=signing.message_id_for(event_id, endpoint.id),
                body=body,
                created_at=now,
                next_attempt_at=now,
            )
            for endpoint in await self._endpoints.list()
            if endpoint.status is not EndpointStatus.DISABLED
            and topics.matches_any(endpoint.event_types, event_type)
        ]
        return await self._messages.add_new(messages) if messages else 0

    # ---- delivery --------------------------------------------------------------------------

    async def deliver_due(self, *, limit: int = 100) -> int:
        """Attempt the messages due now, each endpoint at most its in-flight limit at once."""
        now = self._clock()
        endpoints = {e.id: e for e in await self._endpoints.list()}
        active = frozenset(i for i, e in endpoints.items() if e.status is EndpointStatus.ACTIVE)
        if not active:
            return 0
        due = await self._messages.claim_due(
            now=now, endpoints=active, limit=limit, lease=self._lease
        )
        gates = {i: asyncio.Semaphore(endpoints[i].max_in_flight) for i in active}

        async def attempt(message: Message) -> None:
            async with gates[message.endpoint_id]:
                try:
                    await self._attempt(message)
                except Exception:  # its lease lapses and it comes due again: at least once
                    logger.exception("webhook message %s not attempted", message.id)

        await asyncio.gather(*(attempt(message) for message in due))
        return len(due)

    async def _attempt(self, message: Message) -> None:
        endpoint = await self._endpoints.get(message.endpoint_id)
        if endpoint is None:  # deleted meanwhile: its messages went with it
            return
        attempt = await self._post(endpoint, message.message_id, message.body)
        now = self._clock()
        attempts = message.attempts + 1
        if attempt.delivered:
            done = replace(
                message,
                state=MessageState.DELIVERED,
                attempts=attempts,
                next_attempt_at=None,
                leased_until=None,
                last_attempt=attempt,
            )
        else:
            following = self._retry.next_attempt_at(attempts_made=attempts, now=now, rng=self._rng)
            done = replace(
                message,
                state=MessageState.PENDING if following else MessageState.DEAD,
                attempts=attempts,
                next_attempt_at=following,
                leased_until=None,
                last_attempt=attempt,
            )
        await self._messages.save(done)
        await self._events.attempted(endpoint, done, attempt)
        if done.state is MessageState.DEAD:
            await self._events.dead_lettered(endpoint, done)
        await self._record_health(endpoint.id, attempt, now)

    async def _record_health(self, endpoint_id: str, attempt: Attempt, now: datetime) -> None:
        endpoint = await self._endpoints.get(endpoint_id)  # as it is now, not as claimed
        if endpoint is None:
            return
        if attempt.delivered:
            if endpoint.consecutive_failures:
                await self._endpoints.save(
                    replace(endpoint, failing_since=None, consecutive_failures=0)
                )
            return
        failing = replace(
            endpoint,
            failing_since=endpoint.failing_since or now,
            consecutive_failures=endpoint.consecutive_failures + 1,
        )
        disable = failing.status is EndpointStatus.ACTIVE and self._disable.should_disable(
            failing_since=failing.failing_since,
            consecutive_failures=failing.consecutive_failures,
            now=now,
        )
        if disable:
            failing = replace(
                failing,
                status=EndpointStatus.DISABLED,
                disabled_reason=f"failing since {failing.failing_since:%Y-%m-%dT%H:%M:%SZ}, "
                f"{failing.consecutive_failures} attempts in a row",
                updated_at=now,
            )
        await self._endpoints.save(failing)
        if disable:
            await self._events.endpoint_disabled(failing)

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

    async def send_test(self, endpoint_id: str, body: bytes) -> Attempt:
        """One signed attempt of a test event now, whatever the endpoint's status; no retry."""
        endpoint = await self.get(endpoint_id)
        return await self._post(endpoint, _new_id("msg"), body)

    # ---- dead letters ----------------------------------------------------------------------

    async def dead_letters(
        self, *, endpoint_id: str | None = None, limit: int = 100
    ) -> list[Message]:
        """Messages whose every retry failed, newest first."""
        if endpoint_id is not None:
            await self.get(endpoint_id)
        return await self._messages.dead(endpoint_id=endpoint_id, limit=limit)

    async def replay(self, message_id: str) -> Message:
        """A dead letter back to pending, due now, its retries started over (same message id)."""
        message = await self._messages.get(message_id)
        if message is None:
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
        await self._messages.save(replayed)
        return replayed


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
