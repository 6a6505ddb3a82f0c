"""The gateway's audit query and filtered export: filters parsed and bounded, JSONL and CSV.

Audit answers from an in-memory log through the same filter mapping its bus adapter uses; the
chain, authentication and authorization are the real ones (tests/unit/test_gateway_chain.py).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hypersdk_audit.adapters.inbound.bus import entry_filter
from hypersdk_audit.adapters.outbound.memory import InMemoryAuditLog
from hypersdk_audit.core.chain import EntryFields
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import AuditEntryView, ListAuditEventsRequest
from hypersdk_gateway.adapters.inbound.audit_entries import (
    CSV_COLUMNS,
    csv_cell,
    csv_records,
    jsonl_lines,
)
from hypersdk_gateway.adapters.inbound.operations import ROUTE_OPERATIONS
from tests.unit.test_gateway_chain import Gateway, GatewayFactory, assert_envelope, bearer

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOSTILE = [
    '=HYPERLINK("http://evil.example","click")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(1,2)",
    "\tTAB",
    "\rCR",
    'quote " and, comma',
    "line\nbreak",
    "crlf\r\nbreak",
    "zażółć 😀",
]


def _fields(n: int, **fields: Any) -> EntryFields:
    values: dict[str, Any] = {
        "event_id": f"e-{n}",
        "timestamp": START + timedelta(seconds=n),
        "user": "alice" if n % 2 else "bob",
        "action": "vm.export" if n % 3 == 0 else "api.call",
        "resource": f"job/{n}",
        "result": "success" if n % 5 else "failure: http_403",
        "source_ip": "192.0.2.1",
        "request_id": f"req-{n}",
    }
    values.update(fields)
    return EntryFields(**values)


async def _with_audit(gateway: Gateway, entries: list[EntryFields]) -> InMemoryAuditLog:
    """Answer audit.rpc.list_events from an in-memory log holding ``entries``."""
    log = InMemoryAuditLog()
    await log.append_batch(entries)

    async def list_events(request: ListAuditEventsRequest) -> list[AuditEntryView]:
        page = await log.page(
            after_sequence=request.after_sequence,
            limit=request.limit,
            where=entry_filter(request),
        )
        return [AuditEntryView(**dataclasses.asdict(entry)) for entry in page]

    gateway.backend._routes[RpcQueue.AUDIT_LIST_EVENTS] = (ListAuditEventsRequest, list_events)
    return log


async def _admin(gateway: Gateway) -> dict[str, str]:
    return bearer(await gateway.login("root"))


def _asked(gateway: Gateway) -> list[ListAuditEventsRequest]:
    return [
        request
        for queue, request in gateway.backend.requests
        if queue == RpcQueue.AUDIT_LIST_EVENTS and isinstance(request, ListAuditEventsRequest)
    ]


# ---- GET /audit/events ------------------------------------------------------------------------


async def test_the_filters_reach_audit_and_narrow_the_page(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(n) for n in range(1, 31)])
    query = (
        "user=alice&action=vm.export*&result=success&since=2026-03-01T12:00:03Z"
        "&until=2026-03-01T13:00:21%2B01:00&limit=2"
    )

    response = await gateway.client.get(
        f"/api/v1/audit/events?{query}", headers=await _admin(gateway)
    )

    assert response.status_code == 200, response.text
    assert [entry["sequence"] for entry in response.json()] == [3, 9]
    asked = _asked(gateway)[-1]
    assert (asked.user, asked.action, asked.result, asked.limit) == (
        "alice", "vm.export*", "success", 2
    )  # fmt: skip
    assert asked.since == START + timedelta(seconds=3)
    assert asked.until == START + timedelta(seconds=21)
    assert asked.subject is None


async def test_the_next_page_starts_after_the_last_sequence_seen(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(n) for n in range(1, 31)])
    headers = await _admin(gateway)
    seen: list[int] = []
    after = 0
    while True:
        response = await gateway.client.get(
            f"/api/v1/audit/events?subject=alice&limit=4&after_sequence={after}", headers=headers
        )
        assert response.status_code == 200, response.text
        page = response.json()
        seen += [entry["sequence"] for entry in page]
        if len(page) < 4:
            break
        after = page[-1]["sequence"]

    assert seen == list(range(1, 31, 2))


@pytest.mark.parametrize(
    "query",
    [
        "since=yesterday",
        "since=2026-03-01T12:00:00",  # no time zone
        "since=2026-03-01",
        "until=1700000000",
        "since=2026-13-01T00:00:00Z",
        "until=" + "9" * 65,
        "user=",
        "user=" + "u" * 129,
        "subject=" + "s" * 129,
        "resource=" + "r" * 513,
        "result=" + "x" * 257,
        "request_id=" + "q" * 129,
        "source_ip=" + "1" * 65,
        "action=vm%20export",
        "action=*",
        "action=vm.export**",
        "action=%27%3B%20DROP%20TABLE%20audit.entries%3B%20--",
        "user=al%00ice",
        "limit=0",
        "limit=1000000000",
        "after_sequence=-1",
        "after_sequence=9223372036854775808",
    ],
)
async def test_a_filter_outside_its_bounds_gets_422_and_never_reaches_audit(
    make_gateway: GatewayFactory, query: str
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(1)])
    headers = await _admin(gateway)

    paths = ["/api/v1/audit/events"]
    if not query.startswith("limit="):  # an export has no limit: all the entries selected
        paths.append("/api/v1/audit/export")
    for path in paths:
        format_ = "" if path.endswith("events") else "&format=csv"
        response = await gateway.client.get(f"{path}?{query}{format_}", headers=headers)
        assert_envelope(response, 422, "validation_failed")
        assert "u" * 129 not in response.text  # the value is never echoed
    assert _asked(gateway) == []


async def test_sql_in_a_filter_is_a_value_that_matches_nothing(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(n) for n in range(1, 5)])

    response = await gateway.client.get(
        "/api/v1/audit/events",
        params={"user": "alice' OR '1'='1", "resource": "job/1%' --"},
        headers=await _admin(gateway),
    )

    assert response.status_code == 200, response.text
    assert response.json() == []
    assert _asked(gateway)[-1].user == "alice' OR '1'='1"


async def test_the_audit_routes_are_refused_without_audit_view(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(1)])
    viewer = bearer(await gateway.login("alice"))

    for path in ("/api/v1/audit/events?user=alice", "/api/v1/audit/export?format=csv"):
        assert_envelope(await gateway.client.get(path, headers=viewer), 403, "forbidden")
    assert _asked(gateway) == []


# ---- GET /audit/export?format=jsonl|csv -------------------------------------------------------


async def test_a_csv_export_parses_back_to_the_entries_with_formulas_defused(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    entries = [
        _fields(n, user="mallory", resource=text, result=f"failure: {text}")
        for n, text in enumerate(HOSTILE, start=1)
    ]
    await _with_audit(gateway, [*entries, _fields(99, user="alice")])
    headers = await _admin(gateway)

    response = await gateway.client.get(
        "/api/v1/audit/export?format=csv&user=mallory", headers=headers
    )
    listed = await gateway.client.get("/api/v1/audit/events?user=mallory", headers=headers)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert response.headers["content-disposition"] == 'attachment; filename="audit-entries.csv"'
    raw = response.content
    assert raw.startswith(b"sequence,event_id,timestamp,user,action,resource,result,")
    assert raw.split(b"\r\n", 1)[0].decode() == ",".join(CSV_COLUMNS)
    assert raw.endswith(b"\r\n")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    expected = [[csv_cell(entry[column]) for column in CSV_COLUMNS] for entry in listed.json()]
    assert rows[1:] == expected
    assert len(rows) == 1 + len(HOSTILE)
    by_resource = {row[CSV_COLUMNS.index("resource")] for row in rows[1:]}
    assert '\'=HYPERLINK("http://evil.example","click")' in by_resource
    assert {"'+cmd|' /C calc'!A0", "'-2+3", "'@SUM(1,2)", "'\tTAB", "'\rCR"} <= by_resource
    assert {'quote " and, comma', "line\nbreak", "crlf\r\nbreak", "zażółć 😀"} <= by_resource
    for row in rows[1:]:  # no cell starts with what a spreadsheet evaluates
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


def test_csv_cells_are_quoted_only_where_rfc_4180_needs_it() -> None:
    entry = {column: None for column in CSV_COLUMNS}
    entry.update(
        sequence=7,
        action="api.call",
        resource='say "hi", twice',
        result="success",
        user="=1+1",
        hash="a" * 64,
    )

    line = csv_records([entry])

    assert line.endswith("\r\n")
    assert line.count("\r\n") == 1
    assert '"say ""hi"", twice"' in line
    assert ",'=1+1," in line
    assert line.startswith("7,,,'=1+1,api.call,")
    assert csv_cell(None) == ""
    assert csv_cell(0) == "0"
    assert csv_cell("safe = here") == "safe = here"


def test_json_lines_are_compact_ascii_one_entry_a_line() -> None:
    lines = jsonl_lines([{"resource": "zażółć\n\u2028", "sequence": 1}, {"sequence": 2}])

    assert lines == (
        '{"resource":"za\\u017c\\u00f3\\u0142\\u0107\\n\\u2028","sequence":1}\n{"sequence":2}\n'
    )
    assert lines.isascii()
    assert [json.loads(line)["sequence"] for line in lines.splitlines()] == [1, 2]


async def test_a_jsonl_export_is_the_queried_entries_page_by_page(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(n) for n in range(1, 2601)])
    headers = await _admin(gateway)

    response = await gateway.client.get(
        "/api/v1/audit/export?format=jsonl&result=failure&after_sequence=10", headers=headers
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert response.headers["content-disposition"] == 'attachment; filename="audit-entries.jsonl"'
    lines = response.text.split("\n")
    assert lines[-1] == ""
    entries = [json.loads(line) for line in lines[:-1]]
    assert [entry["sequence"] for entry in entries] == list(range(15, 2601, 5))
    assert all(entry["result"] == "failure: http_403" for entry in entries)
    assert set(entries[0]) == set(CSV_COLUMNS)
    # Streamed a page at a time, never the bundle's questions.
    asked = _asked(gateway)
    assert [request.limit for request in asked] == [1000]
    audit_queues = {queue for queue, _ in gateway.backend.requests if queue.startswith("audit.")}
    assert audit_queues == {RpcQueue.AUDIT_LIST_EVENTS}


async def test_an_export_of_many_pages_holds_every_entry_once(
    make_gateway: GatewayFactory,
) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(n) for n in range(1, 2501)])

    response = await gateway.client.get(
        "/api/v1/audit/export?format=csv&action=api.call", headers=await _admin(gateway)
    )

    rows = list(csv.reader(io.StringIO(response.text, newline="")))[1:]
    expected = [n for n in range(1, 2501) if n % 3]
    assert [int(row[0]) for row in rows] == expected
    assert len(rows) == len(expected) > 1000
    assert [request.after_sequence for request in _asked(gateway)] == [0, expected[999]]


async def test_an_empty_export_is_a_header_or_nothing(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(1)])
    headers = await _admin(gateway)

    csv_answer = await gateway.client.get(
        "/api/v1/audit/export?format=csv&user=nobody", headers=headers
    )
    jsonl_answer = await gateway.client.get(
        "/api/v1/audit/export?format=jsonl&user=nobody", headers=headers
    )

    assert csv_answer.status_code == jsonl_answer.status_code == 200
    assert csv_answer.text == ",".join(CSV_COLUMNS) + "\r\n"
    assert jsonl_answer.text == ""


@pytest.mark.parametrize(
    "query",
    [
        "user=alice",
        "format=bundle&action=vm.export",
        "format=bundle&after_sequence=3",
        "since=2026-01-01T00:00:00Z",
    ],
)
async def test_a_bundle_takes_no_filter(make_gateway: GatewayFactory, query: str) -> None:
    gateway = await make_gateway()
    await _with_audit(gateway, [_fields(1)])

    response = await gateway.client.get(
        f"/api/v1/audit/export?{query}", headers=await _admin(gateway)
    )

    error = assert_envelope(response, 422, "validation_failed")
    assert "format=jsonl" in error["message"]
    assert not any(queue.startswith("audit.") for queue, _ in gateway.backend.requests)


async def test_an_unknown_format_gets_422(make_gateway: GatewayFactory) -> None:
    gateway = await make_gateway()
    response = await gateway.client.get(
        "/api/v1/audit/export?format=xlsx", headers=await _admin(gateway)
    )
    assert_envelope(response, 422, "validation_failed")


def test_the_exports_grant_covers_the_entries_it_reads() -> None:
    assert "audit.rpc.list_events" in ROUTE_OPERATIONS["GET /api/v1/audit/export"]
    assert ROUTE_OPERATIONS["GET /api/v1/audit/events"] == ["audit.rpc.list_events"]
