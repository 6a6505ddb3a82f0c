"""SHA-256 of a conversion's output, behind qemu-img as it writes or once it closed (0034).

This module needs nothing but the standard library, so it also runs as the hashing child
(``python -I -m hypersdk_exporter.adapters.outbound.digests``) the converter starts for each
output: the child maps the file instead of copying it through a buffer (decision 0043), and
a file cut short under a mapping raises SIGBUS, which kills the child, never the worker.

The child's protocol: it starts with no arguments and waits, a spare the converter keeps
ready (its interpreter started, its modules imported), for one line on stdin, ``follow|close
METADATA_END PATH``; then on stdin one byte ``w`` once the writer exited successfully (end of
input without it: stop); on stdout a line ``r`` once the command is taken, when following
once the file is open (the writer is started only then: a child still starting, its modules
read from a cold page cache behind the writer's reads, fell a second behind and hashed the
rest after the writer exited), then the hex digest. Exit 0 with a digest, 1 when stopped (or
no command came), 2 when the file shrank, 3 on an unreadable file.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "MAX_WRITE",
    "READY",
    "READ_BLOCK",
    "BlockReader",
    "ShrankError",
    "StoppedError",
    "command_line",
    "extents",
    "follow_hash",
    "hash_file",
]

# qemu-img convert writes at most this much in one request (its largest buffer); a follower
# stays this far behind the end of what it sees written.
MAX_WRITE = 16 << 20
READ_BLOCK = 4 << 20
READY = b"r\n"
"""What a following child writes once it holds the file open."""
_ZEROS = bytes(READ_BLOCK)
# Hashed ranges go to the kernel's writeback in steps of this size.
WRITE_BACK_BLOCK = 32 << 20
SYNC_FILE_RANGE_WRITE = 2
EXIT_STOPPED, EXIT_SHRANK, EXIT_UNREADABLE = 1, 2, 3
_libc = ctypes.CDLL(None, use_errno=True)


class StoppedError(Exception):
    """The hash was asked to stop (a cancel)."""


class ShrankError(Exception):
    """The file became shorter than what was already seen of it."""


class BlockReader:
    """Feeds a digest from a file, holes as zeros without reading them.

    ``mapped``: through a memory map of each range (no copy; only where a SIGBUS can kill
    nothing but a hashing child); else through one reused buffer. Every range hashed is
    handed to the kernel's writeback at once (``sync_file_range``, no wait), so the fsync
    that makes the artifact durable finds little left to write.
    """

    def __init__(self, fd: int, *, mapped: bool = False) -> None:
        self._fd = fd
        self._mapped = mapped
        self._buffer = memoryview(bytearray(0 if mapped else READ_BLOCK))
        self._written_back = 0

    def hash(self, digest: Any, start: int, end: int) -> int:
        """Hash [start, end) of the file (at most READ_BLOCK); returns the new position."""
        end = min(end, start + READ_BLOCK)
        try:
            data = os.lseek(self._fd, start, os.SEEK_DATA)
        except OSError:  # ENXIO: nothing but a hole after start
            data = end
        if data > start:  # a hole: zeros, final (decision 0034)
            stop = min(data, end)
            digest.update(_ZEROS[: stop - start])
            return stop
        hole = min(os.lseek(self._fd, start, os.SEEK_HOLE), end)
        if self._mapped:
            count = self._mapped_hash(digest, start, hole)
        else:
            count = self._read(digest, start, hole)
        self._write_back(start + count)
        return start + count

    def _read(self, digest: Any, start: int, end: int) -> int:
        count = os.preadv(self._fd, [self._buffer[: end - start]], start)
        if count <= 0:
            raise ShrankError
        digest.update(self._buffer[:count])
        return count

    def _mapped_hash(self, digest: Any, start: int, end: int) -> int:
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            region = mmap.mmap(self._fd, end - base, prot=mmap.PROT_READ, offset=base)
        except ValueError as exc:  # the range is no longer in the file
            raise ShrankError from exc
        with region, memoryview(region) as view, view[start - base :] as part:
            digest.update(part)
        return end - start

    def _write_back(self, upto: int) -> None:
        if upto - self._written_back >= WRITE_BACK_BLOCK:
            _sync_file_range(self._fd, self._written_back, upto - self._written_back)
            self._written_back = upto


def _sync_file_range(fd: int, offset: int, count: int) -> None:
    """Start writeback of a range (SYNC_FILE_RANGE_WRITE): no wait; errors left to fsync."""
    _libc.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(count), SYNC_FILE_RANGE_WRITE)


def hash_file(path: Path, stop: threading.Event | None = None, *, mapped: bool = False) -> str:
    """SHA-256 of a file qemu-img has closed (its pages are still in the page cache)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = BlockReader(fd, mapped=mapped)
        size = os.fstat(fd).st_size
        position = 0
        while position < size:
            if stop is not None and stop.is_set():
                raise StoppedError
            position = reader.hash(digest, position, min(size, position + READ_BLOCK))
    finally:
        os.close(fd)
    return digest.hexdigest()


def extents(path: Path) -> list[tuple[int, int]]:
    """The data extents of a file, as (start, end)."""
    found: list[tuple[int, int]] = []
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while True:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                return found
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            found.append((start, offset))
    finally:
        os.close(fd)


def _uncovered(start: int, end: int, metadata: list[tuple[int, int]]) -> bool:
    """Whether part of [start, end) lies outside every metadata extent."""
    position = start
    for meta_start, meta_end in metadata:
        if meta_end <= position:
            continue
        if meta_start > position:
            return True
        position = meta_end
        if position >= end:
            return False
    return position < end


def _data_end(fd: int, start: int, metadata: list[tuple[int, int]]) -> int:
    """End of the last extent at or after ``start`` holding written data, not only metadata."""
    end = start
    offset = start
    while True:
        try:
            data = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError:  # ENXIO: no data after offset
            return end
        offset = os.lseek(fd, data, os.SEEK_HOLE)
        if _uncovered(data, offset, metadata):
            end = offset


def follow_hash(
    path: Path,
    written: threading.Event,
    stop: threading.Event,
    metadata: list[tuple[int, int]] | None = None,
    *,
    mapped: bool = False,
    on_open: Callable[[], None] = lambda: None,
) -> str:
    """SHA-256 of a file while qemu-img writes it in order (decision 0034).

    qemu-img convert writes in guest order, one request at a time (its default: no ``-W``);
    the target was made beforehand (raw holes, or a qcow2 layout whose tables are final,
    decision 0043) and its ``metadata`` extents recorded, so data has fixed places in
    guest order and no metadata is rewritten. So everything before the end of the last
    extent holding data, less one request, is final: it is hashed while later data is being
    written, and a hole there is final zeros. After qemu-img exits the rest is hashed.
    ``on_open`` is called once the file is open.
    """
    digest = hashlib.sha256()
    while not path.exists():
        if written.is_set() or stop.is_set():
            break
        time.sleep(0.01)
    fd = os.open(path, os.O_RDONLY)
    reader = BlockReader(fd, mapped=mapped)
    position = 0
    try:
        on_open()
        while True:
            if stop.is_set():
                raise StoppedError
            finished = written.is_set()
            if finished:
                frontier = os.fstat(fd).st_size
                if frontier < position:  # cut below what was hashed: no digest of it
                    raise ShrankError
            else:
                frontier = max(position, _data_end(fd, position, metadata or []) - MAX_WRITE)
            advanced = frontier > position
            while position < frontier:
                position = reader.hash(digest, position, frontier)
                if stop.is_set():
                    raise StoppedError
            if finished:
                return digest.hexdigest()
            if not advanced:
                written.wait(0.02)
    finally:
        os.close(fd)


def command_line(path: Path, *, follow: bool, metadata_end: int) -> bytes:
    """The line that sets a waiting child to hash ``path``."""
    name = os.fsencode(path)
    if b"\n" in name:
        raise ValueError("a path with a line break")
    return b"%s %d %s\n" % (b"follow" if follow else b"close", metadata_end, name)


def main() -> int:
    """The hashing child (see the module's docstring)."""
    line = sys.stdin.buffer.readline()
    if not line.endswith(b"\n"):  # the converter went away before it had a file to hash
        return EXIT_STOPPED
    mode, metadata_end, name = line[:-1].split(b" ", 2)
    path = Path(os.fsdecode(name))
    written, stop = threading.Event(), threading.Event()

    def control() -> None:
        signal = sys.stdin.buffer.read(1)
        (written if signal == b"w" else stop).set()

    def opened() -> None:
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()

    threading.Thread(target=control, daemon=True).start()
    try:
        if mode == b"follow":
            metadata = [(0, int(metadata_end))] if int(metadata_end) else []
            digest = follow_hash(path, written, stop, metadata, mapped=True, on_open=opened)
        else:
            opened()  # the command is taken; the file is opened once it is written
            while not written.wait(0.05):
                if stop.is_set():
                    return EXIT_STOPPED
            digest = hash_file(path, stop, mapped=True)
    except StoppedError:
        return EXIT_STOPPED
    except ShrankError:
        return EXIT_SHRANK
    except OSError:
        return EXIT_UNREADABLE
    sys.stdout.write(digest + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
