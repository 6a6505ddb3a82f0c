"""Base class of every message model."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""The integers every store of the platform can hold (PostgreSQL bigint)."""

_UNSTORABLE_TEXT = re.compile("[\x00\ud800-\udfff]")


def unstorable(value: Any) -> str | None:
    """What no store of the platform can hold, anywhere in ``value`` (keys and nested values).

    Text with U+0000 (PostgreSQL refuses it) or a lone surrogate (U+D800 to U+DFFF: not
    encodable as UTF-8, so neither storable nor sendable), an integer outside 64 bits, or a
    float that is not finite. None when ``value`` holds none of them.

    Every message is walked when it is built, so the walk handles the plain types of parsed
    JSON inline (one function call per container, not per value); anything else, subclasses
    included (a ``StrEnum``, say), goes through the general checks.
    """
    items: Iterable[Any]
    if isinstance(value, dict):
        items = itertools.chain.from_iterable(value.items())
    elif isinstance(value, list | tuple):
        items = value
    else:
        return _unstorable_scalar(value)
    return _unstorable_items(items)


def _unstorable_items(items: Iterable[Any]) -> str | None:
    for item in items:
        kind = type(item)
        if kind is str:
            if "\x00" in item or (not item.isascii() and _UNSTORABLE_TEXT.search(item)):
                return _BAD_TEXT
        elif kind is int:
            if not INT64_MIN <= item <= INT64_MAX:
                return _BAD_INTEGER
        elif kind is bool or item is None:
            continue
        elif kind is float:
            if not math.isfinite(item):
                return _BAD_NUMBER
        else:
            found = unstorable(item)
            if found:
                return found
    return None


_BAD_TEXT = "text may not contain NUL characters or lone surrogates"
_BAD_INTEGER = "integers must fit in 64 bits"
_BAD_NUMBER = "numbers must be finite"


def _unstorable_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        return _BAD_TEXT if _UNSTORABLE_TEXT.search(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64_MIN <= value <= INT64_MAX else _BAD_INTEGER
    if isinstance(value, float) and not math.isfinite(value):
        return _BAD_NUMBER
    return None


class Message(BaseModel):
    """A frozen message: unknown fields are refused, nothing mutates after parsing.

    What no store of the platform can hold is refused too, in every field of every message,
    wherever it comes from (see :func:`unstorable`): text with NUL characters or lone
    surrogates, integers beyond 64 bits, numbers that are not finite.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_unstorable(cls, data: Any) -> Any:
        found = unstorable(data)
        if found:
            raise ValueError(found)
        return data
