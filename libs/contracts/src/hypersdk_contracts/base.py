"""Base class of every message model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


def holds_nul(value: Any) -> bool:
    """Whether text anywhere in ``value`` (keys and nested values too) contains U+0000."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(holds_nul(item) for item in value)
    return False


class Message(BaseModel):
    """A frozen message: unknown fields are refused, nothing mutates after parsing.

    Text with NUL characters is refused too: no store of the platform can hold U+0000
    (PostgreSQL refuses it), so such a message is invalid input wherever it comes from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        if holds_nul(data):
            raise ValueError("text may not contain NUL characters")
        return data
