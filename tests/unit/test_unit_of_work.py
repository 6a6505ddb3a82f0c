"""The in-memory unit of work that core unit tests run on: it must behave like the real one."""

from __future__ import annotations

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import JobProgressed
from hypersdk_kit.database import Database, apply_migrations, is_plain_identifier
from hypersdk_kit.memory import InMemoryUnitOfWork
from hypersdk_kit.outbox import PostgresUnitOfWork

CONTEXT = RequestContext(actor="olga", request_id="req-uow-1")


class Counter:
    def __init__(self) -> None:
        self.values: dict[str, int] = {}


def progressed(value: int) -> JobProgressed:
    return JobProgressed(job_id="j-1", progress=value)


async def test_events_appear_only_when_the_transaction_commits() -> None:
    counter = Counter()
    uow = InMemoryUnitOfWork(service="exporter", stores=(counter,))

    async with uow.transaction():
        counter.values["j-1"] = 10
        event = await uow.record(progressed(10), subject="job/j-1", context=CONTEXT)
        assert uow.events == []

    assert uow.events == [event]
    assert event.source == "/hypersdk/exporter"
    assert event.actor == "olga"


async def test_a_failed_transaction_restores_the_stores_and_drops_its_events() -> None:
    counter = Counter()
    counter.values["j-1"] = 1
    uow = InMemoryUnitOfWork(stores=(counter,))

    async def fail() -> None:
        async with uow.transaction():
            counter.values["j-1"] = 50
            await uow.record(progressed(50), subject=None, context=None)
            raise LookupError("the use case failed")

    with pytest.raises(LookupError):
        await fail()

    assert counter.values == {"j-1": 1}
    assert uow.events == []
    assert uow.rollbacks == 1


async def test_a_nested_transaction_joins_the_outer_one() -> None:
    counter = Counter()
    uow = InMemoryUnitOfWork(stores=(counter,))

    async def inner_then_fail() -> None:
        async with uow.transaction():
            async with uow.transaction():
                counter.values["j-1"] = 20
                await uow.record(progressed(20), subject=None, context=None)
            assert uow.events == []  # the inner block did not commit on its own
            raise LookupError("the outer block failed")

    with pytest.raises(LookupError):
        await inner_then_fail()

    assert counter.values == {}
    assert uow.events == []


async def test_a_fact_recorded_outside_a_transaction_commits_alone() -> None:
    uow = InMemoryUnitOfWork()

    event = await uow.publish(progressed(5), subject=None, context=CONTEXT)

    assert uow.events == [event]
    assert uow.types() == ["exporter.job.progressed"]


async def test_a_commit_can_be_made_to_fail_once() -> None:
    counter = Counter()
    uow = InMemoryUnitOfWork(stores=(counter,))
    uow.fail_commits = {"exporter.job.progressed"}

    async def change(value: int) -> None:
        async with uow.transaction():
            counter.values["j-1"] = value
            await uow.record(progressed(value), subject=None, context=None)

    with pytest.raises(InMemoryUnitOfWork.CommitFailedError):
        await change(30)
    await change(40)

    assert counter.values == {"j-1": 40}
    assert [e.data["progress"] for e in uow.events] == [40]


@pytest.mark.parametrize(
    "schema",
    ['audit"; DROP SCHEMA identity CASCADE; --', "Identity", "1abc", "", "a" * 64, "idéntity"],
)
async def test_schema_names_that_are_not_plain_identifiers_are_refused(schema: str) -> None:
    """Schema names are interpolated into SQL: anything but a plain identifier never gets there."""
    with pytest.raises(ValueError, match="not a plain schema name"):
        await apply_migrations("postgresql://unused@127.0.0.1:1/none", schema=schema, migrations=[])
    with pytest.raises(ValueError, match="not a plain schema name"):
        PostgresUnitOfWork(Database(None), schema=schema, service="exporter")  # type: ignore[arg-type]


def test_plain_identifiers_up_to_postgresql_s_limit_pass() -> None:
    assert is_plain_identifier("identity")
    assert is_plain_identifier("hypersdk_bench_6bb7a904_audit")
    assert is_plain_identifier("a" * 63)
    assert not is_plain_identifier("a" * 64)


def test_an_outbox_schema_leaves_room_for_its_notify_channel() -> None:
    """``<schema>_outbox`` is a NOTIFY channel name, also at most 63 characters."""
    PostgresUnitOfWork(Database(None), schema="a" * 56, service="exporter")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not a plain schema name"):
        PostgresUnitOfWork(Database(None), schema="a" * 57, service="exporter")  # type: ignore[arg-type]
