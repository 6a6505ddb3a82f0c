"""The outbox relay on the real RabbitMQ and PostgreSQL: what a unit of work committed arrives.

Faults between a commit and its publication: the relay's channel closed under it, the exporter
killed with -9 while its relay is publishing a backlog (the supervisor restarts it), and a
PostgreSQL restart (a private instance, so that only this test sees it). Nothing is lost; a
batch caught in flight may be published twice, and audit keeps each event once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import aio_pika.abc
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker
from tools import devstack

from hypersdk_contracts.envelope import CloudEvent, RequestContext
from hypersdk_contracts.events import JobProgressed
from hypersdk_contracts.names import EVENTS_EXCHANGE
from hypersdk_kit.bus import RabbitEventPublisher, broker_connection, build_broker
from hypersdk_kit.database import Database, apply_migrations, create_pool
from hypersdk_kit.outbox import (
    OUTBOX_DEAD_MIGRATION,
    OUTBOX_MIGRATION,
    OutboxRelay,
    PostgresUnitOfWork,
)

from .conftest import ADMIN_PASSWORD, Stack, until

ROUTING_KEY = "exporter.job.progressed"


@dataclass
class Catcher:
    """Event ids delivered to a private queue bound to the events exchange, in order."""

    ids: list[str]

    def count(self, event_id: str) -> int:
        return self.ids.count(event_id)


@pytest.fixture
async def exporter_bus(stack: Stack) -> AsyncIterator[RabbitBroker]:
    """A broker logged in as the stack's exporter: audit chains what it publishes as exporter's.

    (The harness login of ``broker`` is no service, so audit would quarantine its events.)
    """
    bus = build_broker(stack.config.amqp_url("exporter"), service="exporter")
    await bus.start()
    yield bus
    await bus.stop()


@pytest.fixture
async def catcher(broker: RabbitBroker) -> AsyncIterator[Catcher]:
    channel = await broker_connection(broker).channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(EVENTS_EXCHANGE, routing_key=ROUTING_KEY)
    caught = Catcher(ids=[])

    async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        caught.ids.append(message.message_id or "")
        await message.ack()

    await queue.consume(take)
    yield caught
    await channel.close()


async def record(uow: PostgresUnitOfWork, job_id: str, count: int) -> list[str]:
    """Commit ``count`` events in one unit of work; their ids, in order."""
    async with uow.transaction():
        return [
            (
                await uow.record(
                    JobProgressed(job_id=job_id, progress=index % 100),
                    subject=f"job/{job_id}",
                    context=RequestContext(),
                )
            ).id
            for index in range(count)
        ]


@pytest.fixture
async def private_schema(stack: Stack) -> AsyncIterator[str]:
    """An outbox of its own in the stack's database (so the exporter's relay leaves it alone)."""
    schema = f"outbox_it_{secrets.token_hex(4)}"
    await apply_migrations(
        stack.database_url, schema=schema, migrations=[OUTBOX_MIGRATION, OUTBOX_DEAD_MIGRATION]
    )
    yield schema
    conn = await asyncpg.connect(stack.database_url)
    try:
        await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        await conn.close()


class ChannelLostMidBatch(RabbitEventPublisher):
    """The real publisher, whose channel the broker closes half-way through the first batch.

    Half the batch is written, then a publish to a missing exchange, which RabbitMQ answers by
    closing the channel: what follows is never routed, and the batch's confirms fail.
    """

    lost = False

    async def publish_envelopes(self, events: Sequence[CloudEvent]) -> None:
        if self.lost or len(events) < 2:
            await super().publish_envelopes(events)
            return
        self.lost = True
        channel = await self._ready()
        half = len(events) // 2
        sends = [asyncio.ensure_future(self._send(channel, event)) for event in events[:half]]
        sends.append(
            asyncio.ensure_future(
                channel.basic_publish(b"{}", exchange="hypersdk.no-such-exchange", timeout=10)
            )
        )
        sends += [asyncio.ensure_future(self._send(channel, event)) for event in events[half:]]
        await asyncio.gather(*sends)


async def test_a_channel_lost_between_commit_and_confirm_loses_nothing(
    stack: Stack, exporter_bus: RabbitBroker, catcher: Catcher, private_schema: str
) -> None:
    pool = await create_pool(stack.database_url, size=3)
    database = Database(pool)
    uow = PostgresUnitOfWork(database, schema=private_schema, service="exporter")
    publisher = ChannelLostMidBatch(exporter_bus, service="exporter", declare_topology=False)
    relay = OutboxRelay(
        database,
        listen_dsn=stack.database_url,
        schema=private_schema,
        publisher=publisher,
        poll_seconds=0.2,
    )
    job_id = f"closed-{secrets.token_hex(4)}"
    try:
        ids = await record(uow, job_id, 40)  # committed before the relay runs: one batch
        await relay.start()

        assert await until(lambda: all(catcher.count(i) >= 1 for i in ids), seconds=20)
        await relay.stop()  # after its batch
        assert publisher.lost
        assert await pool.fetchval(f'SELECT count(*) FROM "{private_schema}".outbox') == 0
    finally:
        await relay.stop()
        await pool.close()

    # The first half may have been routed before the channel closed, and went again.
    assert sum(catcher.count(i) for i in ids) <= len(ids) + len(ids) // 2
    # In commit order, counting each event's first arrival.
    first_seen = list(dict.fromkeys(i for i in catcher.ids if i in set(ids)))
    assert first_seen == ids

    def chained() -> int:
        rows = stack.db(
            "SELECT count(*) AS n FROM audit.entries WHERE event_id = ANY($1::text[])", ids
        )
        return int(rows[0]["n"])

    # Audit keeps each event once (it de-duplicates by event id).
    assert await until(lambda: chained() == len(ids), seconds=30), chained()


async def test_a_row_that_is_no_envelope_is_set_aside_and_the_rest_published(
    stack: Stack,
    exporter_bus: RabbitBroker,
    catcher: Catcher,
    private_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = await create_pool(stack.database_url, size=3)
    database = Database(pool)
    uow = PostgresUnitOfWork(database, schema=private_schema, service="exporter")
    relay = OutboxRelay(
        database,
        listen_dsn=stack.database_url,
        schema=private_schema,
        publisher=RabbitEventPublisher(exporter_bus, service="exporter", declare_topology=False),
        poll_seconds=0.2,
    )
    job_id = f"dead-{secrets.token_hex(4)}"
    planted = f"planted-{secrets.token_hex(8)}"
    try:
        before = await record(uow, job_id, 5)
        # A row no unit of work would write (a bug, or an edit by hand), between good ones.
        await pool.execute(
            f'INSERT INTO "{private_schema}".outbox (event_id, routing_key, envelope)'
            " VALUES ('broken-1', 'exporter.job.progressed', $1)",
            '{"specversion": "1.0", "id": "broken-1", "secret": "' + planted + '"',
        )
        after = await record(uow, job_id, 5)
        await relay.start()
        assert await until(lambda: all(catcher.count(i) == 1 for i in before + after))
        await relay.stop()
        dead = await pool.fetch(
            f'SELECT event_id, envelope, reason FROM "{private_schema}".outbox_dead'
        )
        left = await pool.fetchval(f'SELECT count(*) FROM "{private_schema}".outbox')
    finally:
        await relay.stop()
        await pool.close()

    assert [row["event_id"] for row in dead] == ["broken-1"]
    assert planted in dead[0]["envelope"]  # kept whole for whoever investigates
    assert "json_invalid" in dead[0]["reason"]
    assert planted not in dead[0]["reason"]
    assert left == 0
    assert catcher.count("broken-1") == 0
    assert "outbox_dead" in caplog.text
    assert planted not in caplog.text


async def test_state_and_outbox_rows_commit_or_roll_back_together(
    stack: Stack, private_schema: str
) -> None:
    pool = await create_pool(stack.database_url, size=2)
    database = Database(pool)
    uow = PostgresUnitOfWork(database, schema=private_schema, service="exporter")
    await pool.execute(f'CREATE TABLE "{private_schema}".progress (job text, value int)')

    async def save(job_id: str, value: int) -> None:
        # A store writing through the database joins the open transaction.
        await database.execute(
            f'INSERT INTO "{private_schema}".progress VALUES ($1, $2)', job_id, value
        )

    try:
        async with uow.transaction():
            await save("kept", 10)
            async with uow.transaction():  # a nested one joins
                await save("kept", 20)
                kept = await uow.record(
                    JobProgressed(job_id="kept", progress=20), subject=None, context=None
                )

        async def fail_after_recording() -> None:
            async with uow.transaction():
                await save("dropped", 30)
                await uow.record(
                    JobProgressed(job_id="dropped", progress=30), subject=None, context=None
                )
                raise RuntimeError("the use case failed after recording")

        with pytest.raises(RuntimeError):
            await fail_after_recording()

        state = await pool.fetch(f'SELECT job, value FROM "{private_schema}".progress')
        outbox = await pool.fetch(
            f'SELECT event_id, routing_key, envelope FROM "{private_schema}".outbox'
        )
        assert sorted((r["job"], r["value"]) for r in state) == [("kept", 10), ("kept", 20)]
        assert [(r["event_id"], r["routing_key"]) for r in outbox] == [(kept.id, ROUTING_KEY)]
        # The envelope is stored as it will be published: same id on every retry.
        assert CloudEvent.model_validate_json(outbox[0]["envelope"]) == kept
    finally:
        await pool.close()


async def test_a_commit_publishes_its_events_before_it_returns(
    stack: Stack, exporter_bus: RabbitBroker, catcher: Catcher, private_schema: str
) -> None:
    pool = await create_pool(stack.database_url, size=2)
    database = Database(pool)
    relay = OutboxRelay(  # never started: only its publish-at-commit path runs
        database,
        listen_dsn=stack.database_url,
        schema=private_schema,
        publisher=RabbitEventPublisher(exporter_bus, service="exporter", declare_topology=False),
    )
    uow = PostgresUnitOfWork(
        database, schema=private_schema, service="exporter", after_commit=relay.publish_now
    )
    try:
        ids = await record(uow, f"now-{secrets.token_hex(4)}", 3)
        # Confirmed by the broker and gone from the outbox by the time the commit returned.
        assert await pool.fetchval(f'SELECT count(*) FROM "{private_schema}".outbox') == 0
        assert await until(lambda: all(catcher.count(i) == 1 for i in ids))
    finally:
        await pool.close()


async def test_two_relays_on_one_outbox_publish_each_event_once_in_order(
    stack: Stack, exporter_bus: RabbitBroker, catcher: Catcher, private_schema: str
) -> None:
    pool = await create_pool(stack.database_url, size=6)
    database = Database(pool)
    uow = PostgresUnitOfWork(database, schema=private_schema, service="exporter")
    relays = [
        OutboxRelay(
            database,
            listen_dsn=stack.database_url,
            schema=private_schema,
            publisher=RabbitEventPublisher(
                exporter_bus, service="exporter", declare_topology=False
            ),
            batch_size=25,
            poll_seconds=0.2,
        )
        for _ in range(2)
    ]
    job_id = f"replicas-{secrets.token_hex(4)}"
    try:
        for relay in relays:
            await relay.start()
        ids: list[str] = []
        for _ in range(10):  # commits arriving while both relays run
            ids += await record(uow, job_id, 30)
        assert await until(lambda: all(catcher.count(i) >= 1 for i in ids), seconds=30)
        for relay in relays:
            await relay.stop()
    finally:
        for relay in relays:
            await relay.stop()
        await pool.close()

    assert [i for i in catcher.ids if i in set(ids)] == ids


# ---- the exporter killed with -9 while its relay publishes ---------------------------------------


def _exporter_pid(stack: Stack) -> int | None:
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == supervisor and b"hypersdk_exporter" in cmdline:
            return int(entry.name)
    return None


async def test_a_relay_killed_mid_batch_loses_nothing_and_audit_keeps_each_once(
    stack: Stack, catcher: Catcher
) -> None:
    pool = await create_pool(stack.database_url, size=2)
    uow = PostgresUnitOfWork(Database(pool), schema="exporter", service="exporter")
    job_id = f"killed-{secrets.token_hex(4)}"
    total = 3000
    try:
        victim = _exporter_pid(stack)
        assert victim is not None
        ids = await record(uow, job_id, total)

        async def left() -> int:
            n: int = await pool.fetchval(
                "SELECT count(*) FROM exporter.outbox WHERE event_id = ANY($1::text[])", ids
            )
            return n

        # Kill once the relay is part-way through the backlog.
        deadline = time.monotonic() + 20
        while await left() == total:
            assert time.monotonic() < deadline, "the exporter's relay did not start publishing"
            await asyncio.sleep(0.005)
        os.kill(victim, signal.SIGKILL)
        remaining = await left()
        assert 0 < remaining < total, "the backlog was gone before the kill"

        async def restarted() -> bool:
            pid = _exporter_pid(stack)
            return pid is not None and pid != victim

        deadline = time.monotonic() + 60
        while not await restarted() or await left():
            assert time.monotonic() < deadline, "the restarted exporter did not drain its outbox"
            await asyncio.sleep(0.2)
    finally:
        await pool.close()

    def chained() -> int:
        rows = stack.db(
            "SELECT count(*) AS n FROM audit.entries WHERE event_id = ANY($1::text[])", ids
        )
        return int(rows[0]["n"])

    assert await until(lambda: chained() == total, seconds=60), chained()
    # Every event reached the bus; what was in flight at the kill may have gone twice.
    assert {i for i in ids if catcher.count(i) == 0} == set()
    assert len(catcher.ids) - total <= 100  # at most one batch again
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert status == 200, verdict
    assert verdict["valid"] is True


# ---- PostgreSQL restarted under the relay -------------------------------------------------------


@dataclass
class PrivatePostgres:
    """A PostgreSQL instance of this test's own (own data directory and port)."""

    bin_dir: Path
    data_dir: Path
    port: int

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin_dir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-w",
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        self.ctl(
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1",
            "start",
        )

    def stop(self) -> None:
        self.ctl("-m", "fast", "stop")


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions or shutil.which("runuser") is None:
        pytest.skip("PostgreSQL server binaries or runuser are not installed")
    bin_dir = versions[-1].parent
    root = Path(tempfile.mkdtemp(prefix="hypersdk-outbox-pg-"))
    shutil.chown(root, "postgres", "postgres")
    data_dir = root / "data"
    subprocess.run(
        [
            "runuser",
            "-u",
            "postgres",
            "--",
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    server = PrivatePostgres(bin_dir=bin_dir, data_dir=data_dir, port=devstack.free_port())
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


async def test_a_postgresql_restart_under_the_relay_loses_nothing(
    stack: Stack,
    private_postgres: PrivatePostgres,
    exporter_bus: RabbitBroker,
    catcher: Catcher,
) -> None:
    schema = "outbox_restart"
    await apply_migrations(private_postgres.dsn, schema=schema, migrations=[OUTBOX_MIGRATION])
    pool = await create_pool(private_postgres.dsn, size=2)
    database = Database(pool)
    uow = PostgresUnitOfWork(database, schema=schema, service="exporter")
    relay = OutboxRelay(
        database,
        listen_dsn=private_postgres.dsn,
        schema=schema,
        publisher=RabbitEventPublisher(exporter_bus, service="exporter", declare_topology=False),
        poll_seconds=0.2,
        max_backoff_seconds=0.5,
    )
    job_id = f"restart-{secrets.token_hex(4)}"
    try:
        await relay.start()
        before = await record(uow, job_id, 20)
        assert await until(lambda: all(catcher.count(i) == 1 for i in before))

        # Committed, then PostgreSQL goes away before the relay could take them.
        await relay.stop()
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 0
        pending = await record(uow, job_id, 20)
        private_postgres.stop()
        await relay.start()
        await asyncio.sleep(1.5)  # the relay fails and retries meanwhile
        assert relay._task is not None
        assert not relay._task.done()
        private_postgres.start()

        after = await record_when_up(uow, job_id, 20)

        everything = before + pending + after
        assert await until(lambda: all(catcher.count(i) >= 1 for i in everything), seconds=30)
        await relay.stop()
        # Nothing was in flight when PostgreSQL stopped, so nothing goes twice.
        assert [i for i in everything if catcher.count(i) != 1] == []
        assert await pool.fetchval(f'SELECT count(*) FROM "{schema}".outbox') == 0
    finally:
        await relay.stop()
        await pool.close()

    def chained() -> int:
        rows = stack.db(
            "SELECT count(*) AS n FROM audit.entries WHERE event_id = ANY($1::text[])", everything
        )
        return int(rows[0]["n"])

    assert await until(lambda: chained() == len(everything), seconds=30), chained()


async def record_when_up(uow: PostgresUnitOfWork, job_id: str, count: int) -> list[str]:
    """Record once the pool reaches the restarted server (its old connections fail first)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await record(uow, job_id, count)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
