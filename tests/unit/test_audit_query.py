"""Audit queries: every filter narrows to exactly its entries, pages cover them once, bad input.

The in-memory log applies the filters as the PostgreSQL one does (tests/integration/
test_audit_query.py runs the same questions against the real database).
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from hypersdk_audit.adapters.inbound.bus import entry_filter
from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.adapters.outbound.postgres_query import after_prefix
from hypersdk_audit.core.chain import EntryFields
from hypersdk_audit.core.query import EVERY_ENTRY, EntryFilter, TextMatch
from hypersdk_contracts.rpc import ListAuditEventsRequest

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _fields(n: int, **fields: Any) -> EntryFields:
    values: dict[str, Any] = {
        "event_id": f"e-{n}",
        "timestamp": START + timedelta(minutes=n),
        "user": "admin",
        "action": "api.call",
        "resource": "GET /api/v1/vms",
        "result": "success",
        "source_ip": "192.0.2.1",
        "request_id": f"req-{n}",
    }
    values.update(fields)
    return EntryFields(**values)


# Entry n has timestamp START + n minutes and event id e-n.
STORY = [
    _fields(1, user=None, action="auth.login", resource="user/alice",
            result="failure: invalid_credentials", source_ip="198.51.100.7"),
    _fields(2, user="alice", action="auth.login", resource="user/alice"),
    _fields(3, user="alice", action="vm.export", resource="job/j-1", request_id="req-x"),
    _fields(4, user="alice", action="api.call", resource="POST /api/v1/exports",
            request_id="req-x"),
    _fields(5, action="vm.export.start", resource="job/j-1", user=None, request_id=None,
            source_ip=None),
    _fields(6, action="vm.export.complete", resource="job/j-1", result="failure: cancelled",
            user=None, request_id=None, source_ip=None),
    _fields(7, user="admin", action="user.update", resource="user/alice"),
    _fields(8, user="alice2", action="auth.login", resource="user/alice2"),
    _fields(9, user="bob", action="api.call", resource="GET /api/v1/jobs",
            result="failure: http_403", source_ip="203.0.113.9"),
    _fields(10, user="admin", action="vm.exporter.odd", resource="user/alice.smith"),
    _fields(11, user="admin", action="role.assign", resource="user/bob"),
    _fields(12, user="alice", action="api.call", resource="GET /api/v1/vms",
            result="failure: http_404 (=1+1)"),
]  # fmt: skip


@pytest.fixture
async def log() -> InMemoryAuditLog:
    log = InMemoryAuditLog()
    await log.append_batch(STORY)
    return log


def _request(**filters: Any) -> ListAuditEventsRequest:
    return ListAuditEventsRequest(**filters)


CASES: list[tuple[dict[str, Any], list[int]]] = [
    ({}, list(range(1, 13))),
    ({"user": "alice"}, [2, 3, 4, 12]),
    ({"user": "alic"}, []),
    ({"subject": "alice"}, [1, 2, 3, 4, 7, 12]),
    ({"subject": "bob"}, [9, 11]),
    ({"action": "vm.export"}, [3]),
    ({"action": "vm.export*"}, [3, 5, 6, 10]),
    ({"action": "vm.export.*"}, [5, 6]),
    ({"action": "auth.*"}, [1, 2, 8]),
    ({"resource": "job/j-1"}, [3, 5, 6]),
    ({"resource": "user/alice"}, [1, 2, 7]),
    ({"result": "success"}, [2, 3, 4, 5, 7, 8, 10, 11]),
    ({"result": "failure"}, [1, 6, 9, 12]),
    ({"result": "failure: http_403"}, [9]),
    ({"result": "failure:"}, []),
    ({"request_id": "req-x"}, [3, 4]),
    ({"source_ip": "203.0.113.9"}, [9]),
    ({"since": START + timedelta(minutes=10)}, [10, 11, 12]),
    ({"until": START + timedelta(minutes=3)}, [1, 2]),
    ({"since": START + timedelta(minutes=3), "until": START + timedelta(minutes=5)}, [3, 4]),
    ({"since": START + timedelta(minutes=5), "until": START + timedelta(minutes=5)}, []),
    ({"subject": "alice", "result": "failure"}, [1, 12]),
    ({"user": "alice", "action": "vm.export*", "request_id": "req-x"}, [3]),
    ({"user": "admin", "since": START + timedelta(minutes=8)}, [10, 11]),
]


@pytest.mark.parametrize(("filters", "expected"), CASES, ids=[repr(f) for f, _ in CASES])
async def test_every_filter_narrows_to_exactly_its_entries(
    log: InMemoryAuditLog, filters: dict[str, Any], expected: list[int]
) -> None:
    where = entry_filter(_request(**filters))

    page = await log.page(after_sequence=0, limit=100, where=where)

    assert [entry.sequence for entry in page] == expected
    assert [entry.sequence for entry in log.entries if where.matches(entry)] == expected


async def test_since_is_inclusive_and_until_exclusive_to_the_microsecond(
    log: InMemoryAuditLog,
) -> None:
    at = STORY[3].timestamp  # entry 4
    tiny = timedelta(microseconds=1)
    first = await log.page(
        after_sequence=0, limit=100, where=EntryFilter(since=at, until=at + tiny)
    )
    none = await log.page(after_sequence=0, limit=100, where=EntryFilter(since=at, until=at))
    later = await log.page(after_sequence=0, limit=100, where=EntryFilter(since=at + tiny))

    assert [e.sequence for e in first] == [4]
    assert none == []
    assert next(e.sequence for e in later) == 5


async def test_a_time_zone_other_than_utc_means_the_same_instant(log: InMemoryAuditLog) -> None:
    paris = START.astimezone(timezone(timedelta(hours=1)))
    request = _request(since=paris + timedelta(minutes=11))

    page = await log.page(after_sequence=0, limit=100, where=entry_filter(request))

    assert [e.sequence for e in page] == [11, 12]


async def test_pages_of_a_filter_cover_every_match_exactly_once(log: InMemoryAuditLog) -> None:
    where = entry_filter(_request(subject="alice"))
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        page = await log.page(after_sequence=after, limit=2, where=where)
        pages += 1
        seen += [entry.sequence for entry in page]
        if len(page) < 2:
            break
        after = page[-1].sequence  # the cursor is the last sequence seen

    assert seen == [1, 2, 3, 4, 7, 12]
    assert pages == 4  # three full pages, then an empty one
    assert await log.page(after_sequence=12, limit=2, where=where) == []


async def test_no_filter_is_every_entry(log: InMemoryAuditLog) -> None:
    assert not EVERY_ENTRY.narrows
    assert not entry_filter(_request()).narrows
    assert entry_filter(_request(result="success")).narrows
    assert len(await log.page(after_sequence=0, limit=5)) == 5


def test_a_trailing_star_is_a_prefix_and_failure_is_every_failure() -> None:
    assert TextMatch.of("vm.export*") == TextMatch("vm.export", prefix=True)
    assert TextMatch.of("vm.export") == TextMatch("vm.export")
    assert TextMatch.of_result("failure") == TextMatch("failure", prefix=True)
    assert TextMatch.of_result("failure: http_403") == TextMatch("failure: http_403")
    assert TextMatch.of_result("success") == TextMatch("success")
    assert not TextMatch("x", prefix=True).matches(None)
    assert not TextMatch("x").matches(None)


@pytest.mark.parametrize(
    "filters",
    [
        {"action": "vm export"},
        {"action": "vm.export**"},
        {"action": "*"},
        {"action": "vm.*export"},
        {"action": "'; DROP TABLE audit.entries; --"},
        {"action": "a" * 129},
        {"action": "vm.export\n"},
        {"user": ""},
        {"user": "u" * 129},
        {"subject": "s" * 129},
        {"resource": "r" * 513},
        {"result": "x" * 257},
        {"request_id": "q" * 129},
        {"source_ip": "1" * 65},
        {"user": "al\x00ice"},
        {"resource": "job/\ud800"},
        {"since": datetime(2026, 1, 1)},  # noqa: DTZ001 - a naive time is refused
        {"until": "yesterday"},
        {"after_sequence": -1},
        {"after_sequence": 2**63},
        {"limit": 0},
        {"limit": 10**9},
        {"colour": "red"},
    ],
    ids=repr,
)
def test_a_query_outside_its_bounds_is_refused(filters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ListAuditEventsRequest(**filters)


def test_sql_text_in_a_filter_is_only_text(log: InMemoryAuditLog) -> None:
    request = _request(user="admin' OR '1'='1", resource="x%' OR 1=1 --", result="failure%")
    assert entry_filter(request).user == "admin' OR '1'='1"
    assert not any(entry_filter(request).matches(entry) for entry in log.entries)


def test_after_prefix_bounds_exactly_the_texts_that_start_with_a_prefix() -> None:
    alphabet = ["a", "b", ".", "*", "_", "%", "z", "\x7f", "é", "\ud7ff", "\ue000", "\U0010ffff"]
    rng = random.Random(7)
    for _ in range(3000):
        prefix = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))
        bound = after_prefix(prefix)
        inside = prefix <= text and (bound is None or text < bound)
        assert inside == text.startswith(prefix), (prefix, text, bound)
    assert after_prefix("vm.export") == "vm.exporu"
    assert after_prefix("a\U0010ffff") == "b"
    assert after_prefix("\ud7ff") == "\ue000"  # never a surrogate, which UTF-8 cannot carry
    assert after_prefix("\U0010ffff") is None
    assert after_prefix("") is None
