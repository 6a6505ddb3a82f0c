"""The webhooks' PostgreSQL stores on a real database of their own (migrations applied).

Endpoints round-trip with their secrets sealed (the table never holds them in clear, a wrong
key or a secret moved to another row is refused); messages are one per event and endpoint;
claims are due-ordered, limited, filtered and leased, and two workers claiming at once never
share a message; dead letters come newest first; and the WebhookService core runs over these
stores end to end, with an in-memory delivery.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from hypersdk_kit.database import Database, apply_migrations, create_pool
from hypersdk_webhooks.adapters.outbound.memory import InMemoryDelivery, InMemoryWebhookEvents
from hypersdk_webhooks.adapters.outbound.postgres import (
    MIGRATIONS,
    SCHEMA,
    FernetSealer,
    PostgresEndpointStore,
    PostgresMessageStore,
    SecretSealer,
)
from hypersdk_webhooks.core import signing
from hypersdk_webhooks.core.models import (
    Attempt,
    Endpoint,
    EndpointStatus,
    Message,
    MessageState,
    Outcome,
)
from hypersdk_webhooks.core.schedule import RetryPolicy
from hypersdk_webhooks.core.service import WebhookService
from hypersdk_webhooks.core.ssrf import AddressPolicy

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/{database}"
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=120)
BODY = b'{"specversion":"1.0","type":"exporter.job.succeeded","data":{"x":"\\u00ff"}}\x00\xff'
URL = "https://hooks.example.com/in"


@pytest.fixture(scope="module")
async def dsn() -> AsyncIterator[str]:
    """A database of this module's own, migrated; dropped at the end."""
    name = f"webhook_stores_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = ADMIN_DSN.format(database=name)
        assert await apply_migrations(dsn, schema=SCHEMA, migrations=MIGRATIONS) == len(MIGRATIONS)
        assert await apply_migrations(dsn, schema=SCHEMA, migrations=MIGRATIONS) == 0
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture(scope="module")
async def db(dsn: str) -> AsyncIterator[Database]:
    pool = await create_pool(dsn, size=4)
    try:
        yield Database(pool)
    finally:
        await pool.close()


@pytest.fixture(scope="module")
def sealer_key() -> str:
    return FernetSealer.generate_key()


@dataclass
class Stores:
    db: Database
    endpoints: PostgresEndpointStore
    messages: PostgresMessageStore


@pytest.fixture
async def stores(db: Database, sealer_key: str) -> Stores:
    """Both stores over empty tables."""
    await db.execute(f"TRUNCATE {SCHEMA}.endpoints, {SCHEMA}.messages")
    return Stores(
        db=db,
        endpoints=PostgresEndpointStore(db, sealer=FernetSealer(sealer_key)),
        messages=PostgresMessageStore(db),
    )


def _endpoint(**changes: Any) -> Endpoint:
    endpoint = Endpoint(
        id=f"ep_{uuid.uuid4().hex[:12]}",
        url=URL,
        event_types=("exporter.job.*", "#"),
        description="Ops receiver, Zürich",
        status=EndpointStatus.ACTIVE,
        keys=signing.SigningKeys(current=signing.generate_secret()),
        timeout_seconds=7.5,
        max_in_flight=3,
        created_at=T0,
        updated_at=T0,
    )
    return replace(endpoint, **changes)


def _message(endpoint: Endpoint, event_id: str, **changes: Any) -> Message:
    message = Message(
        id=f"wm_{uuid.uuid4().hex[:12]}",
        endpoint_id=endpoint.id,
        event_id=event_id,
        event_type="exporter.job.succeeded",
        message_id=signing.message_id_for(event_id, endpoint.id),
        body=BODY,
        created_at=T0,
        next_attempt_at=T0,
    )
    return replace(message, **changes)


# ---- endpoints ---------------------------------------------------------------------------------


async def test_an_endpoint_comes_back_as_stored_and_its_secrets_are_not_in_the_table(
    stores: Stores,
) -> None:
    current, previous = signing.generate_secret(), signing.generate_secret()
    endpoint = _endpoint(
        keys=signing.SigningKeys(
            current=current, previous=previous, previous_until=T0 + timedelta(hours=24)
        ),
        failing_since=T0 - timedelta(minutes=5),
        consecutive_failures=3,
        disabled_reason="not yet",
    )
    await stores.endpoints.add(endpoint)
    got = await stores.endpoints.get(endpoint.id)
    assert got is not None
    assert got == endpoint
    assert got.keys.active(T0) == (current, previous)
    assert got.created_at.utcoffset() == timedelta(0)
    assert await stores.endpoints.list() == [endpoint]
    assert await stores.endpoints.get("ep_missing") is None

    row = await stores.db.fetchrow(f"SELECT * FROM {SCHEMA}.endpoints WHERE id = $1", endpoint.id)
    text = await stores.db.fetchval(
        f"SELECT e::text FROM {SCHEMA}.endpoints e WHERE id = $1", endpoint.id
    )
    assert row is not None
    assert row["previous_secret_sealed"] is not None
    for secret in (current, previous):
        key = signing.parse_secret(secret)
        forms = [secret.encode(), secret[len("whsec_") :].encode(), key, base64.b64encode(key)]
        for value in row.values():
            raw = value if isinstance(value, bytes) else str(value).encode()
            assert not any(form in raw for form in forms), "a secret is stored in clear"
        assert secret not in text
        assert not any(form.hex() in text for form in forms)


async def test_older_endpoints_are_listed_first(stores: Stores) -> None:
    later = _endpoint(created_at=T0 + timedelta(seconds=1))
    earlier = _endpoint(created_at=T0)
    await stores.endpoints.add(later)
    await stores.endpoints.add(earlier)
    assert [e.id for e in await stores.endpoints.list()] == [earlier.id, later.id]


async def test_a_row_read_with_another_key_is_refused_clearly(
    stores: Stores, sealer_key: str
) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    stranger = PostgresEndpointStore(stores.db, sealer=FernetSealer(FernetSealer.generate_key()))
    with pytest.raises(SecretSealer.UnsealableError) as caught:
        await stranger.get(endpoint.id)
    assert caught.value.code == "secret_unsealable"
    assert endpoint.keys.current not in str(caught.value)
    with pytest.raises(SecretSealer.UnsealableError):
        await stranger.list()

    # A rotated sealer key: the old one retired still opens, a save seals under the new one.
    new_key = FernetSealer.generate_key()
    rotating = PostgresEndpointStore(stores.db, sealer=FernetSealer(new_key, retired=[sealer_key]))
    assert await rotating.get(endpoint.id) == endpoint
    await rotating.save(endpoint)
    assert (
        await PostgresEndpointStore(stores.db, sealer=FernetSealer(new_key)).get(endpoint.id)
        == endpoint
    )


async def test_a_sealed_secret_moved_to_another_endpoint_is_refused(stores: Stores) -> None:
    victim, other = _endpoint(), _endpoint()
    await stores.endpoints.add(victim)
    await stores.endpoints.add(other)
    await stores.db.execute(
        f"UPDATE {SCHEMA}.endpoints SET current_secret_sealed = ("
        f" SELECT current_secret_sealed FROM {SCHEMA}.endpoints WHERE id = $1) WHERE id = $2",
        victim.id,
        other.id,
    )
    with pytest.raises(SecretSealer.UnsealableError) as caught:
        await stores.endpoints.get(other.id)
    assert "another endpoint" in str(caught.value)


def test_a_sealer_key_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="32 url-safe"):
        FernetSealer("not-a-key")


async def test_saving_an_endpoint_replaces_it(stores: Stores) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    new = signing.generate_secret()
    changed = replace(
        endpoint,
        url="https://other.example.com/hook?x=1",
        event_types=("identity.#",),
        description="",
        status=EndpointStatus.DISABLED,
        keys=endpoint.keys.rotated(new, now=T0),
        timeout_seconds=30.0,
        max_in_flight=16,
        updated_at=T0 + timedelta(minutes=1),
        failing_since=T0,
        consecutive_failures=12,
        disabled_reason="failing since 2026-12-07T12:00:00Z, 12 attempts in a row",
    )
    await stores.endpoints.save(changed)
    assert await stores.endpoints.get(endpoint.id) == changed

    # a compromised secret: rotated with no overlap, the previous one is gone from the row
    dropped = replace(
        changed, keys=changed.keys.rotated(signing.generate_secret(), now=T0, overlap=timedelta(0))
    )
    await stores.endpoints.save(dropped)
    assert await stores.endpoints.get(endpoint.id) == dropped
    row = await stores.db.fetchrow(
        f"SELECT previous_secret_sealed, previous_until FROM {SCHEMA}.endpoints WHERE id = $1",
        endpoint.id,
    )
    assert row is not None
    assert (row["previous_secret_sealed"], row["previous_until"]) == (None, None)

    ghost = _endpoint()
    await stores.endpoints.save(ghost)  # never added: nothing is written
    assert await stores.endpoints.get(ghost.id) is None


async def test_deleting_an_endpoint_deletes_its_messages(stores: Stores) -> None:
    gone, kept = _endpoint(), _endpoint()
    for endpoint in (gone, kept):
        await stores.endpoints.add(endpoint)
    doomed, survivor = _message(gone, "ev-1"), _message(kept, "ev-1")
    assert await stores.messages.add_new([doomed, survivor]) == 2
    assert await stores.endpoints.delete(gone.id)
    assert await stores.endpoints.get(gone.id) is None
    assert await stores.messages.get(doomed.id) is None
    assert await stores.messages.get(survivor.id) == survivor
    assert not await stores.endpoints.delete(gone.id)

    # a worker finishing an attempt of a deleted endpoint's message brings nothing back
    await stores.messages.save(replace(doomed, state=MessageState.DELIVERED, attempts=1))
    assert await stores.messages.get(doomed.id) is None
    count = await stores.db.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.messages WHERE endpoint_id = $1", gone.id
    )
    assert count == 0


# ---- messages ----------------------------------------------------------------------------------


async def test_one_message_per_event_and_endpoint_however_often_added(stores: Stores) -> None:
    first, second = _endpoint(), _endpoint()
    for endpoint in (first, second):
        await stores.endpoints.add(endpoint)
    one, two = _message(first, "ev-1"), _message(second, "ev-1")
    assert await stores.messages.add_new([one, two]) == 2
    assert await stores.messages.add_new([_message(first, "ev-1"), _message(second, "ev-1")]) == 0
    assert await stores.messages.add_new([_message(first, "ev-1"), _message(first, "ev-2")]) == 1
    assert await stores.messages.add_new([_message(first, "ev-3"), _message(first, "ev-3")]) == 1
    assert await stores.messages.add_new([_message(_endpoint(), "ev-4")]) == 0  # no endpoint
    assert await stores.messages.add_new([]) == 0
    assert await stores.messages.get(one.id) == one  # the body's bytes as they were
    count = await stores.db.fetchval(f"SELECT count(*) FROM {SCHEMA}.messages")
    assert count == 4  # ev-1 twice, ev-2, ev-3

    attempted = replace(
        one,
        attempts=1,
        next_attempt_at=T0 + timedelta(seconds=5),
        leased_until=None,
        last_attempt=Attempt(
            outcome=Outcome.HTTP_ERROR,
            latency_ms=12.5,
            status=503,
            address="203.0.113.9",
            detail="answered 503",
        ),
    )
    await stores.messages.save(attempted)
    assert await stores.messages.get(one.id) == attempted
    assert await stores.messages.get("wm_missing") is None


async def test_claims_take_due_pending_messages_oldest_first_up_to_the_limit(
    stores: Stores,
) -> None:
    mine, theirs = _endpoint(), _endpoint()
    for endpoint in (mine, theirs):
        await stores.endpoints.add(endpoint)
    ago = timedelta(seconds=10)
    tied_newer = _message(mine, "a", next_attempt_at=T0 - ago, created_at=T0 - 2 * ago)
    tied_older = _message(mine, "b", next_attempt_at=T0 - ago, created_at=T0 - 3 * ago)
    later = _message(mine, "c", next_attempt_at=T0 - ago / 2, created_at=T0 - 6 * ago)
    exactly_now = _message(mine, "d", next_attempt_at=T0, created_at=T0 - 6 * ago)
    not_yet = _message(mine, "e", next_attempt_at=T0 + ago)
    dead = _message(mine, "f", state=MessageState.DEAD, next_attempt_at=T0 - 6 * ago)
    delivered = _message(mine, "g", state=MessageState.DELIVERED, next_attempt_at=T0 - 6 * ago)
    other = _message(theirs, "a", next_attempt_at=T0 - 6 * ago)
    everything = [tied_newer, tied_older, later, exactly_now, not_yet, dead, delivered, other]
    assert await stores.messages.add_new(everything) == len(everything)

    async def claim(endpoints: set[str], limit: int) -> list[Message]:
        return await stores.messages.claim_due(
            now=T0, endpoints=frozenset(endpoints), limit=limit, lease=LEASE
        )

    first = await claim({mine.id}, 2)
    assert [m.id for m in first] == [tied_older.id, tied_newer.id]
    assert all(m.leased_until == T0 + LEASE for m in first)
    assert first[0] == replace(tied_older, leased_until=T0 + LEASE)
    assert [m.id for m in await claim({mine.id}, 10)] == [later.id, exactly_now.id]
    assert await claim({mine.id}, 10) == []
    assert [m.id for m in await claim({theirs.id}, 10)] == [other.id]
    assert await claim(set(), 10) == []
    stored = await stores.messages.get(tied_older.id)
    assert stored is not None
    assert stored.leased_until == T0 + LEASE


async def test_a_claimed_message_comes_due_again_only_when_its_lease_lapses(
    stores: Stores,
) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    message = _message(endpoint, "lease-1")
    await stores.messages.add_new([message])
    mine = frozenset({endpoint.id})

    async def claim(at: datetime) -> list[str]:
        claimed = await stores.messages.claim_due(now=at, endpoints=mine, limit=10, lease=LEASE)
        return [m.id for m in claimed]

    assert await claim(T0) == [message.id]
    assert await claim(T0) == []
    assert await claim(T0 + LEASE - timedelta(microseconds=1)) == []
    assert await claim(T0 + LEASE) == [message.id]  # the worker holding it died
    again = await stores.messages.get(message.id)
    assert again is not None
    assert again.leased_until == T0 + 2 * LEASE

    # its attempt failed: saved with no lease, due in 30 s
    await stores.messages.save(
        replace(
            again, attempts=1, leased_until=None, next_attempt_at=T0 + LEASE + timedelta(seconds=30)
        )
    )
    assert await claim(T0 + LEASE + timedelta(seconds=29)) == []
    assert await claim(T0 + LEASE + timedelta(seconds=30)) == [message.id]


async def test_workers_claiming_at_once_never_share_a_message(dsn: str, stores: Stores) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    messages = [
        _message(endpoint, f"race-{n}", created_at=T0 + timedelta(microseconds=n))
        for n in range(100)
    ]
    assert await stores.messages.add_new(messages) == 100
    everything = {m.id for m in messages}
    pools = [await create_pool(dsn, size=1) for _ in range(4)]
    workers = [PostgresMessageStore(Database(pool)) for pool in pools]
    mine = frozenset({endpoint.id})
    try:

        async def one_at_a_time(worker: PostgresMessageStore) -> list[str]:
            taken: list[str] = []
            for _ in range(50):
                claimed = await worker.claim_due(now=T0, endpoints=mine, limit=1, lease=LEASE)
                taken += [m.id for m in claimed]
            return taken

        first, second = await asyncio.gather(*(one_at_a_time(w) for w in workers[:2]))
        assert not set(first) & set(second)
        assert set(first) | set(second) == everything
        assert len(first) + len(second) == 100

        # batches, four workers, each until nothing is left for it
        await stores.db.execute(f"UPDATE {SCHEMA}.messages SET leased_until = NULL")

        async def batches(worker: PostgresMessageStore) -> list[str]:
            taken: list[str] = []
            while claimed := await worker.claim_due(now=T0, endpoints=mine, limit=7, lease=LEASE):
                taken += [m.id for m in claimed]
            return taken

        takes = await asyncio.gather(*(batches(w) for w in workers))
        flat = [i for take in takes for i in take]
        assert len(flat) == len(set(flat)) == 100
        assert set(flat) == everything
    finally:
        for pool in pools:
            await pool.close()


async def test_dead_letters_are_listed_newest_first(stores: Stores) -> None:
    first, second = _endpoint(), _endpoint()
    for endpoint in (first, second):
        await stores.endpoints.add(endpoint)
    minute = timedelta(minutes=1)
    oldest = _message(first, "d1", state=MessageState.DEAD, created_at=T0 - 3 * minute)
    newest = _message(first, "d2", state=MessageState.DEAD, created_at=T0 - minute)
    between = _message(second, "d3", state=MessageState.DEAD, created_at=T0 - 2 * minute)
    alive = _message(first, "d4", created_at=T0)
    await stores.messages.add_new([oldest, newest, between, alive])

    assert [m.id for m in await stores.messages.dead(endpoint_id=None, limit=10)] == [
        newest.id,
        between.id,
        oldest.id,
    ]
    assert [m.id for m in await stores.messages.dead(endpoint_id=None, limit=2)] == [
        newest.id,
        between.id,
    ]
    assert [m.id for m in await stores.messages.dead(endpoint_id=first.id, limit=10)] == [
        newest.id,
        oldest.id,
    ]
    assert await stores.messages.dead(endpoint_id="ep_missing", limit=10) == []


# ---- the core over these stores ----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


async def test_the_webhook_service_delivers_retries_dead_letters_and_replays(
    stores: Stores,
) -> None:
    failed = Attempt(outcome=Outcome.HTTP_ERROR, latency_ms=3.0, status=500, address="203.0.113.9")
    delivered = Attempt(outcome=Outcome.DELIVERED, latency_ms=2.0, status=204)
    delivery = InMemoryDelivery([delivered, failed, failed, delivered])
    events, clock = InMemoryWebhookEvents(), Clock()
    service = WebhookService(
        endpoints=stores.endpoints,
        messages=stores.messages,
        delivery=delivery,
        events=events,
        policy=AddressPolicy(),
        retry=RetryPolicy(delays=(timedelta(0), timedelta(seconds=5)), jitter_ratio=0.0),
        clock=clock,
    )
    endpoint, secret = await service.register(url=URL, event_types=["exporter.job.*"])
    assert await service.get(endpoint.id) == endpoint

    # an event, redelivered by the bus, makes one message, delivered and signed
    assert await service.dispatch(event_id="e1", event_type="exporter.job.succeeded", body=BODY)
    assert not await service.dispatch(event_id="e1", event_type="exporter.job.succeeded", body=BODY)
    assert not await service.dispatch(event_id="e0", event_type="identity.user.created", body=BODY)
    assert await service.deliver_due() == 1
    assert await service.deliver_due() == 0
    posted = delivery.posts[0]
    assert posted.body == BODY
    signing.verify(headers=posted.headers, body=BODY, secret=secret, now=int(T0.timestamp()))
    ((_, first_id, _),) = events.attempts
    first = await stores.messages.get(first_id)
    assert first is not None
    assert (first.state, first.attempts, first.last_attempt) == (
        MessageState.DELIVERED,
        1,
        delivered,
    )

    # a second event fails, is retried 5 s later, fails again: a dead letter
    assert await service.dispatch(event_id="e2", event_type="exporter.job.failed", body=BODY)
    assert await service.deliver_due() == 1
    clock.now = T0 + timedelta(seconds=4)
    assert await service.deliver_due() == 0
    clock.now = T0 + timedelta(seconds=5)
    assert await service.deliver_due() == 1
    (dead,) = await service.dead_letters()
    assert events.dead == [dead.id]
    assert (dead.state, dead.attempts, dead.last_attempt) == (MessageState.DEAD, 2, failed)
    assert await service.dead_letters(endpoint_id=endpoint.id) == [dead]
    health = await service.get(endpoint.id)
    assert (health.consecutive_failures, health.failing_since) == (2, T0)

    # replayed: delivered under the same webhook-id, and the endpoint is healthy again
    replayed = await service.replay(dead.id)
    assert (replayed.state, replayed.attempts) == (MessageState.PENDING, 0)
    assert await service.deliver_due() == 1
    done = await stores.messages.get(dead.id)
    assert done is not None
    assert done.state is MessageState.DELIVERED
    assert {p.headers["webhook-id"] for p in delivery.posts[1:]} == {dead.message_id}
    assert await service.dead_letters() == []
    assert (await service.get(endpoint.id)).consecutive_failures == 0

    # a rotation kept in the store: both secrets sign during the overlap
    _, new = await service.rotate_secret(endpoint.id)
    assert await service.dispatch(event_id="e3", event_type="exporter.job.queued", body=BODY)
    assert await service.deliver_due() == 1
    during = delivery.posts[-1].headers
    assert len(during["webhook-signature"].split()) == 2
    for key in (secret, new):
        signing.verify(headers=during, body=BODY, secret=key, now=int(clock.now.timestamp()))

    await service.delete(endpoint.id)
    assert await stores.db.fetchval(f"SELECT count(*) FROM {SCHEMA}.messages") == 0
    assert await service.list_endpoints() == []
