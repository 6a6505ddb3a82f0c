"""hyperctl's audit query and filtered export: the filters go to the API as they were typed."""

from __future__ import annotations

import json

from hypersdk_cli.adapters.outbound.http import HttpxPlatformApi
from hypersdk_cli.ports.outbound import ApiReply

from .hyperctl_fake import BUNDLE, envelope
from .test_hyperctl_commands import World

CSV = "sequence,event_id\r\n1,e-1\r\n"
FILTERS = [
    "--since", "2026-01-01T00:00:00Z", "--until", "2026-02-01T00:00:00+01:00",
    "--user", "alice", "--subject", "alice", "--action", "vm.export*",
    "--resource", "user/alice", "--result", "failure", "--request-id", "req-1",
    "--source-ip", "192.0.2.1",
]  # fmt: skip
SENT = {
    "since": "2026-01-01T00:00:00Z",
    "until": "2026-02-01T00:00:00+01:00",
    "user": "alice",
    "subject": "alice",
    "action": "vm.export*",
    "resource": "user/alice",
    "result": "failure",
    "request_id": "req-1",
    "source_ip": "192.0.2.1",
}


def test_audit_events_sends_every_filter_with_the_cursor() -> None:
    world = World()
    entry = {"sequence": 4, "timestamp": "2026-01-02T00:00:00Z", "user": "alice"}
    world.api.overrides[("GET", "/audit/events")] = ApiReply(200, [entry])

    result = world.run(
        "audit", "events", *FILTERS, "--after-sequence", "3", "--limit", "7", "-o", "json"
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [entry]
    assert world.api.calls[-1].params == {**SENT, "after_sequence": 3, "limit": 7}


def test_audit_events_without_filters_sends_only_the_page() -> None:
    world = World()
    world.api.overrides[("GET", "/audit/events")] = ApiReply(200, [])

    assert world.run("audit", "events").exit_code == 0
    assert world.api.calls[-1].params == {"after_sequence": 0, "limit": 100}


def test_audit_export_as_csv_writes_what_the_platform_sent() -> None:
    world = World()
    world.api.overrides[("GET", "/audit/export")] = ApiReply(
        200, CSV, {"content-type": "text/csv; charset=utf-8; header=present"}
    )

    result = world.run("audit", "export", "--format", "csv", *FILTERS, "--after-sequence", "9")

    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == CSV.encode()  # CRLF kept (result.stdout makes them LF)
    assert world.api.calls[-1].params == {**SENT, "format": "csv", "after_sequence": 9}


def test_audit_export_by_default_is_the_bundle_without_parameters() -> None:
    world = World()
    result = world.run("audit", "export")
    assert result.stdout == BUNDLE
    assert world.api.calls[-1].params == {}


def test_a_refused_filter_exits_2_with_the_platforms_line() -> None:
    world = World()
    world.api.overrides[("GET", "/audit/export")] = envelope(
        422, "validation_failed", "A bundle is the whole log: filter with format=jsonl."
    )
    result = world.run("audit", "export", "--user", "alice")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: validation_failed: A bundle is the whole log")
    assert world.run("audit", "export", "--format", "xlsx").exit_code == 2


def test_csv_and_json_lines_answers_are_passed_on_as_text() -> None:
    api = HttpxPlatformApi(server="http://platform.test")
    try:
        csv_text = api._parse(200, CSV.encode(), {"content-type": "text/csv; charset=utf-8"})
        lines = api._parse(200, b'{"a":1}\n', {"Content-Type": "application/x-ndjson"})
        error = api._parse(422, b'{"error": {}}', {"content-type": "application/json"})
    finally:
        api.close()
    assert csv_text == CSV
    assert lines == '{"a":1}\n'
    assert error == {"error": {}}
