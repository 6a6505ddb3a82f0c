"""A compact qcow2 image whose metadata is final before any data is written (decision 0043).

``qemu-img convert`` into a fresh qcow2 allocates clusters as it goes and rewrites its L2 and
refcount tables until it closes the file, so no digest of it can advance before the close;
``preallocation=metadata`` fixes the tables but makes the file as long as the virtual disk,
so the digest hashes every zero of it. Here the tables are written first for exactly the
clusters the source holds data in (its ``qemu-img map``), the data clusters in guest order
right after them: ``qemu-img convert -n --target-is-zero`` then fills them in place, in
order, and never writes metadata again, so the file can be hashed behind the writer.

The layout follows the qcow2 specification (version 3, 64 KiB clusters, 16-bit refcounts, no
backing file, no extensions): header, refcount table, refcount blocks, L1 table, L2 tables,
data. ``qemu-img check`` finds nothing to repair in it (tests).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["CLUSTER", "Layout", "Run", "plan", "runs_of", "write"]

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
L2_ENTRIES = CLUSTER // 8  # one L2 table maps 512 MiB of the guest
REFCOUNT_ORDER = 4  # 16-bit refcounts
REFCOUNTS_PER_BLOCK = CLUSTER * 8 >> REFCOUNT_ORDER
HEADER_LENGTH = 112  # the version 3 header with its compression type byte, padded to 8
SECTOR = 512
COPIED = 1 << 63  # the cluster's refcount is exactly one: written in place
_HEADER = struct.Struct(">4sIQIIQIIQQIIQQQQII")

Run = tuple[int, int]
"""Consecutive guest clusters holding data: (first cluster, count)."""


def _ceil(count: int, unit: int) -> int:
    return -(-count // unit)


@dataclass(frozen=True)
class Layout:
    """Where everything of one image lies, in clusters."""

    virtual_size: int
    runs: tuple[Run, ...]  # guest clusters holding data, ascending, neither empty nor touching
    data_clusters: int
    refcount_table: int  # first cluster of each table
    refcount_table_clusters: int
    refcount_blocks: int  # first refcount block; they follow one another
    refcount_block_count: int
    l1_table: int
    l1_entries: int
    l2_tables: int  # first L2 table; one per 512 MiB guest region holding data
    regions: tuple[int, ...]  # L1 indices that have an L2 table, ascending
    first_data: int

    @property
    def clusters(self) -> int:
        """Clusters of the whole file."""
        return self.first_data + self.data_clusters

    @property
    def metadata_end(self) -> int:
        """Bytes of metadata at the front of the file: everything before the first data."""
        return self.first_data * CLUSTER

    @property
    def file_size(self) -> int:
        """Length of the finished image, holes included."""
        return self.clusters * CLUSTER


def runs_of(extents: Iterable[tuple[int, int]]) -> tuple[Run, ...]:
    """The guest clusters touched by data extents given as (start, length), as runs."""
    found: list[list[int]] = []
    for start, length in sorted(extents):
        if length <= 0:
            continue
        first, end = start >> CLUSTER_BITS, ((start + length - 1) >> CLUSTER_BITS) + 1
        if found and first <= found[-1][0] + found[-1][1]:  # overlaps or touches the last run
            last = found[-1]
            last[1] = max(last[1], end - last[0])
        else:
            found.append([first, end - first])
    return tuple((first, count) for first, count in found)


def _regions(runs: tuple[Run, ...]) -> tuple[int, ...]:
    regions: list[int] = []
    for first, count in runs:
        for region in range(first // L2_ENTRIES, (first + count - 1) // L2_ENTRIES + 1):
            if not regions or regions[-1] != region:
                regions.append(region)
    return tuple(regions)


def plan(virtual_size: int, runs: tuple[Run, ...]) -> Layout:
    """The layout of a ``virtual_size`` image holding data in the guest clusters of ``runs``."""
    if virtual_size < 0:
        raise ValueError("negative virtual size")
    virtual_size = _ceil(virtual_size, SECTOR) * SECTOR  # as qemu-img create rounds it
    guest_clusters = _ceil(virtual_size, CLUSTER)
    end = 0
    for first, count in runs:
        if count <= 0 or first < end or (end and first == end):
            raise ValueError("runs must be ascending, non-empty and apart")
        end = first + count
    if end > guest_clusters:
        raise ValueError("a data cluster beyond the virtual size")
    data_clusters = sum(count for _, count in runs)
    l1_entries = max(1, _ceil(guest_clusters, L2_ENTRIES))
    l1_clusters = _ceil(l1_entries * 8, CLUSTER)
    regions = _regions(runs)
    # The refcount blocks must count themselves: grow them until they cover the file.
    blocks, table = 1, 1
    while True:
        total = 1 + table + blocks + l1_clusters + len(regions) + data_clusters
        need_blocks = _ceil(total, REFCOUNTS_PER_BLOCK)
        need_table = _ceil(need_blocks * 8, CLUSTER)
        if need_blocks <= blocks and need_table <= table:
            break
        blocks, table = max(blocks, need_blocks), max(table, need_table)
    l1_table = 1 + table + blocks
    return Layout(
        virtual_size=virtual_size,
        runs=runs,
        data_clusters=data_clusters,
        refcount_table=1,
        refcount_table_clusters=table,
        refcount_blocks=1 + table,
        refcount_block_count=blocks,
        l1_table=l1_table,
        l1_entries=l1_entries,
        l2_tables=l1_table + l1_clusters,
        regions=regions,
        first_data=l1_table + l1_clusters + len(regions),
    )


def _header(layout: Layout) -> bytes:
    header = _HEADER.pack(
        b"QFI\xfb",
        3,  # version
        0,  # backing file offset: none
        0,  # backing file name size
        CLUSTER_BITS,
        layout.virtual_size,
        0,  # no encryption
        layout.l1_entries,
        layout.l1_table * CLUSTER,
        layout.refcount_table * CLUSTER,
        layout.refcount_table_clusters,
        0,  # snapshots
        0,  # snapshots offset
        0,  # incompatible features
        0,  # compatible features
        0,  # autoclear features
        REFCOUNT_ORDER,
        HEADER_LENGTH,
    )
    # compression type 0 (zlib) and padding up to the header length, then the end of the
    # (empty) header extension area
    return header + bytes(HEADER_LENGTH - len(header)) + bytes(8)


def _big_endian(values: array[int]) -> bytes:
    if sys.byteorder == "little":
        values.byteswap()
    return values.tobytes()


def pieces(layout: Layout) -> Iterator[tuple[int, bytes]]:
    """The metadata as (offset, bytes), in file order; everything else starts as zeros."""
    yield 0, _header(layout)
    blocks = layout.refcount_block_count
    table = array(
        "Q",
        range(
            layout.refcount_blocks * CLUSTER, (layout.refcount_blocks + blocks) * CLUSTER, CLUSTER
        ),
    )
    yield layout.refcount_table * CLUSTER, _big_endian(table)
    used = layout.clusters
    one = struct.pack(">H", 1)
    for index in range(blocks):
        counted = min(REFCOUNTS_PER_BLOCK, used - index * REFCOUNTS_PER_BLOCK)
        yield (layout.refcount_blocks + index) * CLUSTER, one * counted
    l1 = array("Q", bytes(layout.l1_entries * 8))
    for rank, region in enumerate(layout.regions):
        l1[region] = ((layout.l2_tables + rank) * CLUSTER) | COPIED
    yield layout.l1_table * CLUSTER, _big_endian(l1)
    yield from _l2_tables(layout)


def _l2_tables(layout: Layout) -> Iterator[tuple[int, bytes]]:
    """One L2 table per region with data: the data clusters' places, in guest order."""
    host = layout.first_data * CLUSTER
    rank, region = -1, -1
    table = array("Q")
    for first, count in layout.runs:
        cluster, end = first, first + count
        while cluster < end:
            here = cluster // L2_ENTRIES
            if here != region:
                if rank >= 0:
                    yield (layout.l2_tables + rank) * CLUSTER, _big_endian(table)
                rank, region = rank + 1, here
                table = array("Q", bytes(CLUSTER))
            stop = min(end, (here + 1) * L2_ENTRIES)
            step = stop - cluster
            start = cluster % L2_ENTRIES
            table[start : start + step] = array(
                "Q", range(host | COPIED, (host + step * CLUSTER) | COPIED, CLUSTER)
            )
            host += step * CLUSTER
            cluster = stop
    if rank >= 0:
        yield (layout.l2_tables + rank) * CLUSTER, _big_endian(table)


def write(fd: int, layout: Layout) -> None:
    """Write the image's metadata into an empty file and size it; the data stays holes."""
    for start, chunk in pieces(layout):
        view, offset = memoryview(chunk), start
        while view:
            count = os.pwrite(fd, view, offset)
            view, offset = view[count:], offset + count
    os.ftruncate(fd, layout.file_size)
