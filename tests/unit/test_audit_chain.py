"""Audit: events become hash-chained entries; every kind of tampering is found and located."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest
import rfc8785

from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.core.chain import (
    GENESIS_HASH,
    ChainedEntry,
    EntryFields,
    chain,
    entry_hash,
    verify,
)
from hypersdk_audit.core.recorder import entry_fields
from hypersdk_contracts.envelope import CloudEvent, RequestContext, new_event
from hypersdk_contracts.events import (
    Artifact,
    AuthorizationDenied,
    EventData,
    JobCompleted,
    JobRequested,
    LoginFailed,
    LoginSucceeded,
    ProviderRegistered,
    RequestCompleted,
    RoleAssigned,
    SecretWritten,
    SessionCreated,
    UserCreated,
)
from hypersdk_kit.bus import PoisonMessageError

from .audit_world import audit_service, received, sealed

ALICE = RequestContext(actor="alice", source_ip="203.0.113.9", request_id="req-1")
ANONYMOUS = RequestContext(source_ip="198.51.100.3", request_id="req-2")
ENTRY_COUNT = 10


def _event(
    data: EventData, *, subject: str | None, context: RequestContext | None = ALICE
) -> CloudEvent:
    service = data.routing_key.value.split(".", 1)[0]
    return sealed(
        new_event(
            service=service,
            routing_key=data.routing_key.value,
            data=data,
            subject=subject,
            context=context,
        )
    )


def _story() -> list[CloudEvent]:
    """Ten real events: a failed and a good login, admin work, an export, API calls."""
    return [
        _event(
            LoginFailed(username="alice", reason="invalid_credentials"),
            subject="user/alice",
            context=ANONYMOUS,
        ),
        _event(LoginSucceeded(username="alice", method="local"), subject="user/alice"),
        _event(
            SessionCreated(
                session_id="s-1",
                username="alice",
                expires_at=datetime(2025, 5, 1, 18, 0, tzinfo=UTC),
            ),
            subject="session/s-1",
        ),
        _event(UserCreated(username="bob"), subject="user/bob"),
        _event(RoleAssigned(username="bob", roles=["operator"]), subject="user/bob"),
        _event(SecretWritten(path="providers/lab", version=1), subject="secret/providers/lab"),
        _event(
            ProviderRegistered(name="lab", type="local", credential_ref="providers/lab"),
            subject="provider/lab",
        ),
        _event(
            JobRequested(job_id="j-1", provider="lab", vm="web-01", format="qcow2"),
            subject="job/j-1",
        ),
        _event(
            JobCompleted(
                job_id="j-1",
                artifacts=[Artifact(name="web-01-disk0.qcow2", size_bytes=3, sha256="a" * 64)],
            ),
            subject="job/j-1",
        ),
        _event(
            AuthorizationDenied(
                principal="bob", permission="audit:view", resource="GET /api/v1/audit/events"
            ),
            subject="GET /api/v1/audit/events",
        ),
    ]


@pytest.fixture
async def log() -> InMemoryAuditLog:
    audit_log = InMemoryAuditLog()
    service = audit_service(audit_log)
    for event in _story():
        assert await service.record(received(event)) is not None
    assert len(audit_log.entries) == ENTRY_COUNT
    return audit_log


def _edit(entry: ChainedEntry, **changes: object) -> ChainedEntry:
    return dataclasses.replace(entry, **changes)  # type: ignore[arg-type]


# ---- a sound chain ----------------------------------------------------------------------------


async def test_recorded_chain_verifies(log: InMemoryAuditLog) -> None:
    result = await audit_service(log).verify()

    assert result.valid
    assert result.kind == "incremental"
    assert (result.from_size, result.to_size, result.checked) == (0, ENTRY_COUNT, ENTRY_COUNT)
    assert result.problems == ()


async def test_entries_are_numbered_and_linked(log: InMemoryAuditLog) -> None:
    entries = log.entries

    assert [entry.sequence for entry in entries] == list(range(1, ENTRY_COUNT + 1))
    assert entries[0].prev_hash == GENESIS_HASH
    for previous, entry in itertools.pairwise(entries):
        assert entry.prev_hash == previous.hash
    assert len({entry.hash for entry in entries}) == ENTRY_COUNT


def test_empty_chain_verifies() -> None:
    result = verify([])
    assert result.valid
    assert result.entries == 0


async def test_page_returns_entries_after_a_sequence(log: InMemoryAuditLog) -> None:
    page = await audit_service(log).page(after_sequence=3, limit=4)
    assert [entry.sequence for entry in page] == [4, 5, 6, 7]


async def test_duplicate_event_is_recorded_once() -> None:
    audit_log = InMemoryAuditLog()
    service = audit_service(audit_log)
    event = _story()[1]

    first = await service.record(received(event))
    again = await service.record(received(CloudEvent.model_validate(event.to_wire())))

    assert first is not None
    assert again is None
    assert len(audit_log.entries) == 1
    assert (await service.verify()).valid


async def test_a_batch_is_chained_in_order_and_continues_the_chain() -> None:
    audit_log = InMemoryAuditLog()
    service = audit_service(audit_log)
    story = _story()
    await service.record(received(story[0]))

    added = await service.record_batch([received(event) for event in story[1:]])

    assert [entry.event_id for entry in added] == [event.id for event in story[1:]]
    assert [entry.sequence for entry in audit_log.entries] == list(range(1, ENTRY_COUNT + 1))
    assert (await service.verify()).valid


async def test_a_batch_skips_events_already_recorded_or_repeated_in_it() -> None:
    audit_log = InMemoryAuditLog()
    service = audit_service(audit_log)
    first, second, third = _story()[:3]
    await service.record(received(first))

    added = await service.record_batch([received(e) for e in (first, second, second, third)])

    assert [entry.event_id for entry in added] == [second.id, third.id]
    assert len(audit_log.entries) == 3
    assert (await service.verify()).valid


async def test_one_poison_event_makes_the_batch_poison_and_records_nothing() -> None:
    audit_log = InMemoryAuditLog()
    good = _story()[1]
    poison = CloudEvent.model_validate({**good.to_wire(), "id": "poison", "data": {"x": 1}})

    with pytest.raises(PoisonMessageError):
        await audit_service(audit_log).record_batch([received(good), received(poison)])

    assert audit_log.entries == []


# ---- tampering --------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, ENTRY_COUNT])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", "mallory"),
        ("action", "auth.logout"),
        ("resource", "user/mallory"),
        ("result", "failure: forged"),
        ("source_ip", "10.0.0.1"),
        ("request_id", "req-forged"),
        ("event_id", "00000000-0000-0000-0000-000000000000"),
        ("timestamp", datetime(2020, 1, 1, tzinfo=UTC)),
        ("producer", "gateway"),
        ("producer", None),
        ("received_at", datetime(2020, 1, 1, tzinfo=UTC)),
        ("received_at", None),
    ],
)
async def test_changed_field_is_located(
    log: InMemoryAuditLog, k: int, field: str, value: object
) -> None:
    log.entries[k - 1] = _edit(log.entries[k - 1], **{field: value})

    result = await audit_service(log).verify()

    assert not result.valid
    assert (result.problems[0].code, result.problems[0].sequence) == ("entry_edited", k)


async def test_timestamp_moved_by_a_microsecond_is_detected(log: InMemoryAuditLog) -> None:
    entry = log.entries[3]
    log.entries[3] = _edit(entry, timestamp=entry.timestamp + timedelta(microseconds=1))

    result = verify(log.entries)

    assert result.first_bad_sequence == 4


async def test_changed_hash_is_located(log: InMemoryAuditLog) -> None:
    log.entries[4] = _edit(log.entries[4], hash="f" * 64)

    result = verify(log.entries)

    assert not result.valid
    assert result.first_bad_sequence == 5


@pytest.mark.parametrize("k", [1, 2, 5, ENTRY_COUNT - 1])
async def test_removed_entry_is_located(log: InMemoryAuditLog, k: int) -> None:
    del log.entries[k - 1]

    result = verify(log.entries)

    assert not result.valid
    assert result.first_bad_sequence == k


async def test_removed_entry_with_renumbered_successors_is_located(
    log: InMemoryAuditLog,
) -> None:
    # Closing the gap in the numbering breaks the next entry's hash and link instead.
    entries = log.entries[:4] + [
        _edit(entry, sequence=entry.sequence - 1) for entry in log.entries[5:]
    ]

    result = verify(entries)

    assert not result.valid
    assert result.first_bad_sequence == 5


@pytest.mark.parametrize("k", [1, 4, ENTRY_COUNT])
async def test_inserted_forged_entry_is_located(log: InMemoryAuditLog, k: int) -> None:
    # The forger chains properly onto entry k-1, so the forged entry itself checks out and
    # the break shows where it pushed the genuine entry k out of place.
    prev_hash = GENESIS_HASH if k == 1 else log.entries[k - 2].hash
    forged_fields = EntryFields(
        event_id="forged",
        timestamp=log.entries[k - 1].timestamp,
        user="alice",
        action="secret.delete",
        resource="secret/providers/lab",
        result="success",
        source_ip="203.0.113.9",
        request_id="req-1",
    )
    log.entries.insert(k - 1, chain(forged_fields, sequence=k, prev_hash=prev_hash))

    result = verify(log.entries)

    assert not result.valid
    assert result.first_bad_sequence == k


async def test_inserted_entry_with_a_made_up_hash_is_located(log: InMemoryAuditLog) -> None:
    forged = _edit(log.entries[2], event_id="forged", sequence=4, hash="0" * 64)
    log.entries.insert(3, forged)

    result = verify(log.entries)

    assert not result.valid
    assert result.first_bad_sequence == 4


@pytest.mark.parametrize("k", [1, 5, ENTRY_COUNT - 1])
async def test_swapped_entries_are_located(log: InMemoryAuditLog, k: int) -> None:
    entries = log.entries
    entries[k - 1], entries[k] = entries[k], entries[k - 1]

    result = verify(entries)

    assert not result.valid
    assert result.first_bad_sequence == k


@pytest.mark.parametrize("k", [1, 5, ENTRY_COUNT - 1])
async def test_swapped_entries_with_swapped_numbers_are_located(
    log: InMemoryAuditLog, k: int
) -> None:
    first, second = log.entries[k - 1], log.entries[k]
    log.entries[k - 1] = _edit(second, sequence=first.sequence)
    log.entries[k] = _edit(first, sequence=second.sequence)

    result = verify(log.entries)

    assert not result.valid
    assert result.first_bad_sequence == k


@pytest.mark.parametrize("k", [1, 5, ENTRY_COUNT - 1])
async def test_edited_entry_with_recomputed_hash_is_caught_by_the_next_link(
    log: InMemoryAuditLog, k: int
) -> None:
    original = log.entries[k - 1]
    edited_fields = _edit(original, result="success", user="mallory")
    log.entries[k - 1] = chain(edited_fields, sequence=k, prev_hash=original.prev_hash)
    assert log.entries[k - 1].hash != original.hash

    result = await audit_service(log).verify()

    assert not result.valid
    assert result.problems[0].sequence in (k, k + 1)
    assert result.problems[0].code in ("chain_broken", "entry_edited")


async def test_verification_counts_entries_up_to_the_break(log: InMemoryAuditLog) -> None:
    log.entries[6] = _edit(log.entries[6], user="mallory")

    result = verify(log.entries)

    assert result.entries == 7
    assert result.first_bad_sequence == 7


# ---- the canonical hash -----------------------------------------------------------------------


def _independent_hash(entry: ChainedEntry) -> str:
    document: dict[str, str | int | None] = {
        "sequence": entry.sequence,
        "event_id": entry.event_id,
        "timestamp": entry.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "user": entry.user,
        "action": entry.action,
        "resource": entry.resource,
        "result": entry.result,
        "source_ip": entry.source_ip,
        "request_id": entry.request_id,
        "prev_hash": entry.prev_hash,
    }
    if entry.producer is not None:  # attributed entries (decision 0030)
        document["producer"] = entry.producer
    if entry.received_at is not None:
        document["received_at"] = entry.received_at.astimezone(UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        )
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


async def test_every_hash_matches_an_independent_rfc8785_recomputation(
    log: InMemoryAuditLog,
) -> None:
    for entry in log.entries:
        assert _independent_hash(entry) == entry.hash


def test_hash_of_a_fixed_entry_matches_the_documented_canonical_form() -> None:
    fields = EntryFields(
        event_id="5f0c6c1e-0000-4000-8000-000000000001",
        timestamp=datetime(2025, 5, 1, 14, 30, 5, 123456, tzinfo=timezone(timedelta(hours=2))),
        user="älice",
        action="auth.login",
        resource=None,
        result="failure: invalid_credentials",
        source_ip="203.0.113.9",
        request_id=None,
    )
    prev_hash = "ab" * 32
    canonical = (
        '{"action":"auth.login",'
        '"event_id":"5f0c6c1e-0000-4000-8000-000000000001",'
        f'"prev_hash":"{prev_hash}",'
        '"request_id":null,"resource":null,'
        '"result":"failure: invalid_credentials",'
        '"sequence":7,'
        '"source_ip":"203.0.113.9",'
        '"timestamp":"2025-05-01T12:30:05.123456Z",'
        '"user":"älice"}'
    ).encode()

    entry = chain(fields, sequence=7, prev_hash=prev_hash)

    assert entry.hash == hashlib.sha256(canonical).hexdigest()
    assert entry.hash == _independent_hash(entry)
    assert entry_hash(fields, sequence=7, prev_hash=prev_hash) == entry.hash


def test_an_attributed_entry_hashes_its_producer_and_receive_time() -> None:
    fields = EntryFields(
        event_id="e-1",
        timestamp=datetime(2025, 5, 1, 12, 0, tzinfo=UTC),
        user=None,
        action="a",
        resource=None,
        result="success",
        source_ip=None,
        request_id=None,
        producer="exporter",
        received_at=datetime(2025, 5, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2))),
    )
    canonical = (
        '{"action":"a","event_id":"e-1",'
        f'"prev_hash":"{GENESIS_HASH}",'
        '"producer":"exporter",'
        '"received_at":"2025-05-01T12:00:00.000005Z",'
        '"request_id":null,"resource":null,"result":"success","sequence":1,'
        '"source_ip":null,"timestamp":"2025-05-01T12:00:00.000000Z","user":null}'
    ).encode()

    assert entry_hash(fields, sequence=1, prev_hash=GENESIS_HASH) == (
        hashlib.sha256(canonical).hexdigest()
    )


async def test_entries_from_before_attribution_still_verify_in_front_of_new_ones() -> None:
    old = EntryFields(
        event_id="old",
        timestamp=datetime(2025, 5, 1, tzinfo=UTC),
        user="alice",
        action="auth.login",
        resource=None,
        result="success",
        source_ip=None,
        request_id=None,
    )
    audit_log = InMemoryAuditLog()
    await audit_log.append(old)  # as an earlier version chained it: no producer, no receive time

    await audit_service(audit_log).record(received(_story()[1]))

    assert [e.producer for e in audit_log.entries] == [None, "identity"]
    assert (await audit_service(audit_log).verify()).valid


def test_same_instant_in_another_zone_hashes_the_same() -> None:
    instant = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)
    base = EntryFields(
        event_id="e",
        timestamp=instant,
        user=None,
        action="a",
        resource=None,
        result="success",
        source_ip=None,
        request_id=None,
    )
    shifted = dataclasses.replace(base, timestamp=instant.astimezone(timezone(timedelta(hours=-5))))

    assert entry_hash(base, sequence=1, prev_hash=GENESIS_HASH) == entry_hash(
        shifted, sequence=1, prev_hash=GENESIS_HASH
    )


def test_sequence_and_previous_hash_are_part_of_the_hash() -> None:
    fields = entry_fields(_story()[0])
    reference = entry_hash(fields, sequence=1, prev_hash=GENESIS_HASH)

    assert entry_hash(fields, sequence=2, prev_hash=GENESIS_HASH) != reference
    assert entry_hash(fields, sequence=1, prev_hash="1" * 64) != reference


# ---- events into entries ----------------------------------------------------------------------


def test_login_failure_entry() -> None:
    event = _story()[0]

    fields = entry_fields(event)

    assert fields == EntryFields(
        event_id=event.id,
        timestamp=event.time,
        user=None,
        action="auth.login",
        resource="user/alice",
        result="failure: invalid_credentials",
        source_ip="198.51.100.3",
        request_id="req-2",
    )


@pytest.mark.parametrize(
    ("status", "result"),
    [(200, "success"), (202, "success"), (403, "failure: http_403"), (500, "failure: http_500")],
)
def test_request_completed_entry(status: int, result: str) -> None:
    event = _event(
        RequestCompleted(method="POST", route="/api/v1/exports", status=status, duration_ms=12.5),
        subject=None,
    )

    fields = entry_fields(event)

    assert fields.action == "api.call"
    assert fields.result == result
    assert fields.resource == "POST /api/v1/exports"
    assert fields.user == "alice"
    assert fields.source_ip == "203.0.113.9"
    assert fields.request_id == "req-1"


def test_denied_authorization_entry() -> None:
    fields = entry_fields(_story()[-1])
    assert fields.action == "authz.decide"
    assert fields.result == "failure: permission_denied"
    assert fields.resource == "GET /api/v1/audit/events"


@pytest.mark.parametrize(
    "data",
    [
        {"username": "alice", "reason": "bad_luck"},
        {"username": "alice"},
        {"username": "alice", "reason": "invalid_credentials", "password": "hunter2hunter2"},
    ],
)
async def test_known_type_with_a_bad_payload_is_poison(data: dict[str, object]) -> None:
    event = CloudEvent(
        id="e-poison",
        source="/hypersdk/identity",
        type="io.hypersdk.identity.login.failed",
        time=datetime(2025, 5, 1, tzinfo=UTC),
        data=data,
    )
    audit_log = InMemoryAuditLog()

    with pytest.raises(PoisonMessageError):
        entry_fields(event)
    with pytest.raises(PoisonMessageError):
        await audit_service(audit_log).record(received(event))
    assert audit_log.entries == []


def test_entry_hashes_are_stable_across_releases() -> None:
    """Known answers: entries chained by earlier releases must still verify.

    Computed with the first implementation (``dataclasses.asdict`` and ``strftime``); a faster
    one must give the same bytes to hash, or every stored chain stops verifying.
    """
    attributed = EntryFields(
        event_id="0b6f4c1e-6a0e-4d83-9d55-3f1f7a3c2d10",
        timestamp=datetime(2026, 12, 2, 1, 2, 3, 45, tzinfo=timezone(timedelta(hours=2))),
        user="alice",
        action="api.call",
        resource="GET /api/v1/jobs",
        result="success",
        source_ip="192.0.2.7",
        request_id="r-1",
        producer="gateway",
        received_at=datetime(2026, 12, 1, 23, 2, 3, 500000, tzinfo=UTC),
    )
    older = EntryFields(
        event_id="e-2",
        timestamp=datetime(2026, 1, 1, tzinfo=UTC),
        user=None,
        action="secret.delete",
        resource=None,
        result="failure: not_found",
        source_ip=None,
        request_id=None,
    )
    assert (
        entry_hash(attributed, sequence=7, prev_hash="0" * 64)
        == "452b607a4fd2c0703417cf49ffe3911802ecae5f3113570e6737e80fedc48170"
    )
    assert (
        entry_hash(older, sequence=1, prev_hash="0" * 64)
        == "f61a2ff112d5282655d84c117ab445da0e85a0b1408a7e2929e4534463b703d0"
    )
