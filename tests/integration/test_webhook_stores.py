"""The webhooks' PostgreSQL stores on a real database of their own (migrations applied).

Endpoints round-trip with their secrets sealed (the table never holds them in clear, a wrong
key or a secret moved to another row is refused), and their health is counted in single
statements (concurrent failures all counted, a disable taking effect once); messages are one
per event and endpoint; claims are due-ordered, limited overall and per endpoint, leased, and
two workers claiming at once never share a message; an attempt's result is written only under
its own claim, a replay only over a dead letter; dead letters come newest first; and the
WebhookService core runs over these stores end to end, with an in-memory delivery and the
PostgreSQL unit of work: every state change commits with its events in the outbox, or neither.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_kit.attribution import Attribution
from hypersdk_kit.database import Database, apply_migrations, create_pool
from hypersdk_kit.outbox import PostgresUnitOfWork
from hypersdk_kit.trust import AssertionVerifier
from hypersdk_webhooks.adapters.outbound.memory import InMemoryDelivery
from hypersdk_webhooks.adapters.outbound.postgres import (
    MIGRATIONS,
    SCHEMA,
    FernetSealer,
    PostgresEndpointStore,
    PostgresMessageStore,
    PostgresSubscriptionStore,
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
    Subscription,
)
from hypersdk_webhooks.core.schedule import RetryPolicy
from hypersdk_webhooks.core.service import WebhookService
from hypersdk_webhooks.core.ssrf import AddressPolicy, Target
from hypersdk_webhooks.core.subscriptions import digest_of

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
    """Both stores over empty tables (and an empty outbox)."""
    await db.execute(f"TRUNCATE {SCHEMA}.endpoints, {SCHEMA}.messages, {SCHEMA}.outbox")
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


async def test_concurrent_failures_are_all_counted_and_a_success_clears_them(
    dsn: str, stores: Stores, sealer_key: str
) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    pool = await create_pool(dsn, size=8)
    try:
        # Health through a pool of several connections: the failures really run at once.
        health = PostgresEndpointStore(Database(pool), sealer=FernetSealer(sealer_key))
        n = 40
        nows = [T0 + timedelta(seconds=i) for i in range(n)]
        after = await asyncio.gather(*(health.record_failure(endpoint.id, now=t) for t in nows))
        seen = {t: e for t, e in zip(nows, after, strict=True) if e is not None}
        assert len(seen) == n
        # each saw its own increment: none was lost to another's
        assert sorted(e.consecutive_failures for e in seen.values()) == list(range(1, n + 1))
        # failing since the now of the call that counted first, and never moved after
        (since,) = [t for t, e in seen.items() if e.consecutive_failures == 1]
        assert {e.failing_since for e in seen.values()} == {since}
        stored = await stores.endpoints.get(endpoint.id)
        assert stored == replace(endpoint, failing_since=since, consecutive_failures=n)

        await health.record_success(endpoint.id)
        assert await stores.endpoints.get(endpoint.id) == endpoint  # nothing else changed
        await health.record_success(endpoint.id)  # nothing to clear
        assert await stores.endpoints.get(endpoint.id) == endpoint

        again = await health.record_failure(endpoint.id, now=T0 + timedelta(hours=1))
        assert again is not None
        assert (again.consecutive_failures, again.failing_since) == (1, T0 + timedelta(hours=1))
        assert await health.record_failure("ep_missing", now=T0) is None
        await health.record_success("ep_missing")
        with pytest.raises(ValueError, match="timezone-aware"):
            await health.record_failure(endpoint.id, now=T0.replace(tzinfo=None))
    finally:
        await pool.close()


async def test_an_endpoint_is_disabled_once_and_only_while_active(
    dsn: str, stores: Stores, sealer_key: str
) -> None:
    active, paused, racing = (
        _endpoint(),
        _endpoint(status=EndpointStatus.PAUSED),
        _endpoint(),
    )
    for endpoint in (active, paused, racing):
        await stores.endpoints.add(endpoint)
    later = T0 + timedelta(minutes=3)
    assert await stores.endpoints.disable(active.id, reason="failing", now=later)
    disabled = replace(
        active, status=EndpointStatus.DISABLED, disabled_reason="failing", updated_at=later
    )
    assert await stores.endpoints.get(active.id) == disabled
    assert not await stores.endpoints.disable(active.id, reason="again", now=later + LEASE)
    assert await stores.endpoints.get(active.id) == disabled  # the first reason stays

    assert not await stores.endpoints.disable(paused.id, reason="failing", now=later)
    assert await stores.endpoints.get(paused.id) == paused
    assert not await stores.endpoints.disable("ep_missing", reason="failing", now=later)

    pool = await create_pool(dsn, size=6)
    try:
        store = PostgresEndpointStore(Database(pool), sealer=FernetSealer(sealer_key))
        won = await asyncio.gather(
            *(store.disable(racing.id, reason=f"worker {n}", now=later) for n in range(12))
        )
        assert won.count(True) == 1
        got = await stores.endpoints.get(racing.id)
        assert got is not None
        assert got.status is EndpointStatus.DISABLED
        assert got.disabled_reason == f"worker {won.index(True)}"
    finally:
        await pool.close()


async def test_deleting_an_endpoint_deletes_its_messages(stores: Stores) -> None:
    gone, kept = _endpoint(), _endpoint()
    for endpoint in (gone, kept):
        await stores.endpoints.add(endpoint)
    doomed, survivor = _message(gone, "ev-1"), _message(kept, "ev-1")
    assert await stores.messages.add_new([doomed, survivor]) == 2
    (claimed,) = await stores.messages.claim_due(
        now=T0, capacity={gone.id: 1}, limit=10, lease=LEASE
    )
    assert claimed.id == doomed.id
    assert await stores.endpoints.delete(gone.id)
    assert await stores.endpoints.get(gone.id) is None
    assert await stores.messages.get(doomed.id) is None
    assert await stores.messages.get(survivor.id) == survivor
    assert not await stores.endpoints.delete(gone.id)

    # a worker finishing an attempt of a deleted endpoint's message brings nothing back
    done = replace(doomed, state=MessageState.DELIVERED, attempts=1, next_attempt_at=None)
    assert not await stores.messages.settle(done, claimed_until=claimed.leased_until)
    assert not await stores.messages.settle(done, claimed_until=None)
    assert not await stores.messages.replay(replace(doomed, state=MessageState.PENDING))
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

    # an attempt's result, written under its claim, comes back whole
    claims = await stores.messages.claim_due(now=T0, capacity={first.id: 10}, limit=10, lease=LEASE)
    assert len(claims) == 3
    (claim,) = [m for m in claims if m.id == one.id]
    assert claim == replace(one, leased_until=T0 + LEASE)
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
    assert await stores.messages.settle(attempted, claimed_until=claim.leased_until)
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

    async def claim(capacity: Mapping[str, int], limit: int) -> list[Message]:
        return await stores.messages.claim_due(now=T0, capacity=capacity, limit=limit, lease=LEASE)

    first = await claim({mine.id: 10}, 2)
    assert [m.id for m in first] == [tied_older.id, tied_newer.id]
    assert all(m.leased_until == T0 + LEASE for m in first)
    assert first[0] == replace(tied_older, leased_until=T0 + LEASE)
    assert [m.id for m in await claim({mine.id: 10}, 10)] == [later.id, exactly_now.id]
    assert await claim({mine.id: 10}, 10) == []
    assert await claim({theirs.id: 1}, 0) == []
    assert await claim({theirs.id: 0}, 10) == []
    assert await claim({theirs.id: -1}, 10) == []
    assert [m.id for m in await claim({theirs.id: 10}, 10)] == [other.id]
    assert await claim({}, 10) == []
    stored = await stores.messages.get(tied_older.id)
    assert stored is not None
    assert stored.leased_until == T0 + LEASE
    with pytest.raises(ValueError, match="timezone-aware"):
        await stores.messages.claim_due(
            now=T0.replace(tzinfo=None), capacity={mine.id: 1}, limit=1, lease=LEASE
        )


async def test_claims_respect_each_endpoints_capacity_and_the_overall_limit(
    stores: Stores,
) -> None:
    a, b, c = _endpoint(), _endpoint(), _endpoint()
    for endpoint in (a, b, c):
        await stores.endpoints.add(endpoint)

    def due(endpoint: Endpoint, event_id: str, seconds_ago: int) -> Message:
        at = T0 - timedelta(seconds=seconds_ago)
        return _message(endpoint, event_id, next_attempt_at=at, created_at=at)

    of_a = [due(a, f"a{n}", s) for n, s in enumerate((10, 8, 6, 4, 2))]
    of_b = [due(b, f"b{n}", s) for n, s in enumerate((9, 7, 5))]
    of_c = [due(c, f"c{n}", s) for n, s in enumerate((20, 19))]  # the oldest of all
    assert await stores.messages.add_new([*of_a, *of_b, *of_c]) == 10

    async def claim(capacity: Mapping[str, int], limit: int) -> list[str]:
        claimed = await stores.messages.claim_due(
            now=T0, capacity=capacity, limit=limit, lease=LEASE
        )
        return [m.id for m in claimed]

    # at most 2 of A and 1 of B, none of C (absent), oldest first across endpoints
    assert await claim({a.id: 2, b.id: 1}, 10) == [of_a[0].id, of_b[0].id, of_a[1].id]
    assert await claim({a.id: 2, b.id: 1}, 10) == [of_b[1].id, of_a[2].id, of_a[3].id]
    # the overall limit takes the oldest among every endpoint's share
    assert await claim({a.id: 5, b.id: 5, c.id: 5}, 2) == [of_c[0].id, of_c[1].id]
    assert await claim({a.id: 5, b.id: 5, c.id: 5}, 1) == [of_b[2].id]
    assert await claim({a.id: 5, b.id: 5, c.id: 5}, 10) == [of_a[4].id]

    # only the messages claimed carry a lease: what a claim locked but left stays free
    await stores.db.execute(f"UPDATE {SCHEMA}.messages SET leased_until = NULL")
    assert await claim({a.id: 3, b.id: 3, c.id: 3}, 4) == [
        of_c[0].id,
        of_c[1].id,
        of_a[0].id,
        of_b[0].id,
    ]
    leased = await stores.db.fetch(
        f"SELECT id FROM {SCHEMA}.messages WHERE leased_until IS NOT NULL ORDER BY id"
    )
    assert {r["id"] for r in leased} == {of_c[0].id, of_c[1].id, of_a[0].id, of_b[0].id}
    assert await claim({a.id: 3, b.id: 3, c.id: 3}, 10) == [
        of_a[1].id,
        of_b[1].id,
        of_a[2].id,
        of_b[2].id,
        of_a[3].id,
    ]


async def test_a_claimed_message_comes_due_again_only_when_its_lease_lapses(
    stores: Stores,
) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    message = _message(endpoint, "lease-1")
    await stores.messages.add_new([message])
    mine = {endpoint.id: 10}

    async def claim(at: datetime) -> list[str]:
        claimed = await stores.messages.claim_due(now=at, capacity=mine, limit=10, lease=LEASE)
        return [m.id for m in claimed]

    assert await claim(T0) == [message.id]
    assert await claim(T0) == []
    assert await claim(T0 + LEASE - timedelta(microseconds=1)) == []
    assert await claim(T0 + LEASE) == [message.id]  # the worker holding it died
    again = await stores.messages.get(message.id)
    assert again is not None
    assert again.leased_until == T0 + 2 * LEASE

    # its attempt failed: settled with no lease, due in 30 s
    assert await stores.messages.settle(
        replace(
            again, attempts=1, leased_until=None, next_attempt_at=T0 + LEASE + timedelta(seconds=30)
        ),
        claimed_until=again.leased_until,
    )
    assert await claim(T0 + LEASE + timedelta(seconds=29)) == []
    assert await claim(T0 + LEASE + timedelta(seconds=30)) == [message.id]


async def test_a_result_is_written_only_under_the_claim_it_was_attempted_under(
    dsn: str, stores: Stores
) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    message = _message(endpoint, "settle-1")
    await stores.messages.add_new([message])
    pools = [await create_pool(dsn, size=1) for _ in range(2)]
    slow, quick = (PostgresMessageStore(Database(pool)) for pool in pools)
    capacity = {endpoint.id: 1}
    try:
        (stale,) = await slow.claim_due(now=T0, capacity=capacity, limit=1, lease=LEASE)
        # the slow worker's lease lapses; another worker claims the message again
        (fresh,) = await quick.claim_due(now=T0 + LEASE, capacity=capacity, limit=1, lease=LEASE)
        assert (stale.leased_until, fresh.leased_until) == (T0 + LEASE, T0 + 2 * LEASE)

        late = replace(
            stale,
            state=MessageState.DELIVERED,
            attempts=1,
            next_attempt_at=None,
            leased_until=None,
            last_attempt=Attempt(outcome=Outcome.DELIVERED, latency_ms=9.0, status=200),
        )
        assert not await slow.settle(late, claimed_until=stale.leased_until)
        assert not await slow.settle(late, claimed_until=None)
        assert await stores.messages.get(message.id) == fresh  # nothing changed

        failed = replace(
            fresh,
            attempts=1,
            next_attempt_at=T0 + LEASE + timedelta(seconds=5),
            leased_until=None,
            last_attempt=Attempt(outcome=Outcome.TIMEOUT, latency_ms=10_000.0, detail="slow"),
        )
        assert await quick.settle(failed, claimed_until=fresh.leased_until)
        assert await stores.messages.get(message.id) == failed
        # settled once: the same claim writes nothing more, nor does the stale one
        assert not await quick.settle(replace(failed, attempts=2), claimed_until=fresh.leased_until)
        assert not await slow.settle(late, claimed_until=stale.leased_until)
        assert await stores.messages.get(message.id) == failed

        # a message no longer pending is never written by a settle
        (third,) = await quick.claim_due(
            now=T0 + LEASE + timedelta(seconds=5), capacity=capacity, limit=1, lease=LEASE
        )
        delivered = replace(
            third, state=MessageState.DELIVERED, attempts=2, next_attempt_at=None, leased_until=None
        )
        assert await quick.settle(delivered, claimed_until=third.leased_until)
        assert not await quick.settle(
            replace(delivered, state=MessageState.PENDING), claimed_until=None
        )
        assert await stores.messages.get(message.id) == delivered
    finally:
        for pool in pools:
            await pool.close()


async def test_only_a_dead_letter_is_replayed(stores: Stores) -> None:
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    failed = Attempt(outcome=Outcome.HTTP_ERROR, latency_ms=3.0, status=500)
    pending = _message(endpoint, "r1", attempts=1, last_attempt=failed)
    delivered = _message(endpoint, "r2", state=MessageState.DELIVERED, next_attempt_at=None)
    dead = _message(
        endpoint,
        "r3",
        state=MessageState.DEAD,
        attempts=3,
        next_attempt_at=None,
        last_attempt=failed,
    )
    await stores.messages.add_new([pending, delivered, dead])

    def replayed(message: Message) -> Message:
        return replace(message, state=MessageState.PENDING, attempts=0, next_attempt_at=T0 + LEASE)

    for alive in (pending, delivered):
        assert not await stores.messages.replay(replayed(alive))
        assert await stores.messages.get(alive.id) == alive
    assert await stores.messages.replay(replayed(dead))
    assert await stores.messages.get(dead.id) == replayed(dead)
    assert not await stores.messages.replay(replace(replayed(dead), attempts=7))  # not dead now
    assert await stores.messages.get(dead.id) == replayed(dead)
    assert not await stores.messages.replay(replayed(_message(endpoint, "missing")))


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
    try:

        async def one_at_a_time(worker: PostgresMessageStore) -> list[str]:
            taken: list[str] = []
            for _ in range(50):
                claimed = await worker.claim_due(
                    now=T0, capacity={endpoint.id: 1}, limit=1, lease=LEASE
                )
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
            while claimed := await worker.claim_due(
                now=T0, capacity={endpoint.id: 7}, limit=7, lease=LEASE
            ):
                taken += [m.id for m in claimed]
            return taken

        takes = await asyncio.gather(*(batches(w) for w in workers))
        flat = [i for take in takes for i in take]
        assert len(flat) == len(set(flat)) == 100
        assert set(flat) == everything
    finally:
        for pool in pools:
            await pool.close()


async def test_workers_claiming_at_once_under_capacities_never_share_a_message(
    dsn: str, stores: Stores
) -> None:
    a, b = _endpoint(), _endpoint()
    for endpoint in (a, b):
        await stores.endpoints.add(endpoint)
    messages = [
        _message(endpoint, f"cap-{n}", created_at=T0 + timedelta(microseconds=n))
        for n in range(40)
        for endpoint in (a, b)
    ]
    assert await stores.messages.add_new(messages) == 80
    owner = {m.id: m.endpoint_id for m in messages}
    pools = [await create_pool(dsn, size=1) for _ in range(4)]
    workers = [PostgresMessageStore(Database(pool)) for pool in pools]
    capacity = {a.id: 2, b.id: 3}

    def within(claimed: list[Message], limit: int) -> bool:
        of = [owner[m.id] for m in claimed]
        return len(of) <= limit and of.count(a.id) <= 2 and of.count(b.id) <= 3

    try:
        # every worker claims once, all at the same time, the limit below the capacities' sum
        claims = await asyncio.gather(
            *(w.claim_due(now=T0, capacity=capacity, limit=4, lease=LEASE) for w in workers)
        )
        assert all(within(claimed, 4) for claimed in claims)
        once = [m.id for claimed in claims for m in claimed]
        assert len(once) == len(set(once))
        assert once  # at least one worker found messages

        # then each worker claims until nothing is left for it
        async def until_empty(worker: PostgresMessageStore) -> list[str]:
            taken: list[str] = []
            while claimed := await worker.claim_due(
                now=T0, capacity=capacity, limit=5, lease=LEASE
            ):
                assert within(claimed, 5)
                taken += [m.id for m in claimed]
            return taken

        takes = await asyncio.gather(*(until_empty(w) for w in workers))
        flat = once + [i for take in takes for i in take]
        assert len(flat) == len(set(flat)) == 80
        assert set(flat) == set(owner)
    finally:
        for pool in pools:
            await pool.close()


async def test_a_claim_holds_no_lock_on_what_it_does_not_lease(dsn: str, stores: Stores) -> None:
    a, b = _endpoint(), _endpoint()
    for endpoint in (a, b):
        await stores.endpoints.add(endpoint)
    messages = [
        _message(endpoint, f"lock-{n}", created_at=T0 + timedelta(microseconds=n))
        for n in range(10)
        for endpoint in (a, b)
    ]
    assert await stores.messages.add_new(messages) == 20
    pools = [await create_pool(dsn, size=1) for _ in range(2)]
    databases = [Database(pool) for pool in pools]
    slow, quick = (PostgresMessageStore(database) for database in databases)
    capacity = {a.id: 10, b.id: 10}
    try:
        # a claim of one, its transaction still open (a slow commit, a busy server) ...
        async with databases[0].transaction():
            (one,) = await slow.claim_due(now=T0, capacity=capacity, limit=1, lease=LEASE)
            # ... leaves the 19 others to another worker
            others = await quick.claim_due(now=T0, capacity=capacity, limit=19, lease=LEASE)
            assert len(others) == 19
            assert one.id not in {m.id for m in others}
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


@dataclass(frozen=True)
class OutboxRow:
    routing_key: str
    envelope: dict[str, Any]
    xmin: str
    """The id of the transaction that wrote it."""


async def _outbox(db: Database) -> list[OutboxRow]:
    rows = await db.fetch(
        f"SELECT routing_key, envelope, xmin::text AS xmin FROM {SCHEMA}.outbox ORDER BY position"
    )
    return [OutboxRow(r["routing_key"], json.loads(r["envelope"]), r["xmin"]) for r in rows]


async def _xmin(db: Database, table: str, row_id: str) -> str:
    """The id of the transaction that last wrote the row."""
    xmin: str = await db.fetchval(f"SELECT xmin::text FROM {SCHEMA}.{table} WHERE id = $1", row_id)
    return xmin


def _service(stores: Stores, delivery: InMemoryDelivery, clock: Clock, **kw: Any) -> WebhookService:
    return WebhookService(
        endpoints=stores.endpoints,
        messages=stores.messages,
        delivery=delivery,
        uow=PostgresUnitOfWork(stores.db, schema=SCHEMA, service="webhooks"),
        attribution=Attribution(
            publishers={},
            seals=AssertionVerifier(Ed25519PrivateKey.generate().public_key(), issuer="gateway"),
        ),
        policy=AddressPolicy(),
        clock=clock,
        **kw,
    )


async def _deliver(service: WebhookService) -> int:
    """Claim what is due and wait for its attempts; how many were claimed."""
    claimed = await service.deliver_due()
    await service.drain()
    assert service.in_flight == 0
    return claimed


async def test_the_webhook_service_delivers_retries_dead_letters_and_replays(
    stores: Stores,
) -> None:
    failed = Attempt(outcome=Outcome.HTTP_ERROR, latency_ms=3.0, status=500, address="203.0.113.9")
    delivered = Attempt(outcome=Outcome.DELIVERED, latency_ms=2.0, status=204)
    delivery = InMemoryDelivery([delivered, failed, failed, delivered])
    clock = Clock()
    service = _service(
        stores,
        delivery,
        clock,
        retry=RetryPolicy(delays=(timedelta(0), timedelta(seconds=5)), jitter_ratio=0.0),
    )
    endpoint, secret = await service.register(url=URL, event_types=["exporter.job.*"])
    assert await service.get(endpoint.id) == endpoint
    (created,) = await _outbox(stores.db)
    assert created.routing_key == "webhooks.endpoint.created"
    assert created.envelope["data"]["endpoint_id"] == endpoint.id
    assert created.xmin == await _xmin(stores.db, "endpoints", endpoint.id)

    # an event, redelivered by the bus, makes one message, delivered and signed
    assert await service.dispatch(event_id="e1", event_type="exporter.job.succeeded", body=BODY)
    assert not await service.dispatch(event_id="e1", event_type="exporter.job.succeeded", body=BODY)
    assert not await service.dispatch(event_id="e0", event_type="identity.user.created", body=BODY)
    assert await _deliver(service) == 1
    assert await _deliver(service) == 0
    posted = delivery.posts[0]
    assert posted.body == BODY
    signing.verify(headers=posted.headers, body=BODY, secret=secret, now=int(T0.timestamp()))
    _, attempted = await _outbox(stores.db)
    assert attempted.routing_key == "webhooks.delivery.attempted"
    assert attempted.envelope["type"].endswith(".webhooks.delivery.attempted")
    data = attempted.envelope["data"]
    assert (data["endpoint_id"], data["event_id"], data["attempt"]) == (endpoint.id, "e1", 1)
    assert (data["outcome"], data["status"], data["next_attempt_at"]) == ("delivered", 204, None)
    first_id = data["message_id"]
    first = await stores.messages.get(first_id)
    assert first is not None
    assert (first.state, first.attempts, first.last_attempt, first.leased_until) == (
        MessageState.DELIVERED,
        1,
        delivered,
        None,
    )
    assert data["webhook_id"] == first.message_id == posted.headers["webhook-id"]
    # the event was committed with the message's state, in the same transaction
    assert attempted.xmin == await _xmin(stores.db, "messages", first_id)

    # a second event fails, is retried 5 s later, fails again: a dead letter
    assert await service.dispatch(event_id="e2", event_type="exporter.job.failed", body=BODY)
    assert await _deliver(service) == 1
    retry = (await _outbox(stores.db))[-1]
    assert retry.routing_key == "webhooks.delivery.attempted"
    assert retry.envelope["data"]["next_attempt_at"] is not None
    assert retry.xmin == await _xmin(stores.db, "endpoints", endpoint.id)  # health, same commit
    clock.now = T0 + timedelta(seconds=4)
    assert await _deliver(service) == 0
    clock.now = T0 + timedelta(seconds=5)
    assert await _deliver(service) == 1
    (dead,) = await service.dead_letters(endpoint.id)
    assert (dead.state, dead.attempts, dead.last_attempt) == (MessageState.DEAD, 2, failed)
    assert await service.dead_letters(endpoint.id, limit=1) == [dead]
    last_two = (await _outbox(stores.db))[-2:]
    assert [r.routing_key for r in last_two] == [
        "webhooks.delivery.attempted",
        "webhooks.delivery.dead_lettered",
    ]
    assert {r.envelope["data"]["message_id"] for r in last_two} == {dead.id}
    assert {r.xmin for r in last_two} == {await _xmin(stores.db, "messages", dead.id)}
    health = await service.get(endpoint.id)
    assert (health.consecutive_failures, health.failing_since) == (2, T0)
    with pytest.raises(ServiceError) as missing:
        await service.dead_letters("ep_missing")
    assert missing.value.code is ErrorCode.NOT_FOUND

    # replayed: delivered under the same webhook-id, and the endpoint is healthy again
    with pytest.raises(ServiceError) as elsewhere:
        await service.replay("ep_other", dead.id)
    assert elsewhere.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(ServiceError) as alive:
        await service.replay(endpoint.id, first_id)
    assert alive.value.code is ErrorCode.CONFLICT
    replayed = await service.replay(endpoint.id, dead.id)
    assert (replayed.state, replayed.attempts) == (MessageState.PENDING, 0)
    told = (await _outbox(stores.db))[-1]
    assert told.routing_key == "webhooks.delivery.replayed"
    assert told.xmin == await _xmin(stores.db, "messages", dead.id)
    with pytest.raises(ServiceError) as twice:
        await service.replay(endpoint.id, dead.id)
    assert twice.value.code is ErrorCode.CONFLICT
    assert await _deliver(service) == 1
    done = await stores.messages.get(dead.id)
    assert done is not None
    assert done.state is MessageState.DELIVERED
    assert {p.headers["webhook-id"] for p in delivery.posts[1:]} == {dead.message_id}
    assert await service.dead_letters(endpoint.id) == []
    assert (await service.get(endpoint.id)).consecutive_failures == 0

    # a rotation kept in the store: both secrets sign during the overlap
    _, new = await service.rotate_secret(endpoint.id)
    assert await service.dispatch(event_id="e3", event_type="exporter.job.queued", body=BODY)
    assert await _deliver(service) == 1
    during = delivery.posts[-1].headers
    assert len(during["webhook-signature"].split()) == 2
    for key in (secret, new):
        signing.verify(headers=during, body=BODY, secret=key, now=int(clock.now.timestamp()))

    await service.delete(endpoint.id)
    assert await stores.db.fetchval(f"SELECT count(*) FROM {SCHEMA}.messages") == 0
    assert await service.list_endpoints() == []
    keys = [r.routing_key for r in await _outbox(stores.db)]
    assert keys == [
        "webhooks.endpoint.created",
        *["webhooks.delivery.attempted"] * 3,
        "webhooks.delivery.dead_lettered",
        "webhooks.delivery.replayed",
        "webhooks.delivery.attempted",
        "webhooks.endpoint.secret_rotated",
        "webhooks.delivery.attempted",
        "webhooks.endpoint.deleted",
    ]


class GatedDelivery(InMemoryDelivery):
    """Delivers once the gate is open: attempts stay in flight until then."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def post(
        self, target: Target, *, headers: Mapping[str, str], body: bytes, timeout_seconds: float
    ) -> Attempt:
        self.waiting += 1
        await self.gate.wait()
        return await super().post(
            target, headers=headers, body=body, timeout_seconds=timeout_seconds
        )


async def test_the_service_never_has_more_in_flight_than_an_endpoint_allows(
    stores: Stores,
) -> None:
    delivery, clock = GatedDelivery(), Clock()
    service = _service(stores, delivery, clock)
    endpoint, _ = await service.register(url=URL, event_types=["exporter.job.*"], max_in_flight=2)
    for n in range(5):
        assert await service.dispatch(
            event_id=f"f{n}", event_type="exporter.job.succeeded", body=BODY
        )
    assert await service.deliver_due() == 2
    assert await service.deliver_due() == 0  # no free slot while both are in flight
    for _ in range(50):
        if delivery.waiting == 2:
            break
        await asyncio.sleep(0.01)
    assert delivery.waiting == 2
    assert service.in_flight == 2
    leased = await stores.db.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.messages WHERE leased_until IS NOT NULL"
    )
    assert leased == 2
    delivery.gate.set()
    await service.drain()
    assert await _deliver(service) == 2
    assert await _deliver(service) == 1
    assert await _deliver(service) == 0
    states = await stores.db.fetch(
        f"SELECT state, count(*) AS n FROM {SCHEMA}.messages WHERE endpoint_id = $1 GROUP BY state",
        endpoint.id,
    )
    assert {r["state"]: r["n"] for r in states} == {"delivered": 5}


@pytest.mark.parametrize(
    ("refused", "delays"),
    [
        ("webhooks.delivery.attempted", (timedelta(0), timedelta(seconds=5))),
        # the second event of the same write: the first must not commit alone either
        ("webhooks.delivery.dead_lettered", (timedelta(0),)),
    ],
)
async def test_an_attempt_whose_events_cannot_be_stored_leaves_no_state_either(
    stores: Stores,
    caplog: pytest.LogCaptureFixture,
    refused: str,
    delays: tuple[timedelta, ...],
) -> None:
    failed = Attempt(outcome=Outcome.HTTP_ERROR, latency_ms=3.0, status=500)
    delivery, clock = InMemoryDelivery([failed]), Clock()
    lease = timedelta(seconds=30)
    service = _service(
        stores, delivery, clock, lease=lease, retry=RetryPolicy(delays=delays, jitter_ratio=0.0)
    )
    endpoint, _ = await service.register(url=URL, event_types=["exporter.job.*"])
    assert await service.dispatch(event_id="x1", event_type="exporter.job.failed", body=BODY)
    message = await stores.messages.get(
        await stores.db.fetchval(f"SELECT id FROM {SCHEMA}.messages")
    )
    assert message is not None
    before = await _outbox(stores.db)

    # PostgreSQL itself refuses the outbox row: the unit of work's transaction fails
    await stores.db.execute(
        f"ALTER TABLE {SCHEMA}.outbox ADD CONSTRAINT refuse_in_test"
        f" CHECK (routing_key <> '{refused}') NOT VALID"
    )
    try:
        with caplog.at_level(logging.ERROR, logger="hypersdk_webhooks.core.service"):
            assert await _deliver(service) == 1
        assert len(delivery.posts) == 1  # the attempt was made
        assert any(
            "not attempted" in r.getMessage()
            and r.exc_info is not None
            and isinstance(r.exc_info[1], asyncpg.CheckViolationError)
            for r in caplog.records
        )
        # neither the events nor the message's result nor the endpoint's health were written
        assert await _outbox(stores.db) == before
        stored = await stores.messages.get(message.id)
        assert stored == replace(message, leased_until=T0 + lease)
        assert await stores.endpoints.get(endpoint.id) == endpoint
    finally:
        await stores.db.execute(f"ALTER TABLE {SCHEMA}.outbox DROP CONSTRAINT refuse_in_test")

    # the claim lapses and the message is attempted again, this time with its events
    clock.now = T0 + lease - timedelta(microseconds=1)
    assert await _deliver(service) == 0
    clock.now = T0 + lease
    assert await _deliver(service) == 1
    stored = await stores.messages.get(message.id)
    assert stored is not None
    assert (stored.attempts, stored.last_attempt, stored.leased_until) == (1, failed, None)
    assert stored.state is (MessageState.DEAD if len(delays) == 1 else MessageState.PENDING)
    written = (await _outbox(stores.db))[len(before) :]
    assert refused in [r.routing_key for r in written]
    assert {r.xmin for r in written} == {await _xmin(stores.db, "messages", message.id)}
    health = await stores.endpoints.get(endpoint.id)
    assert health is not None
    assert (health.consecutive_failures, health.failing_since) == (1, T0 + lease)


async def test_purging_removes_old_delivered_and_dead_messages_in_batches(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hypersdk_webhooks.adapters.outbound import postgres as webhooks_postgres

    monkeypatch.setattr(webhooks_postgres, "PURGE_BATCH", 3)  # several batches of each state
    endpoint = _endpoint()
    await stores.endpoints.add(endpoint)
    day = timedelta(days=1)
    old_done = [
        _message(endpoint, f"pd{n}", state=MessageState.DELIVERED, created_at=T0 - 10 * day)
        for n in range(7)
    ]
    young_done = _message(endpoint, "pd-young", state=MessageState.DELIVERED, created_at=T0)
    old_dead = [
        _message(endpoint, f"px{n}", state=MessageState.DEAD, created_at=T0 - 40 * day)
        for n in range(4)
    ]
    young_dead = _message(endpoint, "px-young", state=MessageState.DEAD, created_at=T0 - 10 * day)
    ancient_pending = _message(endpoint, "pp", created_at=T0 - 400 * day)
    await stores.messages.add_new([*old_done, young_done, *old_dead, young_dead, ancient_pending])

    removed = await stores.messages.purge(delivered_before=T0 - 7 * day, dead_before=T0 - 30 * day)
    assert removed == 7 + 4
    left = {
        row["event_id"] for row in await stores.db.fetch("SELECT event_id FROM webhooks.messages")
    }
    assert left == {"pd-young", "px-young", "pp"}
    naive = datetime(2026, 1, 1)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="aware"):
        await stores.messages.purge(delivered_before=naive, dead_before=T0)


# ---- AMQP subscriptions -----------------------------------------------------------------------


def _subscription(n: int, **changes: Any) -> Subscription:
    values: dict[str, Any] = {
        "id": f"sb_{n:024x}",
        "description": f"subscriber {n}",
        "password_digest": digest_of(f"password-{n}"),
        "created_at": T0 + timedelta(seconds=n),
    }
    return Subscription(**{**values, **changes})


@pytest.fixture
async def subscriptions(db: Database) -> PostgresSubscriptionStore:
    await db.execute(f"TRUNCATE {SCHEMA}.subscriptions")
    return PostgresSubscriptionStore(db)


async def test_subscriptions_are_stored_listed_deleted_and_removed(
    subscriptions: PostgresSubscriptionStore,
) -> None:
    for n in (2, 1, 3):
        await subscriptions.add(_subscription(n))
    assert [s.id for s in await subscriptions.list_active()] == [
        _subscription(n).id for n in (1, 2, 3)
    ]
    assert await subscriptions.get(_subscription(1).id) == _subscription(1)
    assert await subscriptions.mark_deleted(_subscription(2).id, now=T0)
    assert not await subscriptions.mark_deleted(_subscription(2).id, now=T0)  # once
    assert not await subscriptions.mark_deleted("sb_" + "f" * 24, now=T0)
    assert await subscriptions.count_active() == 2
    assert [s.id for s in await subscriptions.deleted()] == [_subscription(2).id]
    found = await subscriptions.get(_subscription(2).id)
    assert found is not None
    assert found.deleted_at == T0
    await subscriptions.remove(_subscription(1).id)  # an active one is never removed
    assert await subscriptions.get(_subscription(1).id) is not None
    await subscriptions.remove(_subscription(2).id)
    assert await subscriptions.get(_subscription(2).id) is None


async def test_the_table_refuses_a_bad_id_or_a_password_in_place_of_its_digest(
    subscriptions: PostgresSubscriptionStore,
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await subscriptions.add(_subscription(1, id="admin"))
    with pytest.raises(asyncpg.CheckViolationError):
        await subscriptions.add(_subscription(1, password_digest="hunter2"))


async def test_queue_names_are_recorded_once_within_the_limit_and_never_after_deletion(
    subscriptions: PostgresSubscriptionStore,
) -> None:
    sub = _subscription(1)
    await subscriptions.add(sub)
    names = [f"sub.{sub.id}.q{i}" for i in range(4)]
    # declared together from many connections: each recorded once, never past the limit
    results = await asyncio.gather(
        *(subscriptions.record_queue(sub.id, name, limit=3) for name in names * 3)
    )
    found = await subscriptions.get(sub.id)
    assert found is not None
    assert len(found.queues) == 3
    assert len(set(found.queues)) == 3
    assert sum(results) == 9  # the three names recorded, each asked three times
    assert await subscriptions.record_queue(sub.id, found.queues[0], limit=3)
    assert await subscriptions.mark_deleted(sub.id, now=T0)
    assert not await subscriptions.record_queue(sub.id, found.queues[0], limit=3)
    assert not await subscriptions.record_queue(sub.id, "sub.x.new", limit=3)
