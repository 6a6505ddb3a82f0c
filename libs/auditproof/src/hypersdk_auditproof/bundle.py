"""The export bundle: an audit log as JSON Lines that anyone can verify without the platform.

Line 1 is the header (origin, the signing keys, and the genesis the log starts from), then every
signed checkpoint in increasing size, then every entry in sequence order. One JSON object a line
lets a verifier stream a log of any length; writers emit ASCII-only compact JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from hypersdk_auditproof._json import dumps_line, expect_object
from hypersdk_auditproof.checkpoint import (
    SignedCheckpoint,
    check_origin,
    is_hex_hash,
    key_id,
)
from hypersdk_auditproof.entries import (
    GENESIS_HASH,
    HASHED_FIELDS,
    OPTIONAL_FIELDS,
    canonical,
)
from hypersdk_auditproof.merkle import HASH_SIZE

FORMAT = "hypersdk-audit-bundle/v1"
"""The header's ``format``; a verifier refuses any other."""

ENTRY_KEYS = ("kind", "sequence", *HASHED_FIELDS, "prev_hash", "hash")
"""Members of an entry line, in the order they are written."""

_HEADER_KEYS = ("format", "origin", "keys", "genesis")
_GENESIS_KEYS = ("size", "head", "frontier")
_REQUIRED_ENTRY_KEYS = tuple(key for key in ENTRY_KEYS if key not in OPTIONAL_FIELDS)


@dataclass(frozen=True)
class Genesis:
    """Where the log in a bundle starts.

    A log never cut starts at size 0 from the genesis hash. After a retention cut it starts at
    the size cut at, from the hash of the entry there, with the compact range of the Merkle tree
    at that size (perfect-block hashes, largest first) so that later roots can be recomputed.
    """

    size: int = 0
    head: str = GENESIS_HASH
    frontier: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"the genesis size is a non-negative integer, not {self.size!r}")
        if not is_hex_hash(self.head):
            raise ValueError(f"the genesis head is 64 lower-case hex digits, not {self.head!r}")
        if self.size == 0 and self.head != GENESIS_HASH:
            raise ValueError("a log that starts at size 0 starts from the genesis hash")
        if len(self.frontier) != self.size.bit_count():
            raise ValueError(
                f"the genesis frontier of a tree of size {self.size} has"
                f" {self.size.bit_count()} hashes, not {len(self.frontier)}"
            )
        if not all(isinstance(item, bytes) and len(item) == HASH_SIZE for item in self.frontier):
            raise ValueError(f"every genesis frontier hash has {HASH_SIZE} bytes")


@dataclass(frozen=True)
class Header:
    """What line 1 of a bundle says."""

    origin: str
    keys: Mapping[str, Ed25519PublicKey]
    genesis: Genesis


@dataclass(frozen=True)
class BundleEntry:
    """An entry line, checked for form: what it claims and the canonical bytes it hashes to."""

    sequence: int
    prev_hash: str
    hash: str
    canonical: bytes


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """A public key as the PEM (SubjectPublicKeyInfo) text a bundle header carries."""
    return public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; ValueError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        public_key = load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(f"not a PEM public key: {error}") from error
    if not isinstance(public_key, Ed25519PublicKey):
        raise ValueError("the public key is not an Ed25519 key")
    return public_key


def header_line(origin: str, keys: Mapping[str, Ed25519PublicKey], genesis: Genesis) -> str:
    """Line 1 of a bundle. Key ids are recomputed from the keys, so a wrong label cannot stick."""
    header = {
        "format": FORMAT,
        "origin": check_origin(origin),
        "keys": {key_id(public_key): public_key_pem(public_key) for public_key in keys.values()},
        "genesis": {
            "size": genesis.size,
            "head": genesis.head,
            "frontier": [item.hex() for item in genesis.frontier],
        },
    }
    return dumps_line(header)


def checkpoint_line(signed: SignedCheckpoint) -> str:
    """A checkpoint line: ``kind`` and the signed checkpoint's JSON."""
    return dumps_line({"kind": "checkpoint", **signed.to_json()})


def entry_line(entry: Mapping[str, Any]) -> str:
    """An entry line, as stored: nothing is recomputed, so a tampered store exports as it is.

    Times must already be in their hashed form (``entries.format_timestamp``); the values are
    checked by building the canonical form, which fails on anything that could not be hashed.
    """
    canonical(entry)
    for key in ("prev_hash", "hash"):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"the audit entry's {key!r} must be a string")
    line = {key: entry.get(key) for key in ENTRY_KEYS[1:]}
    return dumps_line({"kind": "entry", **line})


def parse_header(value: Any) -> Header:
    """Line 1, checked strictly: format, origin, keys whose ids match them, genesis."""
    header = expect_object(value, "the bundle header", _HEADER_KEYS)
    if header["format"] != FORMAT:
        raise ValueError(f"the bundle format is {header['format']!r}, expected {FORMAT!r}")
    return Header(
        origin=check_origin(header["origin"]),
        keys=_parse_keys(header["keys"]),
        genesis=_parse_genesis(header["genesis"]),
    )


def _parse_keys(value: Any) -> dict[str, Ed25519PublicKey]:
    if not isinstance(value, Mapping):
        raise ValueError("the bundle header's keys are an object of key id to PEM")
    keys = {}
    for label, pem in value.items():
        if not isinstance(pem, str):
            raise ValueError(f"the key {label!r} is not PEM text")
        public_key = load_public_key(pem)
        if key_id(public_key) != label:
            raise ValueError(f"the key listed as {label!r} has the id {key_id(public_key)!r}")
        keys[label] = public_key
    return keys


def _parse_genesis(value: Any) -> Genesis:
    genesis = expect_object(value, "the bundle genesis", _GENESIS_KEYS)
    frontier = genesis["frontier"]
    if not isinstance(frontier, list) or not all(is_hex_hash(item) for item in frontier):
        raise ValueError("the genesis frontier is a list of 64-digit lower-case hex hashes")
    return Genesis(
        size=genesis["size"],
        head=genesis["head"],
        frontier=tuple(bytes.fromhex(item) for item in frontier),
    )


def parse_entry(value: Any) -> BundleEntry:
    """An entry line, checked for form; its hash and links are the verifier's business."""
    entry = expect_object(value, "an entry line", _REQUIRED_ENTRY_KEYS, OPTIONAL_FIELDS)
    for key in ("prev_hash", "hash"):
        if not is_hex_hash(entry[key]):
            raise ValueError(f"the entry's {key} is 64 lower-case hex digits")
    return BundleEntry(
        sequence=entry["sequence"],
        prev_hash=entry["prev_hash"],
        hash=entry["hash"],
        canonical=canonical(entry),
    )
