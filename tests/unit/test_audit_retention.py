"""Retention behind a signed genesis, legal holds and verification from a checkpoint (0048).

On the in-memory log, whose retention store applies the database's rules (a sealed prefix
only, never while a hold stands); the real triggers and roles are tried in
tests/integration/test_audit_retention.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog, InMemoryRetentionStore
from hypersdk_audit.adapters.outbound.signers import KeyFileSigner
from hypersdk_audit.core.chain import EntryFields
from hypersdk_audit.core.retention import Retention, RetentionPolicy
from hypersdk_audit.core.service import AuditService
from hypersdk_audit.core.verification import bundle_lines, start_at
from hypersdk_auditproof.bundle import Genesis
from hypersdk_auditproof.verify import verify_bundle
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError

from .audit_world import attribution

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.generate()


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def fields(number: int) -> EntryFields:
    return EntryFields(
        event_id=f"event-{number}",
        timestamp=T0 + timedelta(minutes=number),
        user="alice",
        action="vm.export",
        resource=f"vm/{number}",
        result="success",
        source_ip="192.0.2.7",
        request_id=f"req-{number}",
        producer="gateway",
        received_at=T0 + timedelta(minutes=number),
    )


async def world(
    count: int, *, policy: RetentionPolicy, now: datetime | None = None
) -> tuple[InMemoryAuditLog, AuditService, Retention, Clock]:
    log = InMemoryAuditLog()
    await log.append_batch([fields(n) for n in range(1, count + 1)])
    clock = Clock(now or T0 + timedelta(minutes=count + 1))
    audit = AuditService(
        log=log, attribution=attribution(), clock=clock, signer=KeyFileSigner(KEY), origin="t"
    )
    retention = Retention(
        store=InMemoryRetentionStore(log),
        signer=KeyFileSigner(KEY),
        policy=policy,
        origin="t",
        clock=clock,
    )
    return log, audit, retention, clock


async def bundle(log: InMemoryAuditLog, audit: AuditService) -> list[bytes]:
    genesis = await log.genesis()
    size = 0 if genesis is None else genesis.checkpoint.checkpoint.size
    lines = bundle_lines(
        log,
        origin="t",
        keys=audit.public_keys(),
        start=await start_at(log, size),
        end=log.size,
    )
    return b"".join([chunk async for chunk in lines]).splitlines()


ADMIN = RequestContext(actor="admin")


async def test_without_limits_nothing_is_ever_cut() -> None:
    log, _, retention, _ = await world(20, policy=RetentionPolicy())
    outcome = await retention.run()
    assert (outcome.cut, outcome.reason) == (False, "disabled")
    assert len(log.entries) == 20


async def test_a_size_cut_keeps_the_newest_entries_and_the_rest_verifies_from_its_genesis() -> None:
    log, audit, retention, _ = await world(40, policy=RetentionPolicy(max_entries=15))
    outcome = await retention.run()

    assert outcome.cut
    assert (outcome.reason, outcome.removed) == ("size", 26)
    assert outcome.genesis is not None
    assert outcome.genesis.checkpoint.size == 26
    assert [e.sequence for e in log.entries] == list(range(27, 42))  # 15, with the record
    record = log.entries[-1]
    assert (record.action, record.user, record.resource, record.producer) == (
        "audit.retention.cut",
        "audit-retention",
        "entries/1-26",
        "audit",
    )
    assert log.entries[0].prev_hash == outcome.genesis.checkpoint.head
    await audit.checkpoint()
    report = verify_bundle(await bundle(log, audit), keys=audit.public_keys())
    assert report.valid, report.problems
    assert (report.first_sequence, report.latest_checkpoint) == (27, 41)
    assert (await audit.verify()).valid
    assert (await audit.verify()).from_size == 41  # the next one starts at what was verified


async def test_an_age_cut_stops_at_the_first_entry_young_enough() -> None:
    # Entries are received a minute apart from T0 + 1 min; keep the last 10 minutes.
    now = T0 + timedelta(minutes=31)
    log, _, retention, _ = await world(
        30, policy=RetentionPolicy(max_age=timedelta(minutes=10)), now=now
    )
    outcome = await retention.run()
    assert outcome.reason == "age"
    assert outcome.genesis is not None
    assert outcome.genesis.checkpoint.size == 20  # entry 21 was received at T0 + 21 min
    assert log.entries[0].sequence == 21


async def test_the_longer_cut_of_two_limits_wins() -> None:
    now = T0 + timedelta(minutes=31)
    policy = RetentionPolicy(max_age=timedelta(minutes=25), max_entries=10)
    _, _, retention, _ = await world(30, policy=policy, now=now)
    outcome = await retention.run()
    assert outcome.genesis is not None
    assert (outcome.reason, outcome.genesis.checkpoint.size) == ("size", 21)


async def test_a_second_run_with_nothing_new_to_cut_does_nothing() -> None:
    log, _, retention, _ = await world(30, policy=RetentionPolicy(max_entries=10))
    assert (await retention.run()).cut
    again = await retention.run()
    assert (again.cut, again.reason) == (False, "nothing")
    assert log.genesis_sizes == [21]
    assert len(log.entries) == 10


async def test_keeping_one_entry_keeps_the_record_and_cuts_it_no_further() -> None:
    log, _, retention, _ = await world(8, policy=RetentionPolicy(max_entries=1))
    assert (await retention.run()).cut
    assert [e.action for e in log.entries] == ["audit.retention.cut"]
    assert (await retention.run()).reason == "nothing"


async def test_a_legal_hold_suspends_cutting_until_lifted_and_both_are_recorded() -> None:
    log, audit, retention, _ = await world(30, policy=RetentionPolicy(max_entries=5))
    hold = await audit.place_hold("case 42", context=ADMIN)
    held = await retention.run()
    assert (held.cut, held.reason) == (False, "held")
    assert log.cut_before == 0
    assert held.genesis is None
    signed = await audit.checkpoint()
    with pytest.raises(PermissionError):  # the store refuses too, as the database does
        await InMemoryRetentionStore(log).cut(signed, record=fields(99), reason="size")

    lifted = await audit.lift_hold(hold.id, context=ADMIN)
    assert (lifted.lifted_by, lifted.id) == ("admin", hold.id)
    with pytest.raises(ServiceError) as again:
        await audit.lift_hold(hold.id, context=ADMIN)
    assert again.value.code == ErrorCode.NOT_FOUND
    assert [
        (e.action, e.user, e.resource) for e in log.entries if e.action.startswith("audit.h")
    ] == [
        ("audit.hold.place", "admin", f"hold/{hold.id}"),
        ("audit.hold.lift", "admin", f"hold/{hold.id}"),
    ]
    assert (await retention.run()).cut


async def test_a_hold_names_who_placed_it() -> None:
    _, audit, _, _ = await world(3, policy=RetentionPolicy())
    with pytest.raises(ServiceError) as refused:
        await audit.place_hold("case", context=RequestContext())
    assert refused.value.code == ErrorCode.UNAUTHENTICATED
    with pytest.raises(ServiceError) as missing:
        await audit.lift_hold("hold-nope", context=ADMIN)
    assert missing.value.code == ErrorCode.NOT_FOUND


async def test_incremental_verification_walks_only_what_follows_the_verified_checkpoint() -> None:
    log, audit, _, clock = await world(50, policy=RetentionPolicy())
    await audit.checkpoint()
    first = await audit.verify()
    assert (first.valid, first.from_size, first.checked) == (True, 0, 50)
    # An edit before the verified checkpoint (a superuser with the triggers off) ...
    log.entries[9] = dataclasses.replace(log.entries[9], user="mallory")
    await log.append_batch([fields(n) for n in range(51, 61)])
    incremental = await audit.verify()
    assert (incremental.valid, incremental.from_size, incremental.checked) == (True, 50, 10)
    # ... is found by a full verification, which runs in the background and is recorded.
    clock.now += timedelta(seconds=1)
    started = await audit.start_full_verification(requested_by="auditor")
    assert started.status == "running"
    assert audit._full is not None
    done = await audit._full
    assert (done.kind, done.status, done.valid) == ("full", "done", False)
    assert (done.problems[0].code, done.problems[0].sequence) == ("entry_edited", 10)
    assert await audit.verification(started.id) == done
    newest = await audit.verifications(limit=10)
    assert newest[0].kind == "full"


async def test_an_edit_after_the_verified_checkpoint_is_found_incrementally() -> None:
    log, audit, _, _ = await world(20, policy=RetentionPolicy())
    await audit.checkpoint()
    assert (await audit.verify()).valid
    await log.append_batch([fields(n) for n in range(21, 31)])
    log.entries[24] = dataclasses.replace(log.entries[24], result="failure: edited")
    run = await audit.verify()
    assert not run.valid
    assert (run.problems[0].code, run.problems[0].sequence) == ("entry_edited", 25)


async def test_a_tampered_starting_point_is_caught_against_its_signed_checkpoint() -> None:
    log, audit, _, _ = await world(16, policy=RetentionPolicy())
    await audit.checkpoint()
    assert (await audit.verify()).valid
    await log.append_batch([fields(n) for n in range(17, 21)])
    # The stored tree node the next walk starts from is altered.
    log.nodes[(4, 0)] = b"\x00" * 32
    run = await audit.verify()
    assert not run.valid
    assert run.problems[0].code == "checkpoint_mismatch"


async def test_concurrent_verifications_share_one_run() -> None:
    _, audit, _, _ = await world(30, policy=RetentionPolicy())
    runs = await asyncio.gather(*(audit.verify() for _ in range(20)))
    assert len({run.id for run in runs}) == 1
    assert all(run.valid for run in runs)


async def test_a_running_verification_not_heard_of_reads_abandoned() -> None:
    log, audit, _, clock = await world(5, policy=RetentionPolicy())
    started = await audit.start_full_verification(requested_by=None)
    assert audit._full is not None
    await audit._full
    stuck = dataclasses.replace(started, id="stuck")
    log.runs["stuck"] = stuck
    clock.now += timedelta(minutes=5)
    seen = await audit.verification("stuck")
    assert seen is not None
    assert seen.status == "abandoned"


async def test_the_genesis_frontier_matches_the_bundle_format() -> None:
    log, _, retention, _ = await world(13, policy=RetentionPolicy(max_entries=2))
    await retention.run()
    genesis = await log.genesis()
    assert genesis is not None
    Genesis(
        size=genesis.checkpoint.checkpoint.size,
        head=genesis.checkpoint.checkpoint.head,
        frontier=genesis.frontier,
    )
    assert len(genesis.frontier) == bin(12).count("1")


async def test_a_long_cut_goes_in_steps_each_behind_its_own_genesis() -> None:
    log, audit, _, clock = await world(40, policy=RetentionPolicy())
    retention = Retention(
        store=InMemoryRetentionStore(log),
        signer=KeyFileSigner(KEY),
        policy=RetentionPolicy(max_entries=5),
        origin="t",
        clock=clock,
        step=10,
    )
    outcome = await retention.run()

    assert outcome.cut
    assert log.genesis_sizes == [10, 20, 30, 36]
    assert outcome.removed == 36
    records = [e.resource for e in log.entries if e.action == "audit.retention.cut"]
    assert records == ["entries/1-10", "entries/1-20", "entries/1-30", "entries/1-36"]
    await audit.checkpoint()
    report = verify_bundle(await bundle(log, audit), keys=audit.public_keys())
    assert report.valid, report.problems


async def test_a_hold_placed_during_a_long_cut_stops_it_between_steps() -> None:
    log, audit, _, clock = await world(40, policy=RetentionPolicy())
    store = InMemoryRetentionStore(log)
    original = store.cut

    async def cut_then_hold(*args: object, **kwargs: object) -> int:
        removed = await original(*args, **kwargs)  # type: ignore[arg-type]
        if not log.hold_list:
            await audit.place_hold("case 7", context=ADMIN)
        return removed

    store.cut = cut_then_hold  # type: ignore[method-assign]
    retention = Retention(
        store=store,
        signer=KeyFileSigner(KEY),
        policy=RetentionPolicy(max_entries=5),
        origin="t",
        clock=clock,
        step=10,
    )
    outcome = await retention.run()
    assert outcome.cut
    assert log.genesis_sizes == [10]
