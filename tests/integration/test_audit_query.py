"""Audit query and filtered export through the running platform, and in PostgreSQL itself.

Through the gateway: each filter selects exactly the entries it names (checked against the
whole log exported as JSON Lines), pages cover every match once, the CSV export parses back to
the same entries, and hostile filters get a 4xx with a stable code. In a database of its own:
the PostgreSQL adapter answers the unit tests' questions as the in-memory one does, an entry
longer than an index row can hold is chained and found, and on 200,000 entries no filtered
page reads more than a small part of the table (EXPLAIN ANALYZE of every statement).
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import asyncpg
import httpx
import pytest

from hypersdk_audit.adapters.inbound.bus import entry_filter
from hypersdk_audit.adapters.outbound.postgres import _COLUMNS, MIGRATIONS, SCHEMA, PostgresAuditLog
from hypersdk_audit.adapters.outbound.postgres_query import filtered_page
from hypersdk_audit.core.chain import ChainedEntry, EntryFields
from hypersdk_audit.core.query import EntryFilter, TextMatch
from hypersdk_audit.inject import create_audit_pool
from hypersdk_contracts.rpc import ListAuditEventsRequest
from hypersdk_gateway.adapters.inbound.audit_entries import CSV_COLUMNS, csv_cell
from hypersdk_kit.database import apply_migrations
from tests.unit.test_audit_query import CASES, STORY

from .conftest import ADMIN_PASSWORD, Stack

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/{database}"
FAILED = "failure"


# ---- through the platform ---------------------------------------------------------------------


def _get(stack: Stack, token: str, path: str, **query: Any) -> tuple[int, Any]:
    status, body, _ = stack.api.call("GET", f"{path}?{urlencode(query)}", token=token)
    return status, body


def _every_page(
    stack: Stack, token: str, limit: int = 1000, **filters: Any
) -> list[dict[str, Any]]:
    """Every entry a filter selects, page after page; each page starts after the last one."""
    found: list[dict[str, Any]] = []
    after = 0
    while True:
        status, page = _get(
            stack, token, "/api/v1/audit/events", after_sequence=after, limit=limit, **filters
        )
        assert status == 200, page
        found += page
        if len(page) < limit:
            return found
        after = page[-1]["sequence"]


def _export(stack: Stack, token: str, **query: Any) -> httpx.Response:
    response = httpx.get(
        f"{stack.config.gateway_url}/api/v1/audit/export?{urlencode(query)}",
        headers={"authorization": f"Bearer {token}"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    return response


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _selects(filters: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    """The contract's meaning of ``filters`` (docs/contracts.md), on an entry's JSON."""

    def text_match(value: str | None, wanted: str, *, prefix: bool) -> bool:
        return value is not None and (value.startswith(wanted) if prefix else value == wanted)

    def selected(entry: dict[str, Any]) -> bool:
        checks = {
            "since": lambda v: _instant(entry["timestamp"]) >= _instant(v),
            "until": lambda v: _instant(entry["timestamp"]) < _instant(v),
            "user": lambda v: entry["user"] == v,
            "subject": lambda v: entry["user"] == v or entry["resource"] == f"user/{v}",
            "action": lambda v: text_match(
                entry["action"], v.removesuffix("*"), prefix=v.endswith("*")
            ),
            "resource": lambda v: entry["resource"] == v,
            "result": lambda v: text_match(entry["result"], v, prefix=v == FAILED),
            "request_id": lambda v: entry["request_id"] == v,
            "source_ip": lambda v: entry["source_ip"] == v,
        }
        return all(checks[name](value) for name, value in filters.items())

    return selected


def _chained(stack: Stack, token: str, subject: str, wanted: int) -> list[dict[str, Any]]:
    """The subject's entries once at least ``wanted`` are chained (audit batches them)."""
    deadline = time.monotonic() + 30
    while True:
        found = _every_page(stack, token, subject=subject)
        if len(found) >= wanted or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_filters_select_exactly_their_entries_and_pages_cover_each_once(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    name = f"aq-{secrets.token_hex(3)}"
    password = f"query-{secrets.token_hex(8)}"
    address = f"198.51.100.{secrets.randbelow(200) + 20}"
    request_id = f"aq-request-{secrets.token_hex(6)}"
    began = datetime.now(UTC) - timedelta(seconds=1)
    status, body, _ = stack.api.call(
        "POST", "/api/v1/users", {"username": name, "password": password, "roles": ["viewer"]},
        token=admin,
    )  # fmt: skip
    assert status == 201, body
    forwarded = {"X-Forwarded-For": address}
    status, _, _ = stack.api.call(
        "POST", "/api/v1/auth/login", {"username": name, "password": "wrong-" + password},
        headers=forwarded,
    )  # fmt: skip
    assert status == 401
    status, body, _ = stack.api.call(
        "POST", "/api/v1/auth/login", {"username": name, "password": password}, headers=forwarded
    )
    assert status == 200, body
    token = str(body["token"])
    for _ in range(3):
        status, _, _ = stack.api.call(
            "GET", "/api/v1/vms", token=token, headers={**forwarded, "X-Request-ID": request_id}
        )
        assert status == 200
    status, _, _ = stack.api.call("GET", "/api/v1/audit/verify", token=token, headers=forwarded)
    assert status == 403
    # user created, roles assigned, a failed and a good login, a session, three calls, a
    # denial and its call, at the least.
    mine = _chained(stack, admin, name, 10)
    ended = datetime.now(UTC) + timedelta(seconds=1)
    head = max(entry["sequence"] for entry in mine)
    everything = [
        json.loads(line) for line in _export(stack, admin, format="jsonl").text.splitlines()
    ]
    assert [e["sequence"] for e in everything] == sorted({e["sequence"] for e in everything})
    everything = [entry for entry in everything if entry["sequence"] <= head]
    window = {"since": began.isoformat(), "until": ended.isoformat()}

    questions: list[dict[str, str]] = [
        {"user": name},
        {"subject": name},
        {"resource": f"user/{name}"},
        {"subject": name, "result": FAILED},
        {"user": name, "result": "failure: http_403"},
        {"subject": name, "action": "auth.login"},
        {"action": "auth.*", **window},
        {"request_id": request_id},
        {"source_ip": address},
        {"source_ip": address, "action": "api.call", "result": "success"},
        window,
        {"user": name, "since": began.isoformat()},
    ]
    for filters in questions:
        expected = [e for e in everything if _selects(filters)(e)]
        got = [e for e in _every_page(stack, admin, **filters) if e["sequence"] <= head]
        assert got == expected, filters
        assert expected, filters  # every question here has answers
    assert {e["action"] for e in _every_page(stack, admin, subject=name)} >= {
        "auth.login", "user.create", "api.call", "authz.decide",
    }  # fmt: skip
    anonymous = [e for e in _every_page(stack, admin, subject=name) if e["user"] is None]
    assert any(e["result"] == "failure: invalid_credentials" for e in anonymous)
    calls = _every_page(stack, admin, request_id=request_id)
    assert {e["user"] for e in calls} == {name}
    # Small pages: every match once, in order, whatever the page size.
    for limit in (1, 2, 7):
        paged = [e for e in _every_page(stack, admin, limit, subject=name) if e["sequence"] <= head]
        assert paged == [e for e in everything if _selects({"subject": name})(e)]


def test_the_csv_export_parses_back_to_the_same_entries(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    name = f"aq-csv-{secrets.token_hex(3)}"
    status, body, _ = stack.api.call(
        "POST", "/api/v1/users", {"username": name, "password": "csv-" + secrets.token_hex(8)},
        token=admin,
    )  # fmt: skip
    assert status == 201, body
    mine = _chained(stack, admin, name, 1)
    head = max(entry["sequence"] for entry in mine)

    as_csv = _export(stack, admin, format="csv", subject=name, since="2000-01-01T00:00:00Z")
    as_jsonl = _export(stack, admin, format="jsonl", subject=name, since="2000-01-01T00:00:00Z")

    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert as_csv.headers["content-disposition"] == 'attachment; filename="audit-entries.csv"'
    assert as_jsonl.headers["content-type"].startswith("application/x-ndjson")
    assert as_csv.content.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(as_csv.content.decode("utf-8"), newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    entries = [json.loads(line) for line in as_jsonl.text.splitlines()]
    rows = [row for row in rows[1:] if int(row[0]) <= head]
    entries = [entry for entry in entries if entry["sequence"] <= head]
    assert rows == [[csv_cell(entry[column]) for column in CSV_COLUMNS] for entry in entries]
    assert entries == [e for e in _every_page(stack, admin, subject=name) if e["sequence"] <= head]
    assert {e["action"] for e in entries} >= {"user.create"}


HOSTILE_QUERIES: list[tuple[str, dict[str, Any]]] = [
    ("/api/v1/audit/events", {"user": "x" * 10_000}),
    ("/api/v1/audit/events", {"resource": "r" * 5000}),
    ("/api/v1/audit/events", {"subject": "s" * 129}),
    ("/api/v1/audit/events", {"action": "vm.export'; DROP TABLE audit.entries; --"}),
    ("/api/v1/audit/events", {"action": "%"}),
    ("/api/v1/audit/events", {"since": "not-a-date"}),
    ("/api/v1/audit/events", {"since": "2026-01-01T00:00:00"}),
    ("/api/v1/audit/events", {"until": "2026-02-30T00:00:00Z"}),
    ("/api/v1/audit/events", {"until": "1700000000"}),
    ("/api/v1/audit/events", {"user": "nul\x00byte"}),
    ("/api/v1/audit/events", {"limit": 0}),
    ("/api/v1/audit/events", {"limit": 10**9}),
    ("/api/v1/audit/events", {"after_sequence": 2**63}),
    ("/api/v1/audit/events", {"after_sequence": -5}),
    ("/api/v1/audit/export", {"format": "csv", "user": "x" * 10_000}),
    ("/api/v1/audit/export", {"format": "jsonl", "since": "yesterday"}),
    ("/api/v1/audit/export", {"format": "bundle", "user": "admin"}),
    ("/api/v1/audit/export", {"user": "admin"}),
    ("/api/v1/audit/export", {"format": "xlsx"}),
]


@pytest.mark.parametrize(("path", "query"), HOSTILE_QUERIES, ids=lambda v: repr(v)[:60])
def test_a_hostile_filter_gets_422_with_a_stable_code(
    stack: Stack, path: str, query: dict[str, Any]
) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, body = _get(stack, admin, path, **query)
    assert status == 422, body
    assert body["error"]["code"] == "validation_failed"
    assert "x" * 100 not in body["error"]["message"]  # never the value back


def test_sql_in_a_filter_is_only_a_value(stack: Stack) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    for filters in (
        {"user": "admin' OR '1'='1"},
        {"resource": "%' OR 1=1; --"},
        {"result": "failure' UNION SELECT 1 --"},
        {"request_id": "x\\'); DROP TABLE audit.entries; --"},
        {"action": "vm_export*"},  # _ is no wildcard either
        {"subject": "%"},
    ):
        status, body = _get(stack, admin, "/api/v1/audit/events", **filters)
        assert (status, body) == (200, []), filters
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert status == 200
    assert verdict["valid"], verdict


# ---- in a database of its own ----------------------------------------------------------------


@pytest.fixture
async def database() -> AsyncIterator[str]:
    name = f"audit_query_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = ADMIN_DSN.format(database=name)
        await apply_migrations(dsn, schema=SCHEMA, migrations=MIGRATIONS)
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_postgres_answers_as_the_in_memory_log_does(database: str) -> None:
    pool = await create_audit_pool(database, size=2)
    try:
        log = PostgresAuditLog(pool)
        await log.append_batch(STORY)
        for filters, expected in CASES:
            where = entry_filter(ListAuditEventsRequest(**filters))
            page = await log.page(after_sequence=0, limit=100, where=where)
            assert [entry.sequence for entry in page] == expected, filters
            paged: list[int] = []
            after = 0
            while page := await log.page(after_sequence=after, limit=2, where=where):
                paged += [entry.sequence for entry in page]
                after = page[-1].sequence
            assert paged == expected, filters
    finally:
        await pool.close()


async def test_a_value_longer_than_an_index_row_is_chained_and_found(database: str) -> None:
    pool = await create_audit_pool(database, size=2)
    try:
        log = PostgresAuditLog(pool)
        long = "secret/" + "s" * 9000  # far beyond a btree row (2704 bytes)
        same_start = long[:-1] + "t"
        now = datetime.now(UTC)
        await log.append_batch(
            [
                EntryFields(
                    event_id=f"long-{n}", timestamp=now, user="u" * 3000, action="secret.write",
                    resource=resource, result="success", source_ip=None, request_id=None,
                )
                for n, resource in enumerate((long, same_start, long))
            ]
        )  # fmt: skip
        found = await log.page(after_sequence=0, limit=10, where=EntryFilter(resource=long))
        assert [entry.sequence for entry in found] == [1, 3]
        user = await log.page(after_sequence=0, limit=10, where=EntryFilter(user="u" * 3000))
        assert len(user) == 3
        prefix = EntryFilter(action=TextMatch("secret.", prefix=True), resource=same_start)
        assert [e.sequence for e in await log.page(after_sequence=0, limit=9, where=prefix)] == [2]
    finally:
        await pool.close()


# 200,000 entries, one every 10 s from START: users mostly spread evenly, one only at the end
# (late), one at the start and the end only (rare); resources per job; results 1 in 40 failed.
START = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 200_000
FILL = """
INSERT INTO audit.entries (sequence, event_id, "timestamp", "user", action, resource, result,
                           source_ip, request_id, prev_hash, hash, producer, received_at)
SELECT g, 'fill-' || g, $1::timestamptz + g * interval '10 seconds',
  CASE WHEN g > 199000 AND g % 5 = 0 THEN 'late'
       WHEN g IN (7, 199993) THEN 'rare'
       WHEN g % 10 = 0 THEN NULL WHEN g % 3 = 0 THEN 'admin' ELSE 'user' || (g % 50) END,
  CASE WHEN g IN (11, 150011) THEN 'secret.destroy_version'
       ELSE (ARRAY['api.call', 'api.call', 'api.call', 'api.call', 'auth.login',
                   'session.create', 'vm.export', 'vm.export.start', 'vm.export.progress',
                   'vm.export.complete', 'user.create', 'role.assign'])[1 + g % 12] END,
  CASE WHEN g % 12 < 4 THEN 'GET /api/v1/vms' WHEN g % 12 = 4 THEN 'user/user' || (g % 50)
       ELSE 'job/' || (g / 7) END,
  CASE WHEN g % 40 = 0 THEN 'failure: http_403' WHEN g IN (5, 160005) THEN 'failure: locked'
       ELSE 'success' END,
  '10.0.' || (g % 7) || '.' || (g % 13),
  'req-' || (g / 3),
  repeat('0', 64), repeat('0', 64), 'gateway', $1::timestamptz + g * interval '10 seconds'
FROM generate_series(1, $2::bigint) g
"""
SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "CTE Scan"}
MOST_READ = ROWS // 20  # a page may read at most 5 % of the table


def _rows_read(plan: dict[str, Any]) -> int:
    """Rows the scans of a plan read: those they returned and those their filters removed."""
    read = 0
    if plan["Node Type"] in SCANS and plan["Node Type"] != "CTE Scan":
        loops = int(plan.get("Actual Loops", 1))
        read += loops * int(
            plan["Actual Rows"]
            + plan.get("Rows Removed by Filter", 0)
            + plan.get("Rows Removed by Index Recheck", 0)
        )
        assert plan["Node Type"] != "Seq Scan", plan
    for child in plan.get("Plans", []):
        read += _rows_read(child)
    return read


class Explained:
    """A connection that runs each query under EXPLAIN ANALYZE first and keeps the rows read."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self.reads: list[tuple[int, str]] = []

    def transaction(self, **options: Any) -> Any:
        return self._conn.transaction(**options)

    async def execute(self, query: str, *args: Any) -> Any:
        return await self._conn.execute(query, *args)

    async def _explain(self, query: str, args: tuple[Any, ...]) -> None:
        plan = json.loads(
            await self._conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {query}", *args)
        )[0]["Plan"]
        self.reads.append((_rows_read(plan), query))

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        await self._explain(query, args)
        return list(await self._conn.fetch(query, *args))

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        await self._explain(query, args)
        return await self._conn.fetchrow(query, *args)


BOUNDED: list[EntryFilter] = [
    EntryFilter(user="user7"),
    EntryFilter(user="late"),
    EntryFilter(user="rare"),
    EntryFilter(user="nobody"),
    EntryFilter(subject="user7"),
    EntryFilter(subject="late"),
    EntryFilter(action=TextMatch("secret.destroy_version")),
    EntryFilter(action=TextMatch("vm.export", prefix=True)),
    EntryFilter(action=TextMatch("role.assign")),
    EntryFilter(resource="job/100"),
    EntryFilter(resource="user/user7"),
    EntryFilter(request_id="req-500"),
    EntryFilter(source_ip="10.0.3.5"),
    EntryFilter(result=TextMatch("failure: locked")),
    EntryFilter(result=TextMatch(FAILED, prefix=True)),
    EntryFilter(since=START + timedelta(seconds=10 * 195_000)),
    EntryFilter(until=START + timedelta(seconds=10 * 5_000)),
    EntryFilter(since=START + timedelta(days=10), until=START + timedelta(days=10, hours=6)),
    EntryFilter(since=START + timedelta(days=20), user="user7"),
    EntryFilter(since=START + timedelta(days=20), action=TextMatch("secret.destroy_version")),
]


@pytest.fixture(scope="module")
async def filled() -> AsyncIterator[tuple[str, list[ChainedEntry]]]:
    """A database of its own holding the 200,000 entries, and all of them as read back."""
    name = f"audit_query_big_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN.format(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = ADMIN_DSN.format(database=name)
        await apply_migrations(dsn, schema=SCHEMA, migrations=MIGRATIONS)
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(FILL, START, ROWS)
            await conn.execute("VACUUM ANALYZE audit.entries")
            rows = await conn.fetch(f"SELECT {_COLUMNS} FROM audit.entries ORDER BY sequence")
        finally:
            await conn.close()
        yield dsn, [ChainedEntry(**dict(row)) for row in rows]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize("where", BOUNDED, ids=lambda w: repr(w).replace("EntryFilter", ""))
async def test_no_filtered_page_reads_more_than_a_small_part_of_the_table(
    filled: tuple[str, list[ChainedEntry]], where: EntryFilter
) -> None:
    dsn, everything = filled
    matches = [entry.sequence for entry in everything if where.matches(entry)]
    # The first page, one in the middle, the last ones (where a walk would read on to the head).
    cursors = sorted({0, *matches[len(matches) // 2 : len(matches) // 2 + 1], *matches[-2:]})
    conn = await asyncpg.connect(dsn)
    try:
        explained = Explained(conn)
        for after in cursors:
            rows = await filtered_page(
                explained,  # type: ignore[arg-type]
                _COLUMNS,
                where,
                after_sequence=after,
                limit=100,
            )
            expected = [sequence for sequence in matches if sequence > after][:100]
            assert [row["sequence"] for row in rows] == expected, after
        worst, query = max(explained.reads)
        assert worst <= MOST_READ, (worst, query)
    finally:
        await conn.close()
