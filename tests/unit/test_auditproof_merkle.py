"""The RFC 9162 Merkle tree: Certificate Transparency test vectors and exhaustive small trees.

The vectors are copied from transparency-dev/merkle (commit 417fb0c3): ``testonly/constants.go``
(leaf inputs, node hashes, roots) and ``cmd/proofgen/main.go`` (inclusion and consistency
proofs; there leaf indices are 1-based, here 0-based). They are the classic suite of the
C++/Go Certificate Transparency implementations.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest

from hypersdk_auditproof.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    TreeBuilder,
    consistency_proof,
    consistency_ranges,
    fold,
    inclusion_proof,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    perfect_blocks,
    proof_nodes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

LEAF_INPUTS = [
    bytes.fromhex(""),
    bytes.fromhex("00"),
    bytes.fromhex("10"),
    bytes.fromhex("2021"),
    bytes.fromhex("3031"),
    bytes.fromhex("40414243"),
    bytes.fromhex("5051525354555657"),
    bytes.fromhex("606162636465666768696a6b6c6d6e6f"),
]

NODE_HASHES = [
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

ROOT_HASHES = {
    0: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (leaf index, tree size, proof); proofgen's {1, 1, nil}, {1, 8, ...}, {6, 8, ...}, {3, 3, ...},
# {2, 5, ...} with its 1-based indices made 0-based.
INCLUSION_PROOFS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# (old size, new size, proof)
CONSISTENCY_PROOFS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def hexes(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(value) for value in values]


# -- RFC 9162 2.1, written as the RFC's recursion: the reference the library is checked against.


def split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(data: list[bytes]) -> bytes:
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = split(len(data))
    return hashlib.sha256(b"\x01" + mth(data[:k]) + mth(data[k:])).digest()


def path(m: int, data: list[bytes]) -> list[bytes]:
    if len(data) == 1:
        return []
    k = split(len(data))
    if m < k:
        return [*path(m, data[:k]), mth(data[k:])]
    return [*path(m - k, data[k:]), mth(data[:k])]


def subproof(m: int, data: list[bytes], whole: bool) -> list[bytes]:
    n = len(data)
    if m == n:
        return [] if whole else [mth(data)]
    k = split(n)
    if m <= k:
        return [*subproof(m, data[:k], whole), mth(data[k:])]
    return [*subproof(m - k, data[k:], False), mth(data[:k])]


def inputs(count: int) -> list[bytes]:
    return [f"leaf {index}".encode() for index in range(count)]


def build(data: list[bytes]) -> tuple[TreeBuilder, dict[tuple[int, int], bytes]]:
    """A tree over ``data`` and every perfect node it reported, as a store would persist them."""
    tree = TreeBuilder()
    nodes: dict[tuple[int, int], bytes] = {}
    for item in data:
        for level, index, value in tree.append(leaf_hash(item)):
            assert (level, index) not in nodes
            nodes[level, index] = value
    return tree, nodes


def lookup(nodes: dict[tuple[int, int], bytes]) -> Callable[[int, int], bytes]:
    return lambda level, index: nodes[level, index]


# -- the CT vectors


def test_hashes_follow_rfc9162_domain_separation() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == ROOT_HASHES[0]
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert (
        node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    )


def test_roots_of_the_ct_vectors() -> None:
    tree = TreeBuilder()
    assert tree.root().hex() == ROOT_HASHES[0]
    for size, item in enumerate(LEAF_INPUTS, start=1):
        tree.append(leaf_hash(item))
        assert tree.size == size
        assert tree.root().hex() == ROOT_HASHES[size]
        assert mth(LEAF_INPUTS[:size]).hex() == ROOT_HASHES[size]


def test_the_builder_reports_every_perfect_node_of_the_ct_vectors() -> None:
    _, nodes = build(LEAF_INPUTS)
    expected = {
        (level, index): bytes.fromhex(value)
        for level, row in enumerate(NODE_HASHES)
        for index, value in enumerate(row)
    }
    assert nodes == expected


def test_append_returns_the_leaf_first_then_the_parents_it_completes() -> None:
    tree = TreeBuilder()
    for item in LEAF_INPUTS[:3]:
        tree.append(leaf_hash(item))
    completed = tree.append(leaf_hash(LEAF_INPUTS[3]))
    assert [(level, index) for level, index, _ in completed] == [(0, 3), (1, 1), (2, 0)]
    assert completed[-1][2].hex() == NODE_HASHES[2][0]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION_PROOFS)
def test_inclusion_proofs_of_the_ct_vectors(index: int, size: int, proof: list[str]) -> None:
    _, nodes = build(LEAF_INPUTS[:size])
    assert inclusion_proof(index, size, lookup(nodes)) == hexes(proof)
    leaf = leaf_hash(LEAF_INPUTS[index])
    root = bytes.fromhex(ROOT_HASHES[size])
    assert verify_inclusion(leaf, index, size, hexes(proof), root)


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY_PROOFS)
def test_consistency_proofs_of_the_ct_vectors(old: int, new: int, proof: list[str]) -> None:
    _, nodes = build(LEAF_INPUTS[:new])
    assert consistency_proof(old, new, lookup(nodes)) == hexes(proof)
    old_root, new_root = bytes.fromhex(ROOT_HASHES[old]), bytes.fromhex(ROOT_HASHES[new])
    assert verify_consistency(old, new, hexes(proof), old_root, new_root)


# -- ranges and blocks


def test_perfect_blocks_are_the_binary_decomposition_largest_first() -> None:
    assert perfect_blocks(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert perfect_blocks(0, 8) == [(3, 0)]
    assert perfect_blocks(4, 7) == [(1, 2), (0, 6)]
    assert perfect_blocks(8, 13) == [(2, 2), (0, 12)]
    assert perfect_blocks(6, 7) == [(0, 6)]


@pytest.mark.parametrize(("start", "end"), [(3, 3), (5, 4), (1, 3), (2, 5), (4, 9), (-2, 0)])
def test_perfect_blocks_refuse_ranges_that_are_no_subtree(start: int, end: int) -> None:
    with pytest.raises(ValueError, match="not a subtree"):
        perfect_blocks(start, end)


def test_fold_is_a_right_fold() -> None:
    a, b, c = (bytes([value]) * 32 for value in (1, 2, 3))
    assert fold([a]) == a
    assert fold([a, b, c]) == node_hash(a, node_hash(b, c))
    with pytest.raises(ValueError, match="nothing to fold"):
        fold([])


@pytest.mark.parametrize(("index", "size"), [(0, 0), (3, 3), (-1, 4)])
def test_inclusion_ranges_need_a_leaf_in_the_tree(index: int, size: int) -> None:
    with pytest.raises(ValueError, match="is not in a tree"):
        inclusion_ranges(index, size)


@pytest.mark.parametrize(("old", "new"), [(0, 5), (5, 4), (-1, 3)])
def test_consistency_ranges_need_a_non_empty_prefix(old: int, new: int) -> None:
    with pytest.raises(ValueError, match="no consistency proof"):
        consistency_ranges(old, new)


def test_ranges_of_a_small_tree() -> None:
    assert inclusion_ranges(5, 8) == [(4, 5), (6, 8), (0, 4)]
    assert consistency_ranges(6, 8) == [(4, 6), (6, 8), (0, 4)]
    assert consistency_ranges(4, 8) == [(4, 8)]
    assert consistency_ranges(5, 5) == []


def test_proof_nodes_are_all_a_store_must_fetch() -> None:
    _, nodes = build(inputs(45))
    ranges = [*inclusion_ranges(17, 45), *consistency_ranges(13, 45)]
    needed = proof_nodes(ranges)
    assert needed == {block for start, end in ranges for block in perfect_blocks(start, end)}
    fetched = {key: nodes[key] for key in needed}
    assert inclusion_proof(17, 45, lookup(fetched)) == path(17, inputs(45))
    assert consistency_proof(13, 45, lookup(fetched)) == subproof(13, inputs(45), True)


def test_subtree_hash_of_any_subtree_matches_the_recursion() -> None:
    data = inputs(40)
    _, nodes = build(data)
    assert subtree_hash(0, 40, lookup(nodes)) == mth(data)
    assert subtree_hash(32, 40, lookup(nodes)) == mth(data[32:40])
    assert subtree_hash(36, 39, lookup(nodes)) == mth(data[36:39])


# -- the builder


def test_a_builder_resumes_from_a_compact_range() -> None:
    data = inputs(70)
    for cut in (0, 1, 13, 32, 69):
        first, _ = build(data[:cut])
        resumed = TreeBuilder(first.size, first.frontier())
        for item in data[cut:]:
            resumed.append(leaf_hash(item))
        assert resumed.root() == mth(data)
        assert len(first.frontier()) == cut.bit_count()


def test_a_compact_range_must_fit_the_size() -> None:
    with pytest.raises(ValueError, match="perfect blocks"):
        TreeBuilder(5, [b"\x00" * 32])
    with pytest.raises(ValueError, match="32 bytes"):
        TreeBuilder(1, [b"short"])
    with pytest.raises(ValueError, match="non-negative"):
        TreeBuilder(-1)
    with pytest.raises(ValueError, match="32 bytes"):
        TreeBuilder().append(b"not a leaf hash")


def test_copy_is_independent() -> None:
    tree, _ = build(inputs(5))
    other = tree.copy()
    other.append(leaf_hash(b"x"))
    assert tree.size == 5
    assert other.size == 6
    assert tree.root() == mth(inputs(5))


# -- every size up to 70: generated proofs verify, and every alteration fails


def flipped(value: bytes, position: int) -> bytes:
    return value[:position] + bytes([value[position] ^ 0x01]) + value[position + 1 :]


def alterations(proof: list[bytes], *, every_byte: bool) -> list[list[bytes]]:
    """The proof with one byte flipped, one element dropped, or one element added."""
    altered = []
    for number, element in enumerate(proof):
        positions = range(HASH_SIZE) if every_byte else (0, number % HASH_SIZE, HASH_SIZE - 1)
        altered += [
            [*proof[:number], flipped(element, position), *proof[number + 1 :]]
            for position in positions
        ]
        altered.append(proof[:number] + proof[number + 1 :])
    extra = hashlib.sha256(b"extra").digest()
    altered += [[*proof, extra], [extra, *proof]]
    if proof:
        altered.append([*proof, proof[-1]])
    return altered


SIZES = range(1, 71)


@pytest.mark.parametrize("size", SIZES)
def test_inclusion_proofs_for_every_leaf(size: int) -> None:
    data = inputs(size)
    tree, nodes = build(data)
    root = tree.root()
    assert root == mth(data)
    other_roots = {n: mth(data[:n]) if n <= size else mth(inputs(n)) for n in (size - 1, size + 1)}
    for index in range(size):
        proof = inclusion_proof(index, size, lookup(nodes))
        assert proof == path(index, data)
        leaf = leaf_hash(data[index])
        assert verify_inclusion(leaf, index, size, proof, root)
        for altered in alterations(proof, every_byte=size <= 16):
            assert not verify_inclusion(leaf, index, size, altered, root)
        assert not verify_inclusion(flipped(leaf, 0), index, size, proof, root)
        assert not verify_inclusion(leaf, index, size, proof, flipped(root, 31))
        for wrong in range(size):
            if wrong != index:
                assert not verify_inclusion(leaf, wrong, size, proof, root)
        for wrong_size, wrong_root in other_roots.items():
            if wrong_size > index:
                assert not verify_inclusion(leaf, index, wrong_size, proof, wrong_root)
        assert not verify_inclusion(leaf, index, index, proof, root)


@pytest.mark.parametrize("new", SIZES)
def test_consistency_proofs_for_every_old_size(new: int) -> None:
    data = inputs(new)
    tree, nodes = build(data)
    new_root = tree.root()
    roots = {size: mth(data[:size]) for size in range(1, new + 1)}
    for old in range(1, new + 1):
        proof = consistency_proof(old, new, lookup(nodes))
        assert proof == subproof(old, data, True)
        old_root = roots[old]
        assert verify_consistency(old, new, proof, old_root, new_root)
        for altered in alterations(proof, every_byte=new <= 16):
            assert not verify_consistency(old, new, altered, old_root, new_root)
        assert not verify_consistency(old, new, proof, flipped(old_root, 0), new_root)
        assert not verify_consistency(old, new, proof, old_root, flipped(new_root, 31))
        for wrong in (old - 1, old + 1):
            if 0 < wrong <= new and wrong != old:
                assert not verify_consistency(wrong, new, proof, roots[wrong], new_root)
        if old < new:
            wrong_root = mth(data[: new - 1]) if new - 1 >= old else new_root
            assert not verify_consistency(old, new - 1, proof, old_root, wrong_root)
            assert not verify_consistency(old, new + 1, proof, old_root, mth(inputs(new + 1)))


# -- malformed input is a failed proof, never an exception


BAD_HASHES: list[object] = [b"", b"x" * 31, b"x" * 33, "00" * 32, None, 7, bytearray(32)]


@pytest.mark.parametrize("bad", BAD_HASHES)
def test_verifiers_refuse_malformed_hashes_without_raising(bad: object) -> None:
    data = inputs(5)
    tree, nodes = build(data)
    root, leaf = tree.root(), leaf_hash(data[2])
    proof = inclusion_proof(2, 5, lookup(nodes))
    assert not verify_inclusion(bad, 2, 5, proof, root)  # type: ignore[arg-type]
    assert not verify_inclusion(leaf, 2, 5, proof, bad)  # type: ignore[arg-type]
    assert not verify_inclusion(leaf, 2, 5, [bad, *proof[1:]], root)  # type: ignore[list-item]
    old_root = mth(data[:3])
    consistency = consistency_proof(3, 5, lookup(nodes))
    assert not verify_consistency(3, 5, consistency, bad, root)  # type: ignore[arg-type]
    assert not verify_consistency(3, 5, [bad, *consistency[1:]], old_root, root)  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("index", "size"), [(-1, 5), (5, 5), (0, 0), (True, 5), (1.0, 5), ("1", 5), (2, None)]
)
def test_inclusion_refuses_malformed_positions(index: object, size: object) -> None:
    leaf = leaf_hash(b"")
    assert not verify_inclusion(leaf, index, size, [], leaf)  # type: ignore[arg-type]


def test_consistency_edge_cases() -> None:
    root = mth(inputs(3))
    assert verify_consistency(3, 3, [], root, root)
    assert not verify_consistency(3, 3, [root], root, root)
    assert not verify_consistency(3, 3, [], root, EMPTY_ROOT)
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert not verify_consistency(0, 3, [], EMPTY_ROOT, root)
    assert not verify_consistency(4, 3, [], root, root)
    assert not verify_consistency(1, 3, [], mth(inputs(1)), root)
    assert not verify_consistency(-1, 3, [root], root, root)
    assert not verify_consistency(1, 3, "not a list", root, root)  # type: ignore[arg-type]
