"""The canonical form of an audit entry: what its chain hash and its Merkle leaf cover.

The audit service and every outside verifier must produce the same bytes for the same entry,
or a genuine log would look forged. Both therefore call :func:`canonical`: RFC 8785 (JCS) JSON
of the hashed fields, the entry's sequence number and the previous entry's hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import rfc8785

from hypersdk_auditproof.merkle import leaf_hash

GENESIS_HASH = "0" * 64
"""The ``prev_hash`` of the first entry of a log that was never cut."""

HASHED_FIELDS = (
    "event_id",
    "timestamp",
    "user",
    "action",
    "resource",
    "result",
    "source_ip",
    "request_id",
    "producer",
    "received_at",
)
"""What an entry says, in the order the audit service defines them."""

OPTIONAL_FIELDS = ("producer", "received_at")
"""Hashed only when set: entries recorded before audit attributed events have neither, and
their hashes must not change."""

_MIN_PADDED_YEAR = 1000


def format_timestamp(value: datetime) -> str:
    """The only hashed form of a time: ISO 8601 UTC, microseconds, a ``Z``.

    Years before 1000 keep strftime's unpadded form, as the audit service always wrote them,
    so that no existing hash changes.
    """
    if value.tzinfo is None:
        raise ValueError("an audit timestamp must carry its time zone")
    utc = value.astimezone(UTC)
    if utc.year < _MIN_PADDED_YEAR:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _field(entry: Mapping[str, Any], key: str) -> str | None:
    if key not in entry:
        if key in OPTIONAL_FIELDS:
            return None
        raise ValueError(f"the audit entry has no {key!r} field")
    value = entry[key]
    if value is not None and not isinstance(value, str):
        raise ValueError(
            f"the audit entry's {key!r} must be a string or null, not {type(value).__name__}"
            + (" (format times with format_timestamp)" if isinstance(value, datetime) else "")
        )
    return value


def _sequence(entry: Mapping[str, Any]) -> int:
    if "sequence" not in entry:
        raise ValueError("the audit entry has no 'sequence' field")
    value = entry["sequence"]
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"the audit entry's sequence must be a positive integer, not {value!r}")
    return value


def _prev_hash(entry: Mapping[str, Any]) -> str:
    if "prev_hash" not in entry:
        raise ValueError("the audit entry has no 'prev_hash' field")
    value = entry["prev_hash"]
    if not isinstance(value, str):
        raise ValueError(f"the audit entry's prev_hash must be a string, not {value!r}")
    return value


def canonical(entry: Mapping[str, Any]) -> bytes:
    """RFC 8785 JSON of the hashed fields, ``sequence`` and ``prev_hash``.

    Optional fields that are None are left out; every other hashed field is kept, null or not.
    Keys outside the hashed form (``hash``, ``kind``) are ignored.
    """
    document: dict[str, Any] = {}
    for key in HASHED_FIELDS:
        value = _field(entry, key)
        if value is not None or key not in OPTIONAL_FIELDS:
            document[key] = value
    document["sequence"] = _sequence(entry)
    document["prev_hash"] = _prev_hash(entry)
    return rfc8785.dumps(document)


def entry_hash(canonical_bytes: bytes) -> str:
    """The chain hash of an entry (hex SHA-256 of its canonical form)."""
    return hashlib.sha256(canonical_bytes).hexdigest()


def entry_leaf(canonical_bytes: bytes) -> bytes:
    """The entry's Merkle leaf hash: the leaf input is its canonical JSON."""
    return leaf_hash(canonical_bytes)
