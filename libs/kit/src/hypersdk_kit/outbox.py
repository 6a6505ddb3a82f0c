"""The transactional outbox: events committed with the state they describe, then relayed.

A :class:`PostgresUnitOfWork` writes each recorded event, already in its envelope, into the
service schema's ``outbox`` table in the same transaction as the state change, and notifies
the relay on commit. An :class:`OutboxRelay` runs in every replica of the service: it takes the
oldest rows (one replica at a time, so the order holds), publishes them with confirms and
deletes them in the same transaction. A crash between the confirm and the delete publishes the
rows again; consumers de-duplicate by event id (audit does). See docs/decisions/0021.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import asyncpg
from pydantic import ValidationError

from hypersdk_contracts.envelope import CloudEvent, RequestContext, event_envelope
from hypersdk_contracts.events import EventData
from hypersdk_kit.database import MAX_IDENTIFIER_LENGTH, Database, is_plain_identifier
from hypersdk_kit.ports import EnvelopePublisher, UnitOfWork
from hypersdk_kit.settings import DatabaseSettings

logger = logging.getLogger(__name__)

OUTBOX_MIGRATION = """
CREATE TABLE outbox (
    position bigserial PRIMARY KEY,
    event_id text NOT NULL,
    routing_key text NOT NULL,
    envelope text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
"""
"""The outbox table, appended to each service's migrations (never edit: it has shipped)."""

OUTBOX_DEAD_MIGRATION = """
CREATE TABLE outbox_dead (
    position bigint PRIMARY KEY,
    event_id text NOT NULL,
    routing_key text NOT NULL,
    envelope text NOT NULL,
    recorded_at timestamptz NOT NULL,
    reason text NOT NULL,
    moved_at timestamptz NOT NULL DEFAULT now()
);
"""
"""Outbox rows the relay could not decode, kept for an operator instead of blocking the rows
after them (appended to each service's migrations after ``OUTBOX_MIGRATION``)."""

_RELAY_LOCK_NAMESPACE = 0x48534F  # "HSO": advisory lock key prefix of outbox relays.


def _check_identifier(schema: str) -> None:
    """Schema names are interpolated into SQL; ``<schema>_outbox`` must fit a NOTIFY channel."""
    if not is_plain_identifier(schema, max_length=MAX_IDENTIFIER_LENGTH - len("_outbox")):
        raise ValueError(f"not a plain schema name: {schema!r}")


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel on which a schema's outbox announces new rows."""
    return f"{schema}_outbox"


class PostgresUnitOfWork(UnitOfWork):
    """State changes through ``database`` and events in ``<schema>.outbox``, one transaction."""

    def __init__(
        self,
        database: Database,
        *,
        schema: str,
        service: str,
        after_commit: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        _check_identifier(schema)
        self._database = database
        self._schema = schema
        self._service = service
        self._after_commit = after_commit
        self._pending: ContextVar[list[CloudEvent] | None] = ContextVar(
            f"hypersdk_outbox_{schema}_{id(self)}", default=None
        )

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Open or join a transaction; its recorded events are written just before commit.

        After a commit with events, ``after_commit`` runs (the relay publishing them at once),
        so that callers answer once their events are on the bus as a rule, not only stored.
        """
        if self._pending.get() is not None:
            yield
            return
        # Inside a transaction of the database's own, "commit" is the outer one's, later: the
        # rows are not visible before it, so there is nothing to publish at once here.
        joined = self._database.in_transaction
        events: list[CloudEvent] = []
        async with self._database.transaction() as conn:
            token = self._pending.set(events)
            try:
                yield
            finally:
                self._pending.reset(token)
            if events:
                await self._write(conn, events)
        if events and not joined and self._after_commit is not None:
            await self._after_commit()

    async def record(
        self, data: EventData, *, subject: str | None, context: RequestContext | None
    ) -> CloudEvent:
        """Build the envelope now; it is written with the open transaction (or one of its own)."""
        event = event_envelope(data, service=self._service, subject=subject, context=context)
        pending = self._pending.get()
        if pending is not None:
            pending.append(event)
            return event
        async with self.transaction():
            pending = self._pending.get()
            assert pending is not None
            pending.append(event)
        return event

    async def _write(self, conn: asyncpg.Connection, events: list[CloudEvent]) -> None:
        # Written last, after the state changes: a transaction that waited for a row lock on
        # the same state gets a later position, so the relay's order follows the state's.
        await conn.executemany(
            f'INSERT INTO "{self._schema}".outbox (event_id, routing_key, envelope)'
            " VALUES ($1, $2, $3)",
            [
                (e.id, e.routing_key, e.model_dump_json(by_alias=True, exclude_none=True))
                for e in events
            ],
        )
        # Delivered on commit only; wakes the relays at once instead of at their next poll.
        await conn.execute("SELECT pg_notify($1, '')", notify_channel(self._schema))


class OutboxRelay:
    """Publishes a schema's outbox rows in order, with confirms, and deletes what was confirmed.

    Runs as a component of the service process (``serve_until_stopped(components=...)``). It
    wakes on the outbox's NOTIFY, or every ``poll_seconds`` if none came (a lost listening
    connection is reopened as the loop goes). Any failure (broker or database away, a confirm
    that did not come) leaves the rows in place and is retried after a backoff that doubles up
    to ``max_backoff_seconds``: nothing is dropped. Replicas take a transaction-scoped advisory
    lock per batch, so one publishes at a time, in position order; the rows are also locked
    ``FOR UPDATE SKIP LOCKED`` as a second guard.
    """

    def __init__(
        self,
        database: Database,
        *,
        listen_dsn: str,
        schema: str,
        publisher: EnvelopePublisher,
        batch_size: int = 100,
        poll_seconds: float = 1.0,
        max_backoff_seconds: float = 5.0,
        publish_now_timeout_seconds: float = 5.0,
    ) -> None:
        _check_identifier(schema)
        self._database = database
        self._publish_now_timeout = publish_now_timeout_seconds
        self._publishing_now: asyncio.Lock | None = None
        self._listen_dsn = listen_dsn
        self._schema = schema
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._max_backoff = max_backoff_seconds
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        """Start relaying in the background."""
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay-{self._schema}")

    async def stop(self, *, grace_seconds: float = 5.0) -> None:
        """Stop after the batch in flight, if it ends within ``grace_seconds``.

        A batch cut short is rolled back and published again by the next relay (consumers
        de-duplicate by event id).
        """
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            self._wake.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=grace_seconds)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._close_listener()

    async def publish_now(self) -> None:
        """Publish what is pending at once (a unit of work just committed); never raises.

        Waits for the replica publishing now, if any, then publishes the oldest batch, which
        holds the caller's events unless a backlog is ahead of them. One caller at a time per
        process: the others find their events gone. Any failure leaves the rows to the relay.
        """
        self._publishing_now = self._publishing_now or asyncio.Lock()
        try:
            # The wait for the lock counts too: callers queued behind a stuck broker must not
            # wait a timeout each, one after the other.
            async with asyncio.timeout(self._publish_now_timeout), self._publishing_now:
                await self.relay_once(wait=True)
        except Exception as exc:  # the relay retries; the state change has committed
            logger.warning(
                "publishing %s's outbox at commit failed (%s); the relay retries",
                self._schema,
                type(exc).__name__,
            )
            self._wake.set()

    async def relay_once(self, *, wait: bool = False) -> int:
        """Publish and delete one batch; its size (0: nothing, or another replica's turn).

        With ``wait``, wait for the replica publishing now instead of leaving it the turn.
        """
        async with self._database.pool.acquire() as conn, conn.transaction():
            key = (_RELAY_LOCK_NAMESPACE, self._schema)
            if wait:
                await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", *key)
            elif not await conn.fetchval(
                "SELECT pg_try_advisory_xact_lock($1, hashtext($2))", *key
            ):
                return 0
            rows = await conn.fetch(
                f'SELECT position, envelope FROM "{self._schema}".outbox'
                " ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED",
                self._batch_size,
            )
            if not rows:
                return 0
            events: list[CloudEvent] = []
            dead: list[tuple[int, str]] = []
            for row in rows:
                try:
                    events.append(CloudEvent.model_validate_json(row["envelope"]))
                except ValidationError as exc:
                    dead.append((row["position"], _undecodable(exc)))
            if dead:
                await self._set_aside(conn, dead)
            if events:
                await self._publisher.publish_envelopes(events)
            await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE position = ANY($1::bigint[])',
                [row["position"] for row in rows],
            )
        return len(rows)

    async def _set_aside(self, conn: asyncpg.Connection, dead: list[tuple[int, str]]) -> None:
        """Move rows that are no envelope to ``outbox_dead``, so the rows after them go on.

        Only a bug or a hand-edited row gets here: units of work write validated envelopes.
        """
        positions = [position for position, _ in dead]
        await conn.execute(
            f'INSERT INTO "{self._schema}".outbox_dead'
            " (position, event_id, routing_key, envelope, recorded_at, reason)"
            " SELECT o.position, o.event_id, o.routing_key, o.envelope, o.recorded_at, d.reason"
            f' FROM "{self._schema}".outbox o'
            " JOIN unnest($1::bigint[], $2::text[]) AS d(position, reason)"
            " ON d.position = o.position",
            positions,
            [reason for _, reason in dead],
        )
        for position, reason in dead:
            logger.error(
                "outbox row %d of %s is no event envelope (%s): set aside in %s.outbox_dead",
                position,
                self._schema,
                reason,
                self._schema,
            )

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            await self._listen()
            self._wake.clear()
            try:
                relayed = await self.relay_once()
            except Exception as exc:  # any outage: keep the rows, retry later
                failures += 1
                delay = min(0.2 * 2 ** (failures - 1), self._max_backoff)
                logger.warning(
                    "outbox relay of %s failed (%s); retrying in %.1f s",
                    self._schema,
                    type(exc).__name__,
                    delay,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
                continue
            failures = 0
            if relayed < self._batch_size:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_seconds)

    async def _listen(self) -> None:
        """Keep a connection listening for the outbox's NOTIFY; the poll covers any gap."""
        if self._listener is not None and not self._listener.is_closed():
            return
        await self._close_listener()
        try:
            listener = await asyncpg.connect(self._listen_dsn, timeout=5)
            await listener.add_listener(notify_channel(self._schema), self._notified)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            logger.debug("outbox relay cannot listen yet: %s", type(exc).__name__)
            return
        self._listener = listener

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _close_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)


def _undecodable(error: ValidationError) -> str:
    """Why a row is no envelope: error kinds and places, never the values."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'envelope'}: {problem['type']}"
        for problem in error.errors(include_input=False)[:5]
    )


@dataclass(frozen=True)
class Outbox:
    """A service's unit of work and the relay that publishes what it commits."""

    database: Database
    unit_of_work: PostgresUnitOfWork
    relay: OutboxRelay


def build_outbox(
    pool: asyncpg.Pool,
    *,
    settings: DatabaseSettings,
    schema: str,
    service: str,
    publisher: EnvelopePublisher,
) -> Outbox:
    """The outbox of ``schema`` over ``pool``, its relay configured from ``settings``."""
    database = Database(pool)
    relay = OutboxRelay(
        database,
        listen_dsn=settings.database_url.get_secret_value(),
        schema=schema,
        publisher=publisher,
        batch_size=settings.outbox_batch_size,
        poll_seconds=settings.outbox_poll_seconds,
        max_backoff_seconds=settings.outbox_max_backoff_seconds,
    )
    return Outbox(
        database=database,
        unit_of_work=PostgresUnitOfWork(
            database, schema=schema, service=service, after_commit=relay.publish_now
        ),
        relay=relay,
    )
