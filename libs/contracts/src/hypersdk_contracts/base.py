"""Base class of every message model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A frozen message: unknown fields are refused, nothing mutates after parsing."""

    model_config = ConfigDict(frozen=True, extra="forbid")
