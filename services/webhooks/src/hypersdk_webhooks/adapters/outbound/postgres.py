"""PostgreSQL adapters of the webhooks service (schema ``webhooks``).

Endpoints keep their signing secrets sealed (``SecretSealer``): the table holds ciphertext
only, each bound to its endpoint's id, so a sealed secret copied onto another row is refused.
Messages are the durable schedule: workers claim due ones with ``FOR UPDATE SKIP LOCKED`` and
a lease, so several workers never attempt one message at once and a dead worker's claims lapse.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from hypersdk_kit.database import Database
from hypersdk_kit.outbox import OUTBOX_DEAD_MIGRATION, OUTBOX_MIGRATION
from hypersdk_webhooks.core.models import (
    Attempt,
    Endpoint,
    EndpointStatus,
    Message,
    MessageState,
    Outcome,
    Subscription,
)
from hypersdk_webhooks.core.signing import SigningKeys
from hypersdk_webhooks.ports.outbound import EndpointStore, MessageStore, SubscriptionStore

SCHEMA = "webhooks"
MIGRATIONS = [
    """
    CREATE TABLE endpoints (
        id text PRIMARY KEY,
        url text NOT NULL,
        event_types text[] NOT NULL,
        description text NOT NULL DEFAULT '',
        status text NOT NULL
            CONSTRAINT endpoints_status_known CHECK (status IN ('active', 'paused', 'disabled')),
        timeout_seconds double precision NOT NULL,
        max_in_flight int NOT NULL CHECK (max_in_flight >= 1),
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        failing_since timestamptz,
        consecutive_failures int NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
        disabled_reason text NOT NULL DEFAULT '',
        current_secret_sealed bytea NOT NULL,
        previous_secret_sealed bytea,
        previous_until timestamptz,
        CONSTRAINT endpoints_previous_whole
            CHECK ((previous_secret_sealed IS NULL) = (previous_until IS NULL))
    );
    CREATE INDEX endpoints_created_at ON endpoints (created_at, id);
    CREATE TABLE messages (
        id text PRIMARY KEY,
        endpoint_id text NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
        event_id text NOT NULL,
        event_type text NOT NULL,
        message_id text NOT NULL,
        body bytea NOT NULL,
        created_at timestamptz NOT NULL,
        state text NOT NULL
            CONSTRAINT messages_state_known CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts int NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_at timestamptz,
        leased_until timestamptz,
        last_outcome text,
        last_status int,
        last_latency_ms double precision,
        last_address text,
        last_detail text,
        CONSTRAINT messages_one_per_event_and_endpoint UNIQUE (event_id, endpoint_id)
    );
    -- claim_due: pending messages in the order they fall due
    CREATE INDEX messages_due ON messages (next_attempt_at, created_at, id)
        WHERE state = 'pending';
    -- dead letters of all endpoints, newest first
    CREATE INDEX messages_dead ON messages (created_at DESC, id DESC) WHERE state = 'dead';
    -- an endpoint's messages: its dead letters, and the cascade when it is deleted
    CREATE INDEX messages_endpoint ON messages (endpoint_id, state, created_at DESC);
    """,
    OUTBOX_MIGRATION,
    OUTBOX_DEAD_MIGRATION,
    """
    -- claim_due per endpoint: its pending messages in the order they fall due
    CREATE INDEX messages_endpoint_due ON messages (endpoint_id, next_attempt_at, created_at, id)
        WHERE state = 'pending';
    DROP INDEX messages_due;
    """,
    """
    -- purge: delivered messages by age (dead letters have messages_dead)
    CREATE INDEX messages_delivered ON messages (created_at) WHERE state = 'delivered';
    """,
    """
    -- AMQP subscriptions (decision 0054): a deleted one stays until its broker objects go
    CREATE TABLE subscriptions (
        id text PRIMARY KEY CONSTRAINT subscriptions_id_form CHECK (id ~ '^sb_[0-9a-f]{24}$'),
        description text NOT NULL DEFAULT '',
        password_digest text NOT NULL
            CONSTRAINT subscriptions_digest_form CHECK (password_digest ~ '^[0-9a-f]{64}$'),
        created_at timestamptz NOT NULL,
        queues text[] NOT NULL DEFAULT '{}',
        deleted_at timestamptz
    );
    CREATE INDEX subscriptions_created_at ON subscriptions (created_at, id)
        WHERE deleted_at IS NULL;
    """,
]

_ENDPOINT_COLUMNS = (
    "id, url, event_types, description, status, timeout_seconds, max_in_flight, created_at,"
    " updated_at, failing_since, consecutive_failures, disabled_reason, current_secret_sealed,"
    " previous_secret_sealed, previous_until"
)
_MESSAGE_COLUMNS = (
    "id, endpoint_id, event_id, event_type, message_id, body, created_at, state, attempts,"
    " next_attempt_at, leased_until, last_outcome, last_status, last_latency_ms, last_address,"
    " last_detail"
)
CLAIM_ROUNDS = 4
"""Claiming statements at most per claim, when rows chosen were taken by another worker."""
_BINDING = b"hypersdk-webhooks/endpoint-secret/v1\x00"
"""Sealed with every secret, before its endpoint's id: what it was sealed for, and where."""


class SecretSealer(ABC):
    """Seals secrets before they are stored and opens them when read (encryption at rest)."""

    class UnsealableError(Exception):
        """A sealed value that cannot be opened: another key sealed it, or it was altered.

        ``code`` is stable; the message never holds the value, sealed or not.
        """

        code = "secret_unsealable"

        def __init__(self, detail: str) -> None:
            super().__init__(f"{self.code}: {detail}")
            self.detail = detail

    @abstractmethod
    def seal(self, plaintext: bytes) -> bytes:
        """The ciphertext of ``plaintext``, authenticated."""

    @abstractmethod
    def open(self, sealed: bytes) -> bytes:
        """The plaintext that was sealed, or UnsealableError."""


class FernetSealer(SecretSealer):
    """Fernet (AES-128-CBC and HMAC-SHA256) under a key held by the process.

    ``key`` seals and opens; each of ``retired`` still opens, so the key can be rotated: start
    with the new key and the old one retired, re-save the endpoints, then drop the old one.
    Stands in until the OpenBao transit sealer is wired (the key then never enters the process).
    """

    def __init__(self, key: str | bytes, *, retired: Sequence[str | bytes] = ()) -> None:
        try:
            fernets = [Fernet(k) for k in (key, *retired)]
        except (TypeError, ValueError):
            # from None: nothing of the key reaches a traceback.
            raise ValueError("a sealer key is 32 url-safe base64-encoded bytes") from None
        self._fernet = MultiFernet(fernets)

    @staticmethod
    def generate_key() -> str:
        """A new random key, in the form the constructor takes."""
        return Fernet.generate_key().decode("ascii")

    def seal(self, plaintext: bytes) -> bytes:
        """A Fernet token of ``plaintext`` under the current key."""
        return self._fernet.encrypt(plaintext)

    def open(self, sealed: bytes) -> bytes:
        """The plaintext, under the current or a retired key; UnsealableError otherwise."""
        try:
            return self._fernet.decrypt(sealed)
        except InvalidToken:
            raise SecretSealer.UnsealableError(
                "no key of this sealer opens it (a wrong key, or the stored value was altered)"
            ) from None


class PostgresEndpointStore(EndpointStore):
    """Endpoints in ``webhooks.endpoints``, their secrets sealed by ``sealer``."""

    def __init__(self, pool: Database, *, sealer: SecretSealer) -> None:
        self._pool = pool
        self._sealer = sealer
        # What this store last sealed each endpoint's keys as: saving unchanged keys (every
        # health update) reuses those values instead of sealing again. Always correct, even
        # when stale: a value is reused only for the very keys it seals. Values read are not
        # kept, so the first save by a process seals afresh under the sealer's current key.
        self._sealed: dict[str, tuple[SigningKeys, bytes, bytes | None]] = {}

    async def add(self, endpoint: Endpoint) -> None:
        """Insert a new endpoint."""
        current, previous = self._seal(endpoint)
        await self._pool.execute(
            f"INSERT INTO {SCHEMA}.endpoints ({_ENDPOINT_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            *_endpoint_values(endpoint),
            current,
            previous,
            endpoint.keys.previous_until,
        )

    async def get(self, endpoint_id: str, *, for_update: bool = False) -> Endpoint | None:
        """One endpoint, its secrets opened (its row locked, ``for_update``).

        ``FOR NO KEY UPDATE``: it serializes writers of the row, yet lets messages be inserted
        meanwhile (their foreign key takes only a key-share lock on it).
        """
        lock = " FOR NO KEY UPDATE" if for_update else ""
        row = await self._pool.fetchrow(
            f"SELECT {_ENDPOINT_COLUMNS} FROM {SCHEMA}.endpoints WHERE id = $1{lock}", endpoint_id
        )
        return None if row is None else self._endpoint(row)

    async def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {_ENDPOINT_COLUMNS} FROM {SCHEMA}.endpoints ORDER BY created_at, id"
        )
        return [self._endpoint(row) for row in rows]

    async def save(self, endpoint: Endpoint) -> None:
        """Replace a stored endpoint; one that is gone stays gone."""
        current, previous = self._seal(endpoint)
        await self._pool.execute(
            f"UPDATE {SCHEMA}.endpoints SET url = $2, event_types = $3, description = $4,"
            " status = $5, timeout_seconds = $6, max_in_flight = $7, created_at = $8,"
            " updated_at = $9, failing_since = $10, consecutive_failures = $11,"
            " disabled_reason = $12, current_secret_sealed = $13, previous_secret_sealed = $14,"
            " previous_until = $15"
            " WHERE id = $1",
            *_endpoint_values(endpoint),
            current,
            previous,
            endpoint.keys.previous_until,
        )

    async def delete(self, endpoint_id: str) -> bool:
        """Delete it; its messages go with it (ON DELETE CASCADE)."""
        status = await self._pool.execute(
            f"DELETE FROM {SCHEMA}.endpoints WHERE id = $1", endpoint_id
        )
        self._sealed.pop(endpoint_id, None)
        return status.endswith(" 1")

    async def record_success(self, endpoint_id: str) -> None:
        """Clear its failure record (no write when there is none)."""
        await self._pool.execute(
            f"UPDATE {SCHEMA}.endpoints SET failing_since = NULL, consecutive_failures = 0"
            " WHERE id = $1 AND consecutive_failures > 0",
            endpoint_id,
        )

    async def record_failure(self, endpoint_id: str, *, now: datetime) -> Endpoint | None:
        """Count a failure in one UPDATE; the endpoint after it."""
        _require_aware("now", now)
        row = await self._pool.fetchrow(
            f"UPDATE {SCHEMA}.endpoints SET failing_since = coalesce(failing_since, $2),"
            " consecutive_failures = consecutive_failures + 1"
            f" WHERE id = $1 RETURNING {_ENDPOINT_COLUMNS}",
            endpoint_id,
            now,
        )
        return None if row is None else self._endpoint(row)

    async def disable(self, endpoint_id: str, *, reason: str, now: datetime) -> bool:
        """Disable it if it is still active."""
        status = await self._pool.execute(
            f"UPDATE {SCHEMA}.endpoints SET status = 'disabled', disabled_reason = $2,"
            " updated_at = $3 WHERE id = $1 AND status = 'active'",
            endpoint_id,
            reason,
            now,
        )
        return status.endswith(" 1")

    def _seal(self, endpoint: Endpoint) -> tuple[bytes, bytes | None]:
        keys = endpoint.keys
        known = self._sealed.get(endpoint.id)
        if known is not None and known[0] == keys:
            return known[1], known[2]
        current = self._sealer.seal(_bound(endpoint.id, keys.current))
        previous = None
        if keys.previous is not None:
            previous = self._sealer.seal(_bound(endpoint.id, keys.previous))
        self._sealed[endpoint.id] = (keys, current, previous)
        return current, previous

    def _open(self, endpoint_id: str, sealed: bytes) -> str:
        plain = self._sealer.open(sealed)
        prefix = _binding(endpoint_id)
        if not plain.startswith(prefix):
            raise SecretSealer.UnsealableError("the stored secret was sealed for another endpoint")
        try:
            return plain[len(prefix) :].decode("ascii")
        except UnicodeDecodeError:
            raise SecretSealer.UnsealableError("the stored secret is not a secret") from None

    def _endpoint(self, row: Any) -> Endpoint:
        endpoint_id: str = row["id"]
        current_sealed: bytes = row["current_secret_sealed"]
        previous_sealed: bytes | None = row["previous_secret_sealed"]
        keys = SigningKeys(
            current=self._open(endpoint_id, current_sealed),
            previous=None if previous_sealed is None else self._open(endpoint_id, previous_sealed),
            previous_until=row["previous_until"],
        )
        return Endpoint(
            id=endpoint_id,
            url=row["url"],
            event_types=tuple(row["event_types"]),
            description=row["description"],
            status=EndpointStatus(row["status"]),
            keys=keys,
            timeout_seconds=row["timeout_seconds"],
            max_in_flight=row["max_in_flight"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            failing_since=row["failing_since"],
            consecutive_failures=row["consecutive_failures"],
            disabled_reason=row["disabled_reason"],
        )


class PostgresMessageStore(MessageStore):
    """Messages in ``webhooks.messages``, one per (event, endpoint)."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add_new(self, messages: Sequence[Message]) -> int:
        """One INSERT of them all; those already there (by event and endpoint) are skipped.

        So is a message whose endpoint is gone (deleted since the caller listed it): it could
        never be sent, and it is not counted as new.
        """
        if not messages:
            return 0
        columns = [_message_values(m) for m in messages]
        status = await self._pool.execute(
            f"INSERT INTO {SCHEMA}.messages ({_MESSAGE_COLUMNS})"
            " SELECT m.* FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::bytea[], $7::timestamptz[], $8::text[], $9::int[], $10::timestamptz[],"
            " $11::timestamptz[], $12::text[], $13::int[], $14::float8[], $15::text[],"
            f" $16::text[]) AS m ({_MESSAGE_COLUMNS})"
            f" WHERE EXISTS (SELECT 1 FROM {SCHEMA}.endpoints e WHERE e.id = m.endpoint_id)"
            " ON CONFLICT (event_id, endpoint_id) DO NOTHING",
            *(list(column) for column in zip(*columns, strict=True)),
        )
        return int(status.rsplit(" ", 1)[1])

    async def claim_due(
        self, *, now: datetime, capacity: Mapping[str, int], limit: int, lease: timedelta
    ) -> list[Message]:
        """Lease the due rows it can lock; rows other workers hold are skipped, never waited for.

        Each round is one statement: the rows are chosen first, without a lock (each
        endpoint's due rows from its own index range, a LATERAL subquery per endpoint limited
        to its free slots, then the oldest ``limit`` of them all); only those are then locked
        (``FOR UPDATE SKIP LOCKED``, their state checked again) and leased. So a claim never
        holds a row it does not lease. When a chosen row was skipped (another worker took it
        at that moment), another round claims what is still wanted, choosing past the rows
        other workers hold (its choice skips locked rows too, so it may hold a few rows it
        does not lease, for the length of that statement only). The caller's ``now`` decides
        what is due (as in the in-memory store), not the database's.
        """
        _require_aware("now", now)
        free = {endpoint: slots for endpoint, slots in capacity.items() if slots > 0}
        claimed: list[Message] = []
        for round_ in range(CLAIM_ROUNDS):
            if not free or len(claimed) >= limit:
                break
            taken, skipped = await self._claim_round(
                now, free, limit - len(claimed), lease, skip_locked_choice=round_ > 0
            )
            claimed += taken
            for message in taken:
                free[message.endpoint_id] -= 1
            free = {endpoint: slots for endpoint, slots in free.items() if slots > 0}
            if not skipped:
                break
        # RETURNING keeps no order: sort as the choice made them.
        return sorted(claimed, key=lambda m: (m.next_attempt_at, m.created_at, m.id))

    async def _claim_round(
        self,
        now: datetime,
        free: Mapping[str, int],
        limit: int,
        lease: timedelta,
        *,
        skip_locked_choice: bool,
    ) -> tuple[list[Message], int]:
        """One claiming statement: what it leased, and how many chosen rows it had to skip."""
        wanted = sorted(free.items())
        past_locked = " FOR UPDATE SKIP LOCKED" if skip_locked_choice else ""
        due = (
            "state = 'pending' AND next_attempt_at <= $3"
            " AND (leased_until IS NULL OR leased_until <= $3)"
        )
        # The leased rows, each with the count chosen; when none was leased, one row of NULLs
        # that still carries the count (the columns of _MESSAGE_COLUMNS, then ``chosen``).
        rows = await self._pool.fetch(
            "WITH chosen AS ("
            " SELECT m.id FROM unnest($1::text[], $2::int[]) AS e(id, free)"
            " CROSS JOIN LATERAL ("
            f" SELECT id, next_attempt_at, created_at FROM {SCHEMA}.messages"
            f" WHERE endpoint_id = e.id AND {due}"
            " ORDER BY next_attempt_at, created_at, id LIMIT least(e.free, $5)"
            f"{past_locked}) AS m"
            " ORDER BY m.next_attempt_at, m.created_at, m.id LIMIT $5),"
            f" locked AS (SELECT id FROM {SCHEMA}.messages"
            f" WHERE id IN (SELECT id FROM chosen) AND {due} FOR UPDATE SKIP LOCKED),"
            f" leased AS (UPDATE {SCHEMA}.messages SET leased_until = $4"
            f" WHERE id IN (SELECT id FROM locked) RETURNING {_MESSAGE_COLUMNS})"
            " SELECT leased.*, (SELECT count(*) FROM chosen) AS chosen FROM leased"
            " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,"
            " NULL, NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM chosen)"
            " WHERE NOT EXISTS (SELECT 1 FROM leased)",
            [endpoint for endpoint, _ in wanted],
            [slots for _, slots in wanted],
            now,
            now + lease,
            limit,
        )
        taken = [_message(row) for row in rows if row["id"] is not None]
        chosen = int(rows[0]["chosen"]) if rows else 0
        return taken, chosen - len(taken)

    async def settle(self, message: Message, *, claimed_until: datetime | None) -> bool:
        """Write an attempt's result, only while the row still carries the claim's lease."""
        status = await self._pool.execute(
            f"UPDATE {SCHEMA}.messages SET state = $2, attempts = $3, next_attempt_at = $4,"
            " leased_until = $5, last_outcome = $6, last_status = $7, last_latency_ms = $8,"
            " last_address = $9, last_detail = $10"
            " WHERE id = $1 AND state = 'pending' AND leased_until IS NOT DISTINCT FROM $11",
            message.id,
            *_progress_values(message),
            claimed_until,
        )
        return status.endswith(" 1")

    async def replay(self, message: Message) -> bool:
        """Write a dead letter back as pending, only while it is dead."""
        status = await self._pool.execute(
            f"UPDATE {SCHEMA}.messages SET state = $2, attempts = $3, next_attempt_at = $4,"
            " leased_until = $5, last_outcome = $6, last_status = $7, last_latency_ms = $8,"
            " last_address = $9, last_detail = $10"
            " WHERE id = $1 AND state = 'dead'",
            message.id,
            *_progress_values(message),
        )
        return status.endswith(" 1")

    async def get(self, message_id: str) -> Message | None:
        """One message by its store id."""
        row = await self._pool.fetchrow(
            f"SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages WHERE id = $1", message_id
        )
        return None if row is None else _message(row)

    async def dead(self, *, endpoint_id: str | None, limit: int) -> list[Message]:
        """Dead letters, newest first, of one endpoint or all."""
        if endpoint_id is None:
            rows = await self._pool.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages WHERE state = 'dead'"
                " ORDER BY created_at DESC, id DESC LIMIT $1",
                limit,
            )
        else:
            rows = await self._pool.fetch(
                f"SELECT {_MESSAGE_COLUMNS} FROM {SCHEMA}.messages"
                " WHERE endpoint_id = $1 AND state = 'dead'"
                " ORDER BY created_at DESC, id DESC LIMIT $2",
                endpoint_id,
                limit,
            )
        return [_message(row) for row in rows]

    async def purge(self, *, delivered_before: datetime, dead_before: datetime) -> int:
        """Delete old delivered messages and dead letters, in batches of PURGE_BATCH."""
        _require_aware("delivered_before", delivered_before)
        _require_aware("dead_before", dead_before)
        removed = 0
        for state, before in (("delivered", delivered_before), ("dead", dead_before)):
            while True:
                status = await self._pool.execute(
                    f"DELETE FROM {SCHEMA}.messages WHERE id IN ("
                    f" SELECT id FROM {SCHEMA}.messages WHERE state = $1 AND created_at < $2"
                    " LIMIT $3 FOR UPDATE SKIP LOCKED)",
                    state,
                    before,
                    PURGE_BATCH,
                )
                count = int(status.rsplit(" ", 1)[1])
                removed += count
                if count < PURGE_BATCH:
                    break
        return removed


PURGE_BATCH = 5000
"""Rows one purge statement removes at most: short transactions, however large the backlog."""


def _binding(endpoint_id: str) -> bytes:
    """What a secret is sealed after: the purpose, then its endpoint's id."""
    if "\x00" in endpoint_id:
        raise ValueError("an endpoint id holds no NUL")
    return _BINDING + endpoint_id.encode("utf-8") + b"\x00"


def _bound(endpoint_id: str, secret: str) -> bytes:
    return _binding(endpoint_id) + secret.encode("ascii")


def _endpoint_values(endpoint: Endpoint) -> tuple[Any, ...]:
    return (
        endpoint.id,
        endpoint.url,
        list(endpoint.event_types),
        endpoint.description,
        endpoint.status.value,
        endpoint.timeout_seconds,
        endpoint.max_in_flight,
        endpoint.created_at,
        endpoint.updated_at,
        endpoint.failing_since,
        endpoint.consecutive_failures,
        endpoint.disabled_reason,
    )


def _message_values(message: Message) -> tuple[Any, ...]:
    """Every column, in the order of ``_MESSAGE_COLUMNS``."""
    return (
        message.id,
        message.endpoint_id,
        message.event_id,
        message.event_type,
        message.message_id,
        message.body,
        message.created_at,
        *_progress_values(message),
    )


def _progress_values(message: Message) -> tuple[Any, ...]:
    """The columns that change as it is attempted: state to the last attempt's detail."""
    last = message.last_attempt
    return (
        message.state.value,
        message.attempts,
        message.next_attempt_at,
        message.leased_until,
        None if last is None else last.outcome.value,
        None if last is None else last.status,
        None if last is None else last.latency_ms,
        None if last is None else last.address,
        None if last is None else last.detail,
    )


def _message(row: Any) -> Message:
    last = None
    if row["last_outcome"] is not None:
        last = Attempt(
            outcome=Outcome(row["last_outcome"]),
            latency_ms=row["last_latency_ms"],
            status=row["last_status"],
            address=row["last_address"],
            detail=row["last_detail"] or "",
        )
    return Message(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        event_id=row["event_id"],
        event_type=row["event_type"],
        message_id=row["message_id"],
        body=bytes(row["body"]),
        created_at=row["created_at"],
        state=MessageState(row["state"]),
        attempts=row["attempts"],
        next_attempt_at=row["next_attempt_at"],
        leased_until=row["leased_until"],
        last_attempt=last,
    )


_SUBSCRIPTION_COLUMNS = "id, description, password_digest, created_at, queues, deleted_at"


class PostgresSubscriptionStore(SubscriptionStore):
    """AMQP subscriptions in ``webhooks.subscriptions`` (their passwords as digests only)."""

    def __init__(self, pool: Database) -> None:
        self._pool = pool

    async def add(self, subscription: Subscription) -> None:
        """Insert a new subscription."""
        await self._pool.execute(
            f"INSERT INTO {SCHEMA}.subscriptions ({_SUBSCRIPTION_COLUMNS})"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            subscription.id,
            subscription.description,
            subscription.password_digest,
            subscription.created_at,
            list(subscription.queues),
            subscription.deleted_at,
        )

    async def get(self, subscription_id: str) -> Subscription | None:
        """One subscription (a deleted one too), or None."""
        row = await self._pool.fetchrow(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions WHERE id = $1",
            subscription_id,
        )
        return None if row is None else _subscription(row)

    async def list_active(self) -> list[Subscription]:
        """Those not deleted, oldest first."""
        rows = await self._pool.fetch(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions"
            " WHERE deleted_at IS NULL ORDER BY created_at, id"
        )
        return [_subscription(row) for row in rows]

    async def count_active(self) -> int:
        """How many are not deleted."""
        count = await self._pool.fetchval(
            f"SELECT count(*) FROM {SCHEMA}.subscriptions WHERE deleted_at IS NULL"
        )
        return int(count)

    async def mark_deleted(self, subscription_id: str, *, now: datetime) -> bool:
        """Mark an active one deleted; False if there is none."""
        _require_aware("now", now)
        found = await self._pool.fetchval(
            f"UPDATE {SCHEMA}.subscriptions SET deleted_at = $2"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id",
            subscription_id,
            now,
        )
        return found is not None

    async def deleted(self) -> list[Subscription]:
        """Those marked deleted and not removed yet."""
        rows = await self._pool.fetch(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM {SCHEMA}.subscriptions"
            " WHERE deleted_at IS NOT NULL ORDER BY deleted_at, id"
        )
        return [_subscription(row) for row in rows]

    async def remove(self, subscription_id: str) -> None:
        """Forget it (once its broker objects are gone)."""
        await self._pool.execute(
            f"DELETE FROM {SCHEMA}.subscriptions WHERE id = $1 AND deleted_at IS NOT NULL",
            subscription_id,
        )

    async def record_queue(self, subscription_id: str, queue: str, *, limit: int) -> bool:
        """One UPDATE: the row lock orders it against a deletion and other declarations."""
        found = await self._pool.fetchval(
            f"UPDATE {SCHEMA}.subscriptions SET queues = CASE WHEN $2 = ANY(queues)"
            " THEN queues ELSE array_append(queues, $2) END"
            " WHERE id = $1 AND deleted_at IS NULL"
            " AND ($2 = ANY(queues) OR cardinality(queues) < $3) RETURNING id",
            subscription_id,
            queue,
            limit,
        )
        return found is not None


def _subscription(row: Any) -> Subscription:
    return Subscription(
        id=row["id"],
        description=row["description"],
        password_digest=row["password_digest"],
        created_at=row["created_at"],
        queues=tuple(row["queues"]),
        deleted_at=row["deleted_at"],
    )


def _require_aware(name: str, value: datetime) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
