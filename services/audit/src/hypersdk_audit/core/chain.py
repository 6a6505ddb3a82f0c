"""The hash chain: canonical form of an entry, its hash, and verification.

Each entry's hash is SHA-256 over the RFC 8785 (JCS) canonical JSON of its fields, which
include its sequence number and the previous entry's hash. Anyone holding the entries can
recompute the chain; a changed, removed, inserted or reordered entry breaks it at a known place.

The producing service and audit's receive time are hashed when the entry has them; entries
recorded before audit attributed events have neither and keep their original hash
(decision 0030).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from hypersdk_auditproof import entries as canonical_entries
from hypersdk_auditproof.entries import GENESIS_HASH, format_timestamp

__all__ = [
    "GENESIS_HASH",
    "ChainedEntry",
    "EntryFields",
    "Verification",
    "chain",
    "entry_hash",
    "format_timestamp",
    "link",
    "verify",
]


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


@dataclass(frozen=True)
class ChainedEntry(EntryFields):
    """An entry with its place in the chain."""

    sequence: int
    prev_hash: str
    hash: str


_HASHED = tuple(EntryFields.__dataclass_fields__)


def canonical(fields: EntryFields, *, sequence: int, prev_hash: str) -> bytes:
    """The RFC 8785 form of the entry that its hash and its Merkle leaf are taken over.

    Fields older than attribution (producer, received_at) are left out when unset, so entries
    recorded before them keep their hashes (``hypersdk_auditproof.entries``).
    """
    # Field by field, not dataclasses.asdict, which deep-copies every value.
    document = {key: getattr(fields, key) for key in _HASHED}
    document["timestamp"] = format_timestamp(fields.timestamp)
    if fields.received_at is not None:
        document["received_at"] = format_timestamp(fields.received_at)
    document["sequence"] = sequence
    document["prev_hash"] = prev_hash
    return canonical_entries.canonical(document)


def entry_hash(fields: EntryFields, *, sequence: int, prev_hash: str) -> str:
    """SHA-256 (hex) of the canonical JSON of the entry."""
    return canonical_entries.entry_hash(canonical(fields, sequence=sequence, prev_hash=prev_hash))


def link(fields: EntryFields, *, sequence: int, prev_hash: str) -> tuple[ChainedEntry, bytes]:
    """Place ``fields`` after an entry whose hash is ``prev_hash``; with its Merkle leaf hash."""
    document = canonical(fields, sequence=sequence, prev_hash=prev_hash)
    entry = ChainedEntry(
        **{key: getattr(fields, key) for key in _HASHED},
        sequence=sequence,
        prev_hash=prev_hash,
        hash=canonical_entries.entry_hash(document),
    )
    return entry, canonical_entries.entry_leaf(document)


def chain(fields: EntryFields, *, sequence: int, prev_hash: str) -> ChainedEntry:
    """Place ``fields`` after an entry whose hash is ``prev_hash``."""
    return link(fields, sequence=sequence, prev_hash=prev_hash)[0]


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
