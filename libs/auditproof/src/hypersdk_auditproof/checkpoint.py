"""Signed checkpoints: the log's size, Merkle root and chain head, signed with Ed25519.

A checkpoint is what the platform commits to at a moment: whoever keeps one can later prove that
the log shown to them still contains, unchanged, everything up to that size. The signed text is
a fixed, line-based form so that any language can rebuild it byte for byte.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hypersdk_auditproof._json import expect_object
from hypersdk_auditproof.merkle import HASH_SIZE

BODY_HEADER = "hypersdk-audit-checkpoint/v1"
"""First line of the signed text; a new version gets a new header."""

SIGNATURE_SIZE = 64
"""Bytes in an Ed25519 signature."""

_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")
_TIME = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})\.([0-9]{6})Z"
)
_BODY_KEYS = ("origin", "size", "root", "head", "time")
_JSON_KEYS = (*_BODY_KEYS, "key_id", "signature")


def check_origin(origin: object) -> str:
    """An origin names one log: non-empty, no whitespace and no control characters.

    It is a single token of the signed text, so nothing in it may look like a separator.
    """
    if not isinstance(origin, str) or not origin:
        raise ValueError("an origin is a non-empty string")
    for char in origin:
        if char.isspace() or unicodedata.category(char).startswith("C"):
            raise ValueError(f"the origin {origin!r} contains whitespace or a control character")
    return origin


def is_hex_hash(value: object) -> TypeGuard[str]:
    """Whether ``value`` is a SHA-256 digest in lower-case hex, the only form written."""
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def format_time(value: datetime) -> str:
    """A checkpoint time as signed: UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    """The inverse of :func:`format_time`; any other spelling is refused."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time of the form YYYY-MM-DDTHH:MM:SS.ffffffZ")
    year, month, day, hour, minute, second, micro = (int(part) for part in match.groups())
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


def parse_decimal(text: str) -> int:
    """A size in canonical decimal: no sign, no leading zeros, ASCII digits only."""
    if _DECIMAL.fullmatch(text) is None:
        raise ValueError(f"{text!r} is not a canonical decimal number")
    return int(text)


@dataclass(frozen=True)
class Checkpoint:
    """The log ``origin`` had ``size`` entries, Merkle root ``root`` and chain head ``head``.

    ``head`` is the hash of the entry whose sequence is ``size`` (the genesis head for size 0,
    or for the size at which retention cut the log).
    """

    origin: str
    size: int
    root: bytes
    head: str
    time: datetime

    def __post_init__(self) -> None:
        check_origin(self.origin)
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"a checkpoint size is a non-negative integer, not {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise ValueError(f"a checkpoint root has {HASH_SIZE} bytes")
        if not is_hex_hash(self.head):
            raise ValueError(f"a checkpoint head is 64 lower-case hex digits, not {self.head!r}")
        if not isinstance(self.time, datetime) or self.time.tzinfo is None:
            raise ValueError("a checkpoint time is a datetime with its time zone")


def body(checkpoint: Checkpoint) -> bytes:
    """The exact text that is signed."""
    lines = (
        BODY_HEADER,
        f"origin {checkpoint.origin}",
        f"size {checkpoint.size}",
        f"root {checkpoint.root.hex()}",
        f"head {checkpoint.head}",
        f"time {format_time(checkpoint.time)}",
    )
    return ("\n".join(lines) + "\n").encode()


def parse_body(data: bytes) -> Checkpoint:
    """Read a signed text back; anything :func:`body` would not have written is refused."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError("a checkpoint body is UTF-8") from error
    if not text.endswith("\n"):
        raise ValueError("a checkpoint body ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != len(_BODY_KEYS) + 1:
        raise ValueError(f"a checkpoint body has {len(_BODY_KEYS) + 1} lines, not {len(lines)}")
    if lines[0] != BODY_HEADER:
        raise ValueError(f"a checkpoint body starts with {BODY_HEADER!r}, not {lines[0]!r}")
    values = {key: _body_value(line, key) for key, line in zip(_BODY_KEYS, lines[1:], strict=True)}
    return _checkpoint(values, parse_decimal(values["size"]))


def _body_value(line: str, key: str) -> str:
    prefix = key + " "
    if not line.startswith(prefix):
        raise ValueError(f"expected the line {key!r} of a checkpoint body, got {line!r}")
    return line[len(prefix) :]


def _checkpoint(values: Mapping[str, str], size: int) -> Checkpoint:
    """A checkpoint from the text of its fields (as in the body and the JSON) and its size."""
    if not is_hex_hash(values["root"]):
        raise ValueError(f"a checkpoint root is 64 lower-case hex digits, not {values['root']!r}")
    return Checkpoint(
        origin=check_origin(values["origin"]),
        size=size,
        root=bytes.fromhex(values["root"]),
        head=values["head"],
        time=parse_time(values["time"]),
    )


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: ``ed25519:`` and 16 hex digits of its SHA-256."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint, the id of the key that signed it, and the Ed25519 signature of its body."""

    checkpoint: Checkpoint
    key_id: str
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        """The JSON object published and exported: the body's fields, key id, base64 signature."""
        return {
            "origin": self.checkpoint.origin,
            "size": self.checkpoint.size,
            "root": self.checkpoint.root.hex(),
            "head": self.checkpoint.head,
            "time": format_time(self.checkpoint.time),
            "key_id": self.key_id,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SignedCheckpoint:
        """Read :meth:`to_json`'s object strictly.

        A ``"kind": "checkpoint"`` member is allowed, so that a checkpoint line copied out of a
        bundle is accepted as it is.
        """
        copied_line = isinstance(data, Mapping) and data.get("kind") == "checkpoint"
        optional = ("kind",) if copied_line else ()
        expect_object(data, "a signed checkpoint", _JSON_KEYS, optional)
        text = {key: data[key] for key in _JSON_KEYS}
        size = text.pop("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise ValueError(f"a checkpoint size is an integer, not {size!r}")
        for key, value in text.items():
            if not isinstance(value, str):
                raise ValueError(f"a signed checkpoint's {key!r} is a string, not {value!r}")
        checkpoint = _checkpoint(text, size)
        return cls(checkpoint, _check_key_id(text["key_id"]), _signature(text["signature"]))


def _check_key_id(value: str) -> str:
    if _KEY_ID.fullmatch(value) is None:
        raise ValueError(f"a key id is 'ed25519:' and 16 lower-case hex digits, not {value!r}")
    return value


def _signature(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise ValueError("a checkpoint signature is standard base64") from error
    if base64.b64encode(raw).decode("ascii") != text or len(raw) != SIGNATURE_SIZE:
        raise ValueError(f"a checkpoint signature is {SIGNATURE_SIZE} bytes in canonical base64")
    return raw


def sign(checkpoint: Checkpoint, private_key: Ed25519PrivateKey) -> SignedCheckpoint:
    """Sign the checkpoint's body."""
    return SignedCheckpoint(
        checkpoint=checkpoint,
        key_id=key_id(private_key.public_key()),
        signature=private_key.sign(body(checkpoint)),
    )


def verify_signature(signed: SignedCheckpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether a key in ``keys`` under the checkpoint's key id signed its body.

    An unknown key id is as good as no signature. Nothing the checkpoint holds makes this raise.
    """
    try:
        public_key = keys.get(signed.key_id)
        if public_key is None:
            return False
        public_key.verify(signed.signature, body(signed.checkpoint))
    except (InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True
