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
    """
    items: Iterable[Any]
    if isinstance(value, dict):
        items = itertools.chain.from_iterable(value.items())
    elif isinstance(value, list | tuple):
        items = value
    else:
        return _unstorable_scalar(value)
    for item in items:
        found = unstorable(item)
        if found:
            return found
    return None


def _unstorable_scalar(value: Any) -> str | None:
    if isinstance(value, str):
        found = _UNSTORABLE_TEXT.search(value)
        return "text may not contain NUL characters or lone surrogates" if found else None
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64_MIN <= value <= INT64_MAX else "integers must fit in 64 bits"
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite"
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
