"""The compact qcow2 layout written before qemu-img fills it (decision 0043), read back by an
independent reader of the qcow2 format: header, refcounts covering exactly the file, L1 and L2
tables mapping each data cluster to its place in guest order."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from hypersdk_exporter.adapters.outbound.qcow2_layout import (
    CLUSTER,
    COPIED,
    L2_ENTRIES,
    REFCOUNTS_PER_BLOCK,
    Layout,
    plan,
    runs_of,
    write,
)

GIB = 1 << 30
OFFSET_MASK = 0x00FF_FFFF_FFFF_FE00


def _written(tmp_path: Path, layout: Layout) -> bytes:
    path = tmp_path / "image.qcow2"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write(fd, layout)
    finally:
        os.close(fd)
    return path.read_bytes()


def _read(image: bytes) -> tuple[int, dict[int, int], dict[int, int]]:
    """(virtual size, guest cluster -> host offset, host cluster -> refcount) of an image."""
    (magic, version, backing, _, bits, size, crypt, l1_size, l1_offset, rt_offset, rt_clusters) = (
        struct.unpack_from(">4sIQIIQIIQQI", image, 0)
    )
    assert (magic, version, backing, crypt) == (b"QFI\xfb", 3, 0, 0)
    assert 1 << bits == CLUSTER
    incompatible, compatible, autoclear, order, header_length = struct.unpack_from(
        ">QQQII", image, 72
    )
    assert (incompatible, compatible, autoclear, order, header_length) == (0, 0, 0, 4, 112)
    assert image[header_length : header_length + 8] == bytes(8)  # no header extension
    mapping: dict[int, int] = {}
    for index in range(l1_size):
        (entry,) = struct.unpack_from(">Q", image, l1_offset + index * 8)
        if not entry:
            continue
        assert entry & COPIED
        l2 = entry & OFFSET_MASK
        for slot in range(L2_ENTRIES):
            (host,) = struct.unpack_from(">Q", image, l2 + slot * 8)
            if host:
                assert host & COPIED
                mapping[index * L2_ENTRIES + slot] = host & OFFSET_MASK
    refcounts: dict[int, int] = {}
    for index in range(rt_clusters * CLUSTER // 8):
        (block,) = struct.unpack_from(">Q", image, rt_offset + index * 8)
        if not block:
            continue
        for slot in range(REFCOUNTS_PER_BLOCK):
            (count,) = struct.unpack_from(">H", image, block + slot * 2)
            if count:
                refcounts[index * REFCOUNTS_PER_BLOCK + slot] = count
    return size, mapping, refcounts


def _check(tmp_path: Path, virtual_size: int, runs: tuple[tuple[int, int], ...]) -> Layout:
    layout = plan(virtual_size, runs)
    image = _written(tmp_path, layout)
    assert len(image) == layout.file_size
    size, mapping, refcounts = _read(image)
    assert size == layout.virtual_size
    guest = [cluster for first, count in runs for cluster in range(first, first + count)]
    # every data cluster has its place, in guest order, right after the metadata
    assert sorted(mapping) == guest
    assert [mapping[c] for c in guest] == [
        layout.metadata_end + rank * CLUSTER for rank in range(len(guest))
    ]
    # every cluster of the file is counted once, nothing beyond it
    assert refcounts == dict.fromkeys(range(layout.clusters), 1)
    # the data clusters are still holes: only metadata has been written
    assert image[layout.metadata_end :] == bytes(layout.file_size - layout.metadata_end)
    return layout


def test_an_empty_disk_is_header_refcounts_and_l1_only(tmp_path: Path) -> None:
    layout = _check(tmp_path, 10 << 20, ())
    assert layout.regions == ()
    assert layout.first_data == 4  # header, refcount table, one refcount block, L1
    assert layout.file_size == 4 * CLUSTER


def test_scattered_data_across_regions(tmp_path: Path) -> None:
    runs = ((0, 16), (9600, 32), (32768, 1), (49151, 1))  # 4 of the 6 regions of 3 GiB
    layout = _check(tmp_path, 3 * GIB, runs)
    assert layout.regions == (0, 1, 4, 5)
    assert layout.data_clusters == 50


def test_a_run_across_a_region_boundary(tmp_path: Path) -> None:
    layout = _check(tmp_path, 1200 << 20, ((8000, 480),))
    assert layout.regions == (0, 1)


def test_refcount_blocks_count_themselves(tmp_path: Path) -> None:
    # more clusters than one refcount block counts: the blocks grow to cover themselves
    layout = _check(tmp_path, 4 * GIB, ((0, REFCOUNTS_PER_BLOCK + 10),))
    assert layout.refcount_block_count == 2
    assert layout.clusters > REFCOUNTS_PER_BLOCK


def test_the_virtual_size_is_rounded_up_to_a_sector(tmp_path: Path) -> None:
    layout = _check(tmp_path, 5 * GIB + 12345, ((81920, 1),))
    assert layout.virtual_size == 5 * GIB + 12800


def test_extents_become_runs_of_whole_clusters() -> None:
    assert runs_of([]) == ()
    assert runs_of([(100, 5000)]) == ((0, 1),)
    assert runs_of([(CLUSTER * 3 + 1, CLUSTER)]) == ((3, 2),)  # unaligned: two clusters
    assert runs_of([(CLUSTER, 1), (0, CLUSTER)]) == ((0, 2),)  # touching, any order
    assert runs_of([(0, 3 * CLUSTER), (CLUSTER, CLUSTER)]) == ((0, 3),)  # overlapping
    assert runs_of([(0, 1), (5 * CLUSTER, 0), (9 * CLUSTER, 1)]) == ((0, 1), (9, 1))


@pytest.mark.parametrize(
    "runs",
    [((0, 0),), ((5, 2), (3, 1)), ((0, 2), (2, 1)), ((0, 2), (1, 3)), ((159, 2),)],
    ids=["empty run", "descending", "touching", "overlapping", "beyond the disk"],
)
def test_runs_are_refused_unless_ascending_and_apart(runs: tuple[tuple[int, int], ...]) -> None:
    with pytest.raises(ValueError, match=r"runs must be|beyond the virtual size"):
        plan(10 << 20, runs)


def test_a_large_sparse_disk_plans_without_listing_clusters() -> None:
    layout = plan(1 << 40, ((0, 1 << 24),))  # a 1 TiB disk, all of it data: 16M clusters
    assert layout.data_clusters == 1 << 24
    assert len(layout.regions) == 2048
