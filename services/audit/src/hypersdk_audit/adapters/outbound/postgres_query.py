"""A filtered page of ``audit.entries``: every value a parameter, every filter through its index.

Entries come in sequence order, the first ``limit`` after the cursor that pass every filter.
Ordering by sequence lets PostgreSQL stop at ``limit``, but its planner then walks the chain
from the cursor whenever it expects matches to be spread evenly along it, which they are not
when they gather somewhere (one user's entries, a day's). So the page is bounded:

- an exact filter (user, subject, resource, action, result, request ID, source address) also
  bounds the sequences walked by the first and last entry of its value after the cursor, two
  descents of its index (the query indexes of MIGRATIONS): a page never walks beyond the span
  of that value's entries;
- a time range alone is looked up in the timestamp index first (its earliest and latest entry
  by timestamp, and the head); when the entries it spans are fewer than the walk from the
  cursor to it would read, its matches are collected through that index instead of walked.

Both ways read the same entries; only the cost differs. Pages run in one read-only snapshot
with plans made for the values asked (a plan made for any value would guess at them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from hypersdk_audit.core.query import EntryFilter

KEY_CHARS = 256
"""How much of a text column its index holds (MIGRATIONS); longer values are compared whole."""
_HIGHEST = chr(0x10FFFF)
_SURROGATES = range(0xD800, 0xE000)


class _Params:
    """The positional parameters of one statement: each value is sent as one, never as text."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def after_prefix(prefix: str) -> str | None:
    """The least text above every text starting with ``prefix``, in code point order.

    Code point order is UTF-8's byte order, the order of ``text_pattern_ops``; None if there
    is none (``prefix`` is empty or only U+10FFFF).
    """
    stripped = prefix.rstrip(_HIGHEST)
    if not stripped:
        return None
    following = ord(stripped[-1]) + 1
    if following in _SURROGATES:
        following = _SURROGATES.stop
    return stripped[:-1] + chr(following)


def _key(column: str) -> str:
    return f'left("{column}", {KEY_CHARS})'


def _equals(column: str, value: str, params: _Params) -> str:
    """``column = value``, found through the column's index on its first characters."""
    ref = params(value)
    return f'({_key(column)} = left({ref}, {KEY_CHARS}) AND "{column}" = {ref})'


def _starts(column: str, prefix: str, params: _Params) -> str:
    """``column`` starts with ``prefix``: a range of the column's index, then exactly."""
    ref = params(prefix)
    following = after_prefix(prefix[:KEY_CHARS])
    if following is None:
        return f'starts_with("{column}", {ref})'
    low, high = params(prefix[:KEY_CHARS]), params(following)
    return (
        f"({_key(column)} ~>=~ {low} AND {_key(column)} ~<~ {high}"
        f' AND starts_with("{column}", {ref}))'
    )


def _exact(where: EntryFilter, params: _Params) -> list[list[str]]:
    """The exact filters, each as the alternatives one of which an entry must meet."""
    found: list[list[str]] = []
    for column in ("user", "resource", "request_id", "source_ip"):
        value = getattr(where, column)
        if value is not None:
            found.append([_equals(column, value, params)])
    if where.subject is not None and where.subject_resource is not None:
        found.append(
            [
                _equals("user", where.subject, params),
                _equals("resource", where.subject_resource, params),
            ]
        )
    for column, match in (("action", where.action), ("result", where.result)):
        if match is not None and not match.prefix:
            found.append([_equals(column, match.value, params)])
    return found


def _time(where: EntryFilter, params: _Params) -> list[str]:
    found: list[str] = []
    if where.since is not None:
        found.append(f'"timestamp" >= {params(where.since)}')
    if where.until is not None:
        found.append(f'"timestamp" < {params(where.until)}')
    return found


def _span(alternatives: Sequence[str], after: str) -> list[str]:
    """Sequences between the first match after the cursor and the last (NULL: none)."""
    first = ", ".join(
        f"(SELECT min(sequence) FROM audit.entries WHERE {alternative} AND sequence > {after})"  # noqa: S608 - parameter references only
        for alternative in alternatives
    )
    last = ", ".join(
        f"(SELECT max(sequence) FROM audit.entries WHERE {alternative})"  # noqa: S608 - as above
        for alternative in alternatives
    )
    return [f"sequence >= LEAST({first})", f"sequence <= GREATEST({last})"]


async def filtered_page(
    conn: asyncpg.Connection,
    columns: str,
    where: EntryFilter,
    *,
    after_sequence: int,
    limit: int,
) -> list[asyncpg.Record]:
    """The ``columns`` of one page of the entries after ``after_sequence`` that pass ``where``."""
    params = _Params()
    after = params(after_sequence)
    conditions = [f"sequence > {after}", *_time(where, params)]
    exact = _exact(where, params)
    for alternatives in exact:
        conditions += [f"({' OR '.join(alternatives)})", *_span(alternatives, after)]
    for column, match in (("action", where.action), ("result", where.result)):
        if match is not None and match.prefix:
            conditions.append(_starts(column, match.value, params))
    clause = " AND ".join(conditions)
    most = params(limit)
    # Column names and parameter references only: every value is a parameter.
    walk = f"SELECT {columns} FROM audit.entries WHERE {clause} ORDER BY sequence LIMIT {most}"  # noqa: S608
    # Every match of the range, whatever the cursor (which would draw the planner to walk).
    collect = (
        "WITH found AS MATERIALIZED (SELECT sequence FROM audit.entries"  # noqa: S608
        f" WHERE {' AND '.join(conditions[1:])})"
        f" SELECT {columns} FROM audit.entries WHERE sequence IN (SELECT sequence FROM found"
        f" WHERE sequence > {after} ORDER BY sequence LIMIT {most}) ORDER BY sequence"
    )
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
        if exact or (where.since is None and where.until is None):
            return list(await conn.fetch(walk, *params.values))
        through_index = await _through_time_index(conn, where, after_sequence, limit)
        if through_index is None:
            return []
        return list(await conn.fetch(collect if through_index else walk, *params.values))


async def _through_time_index(
    conn: asyncpg.Connection, where: EntryFilter, after_sequence: int, limit: int
) -> bool | None:
    """Whether a page of this time range is cheaper collected through the timestamp index.

    Three index descents: the range's earliest and latest entry by timestamp, and the head.
    None when no entry's timestamp is in the range (no page has any).
    """
    params = _Params()
    time = " AND ".join(_time(where, params))
    probe = await conn.fetchrow(
        f"SELECT (SELECT sequence FROM audit.entries WHERE {time}"  # noqa: S608 - references only
        ' ORDER BY "timestamp", sequence LIMIT 1) AS first,'
        f" (SELECT sequence FROM audit.entries WHERE {time}"
        ' ORDER BY "timestamp" DESC, sequence DESC LIMIT 1) AS last,'
        " (SELECT max(sequence) FROM audit.entries) AS head",
        *params.values,
    )
    if probe is None or probe["first"] is None:
        return None
    first, last, head = int(probe["first"]), int(probe["last"]), int(probe["head"])
    walked = max(0, first - after_sequence)
    if last - after_sequence < limit:  # short of a page before the range ends: on to the head
        walked += head - after_sequence
    spanned = abs(last - first) + 1
    return spanned < walked
