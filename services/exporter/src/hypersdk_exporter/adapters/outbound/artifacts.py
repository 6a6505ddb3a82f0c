"""The job directory on a local filesystem: 0700, files 0600, an OVA hashed as it is written."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from hypersdk_exporter.core import errors
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.ports.outbound import ArtifactWriter, CancelCheck

COPY_BLOCK = 4 << 20


class _HashingReader(io.RawIOBase):
    """Reads a file for tarfile, hashing each block as it goes; stops on cancel."""

    def __init__(self, stream: BinaryIO, digest: hashlib._Hash, cancelled: CancelCheck) -> None:
        self._stream = stream
        self._digest = digest
        self._cancelled = cancelled

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._cancelled():
            raise ExportCancelledError
        block = self._stream.read(size)
        self._digest.update(block)
        return block


class _HashingWriter(io.RawIOBase):
    """The OVA file: every byte tarfile writes is hashed on its way to disk."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        self.digest.update(data)
        self._stream.write(data)
        self.size += len(data)
        return len(data)


class LocalArtifactWriter(ArtifactWriter):
    """Job directories under the export directory.

    ``owner`` (uid, gid) is the conversion user's when the service runs as root: it owns the
    job directory, so qemu-img can write there and nothing else can.
    """

    def __init__(self, *, owner: tuple[int, int] | None = None) -> None:
        self._owner = owner

    async def prepare(self, job_dir: Path) -> None:
        """A fresh 0700 job directory, owned by the conversion user."""

        def make() -> None:
            shutil.rmtree(job_dir, ignore_errors=True)
            job_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            job_dir.mkdir(mode=0o700)
            os.chmod(job_dir, 0o700)
            if self._owner is not None:
                os.chown(job_dir, *self._owner)

        await asyncio.to_thread(make)

    async def free_bytes(self, job_dir: Path) -> int:
        """Free bytes of the job directory's filesystem."""
        return (await asyncio.to_thread(shutil.disk_usage, job_dir)).free

    async def discard(self, job_dir: Path) -> None:
        """Remove the job directory."""
        await asyncio.to_thread(shutil.rmtree, job_dir, ignore_errors=True)

    async def spool(
        self, stream: AsyncIterator[bytes], target: Path, *, cancelled: CancelCheck
    ) -> None:
        """Copy a streamed image into the job directory, 0600."""
        await asyncio.to_thread(self._mkdir, target.parent)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            async for block in stream:
                if cancelled():
                    raise ExportCancelledError
                await asyncio.to_thread(os.write, fd, block)
            if self._owner is not None:
                os.fchown(fd, *self._owner)
        finally:
            os.close(fd)

    def _mkdir(self, path: Path) -> None:
        path.mkdir(mode=0o700)
        if self._owner is not None:
            os.chown(path, *self._owner)

    async def finish(self, partial: Path, target: Path) -> int:
        """Fsync, 0600, rename into place."""

        def done() -> int:
            fd = os.open(partial, os.O_RDONLY)
            try:
                os.fchmod(fd, 0o600)
                os.fsync(fd)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            partial.rename(target)
            return size

        try:
            return await asyncio.to_thread(done)
        except OSError as exc:
            raise ExportFailedError(errors.ARTIFACT_WRITE_FAILED, type(exc).__name__) from exc

    async def pack_ova(
        self,
        *,
        target: Path,
        descriptor: tuple[str, bytes],
        disks: list[tuple[str, Path]],
        manifest: Callable[[dict[str, str]], tuple[str, bytes]],
        cancelled: CancelCheck,
    ) -> tuple[int, str]:
        """The OVA in one pass: every member and the whole archive hashed as written."""

        def pack() -> tuple[int, str]:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as raw:
                out = _HashingWriter(raw)
                digests: dict[str, str] = {}
                with tarfile.TarFile(
                    fileobj=out,
                    mode="w",
                    format=tarfile.USTAR_FORMAT,
                    copybufsize=COPY_BLOCK,
                ) as tar:
                    name, content = descriptor
                    digests[name] = hashlib.sha256(content).hexdigest()
                    tar.addfile(_member(name, len(content)), io.BytesIO(content))
                    for name, path in disks:
                        digest = hashlib.sha256()
                        with path.open("rb") as stream:
                            size = os.fstat(stream.fileno()).st_size
                            reader = _HashingReader(stream, digest, cancelled)
                            tar.addfile(_member(name, size), reader)
                        digests[name] = digest.hexdigest()
                        path.unlink()
                    name, content = manifest(digests)
                    tar.addfile(_member(name, len(content)), io.BytesIO(content))
                raw.flush()
                os.fsync(raw.fileno())
                return out.size, out.digest.hexdigest()

        try:
            return await asyncio.to_thread(pack)
        except OSError as exc:
            await asyncio.to_thread(_unlink, target)
            raise ExportFailedError(errors.ARTIFACT_WRITE_FAILED, type(exc).__name__) from exc


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    info.uname = info.gname = ""
    return info
