"""The RFC 9162 (Certificate Transparency v2) Merkle tree over SHA-256, section 2.1.

The audit log's entries are the leaves of one append-only tree. A signed root at a size commits
to every entry up to it, so two parties holding two signed roots can prove, with a handful of
hashes, that the later log extends the earlier one (a consistency proof) or that an entry is in
it (an inclusion proof), without either holding the whole log.

Leaves are indexed from 0. A *perfect node* ``(level, index)`` is the root of the perfect
subtree over leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash.
Every subtree that RFC 9162's recursion visits is a fold of a few perfect nodes, so a store that
persists each perfect node as it appears can answer any proof with one lookup per hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

HASH_SIZE = 32
"""Bytes in a SHA-256 digest: every leaf, node and root."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""MTH of the empty tree (RFC 9162 2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash of a leaf's input; the prefix keeps a leaf from passing for an inner node."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash of an inner node from its two children."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size >= 2): where RFC 9162 splits."""
    return 1 << ((size - 1).bit_length() - 1)


def _is_subtree(start: int, end: int) -> bool:
    """Whether [start, end) is a subtree of RFC 9162's recursion over a tree of any size."""
    size = end - start
    if start < 0 or size <= 0:
        return False
    width = 1 << (size - 1).bit_length()  # the smallest power of two >= size
    return start % width == 0


def perfect_blocks(start: int, end: int) -> list[tuple[int, int]]:
    """The perfect nodes ``(level, index)`` whose fold is MTH(D[start:end]), largest first.

    RFC 9162 splits a range at the largest power of two below its size, so the range breaks
    into the binary decomposition of its size, each block aligned because the start is.
    """
    if not _is_subtree(start, end):
        raise ValueError(f"[{start}, {end}) is not a subtree of an RFC 9162 Merkle tree")
    blocks = []
    position = start
    for level in range((end - start).bit_length() - 1, -1, -1):
        if (end - start) >> level & 1:
            blocks.append((level, position >> level))
            position += 1 << level
    return blocks


def fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of consecutive perfect blocks given largest first: each splits off the rest."""
    if not hashes:
        raise ValueError("nothing to fold: a range has at least one perfect block")
    result = hashes[-1]
    for previous in reversed(hashes[:-1]):
        result = node_hash(previous, result)
    return result


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees whose MTHs, in this order, are PATH(index, D[0:size]), leaf side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    siblings = []
    start, end = 0, size
    while end - start > 1:
        middle = start + _split(end - start)
        if index < middle:
            siblings.append((middle, end))
            end = middle
        else:
            siblings.append((start, middle))
            start = middle
    siblings.reverse()
    return siblings


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The subtrees whose MTHs, in this order, are PROOF(old, D[0:new]) (SUBPROOF, b = true)."""
    if not 0 < old <= new:
        raise ValueError(f"no consistency proof from size {old} to size {new}")
    siblings = []
    start, end = 0, new
    whole = True  # b in RFC 9162: the subtree reached is the whole old tree, known to the verifier
    while old - start != end - start:
        middle = start + _split(end - start)
        if old <= middle:
            siblings.append((middle, end))
            end = middle
        else:
            siblings.append((start, middle))
            start = middle
            whole = False
    siblings.reverse()
    return siblings if whole else [(start, end), *siblings]


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _all_hashes(values: object) -> bool:
    return isinstance(values, Sequence) and all(_is_hash(value) for value in values)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``proof`` shows the leaf hash ``leaf`` at ``index`` in the tree ``root``.

    RFC 9162 2.1.3.2, step by step; anything malformed is a failed proof, never an exception,
    because the inputs come from whoever wants to be believed.
    """
    if not (_is_hash(leaf) and _is_hash(root) and _is_size(index) and _is_size(size)):
        return False
    if not _all_hashes(proof) or index >= size:
        return False
    fn, sn, result = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            result = node_hash(result, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and result == root


def verify_consistency(
    old: int, new: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """Whether ``proof`` shows the tree ``new_root`` extends the tree ``old_root``.

    RFC 9162 2.1.4.2. Equal sizes need an empty proof and equal roots. From the empty tree
    there is no proof (every tree extends it; RFC 9162 requires 0 < old), so that is refused.
    """
    if not (_is_size(old) and _is_size(new) and _is_hash(old_root) and _is_hash(new_root)):
        return False
    if not _all_hashes(proof) or old > new:
        return False
    if old == new:
        return len(proof) == 0 and old_root == new_root
    if old == 0 or not proof:
        return False
    path = [old_root, *proof] if old & (old - 1) == 0 else list(proof)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    first = second = path[0]
    for sibling in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            first = node_hash(sibling, first)
            second = node_hash(sibling, second)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            second = node_hash(second, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and first == old_root and second == new_root


def subtree_hash(start: int, end: int, node: Callable[[int, int], bytes]) -> bytes:
    """MTH(D[start:end]) from a lookup of persisted perfect nodes ``(level, index) -> hash``."""
    return fold([node(level, index) for level, index in perfect_blocks(start, end)])


def proof_nodes(ranges: Iterable[tuple[int, int]]) -> set[tuple[int, int]]:
    """Every perfect node the MTHs of ``ranges`` need, so a store fetches them in one query."""
    return {block for start, end in ranges for block in perfect_blocks(start, end)}


def inclusion_proof(index: int, size: int, node: Callable[[int, int], bytes]) -> list[bytes]:
    """PATH(index, D[0:size]) from persisted perfect nodes."""
    return [subtree_hash(start, end, node) for start, end in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, node: Callable[[int, int], bytes]) -> list[bytes]:
    """PROOF(old, D[0:new]) from persisted perfect nodes."""
    return [subtree_hash(start, end, node) for start, end in consistency_ranges(old, new)]


class TreeBuilder:
    """An append-only tree held as its compact range: one hash per set bit of its size.

    That is all the state appending and the root need, so a verifier streams a log of any length
    in O(log n) memory, and a store resumes from the compact range it saved instead of replaying
    the log.
    """

    def __init__(self, size: int = 0, frontier: Sequence[bytes] = ()) -> None:
        if not _is_size(size):
            raise ValueError(f"a tree size is a non-negative integer, not {size!r}")
        if len(frontier) != size.bit_count():
            raise ValueError(
                f"a tree of size {size} has {size.bit_count()} perfect blocks, not {len(frontier)}"
            )
        if not _all_hashes(frontier):
            raise ValueError(f"every perfect block hash has {HASH_SIZE} bytes")
        self._size = size
        self._frontier = list(frontier)

    @property
    def size(self) -> int:
        """Leaves appended so far (including those before the compact range it started from)."""
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add a leaf hash; return the perfect nodes it completes, ``(level, index, hash)``.

        Level 0 (the leaf itself) comes first, then each parent it completes, so a store can
        persist every perfect node the moment it exists.
        """
        if not _is_hash(leaf):
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes")
        completed = [(0, self._size, leaf)]
        level, index, current = 0, self._size, leaf
        while index & 1:
            current = node_hash(self._frontier.pop(), current)
            level, index = level + 1, index >> 1
            completed.append((level, index, current))
        self._frontier.append(current)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """MTH of every leaf so far."""
        return fold(self._frontier) if self._frontier else EMPTY_ROOT

    def frontier(self) -> list[bytes]:
        """The compact range: hashes of perfect_blocks(0, size), largest first."""
        return list(self._frontier)

    def copy(self) -> TreeBuilder:
        """An independent builder at the same state, to try an alternative next leaf."""
        clone = TreeBuilder.__new__(TreeBuilder)  # the state is valid already: skip the checks
        clone._size = self._size
        clone._frontier = list(self._frontier)
        return clone
