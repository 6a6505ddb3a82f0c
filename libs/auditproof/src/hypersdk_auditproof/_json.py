"""Strict JSON reading for data that may have been written by an adversary.

Python's json module keeps the last of duplicated keys and accepts NaN; a verifier must not, or
one line could say one thing to a human reading it and another to the check.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse JSON, refusing duplicate keys, NaN/Infinity and absurd nesting (ValueError)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as error:
        raise ValueError("the JSON is nested too deeply") from error


def dumps_line(value: Mapping[str, Any]) -> str:
    """One compact, ASCII-only JSON line ending in a newline: safe in any transport."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True) + "\n"


def expect_object(
    value: Any, what: str, required: Collection[str], optional: Collection[str] = ()
) -> Mapping[str, Any]:
    """``value`` as a JSON object with every ``required`` key and nothing outside ``optional``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is a JSON object")
    missing = [key for key in required if key not in value]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    unknown = sorted(set(value) - set(required) - set(optional))
    if unknown:
        raise ValueError(f"{what} has unknown keys: {', '.join(unknown)}")
    return value
