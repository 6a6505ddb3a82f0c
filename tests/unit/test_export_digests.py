"""The digests of the write pass over sparse files: holes hashed as zeros without reading them,
data through one reused buffer, equal to the SHA-256 of the file's bytes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from hypersdk_exporter.adapters.outbound.digests import (
    MAX_WRITE,
    READ_BLOCK,
    extents,
    follow_hash,
    hash_file,
)
from hypersdk_exporter.adapters.outbound.qemu_img import (
    SPARE,
    QemuImgConverter,
    SandboxSettings,
    _HashChild,
    _reads_direct,
    _unless_cancelled,
)
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError

MIB = 1 << 20


def _layout(size: int, seed: int) -> list[tuple[int, bytes]]:
    """Data runs at odd offsets and of odd lengths, holes between (some over READ_BLOCK)."""
    rng = random.Random(seed)
    runs, offset = [], 4096 * 3 + 17
    while offset < size:
        length = min(rng.randrange(1, 3 * MIB), size - offset)
        runs.append((offset, rng.randbytes(length)))
        offset += length + rng.choice([0, 4096, 65536 + 5, READ_BLOCK + 4096 * 7])
    return runs


def _sparse(path: Path, size: int, seed: int) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for offset, data in _layout(size, seed):
            os.pwrite(fd, data, offset)
    finally:
        os.close(fd)
    return path


def _expected(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
def test_a_sparse_file_hashes_as_its_bytes(tmp_path: Path, mapped: bool) -> None:
    path = _sparse(tmp_path / "disk", 40 * MIB + 123, seed=1)
    assert len(extents(path)) > 1  # really sparse here, or the holes went untested
    assert hash_file(path, mapped=mapped) == _expected(path)


def test_a_file_of_one_hole_and_an_empty_file(tmp_path: Path) -> None:
    hole = tmp_path / "hole"
    with hole.open("wb") as stream:
        stream.truncate(3 * READ_BLOCK + 1)
    empty = tmp_path / "empty"
    empty.touch()
    assert hash_file(hole) == _expected(hole)
    assert hash_file(empty) == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize("mapped", [False, True], ids=["read", "mapped"])
def test_the_follower_hashes_a_file_written_in_order_as_its_final_bytes(
    tmp_path: Path, mapped: bool
) -> None:
    size = 3 * MAX_WRITE + 5 * MIB
    path = tmp_path / "target"
    with path.open("wb") as stream:
        stream.truncate(size)  # created first, as qemu-img create does
    written, stop = threading.Event(), threading.Event()

    def writer() -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            for offset, data in _layout(size, seed=2):  # in order, one request at a time
                os.pwrite(fd, data, offset)
                time.sleep(0.001)
        finally:
            os.close(fd)
        written.set()

    thread = threading.Thread(target=writer)
    thread.start()
    digest = follow_hash(path, written, stop, metadata=[], mapped=mapped)
    thread.join()
    assert digest == _expected(path)


async def test_a_cancel_stops_the_wait_for_a_digest_still_being_hashed() -> None:
    """qemu-img has exited and the digest's tail is being hashed: a cancel stops the wait at
    once (the bench found a cancel at 97 % taking 2.2 s, the time the hash still needed)."""
    release = asyncio.Event()

    async def hashing() -> str:
        await release.wait()  # never set: a digest that would take for ever
        return "never"

    task = asyncio.create_task(hashing())
    started = time.monotonic()
    flips = iter([False, False, True])
    with pytest.raises(ExportCancelledError):
        await _unless_cancelled(task, lambda: next(flips, True))
    assert time.monotonic() - started < 1
    assert not task.done()  # the caller stops the hashing thread and waits for it
    task.cancel()


async def test_a_digest_that_finishes_is_returned() -> None:
    async def hashing() -> str:
        return "abc"

    assert await _unless_cancelled(asyncio.create_task(hashing()), lambda: False) == "abc"


# ---- the hashing child: the converter's digests come from a process of their own ------------


def _write_in_order(path: Path, size: int, seed: int) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in _layout(size, seed=seed):
            os.pwrite(fd, data, offset)
            time.sleep(0.001)
    finally:
        os.close(fd)


async def test_the_child_follows_a_file_written_in_order(tmp_path: Path) -> None:
    size = 3 * MAX_WRITE + 5 * MIB
    path = tmp_path / "target"
    with path.open("wb") as stream:
        stream.truncate(size)
    child = await _HashChild.start(path, follow=True)
    await asyncio.to_thread(_write_in_order, path, size, 3)
    assert await child.digest(lambda: False) == _expected(path)


async def test_the_child_hashes_a_closed_file_once_told(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "closed", 20 * MIB + 7, seed=4)
    child = await _HashChild.start(path, follow=False)
    assert await child.digest(lambda: False) == _expected(path)


async def test_a_child_that_dies_fails_the_digest_never_the_worker(tmp_path: Path) -> None:
    """What a SIGBUS does to a mapping of a file cut short: kills the child; the export fails."""
    path = _sparse(tmp_path / "cut", 8 * MIB, seed=5)
    child = await _HashChild.start(path, follow=False)
    os.kill(child._process.pid, signal.SIGBUS)
    with pytest.raises(ExportFailedError) as caught:
        await child.digest(lambda: False)
    assert caught.value.reason == "artifact_write_failed"


async def test_a_file_that_shrinks_under_the_child_fails_the_digest(tmp_path: Path) -> None:
    path = tmp_path / "shrinking"
    with path.open("wb") as stream:
        stream.truncate(64 * MIB)
    os.pwrite(os.open(path, os.O_WRONLY), b"x" * (40 * MIB), 0)
    child = await _HashChild.start(path, follow=True)
    await asyncio.sleep(0.3)  # it has hashed up to the frontier (40 MiB less one request)
    os.truncate(path, 1 * MIB)
    with pytest.raises(ExportFailedError):
        await child.digest(lambda: False)


async def test_a_cancel_kills_the_child(tmp_path: Path) -> None:
    path = tmp_path / "long"
    with path.open("wb") as stream:
        stream.truncate(8 << 30)  # 8 GiB of zeros: seconds of hashing
    child = await _HashChild.start(path, follow=False)
    pid = child._process.pid
    with pytest.raises(ExportCancelledError):
        await child.digest(lambda: True)
    await child.stop()
    assert child._process.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_following_child_is_ready_once_it_holds_the_file_open(tmp_path: Path) -> None:
    """qemu-img starts only then: a child still starting would fall behind it for good."""
    size = 2 * MAX_WRITE + 3 * MIB
    path = tmp_path / "target"
    with path.open("wb") as stream:
        stream.truncate(size)
    child = await _HashChild.start(path, follow=True)
    await child.ready(lambda: False)
    pid = child._process.pid
    held = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert str(path) in held
    await asyncio.to_thread(_write_in_order, path, size, 6)
    assert await child.digest(lambda: False) == _expected(path)


async def test_a_following_child_that_dies_before_it_is_ready_fails_the_export(
    tmp_path: Path,
) -> None:
    child = await _HashChild.start(tmp_path / "never-made", follow=True)  # it waits for it
    os.kill(child._process.pid, signal.SIGKILL)
    with pytest.raises(ExportFailedError) as caught:
        await child.ready(lambda: False)
    assert caught.value.reason == "artifact_write_failed"


async def test_a_cancel_stops_the_wait_for_a_following_child(tmp_path: Path) -> None:
    child = await _HashChild.start(tmp_path / "never-made", follow=True)
    with pytest.raises(ExportCancelledError):
        await child.ready(lambda: True)
    await child.stop()
    assert child._process.returncode is not None


# ---- the spare: a child started before it is needed -----------------------------------------


def _state(pid: int) -> str:
    """The process's state letter; "gone" once the loop has reaped it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # ESRCH: read while it was being reaped
        return "gone"


async def test_a_spare_child_hashes_the_next_output(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "closed", 9 * MIB + 5, seed=7)
    await SPARE.discard()
    await SPARE.prime()
    await SPARE.prime()  # one waits already: no second one
    spare = SPARE.take()
    assert spare is not None
    assert SPARE.take() is None  # it is the caller's now
    cmdline = Path(f"/proc/{spare.pid}/cmdline").read_bytes()
    assert str(tmp_path).encode() not in cmdline  # the path goes over stdin, not argv
    child = await _HashChild.start(path, follow=False, spare=spare)
    assert child._process is spare
    assert await child.digest(lambda: False) == _expected(path)


async def test_a_spare_that_died_is_replaced_by_a_new_child(tmp_path: Path) -> None:
    path = _sparse(tmp_path / "closed", 3 * MIB, seed=8)
    await SPARE.discard()
    await SPARE.prime()
    spare = SPARE.take()
    assert spare is not None
    os.kill(spare.pid, signal.SIGKILL)
    for _ in range(200):  # dead, its stdin closed (reaped by the loop or not yet)
        if _state(spare.pid) in {"Z", "gone"}:
            break
        await asyncio.sleep(0.005)
    child = await _HashChild.start(path, follow=False, spare=spare)
    assert child._process is not spare
    assert await child.digest(lambda: False) == _expected(path)
    assert spare.returncode == -signal.SIGKILL


async def test_inspecting_a_source_starts_the_spare(tmp_path: Path) -> None:
    """So the child of its conversion has imported its modules by the time it is needed."""
    await SPARE.discard()
    converter = QemuImgConverter(SandboxSettings(executable="/nonexistent/qemu-img"))
    with pytest.raises((ExportFailedError, OSError)):
        await converter.inspect(tmp_path / "disk.raw", format="raw", allowed_root=tmp_path)
    spare = SPARE.take()
    assert spare is not None
    assert spare.returncode is None
    await _HashChild(spare).stop()


async def test_a_spare_that_never_gets_a_command_exits_when_its_stdin_closes() -> None:
    await SPARE.discard()
    await SPARE.prime()
    spare = SPARE.take()
    assert spare is not None
    assert spare.stdin is not None
    spare.stdin.close()
    assert await asyncio.wait_for(spare.wait(), 10) == 1  # stopped: nothing to hash


def test_direct_reads_where_the_filesystem_takes_them(tmp_path: Path) -> None:
    disk = _sparse(tmp_path / "disk", MIB, seed=9)
    assert _reads_direct(disk)  # this filesystem does
    assert not _reads_direct(Path("/proc/self/status"))  # procfs does not
    assert not _reads_direct(tmp_path / "missing")


def test_a_fifo_swapped_in_for_the_source_is_answered_at_once(tmp_path: Path) -> None:
    """No writer ever opens it: a blocking open would hang the worker."""
    fifo = tmp_path / "disk.raw"
    os.mkfifo(fifo)
    started = time.monotonic()
    assert not _reads_direct(fifo)
    assert time.monotonic() - started < 1


async def test_a_spare_that_cannot_start_is_only_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No process to spare (EAGAIN, ENOMEM): the conversion then starts its own child."""
    await SPARE.discard()

    async def exhausted() -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(_HashChild, "spawn", staticmethod(exhausted))
    await SPARE.prime_quietly()
    assert SPARE.take() is None
    assert "no spare hashing child: BlockingIOError" in caplog.text
