"""The webhooks core with in-memory stores: endpoints, messages per event, signed attempts,
retries to a dead letter, replay, rotation overlap, auto-disable and per-endpoint limits."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.envelope import CloudEvent, event_envelope
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.events import JobCompleted, UserCreated
from hypersdk_kit.attribution import Attribution, PublisherSettings, login_of
from hypersdk_kit.bus import Received
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_kit.trust import AssertionSigner, AssertionVerifier
from hypersdk_webhooks.adapters.outbound.memory import (
    InMemoryEndpointStore,
    InMemoryMessageStore,
    InMemoryPublicFeed,
)
from hypersdk_webhooks.adapters.outbound.postgres import FernetSealer
from hypersdk_webhooks.core import service as service_module
from hypersdk_webhooks.core import signing
from hypersdk_webhooks.core.models import Attempt, EndpointStatus, MessageState, Outcome
from hypersdk_webhooks.core.schedule import DisablePolicy, RetryPolicy
from hypersdk_webhooks.core.service import WebhookService
from hypersdk_webhooks.core.ssrf import AddressPolicy, Target
from hypersdk_webhooks.inject import read_key_file
from hypersdk_webhooks.ports.outbound import Delivery

URL = "https://hooks.example.com/in"
GATEWAY_KEY = Ed25519PrivateKey.generate()
BODY = b'{"specversion":"1.0","type":"exporter.job.succeeded","data":{}}'


@dataclass
class Posted:
    target: Target
    headers: dict[str, str]
    body: bytes


@dataclass
class ScriptedDelivery(Delivery):
    """Answers from a script (then the default), records every post, tracks concurrency."""

    script: list[Outcome] = field(default_factory=list)
    default: Outcome = Outcome.DELIVERED
    pause_seconds: float = 0.0
    posts: list[Posted] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def post(
        self,
        target: Target,
        *,
        headers: Mapping[str, str],
        body: bytes,
        timeout_seconds: float,
    ) -> Attempt:
        self.posts.append(Posted(target, dict(headers), body))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.pause_seconds)
        finally:
            self.in_flight -= 1
        outcome = self.script.pop(0) if self.script else self.default
        status = 200 if outcome is Outcome.DELIVERED else 500
        return Attempt(outcome=outcome, latency_ms=1.0, status=status, address="203.0.113.9")


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Rig:
    service: WebhookService
    endpoints: InMemoryEndpointStore
    messages: InMemoryMessageStore
    delivery: ScriptedDelivery
    uow: InMemoryUnitOfWork
    clock: Clock

    def data_of(self, routing_key: str) -> list[dict[str, object]]:
        """The payloads of the events committed under ``routing_key``, in order."""
        return [e.data for e in self.uow.events if e.routing_key == routing_key]

    async def deliver(self) -> int:
        """Claim what is due, and wait for those attempts."""
        claimed = await self.service.deliver_due()
        await self.service.drain()
        return claimed


def _rig(
    *,
    delivery: ScriptedDelivery | None = None,
    retry: RetryPolicy | None = None,
    disable: DisablePolicy | None = None,
    public: InMemoryPublicFeed | None = None,
) -> Rig:
    endpoints, messages = InMemoryEndpointStore(), InMemoryMessageStore()
    endpoints.messages = messages
    uow, clock = InMemoryUnitOfWork(service="webhooks", stores=(messages,)), Clock()
    delivery = delivery or ScriptedDelivery()
    service = WebhookService(
        endpoints=endpoints,
        messages=messages,
        delivery=delivery,
        uow=uow,
        attribution=Attribution(
            publishers={"hsdk-exporter": "exporter"},
            seals=AssertionVerifier(GATEWAY_KEY.public_key(), issuer="gateway"),
        ),
        policy=AddressPolicy(),
        retry=retry or RetryPolicy(jitter_ratio=0.0),
        disable=disable,
        public=public,
        clock=clock,
        rng=random.Random(7),
    )
    return Rig(service, endpoints, messages, delivery, uow, clock)


async def test_a_registered_endpoint_gets_its_secret_once_and_never_shows_it() -> None:
    rig = _rig()
    endpoint, secret = await rig.service.register(url=URL, event_types=["exporter.job.*"])
    assert secret.startswith("whsec_")
    assert endpoint.status is EndpointStatus.ACTIVE
    assert secret not in repr(endpoint)
    assert secret not in repr(await rig.service.list_endpoints())
    assert endpoint.keys.active(rig.clock.now) == (secret,)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/in", "http://[::1]/", "http://169.254.169.254/latest", "ftp://x.example/"],
)
async def test_a_target_the_policy_refuses_is_a_validation_error(url: str) -> None:
    with pytest.raises(ServiceError) as caught:
        await _rig().service.register(url=url, event_types=["#"])
    assert caught.value.code is ErrorCode.VALIDATION_FAILED


@pytest.mark.parametrize("patterns", [[], ["Exporter.job"], ["a..b"], ["a.b*"], ["x" * 201]])
async def test_filters_that_are_not_topic_patterns_are_refused(patterns: list[str]) -> None:
    with pytest.raises(ServiceError) as caught:
        await _rig().service.register(url=URL, event_types=patterns)
    assert caught.value.code is ErrorCode.VALIDATION_FAILED


async def test_an_event_makes_one_message_per_matching_endpoint_once() -> None:
    rig = _rig()
    jobs, _ = await rig.service.register(url=URL, event_types=["exporter.job.*"])
    everything, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.register(url=URL, event_types=["identity.#"])
    assert await rig.service.dispatch(event_id="e1", event_type="exporter.job.succeeded", body=BODY)
    assert {m.endpoint_id for m in rig.messages.messages.values()} == {jobs.id, everything.id}
    # the same event redelivered by the bus makes nothing new
    assert not await rig.service.dispatch(
        event_id="e1", event_type="exporter.job.succeeded", body=BODY
    )
    assert len(rig.messages.messages) == 2


async def test_the_services_own_events_are_never_delivered() -> None:
    rig = _rig()
    await rig.service.register(url=URL, event_types=["#"])
    made = await rig.service.dispatch(
        event_id="e2", event_type="webhooks.message.attempted", body=BODY
    )
    assert made == 0


async def test_a_delivery_is_signed_with_the_endpoints_secret() -> None:
    rig = _rig()
    _, secret = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="e3", event_type="exporter.job.succeeded", body=BODY)
    assert await rig.deliver() == 1
    (posted,) = rig.delivery.posts
    assert posted.body == BODY
    assert posted.headers["content-type"] == "application/cloudevents+json"
    signing.verify(
        headers=posted.headers, body=posted.body, secret=secret, now=int(rig.clock.now.timestamp())
    )
    (message,) = rig.messages.messages.values()
    assert message.state is MessageState.DELIVERED
    assert posted.headers["webhook-id"] == message.message_id
    (attempted,) = rig.data_of("webhooks.delivery.attempted")
    assert (attempted["outcome"], attempted["attempt"], attempted["status"]) == (
        "delivered",
        1,
        200,
    )
    assert attempted["webhook_id"] == message.message_id
    assert await rig.deliver() == 0  # nothing left


async def test_failures_follow_the_schedule_to_a_dead_letter_and_a_replay_delivers() -> None:
    retry = RetryPolicy(
        delays=(timedelta(0), timedelta(seconds=5), timedelta(seconds=30)), jitter_ratio=0.0
    )
    rig = _rig(delivery=ScriptedDelivery(default=Outcome.HTTP_ERROR), retry=retry)
    dead_endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="e4", event_type="exporter.job.failed", body=BODY)
    seen: list[tuple[int, MessageState]] = []
    for step in (timedelta(0), timedelta(seconds=4), timedelta(seconds=1), timedelta(seconds=30)):
        rig.clock.advance(step)
        attempted = await rig.deliver()
        (message,) = rig.messages.messages.values()
        seen.append((attempted, message.state))
    # at once, nothing before its 5 s, then at 5 s; the third failure is the last of the schedule
    assert seen[0] == (1, MessageState.PENDING)
    assert seen[1] == (0, MessageState.PENDING)
    assert seen[2] == (1, MessageState.PENDING)
    assert seen[3] == (1, MessageState.DEAD)
    (dead,) = await rig.service.dead_letters(dead_endpoint.id)
    assert [d["message_id"] for d in rig.data_of("webhooks.delivery.dead_lettered")] == [dead.id]
    ids = {p.headers["webhook-id"] for p in rig.delivery.posts}
    assert ids == {dead.message_id}  # every attempt under one id: the receiver dedupes

    rig.delivery.default = Outcome.DELIVERED
    replayed = await rig.service.replay(dead_endpoint.id, dead.id)
    assert replayed.state is MessageState.PENDING
    assert await rig.deliver() == 1
    assert rig.messages.messages[dead.id].state is MessageState.DELIVERED
    assert rig.delivery.posts[-1].headers["webhook-id"] == dead.message_id
    with pytest.raises(ServiceError) as caught:
        await rig.service.replay(dead_endpoint.id, dead.id)
    assert caught.value.code is ErrorCode.CONFLICT


async def test_during_a_rotation_both_secrets_sign_then_only_the_new_one() -> None:
    rig = _rig()
    endpoint, old = await rig.service.register(url=URL, event_types=["#"])
    _, new = await rig.service.rotate_secret(endpoint.id)
    await rig.service.dispatch(event_id="e5", event_type="policy.role.assigned", body=BODY)
    await rig.deliver()
    during = rig.delivery.posts[-1].headers
    assert len(during["webhook-signature"].split()) == 2
    for secret in (old, new):
        signing.verify(headers=during, body=BODY, secret=secret, now=int(rig.clock.now.timestamp()))
    rig.clock.advance(timedelta(hours=24, seconds=1))
    await rig.service.dispatch(event_id="e6", event_type="policy.role.assigned", body=BODY)
    await rig.deliver()
    after = rig.delivery.posts[-1].headers
    assert len(after["webhook-signature"].split()) == 1
    now = int(rig.clock.now.timestamp())
    signing.verify(headers=after, body=BODY, secret=new, now=now)
    with pytest.raises(signing.SigningError):
        signing.verify(headers=after, body=BODY, secret=old, now=now)


async def test_sustained_failure_disables_the_endpoint_and_resume_starts_over() -> None:
    rig = _rig(
        delivery=ScriptedDelivery(default=Outcome.CONNECT_FAILED),
        retry=RetryPolicy(delays=(timedelta(0),) * 20, jitter_ratio=0.0),
        disable=DisablePolicy(after=timedelta(hours=1), min_failures=3),
    )
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    for index in range(4):
        await rig.service.dispatch(event_id=f"f{index}", event_type="a.b.c", body=BODY)
        await rig.deliver()
        rig.clock.advance(timedelta(minutes=30))
    # four failures, but only after an hour of failing is it disabled
    stored = await rig.service.get(endpoint.id)
    assert stored.status is EndpointStatus.DISABLED
    assert [d["endpoint_id"] for d in rig.data_of("webhooks.endpoint.disabled")] == [endpoint.id]
    assert "in a row" in stored.disabled_reason
    # disabled: no new messages, nothing attempted
    assert not await rig.service.dispatch(event_id="f9", event_type="a.b.c", body=BODY)
    assert await rig.deliver() == 0
    resumed = await rig.service.resume(endpoint.id)
    assert resumed.status is EndpointStatus.ACTIVE
    assert (resumed.consecutive_failures, resumed.failing_since) == (0, None)


async def test_one_success_resets_the_failure_count() -> None:
    rig = _rig(
        delivery=ScriptedDelivery(script=[Outcome.TIMEOUT, Outcome.TIMEOUT]),
        retry=RetryPolicy(delays=(timedelta(0),) * 5, jitter_ratio=0.0),
    )
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="g1", event_type="a.b.c", body=BODY)
    for _ in range(2):
        await rig.deliver()
    assert (await rig.service.get(endpoint.id)).consecutive_failures == 2
    await rig.deliver()
    assert (await rig.service.get(endpoint.id)).consecutive_failures == 0


async def test_a_paused_endpoints_messages_wait_for_its_resume() -> None:
    rig = _rig()
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.pause(endpoint.id)
    assert await rig.service.dispatch(event_id="h1", event_type="a.b.c", body=BODY) == 1
    assert await rig.deliver() == 0
    await rig.service.resume(endpoint.id)
    assert await rig.deliver() == 1


async def test_each_endpoint_has_at_most_its_limit_in_flight() -> None:
    rig = _rig(delivery=ScriptedDelivery(pause_seconds=0.01))
    await rig.service.register(url=URL, event_types=["#"], max_in_flight=2)
    for index in range(10):
        await rig.service.dispatch(event_id=f"i{index}", event_type="a.b.c", body=BODY)
    claims = []
    for _ in range(1000):  # as the delivery loop does: claim, wait for a slot, claim again
        claims.append(await rig.service.deliver_due())
        if sum(claims) == 10:
            break
        rig.service.wakeup.clear()
        await rig.service.wakeup.wait()
    await rig.service.drain()
    assert sum(claims) == 10
    assert max(claims) <= 2
    assert rig.delivery.most_in_flight == 2
    assert {m.state for m in rig.messages.messages.values()} == {MessageState.DELIVERED}


async def test_a_claim_that_is_never_finished_comes_due_again_after_its_lease() -> None:
    """A worker killed mid-attempt: its claim lapses and the message is attempted again."""
    rig = _rig()
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="j1", event_type="a.b.c", body=BODY)
    claim = {"now": rig.clock.now, "capacity": {endpoint.id: 10}, "limit": 10}
    lost = await rig.messages.claim_due(**claim, lease=timedelta(seconds=120))
    assert len(lost) == 1  # claimed by a worker that then died
    assert await rig.deliver() == 0  # still leased
    rig.clock.advance(timedelta(seconds=121))
    assert await rig.deliver() == 1
    assert rig.messages.messages[lost[0].id].state is MessageState.DELIVERED


async def test_deleting_an_endpoint_removes_its_messages() -> None:
    rig = _rig()
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="k1", event_type="a.b.c", body=BODY)
    await rig.service.delete(endpoint.id)
    assert not rig.messages.messages
    with pytest.raises(ServiceError) as caught:
        await rig.service.get(endpoint.id)
    assert caught.value.code is ErrorCode.NOT_FOUND


async def test_limits_of_an_endpoint_are_checked() -> None:
    service = _rig().service
    for kwargs in ({"timeout_seconds": 0.1}, {"timeout_seconds": 60}, {"max_in_flight": 0}):
        with pytest.raises(ServiceError):
            await service.register(url=URL, event_types=["#"], **kwargs)  # type: ignore[arg-type]


async def test_a_stored_target_the_policy_now_refuses_is_a_blocked_attempt() -> None:
    """The allow-list shrank after the endpoint was stored: nothing is sent, it is retried."""
    rig = _rig()
    endpoint, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.endpoints.save(
        replace(await rig.service.get(endpoint.id), url="http://10.0.0.8/hook")
    )
    await rig.service.dispatch(event_id="m1", event_type="a.b.c", body=BODY)
    assert await rig.deliver() == 1
    assert not rig.delivery.posts
    (attempt,) = rig.data_of("webhooks.delivery.attempted")
    assert attempt["outcome"] == "blocked_address"
    (message,) = rig.messages.messages.values()
    assert message.state is MessageState.PENDING  # retried on the schedule


async def test_an_attempt_that_breaks_leaves_its_message_to_come_due_again() -> None:
    rig = _rig()
    rig.uow.fail_commits = {"webhooks.delivery.attempted"}  # the first attempt's commit fails
    await rig.service.register(url=URL, event_types=["#"])
    await rig.service.register(url=URL, event_types=["#"])
    await rig.service.dispatch(event_id="n1", event_type="a.b.c", body=BODY)
    assert await rig.deliver() == 2  # one failure does not stop the other
    assert len(rig.delivery.posts) == 2
    # the failed one's result was rolled back: still pending, still leased, attempted again
    states = sorted(m.state.value for m in rig.messages.messages.values())
    assert states == ["delivered", "pending"]
    assert len(rig.data_of("webhooks.delivery.attempted")) == 1
    rig.clock.advance(timedelta(seconds=121))
    assert await rig.deliver() == 1


async def test_old_delivered_and_dead_messages_are_purged_pending_ones_never() -> None:
    retry = RetryPolicy(delays=(timedelta(0),), jitter_ratio=0.0)
    rig = _rig(delivery=ScriptedDelivery(script=[Outcome.HTTP_ERROR]), retry=retry)
    waiting, _ = await rig.service.register(url=URL, event_types=["#"])
    await rig.service.pause(waiting.id)  # its messages stay pending, however old
    await rig.service.register(url=URL, event_types=["#"])
    for event_id in ("x1", "x2"):  # to the active endpoint: x1 fails for good, x2 arrives
        await rig.service.dispatch(event_id=event_id, event_type="a.b.c", body=BODY)
        await rig.deliver()
    states = sorted(m.state.value for m in rig.messages.messages.values())
    assert states == ["dead", "delivered", "pending", "pending"]
    keep = {"delivered_after": timedelta(days=7), "dead_after": timedelta(days=30)}
    rig.clock.advance(timedelta(days=6))
    assert await rig.service.purge(**keep) == 0
    rig.clock.advance(timedelta(days=2))  # the delivered one is past its 7 days
    assert await rig.service.purge(**keep) == 1
    rig.clock.advance(timedelta(days=30))  # the dead letter past its 30
    assert await rig.service.purge(**keep) == 1
    left = list(rig.messages.messages.values())
    assert {(m.endpoint_id, m.state) for m in left} == {(waiting.id, MessageState.PENDING)}
    assert len(left) == 2


async def test_endpoints_are_capped() -> None:
    rig = _rig()
    for _ in range(service_module.MAX_ENDPOINTS):
        await rig.service.register(url=URL, event_types=["#"])
    with pytest.raises(ServiceError) as caught:
        await rig.service.register(url=URL, event_types=["#"])
    assert caught.value.code is ErrorCode.CONFLICT


def _identity_event() -> CloudEvent:
    created = UserCreated(username="x")
    return event_envelope(created, service="identity", subject=None, context=None)


async def test_only_genuine_events_from_the_bus_become_messages_without_their_seal() -> None:
    public = InMemoryPublicFeed()
    rig = _rig(public=public)
    await rig.service.register(url=URL, event_types=["#"])
    seal = AssertionSigner(GATEWAY_KEY, issuer="gateway").sign(
        {"typ": "request", "rid": "r1", "sub": "alice", "ip": "198.51.100.7"}
    )
    done = JobCompleted(job_id="j1", artifacts=[])
    genuine = event_envelope(done, service="exporter", subject="job/j1", context=None)
    sealed = genuine.model_copy(
        update={"id": "e-sealed", "actor": "alice", "request_id": "r1", "seal": seal}
    )
    batch = [
        Received(genuine, user_id="hsdk-exporter"),
        Received(sealed, user_id="hsdk-exporter"),
        # the exporter's login speaking for identity
        Received(
            event_envelope(
                UserCreated(username="x"), service="identity", subject=None, context=None
            ),
            user_id="hsdk-exporter",
        ),
        # a login nobody mapped, and none at all
        Received(genuine.model_copy(update={"id": "e-stranger"}), user_id="stranger"),
        Received(genuine.model_copy(update={"id": "e-anonymous"}), user_id=None),
        # an actor claimed with no seal behind it
        Received(sealed.model_copy(update={"id": "e-unsealed", "seal": None}), "hsdk-exporter"),
    ]
    assert await rig.service.take(batch) == 2
    assert [e.event_id for e in public.published] == [genuine.id, "e-sealed"]
    assert all("seal" not in json.loads(e.body) for e in public.published)
    assert all(seal.encode() not in e.body for e in public.published)
    bodies = {m.event_id: m.body for m in rig.messages.messages.values()}
    assert set(bodies) == {genuine.id, "e-sealed"}
    delivered = json.loads(bodies["e-sealed"])
    assert delivered["actor"] == "alice"
    assert "seal" not in delivered
    assert seal not in bodies["e-sealed"].decode()


def test_a_services_own_login_is_attributed_to_it() -> None:
    settings = PublisherSettings(publishers={"hsdk-audit": "audit"})
    verifier = AssertionVerifier(GATEWAY_KEY.public_key(), issuer="gateway")
    url = "amqps://hsdk-web%2Bhooks:pw@broker:5671/hypersdk"
    attribution = settings.attribution(service="webhooks", amqp_url=url, seals=verifier)
    assert dict(attribution.publishers) == {"hsdk-audit": "audit", "hsdk-web+hooks": "webhooks"}
    assert login_of("amqp://broker/") == "guest"
    with pytest.raises(ValueError, match="not services"):
        PublisherSettings(publishers={"x": "mailer"})


def test_a_sealing_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "sealing-key"
    key.write_text(FernetSealer.generate_key() + "\n")
    key.chmod(0o644)
    with pytest.raises(SystemExit, match="0600 or 0440"):
        read_key_file(key)
    key.chmod(0o440)
    assert FernetSealer(read_key_file(key))


async def test_a_batch_whose_public_publish_fails_raises_and_makes_no_second_message() -> None:
    public = InMemoryPublicFeed(fail=True)
    rig = _rig(public=public)
    await rig.service.register(url=URL, event_types=["#"])
    done = JobCompleted(job_id="j1", artifacts=[])
    event = event_envelope(done, service="exporter", subject="job/j1", context=None)
    batch = [Received(event, user_id="hsdk-exporter")]
    with pytest.raises(ConnectionError):  # the batch is not acked: the bus delivers it again
        await rig.service.take(batch)
    public.fail = False
    assert await rig.service.take(batch) == 0  # its message was made the first time
    assert [e.event_id for e in public.published] == [event.id]
    assert len(rig.messages.messages) == 1
