"""Filtered audit entries: the query's filters, and ``GET /audit/export`` as JSON Lines or CSV.

``GET /audit/events`` and the ``jsonl`` and ``csv`` exports take the same filters
(docs/contracts.md, "Audit entries"). An export reads the entries a page at a time from audit
(``audit.rpc.list_events``, the only queue it asks), so an export of any size holds one page
in memory. Unlike the bundle, a filtered export cannot be verified on its own: each line still
carries the entry's sequence and hashes, to be checked against a bundle or a proof.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Literal

from fastapi.responses import StreamingResponse
from pydantic import Field

from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import (
    AuditEntryView,
    AuditTextFilters,
    ListAuditEventsRequest,
)
from hypersdk_gateway.adapters.inbound.audit_export import prepend
from hypersdk_gateway.ports.outbound import Backend

ExportFormat = Literal["bundle", "jsonl", "csv"]
JSON_LINES = "application/x-ndjson"
CSV = "text/csv; charset=utf-8; header=present"
FILENAMES = {
    "bundle": "audit-bundle.jsonl",
    "jsonl": "audit-entries.jsonl",
    "csv": "audit-entries.csv",
}
CSV_COLUMNS = tuple(AuditEntryView.model_fields)
"""The CSV header: the entry's fields as GET /audit/events names them, in the same order."""
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet reads a cell starting so as a formula (CSV injection): such a cell gets a '."""


class AuditFilters(AuditTextFilters):
    """The filters of ``GET /audit/events`` and ``GET /audit/export``; every one must hold.

    The text filters and their bounds are the contract's (``AuditTextFilters``); the times are
    read strictly here (``instant``); anything beyond them is a 422 ``validation_failed``.
    """

    since: str | None = Field(
        default=None,
        max_length=64,
        description="RFC 3339 date-time with a time zone: only entries at or after it "
        "(their timestamp, the producer's clock).",
        json_schema_extra={"format": "date-time"},
    )
    until: str | None = Field(
        default=None,
        max_length=64,
        description="RFC 3339 date-time with a time zone: only entries before it.",
        json_schema_extra={"format": "date-time"},
    )

    @property
    def given(self) -> bool:
        """Whether any filter is set."""
        return any(value is not None for value in self.model_dump().values())


async def entry_pages(
    backend: Backend, request: ListAuditEventsRequest
) -> AsyncIterator[list[dict[str, Any]]]:
    """Every page ``request`` leads to, in sequence order; the first one even if empty."""
    while True:
        page: list[dict[str, Any]] = await backend.ask(RpcQueue.AUDIT_LIST_EVENTS, request)
        yield page
        if len(page) < request.limit:
            return
        request = request.model_copy(update={"after_sequence": int(page[-1]["sequence"])})


def jsonl_lines(entries: Iterable[Mapping[str, Any]]) -> str:
    """One compact ASCII JSON object a line, each entry as GET /audit/events shows it."""
    return "".join(
        json.dumps(dict(entry), separators=(",", ":"), ensure_ascii=True) + "\n"
        for entry in entries
    )


def csv_cell(value: Any) -> str:
    """A field as CSV text: empty for null; a ' before what a spreadsheet would evaluate."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_rows(rows: Iterable[Iterable[Any]]) -> str:
    """RFC 4180 records: CRLF line ends, fields quoted where they must be, quotes doubled."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(
        [csv_cell(value) for value in row] for row in rows
    )
    return buffer.getvalue()


def csv_records(entries: Iterable[Mapping[str, Any]]) -> str:
    """The entries as CSV records, in the columns of :data:`CSV_COLUMNS`."""
    return csv_rows([entry.get(column) for column in CSV_COLUMNS] for entry in entries)


async def export_chunks(
    pages: AsyncIterator[list[dict[str, Any]]], export_format: Literal["jsonl", "csv"]
) -> AsyncIterator[bytes]:
    """The export's body, a page a chunk; the CSV header comes with the first."""
    first = True
    async for page in pages:
        if export_format == "jsonl":
            yield jsonl_lines(page).encode()
            continue
        head = csv_rows([CSV_COLUMNS]) if first else ""
        first = False
        yield (head + csv_records(page)).encode()


async def entries_export(
    backend: Backend, first: ListAuditEventsRequest, export_format: Literal["jsonl", "csv"]
) -> StreamingResponse:
    """The entries ``first`` selects, as a download streamed page by page.

    The first page is read before answering, so a refusal or an unavailable audit service is
    an ordinary error response.
    """
    chunks = export_chunks(entry_pages(backend, first), export_format)
    head = await anext(chunks)
    return StreamingResponse(
        prepend(head, chunks),
        media_type=JSON_LINES if export_format == "jsonl" else CSV,
        headers={"Content-Disposition": f'attachment; filename="{FILENAMES[export_format]}"'},
    )
