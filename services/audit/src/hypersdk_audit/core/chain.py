"""The hash chain: canonical form of an entry, its hash, and verification.

Each entry's hash is SHA-256 over the RFC 8785 (JCS) canonical JSON of its fields, which
include its sequence number and the previous entry's hash. Anyone holding the entries can
recompute the chain; a changed, removed, inserted or reordered entry breaks it at a known place.

The producing service and audit's receive time are hashed when the entry has them; entries
recorded before audit attributed events have neither and keep their original hash
(decision 0030).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import rfc8785

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class EntryFields:
    """What an audit entry says, before it is chained."""

    event_id: str
    timestamp: datetime
    user: str | None
    action: str
    resource: str | None
    result: str
    source_ip: str | None
    request_id: str | None
    producer: str | None = field(default=None, kw_only=True)
    """The service that published the event, known from its broker login."""
    received_at: datetime | None = field(default=None, kw_only=True)
    """When audit received the event (``timestamp`` is the producer's own clock)."""


_ATTRIBUTION = ("producer", "received_at")
"""Fields hashed only when set: entries older than attribution have neither."""


@dataclass(frozen=True)
class ChainedEntry(EntryFields):
    """An entry with its place in the chain."""

    sequence: int
    prev_hash: str
    hash: str


_HASHED = tuple(EntryFields.__dataclass_fields__)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC with microseconds and a Z, the only form that is hashed."""
    utc = value.astimezone(UTC)
    if utc.year < 1000:  # noqa: PLR2004 - strftime writes such years unpadded; keep their hashes
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # The same text as the strftime above, at a fraction of its cost (once or twice per entry).
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def entry_hash(fields: EntryFields, *, sequence: int, prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry."""
    # Field by field, not dataclasses.asdict, which deep-copies every value.
    document = {
        key: value
        for key in _HASHED
        if not ((value := getattr(fields, key)) is None and key in _ATTRIBUTION)
    }
    document["timestamp"] = format_timestamp(fields.timestamp)
    if fields.received_at is not None:
        document["received_at"] = format_timestamp(fields.received_at)
    document["sequence"] = sequence
    document["prev_hash"] = prev_hash
    return hashlib.sha256(rfc8785.dumps(document)).hexdigest()


def chain(fields: EntryFields, *, sequence: int, prev_hash: str) -> ChainedEntry:
    """Place ``fields`` after an entry whose hash is ``prev_hash``."""
    return ChainedEntry(
        **{key: getattr(fields, key) for key in _HASHED},
        sequence=sequence,
        prev_hash=prev_hash,
        hash=entry_hash(fields, sequence=sequence, prev_hash=prev_hash),
    )


@dataclass(frozen=True)
class Verification:
    """Outcome of walking the chain."""

    valid: bool
    entries: int
    first_bad_sequence: int | None = None
    reason: str | None = None


def verify(entries: Iterable[ChainedEntry]) -> Verification:
    """Walk entries in sequence order; stop at the first that does not check out."""
    expected_sequence = 1
    prev_hash = GENESIS_HASH
    count = 0
    for entry in entries:
        count += 1
        problem = None
        if entry.sequence != expected_sequence:
            problem = f"expected sequence {expected_sequence}"
        elif entry.prev_hash != prev_hash:
            problem = "previous hash does not match the preceding entry"
        elif entry_hash(entry, sequence=entry.sequence, prev_hash=entry.prev_hash) != entry.hash:
            problem = "entry content does not match its hash"
        if problem is not None:
            return Verification(
                valid=False,
                entries=count,
                first_bad_sequence=min(entry.sequence, expected_sequence),
                reason=problem,
            )
        prev_hash = entry.hash
        expected_sequence += 1
    return Verification(valid=True, entries=count)
