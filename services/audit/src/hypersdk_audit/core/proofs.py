"""The log's Merkle tree seen from outside: signed checkpoints, inclusion and consistency proofs.

Every entry is a leaf of an RFC 9162 Merkle tree (its canonical JSON; leaf index = sequence - 1)
beside the hash chain (decision 0047). The store keeps every perfect subtree's root as it
completes, so the root at any size and any proof need only O(log n) stored nodes. A checkpoint
is a signed statement of (size, root, head hash, time); a witness that keeps one can later ask
for a consistency proof to the next and learn whether the log was only appended to.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_audit.core.chain import ChainedEntry
from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import Checkpoint, SignedCheckpoint, body
from hypersdk_contracts.errors import ErrorCode, ServiceError

Node = tuple[int, int]
"""A perfect subtree: (level, index); level 0 is a leaf."""


@dataclass(frozen=True)
class TreeHead:
    """The log as it stands: how many entries, the tree's root, the newest entry's hash."""

    size: int
    root: bytes
    head: str


@dataclass(frozen=True)
class InclusionProof:
    """That an entry is the leaf ``sequence - 1`` of the tree of ``tree_size`` entries."""

    entry: ChainedEntry
    tree_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class ConsistencyProof:
    """That the tree of ``first`` entries is a prefix of the tree of ``second``."""

    first: int
    second: int
    hashes: tuple[bytes, ...]


class CheckpointSigner(Protocol):
    """Signs checkpoint bodies with the audit key (a key file, or Vault transit)."""

    async def sign(self, message: bytes) -> tuple[str, bytes]:
        """The key id and the Ed25519 signature of ``message``."""
        ...

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """Every key a checkpoint of this log may be signed with, by key id."""
        ...


def root_at(size: int, nodes: Mapping[Node, bytes]) -> bytes:
    """The tree's root at ``size`` from the perfect nodes of ``merkle.perfect_blocks(0, size)``."""
    if size == 0:
        return merkle.EMPTY_ROOT
    return merkle.subtree_hash(0, size, _lookup(nodes))


def root_nodes(size: int) -> set[Node]:
    """The perfect nodes the root at ``size`` is folded from."""
    return set(merkle.perfect_blocks(0, size)) if size else set()


def _lookup(nodes: Mapping[Node, bytes]) -> Callable[[int, int], bytes]:
    def node(level: int, index: int) -> bytes:
        try:
            return nodes[(level, index)]
        except KeyError:  # the store lost a node it must keep: never answer a wrong proof
            raise ServiceError(
                ErrorCode.INTERNAL_ERROR, "The audit tree is incomplete; run a verification."
            ) from None

    return node


def proof_hashes(ranges: list[tuple[int, int]], nodes: Mapping[Node, bytes]) -> tuple[bytes, ...]:
    """The MTH of each range of a proof, from the perfect nodes they need."""
    node = _lookup(nodes)
    return tuple(merkle.subtree_hash(start, end, node) for start, end in ranges)


def check_tree_size(tree_size: int, current: int) -> None:
    """A proof is for a tree the log has reached: 1 to its size."""
    if not 1 <= tree_size <= current:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"tree_size must be between 1 and the log's size ({current}).",
        )


def new_checkpoint(origin: str, head: TreeHead, at: datetime) -> tuple[Checkpoint, bytes]:
    """The checkpoint of ``head`` and the exact bytes to sign."""
    checkpoint = Checkpoint(origin=origin, size=head.size, root=head.root, head=head.head, time=at)
    return checkpoint, body(checkpoint)


def signed(checkpoint: Checkpoint, key_id: str, signature: bytes) -> SignedCheckpoint:
    """A checkpoint with its signature."""
    return SignedCheckpoint(checkpoint=checkpoint, key_id=key_id, signature=signature)
