"""qemu-img, run as an unprivileged user on untrusted images.

Every child gets an empty environment (PATH and LANG only), its own process group (so a
cancel kills it and whatever it started), ``PR_SET_PDEATHSIG=SIGKILL`` (so it dies with its
worker, even a worker killed with -9), umask 077 and no core dumps. As root it runs as the
conversion user; otherwise as the service's own user.

A source is always opened with its format spelled out, inside a ``json:`` filename with
``backing: null`` unless a backing chain was inspected and lies inside the provider's root.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import pwd
import re
import resource
import signal
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypersdk_exporter.adapters.outbound import digests, qcow2_layout
from hypersdk_exporter.adapters.outbound.digests import BlockReader
from hypersdk_exporter.core import errors
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import SOURCE_FORMATS, Digest, FormatSpec
from hypersdk_exporter.core.models import ImageInfo
from hypersdk_exporter.ports.outbound import ByteProgress, CancelCheck, DiskConverter

logger = logging.getLogger(__name__)

ENVIRONMENT = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG": "C.UTF-8"}
PR_SET_PDEATHSIG = 1
CANCEL_POLL_SECONDS = 0.05
MAX_INFO_OUTPUT = 4 << 20
MAX_CHAIN = 16
MAX_MAP_OUTPUT = 64 << 20  # about 600,000 extents
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_libc = ctypes.CDLL(None, use_errno=True)
_T = TypeVar("_T")


@dataclass(frozen=True)
class SandboxSettings:
    """How conversions run."""

    executable: str = "qemu-img"
    user: str | None = "hypersdk-convert"  # used when the service runs as root
    info_timeout_seconds: float = 30.0
    info_memory_bytes: int = 1 << 30
    info_cpu_seconds: int = 30


def conversion_identity(user: str | None) -> tuple[int, int] | None:
    """(uid, gid) children run as; None to run as ourselves (the service is not root).

    As root without a usable conversion user, nothing runs: ExportFailedError.
    """
    if os.geteuid() != 0:
        return None
    if not user:
        raise ExportFailedError(errors.CONVERSION_USER_MISSING, "refusing to convert as root")
    try:
        entry = pwd.getpwnam(user)
    except KeyError as exc:
        raise ExportFailedError(errors.CONVERSION_USER_MISSING, f"no user {user!r}") from exc
    if entry.pw_uid == 0:
        raise ExportFailedError(errors.CONVERSION_USER_MISSING, "the conversion user is root")
    return entry.pw_uid, entry.pw_gid


def _preexec(
    parent: int,
    *,
    identity: tuple[int, int] | None,
    memory: int | None,
    cpu: int | None,
) -> Callable[[], None]:
    """Runs in the child after fork, before exec: switch user, then tie it to its parent.

    The switch is done here rather than by ``user=``/``group=`` because uvloop (the services'
    loop, decision 0040) does not take those arguments.
    """

    def setup() -> None:
        if identity is not None:
            os.setgroups([])
            os.setgid(identity[1])
            os.setuid(identity[0])
        os.umask(0o077)
        # Cleared by a change of credentials, so set here, after the switch of user.
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the worker died before prctl: do not run orphaned
            os._exit(1)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if cpu is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))

    return setup


class QemuImgConverter(DiskConverter):
    """Inspects and converts disk images with qemu-img."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self._settings = settings or SandboxSettings()

    async def _spawn(
        self, args: list[str], *, memory: int | None = None, cpu: int | None = None
    ) -> asyncio.subprocess.Process:
        identity = conversion_identity(self._settings.user)
        return await asyncio.create_subprocess_exec(
            self._settings.executable,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(ENVIRONMENT),
            cwd="/",
            start_new_session=True,
            preexec_fn=_preexec(os.getpid(), identity=identity, memory=memory, cpu=cpu),
        )

    # ---- inspection ---------------------------------------------------------------------

    async def _info(self, path: str, format: str) -> dict[str, Any]:
        settings = self._settings
        process = await self._spawn(
            ["info", "--output=json", "-f", format, "--", path],
            memory=settings.info_memory_bytes,
            cpu=settings.info_cpu_seconds,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), settings.info_timeout_seconds)
        except TimeoutError as exc:
            _kill_group(process)
            await process.wait()
            raise ExportFailedError(errors.SOURCE_UNREADABLE, "qemu-img info timed out") from exc
        if process.returncode != 0:
            reason = (
                errors.SOURCE_FORMAT_MISMATCH
                if b"Image is not in" in err or b"not in qcow" in err or b"Invalid" in err
                else errors.SOURCE_UNREADABLE
            )
            raise ExportFailedError(reason, _last_line(err))
        if len(out) > MAX_INFO_OUTPUT:
            raise ExportFailedError(errors.SOURCE_UNREADABLE, "qemu-img info output too large")
        try:
            info = json.loads(out)
        except ValueError as exc:
            raise ExportFailedError(errors.SOURCE_UNREADABLE, "unreadable qemu-img info") from exc
        if not isinstance(info, dict):
            raise ExportFailedError(errors.SOURCE_UNREADABLE, "unreadable qemu-img info")
        return info

    async def inspect(self, source: Path, *, format: str, allowed_root: Path) -> ImageInfo:
        """qemu-img info with the format given; refuse what reaches outside ``allowed_root``."""
        if format not in SOURCE_FORMATS:
            raise ExportFailedError(errors.UNSUPPORTED_SOURCE_FORMAT, format)
        await SPARE.prime_quietly()  # the hashing child of its conversion, ready by then
        root, path = _real(allowed_root), _real(source)
        if not _inside(path, root):
            raise ExportFailedError(errors.UNSAFE_EXTERNAL_EXTENT, "the image is outside the root")
        top: dict[str, Any] | None = None
        chain = False
        current, current_format = path, format
        for _ in range(MAX_CHAIN):
            info = await self._info(str(current), current_format)
            if info.get("format") != current_format:
                raise ExportFailedError(errors.SOURCE_FORMAT_MISMATCH, current_format)
            _check_references(info, root)
            top = top or info
            backing = info.get("full-backing-filename") or info.get("backing-filename")
            if not backing:
                break
            backing_format = info.get("backing-filename-format")
            if backing_format not in SOURCE_FORMATS:  # a backing file would be probed
                raise ExportFailedError(errors.UNSAFE_BACKING_FILE, "backing format not given")
            current = _resolved(str(backing), root, errors.UNSAFE_BACKING_FILE)
            current_format = str(backing_format)
            chain = True
        else:
            raise ExportFailedError(errors.UNSAFE_BACKING_FILE, "backing chain too long")
        assert top is not None
        size = top.get("virtual-size")
        if not isinstance(size, int) or size < 0:
            raise ExportFailedError(errors.SOURCE_UNREADABLE, "no virtual size")
        return ImageInfo(format=format, virtual_size=size, backing_chain=chain)

    # ---- conversion ---------------------------------------------------------------------

    async def convert(
        self,
        *,
        source: Path,
        info: ImageInfo,
        target: Path,
        spec: FormatSpec,
        compress: bool,
        on_progress: ByteProgress,
        cancelled: CancelCheck,
        spooled: bool = False,
    ) -> str:
        """qemu-img convert -p, hashed as it writes; killed within a second of a cancel.

        The source is read with ``O_DIRECT`` (``-T none``) where its filesystem allows and it
        was not ``spooled`` (decision 0049).
        """
        image: dict[str, Any] = {
            "driver": info.format,
            "file": {"driver": "file", "filename": str(source)},
        }
        if not info.backing_chain:
            image["backing"] = None  # nothing qemu was not told about is ever opened
        direct = not spooled and await asyncio.to_thread(_reads_direct, source)
        reading = ["-T", "none"] if direct else []
        args = [
            "convert",
            "-p",
            *reading,
            "-f",
            info.format,
            *spec.qemu_args(compress=compress),
            "json:" + json.dumps(image),
            str(target),
        ]
        mode = spec.digest_mode(compress=compress)
        layout: qcow2_layout.Layout | None = None
        planned = ""
        if mode is Digest.FOLLOW and spec.qemu_name == "qcow2":
            runs = await self._data_runs(image, info)
            if runs is None:
                mode = Digest.AT_CLOSE  # a compact convert, hashed when it closes
            else:
                layout = qcow2_layout.plan(info.virtual_size, runs)
        if mode is Digest.FOLLOW:
            # The target is made first, so what it holds before any data is known (its
            # metadata, never rewritten by an in-order convert); then filled in place.
            identity = conversion_identity(self._settings.user)
            planned = await asyncio.to_thread(_prepare, target, identity, layout, info.virtual_size)
            args = ["convert", "-p", *reading, "-n", "--target-is-zero", "-f", info.format]
            args += ["-O", spec.qemu_name, "json:" + json.dumps(image), str(target)]
        metadata_end = layout.metadata_end if layout is not None else 0
        hashing: _HashChild | None = None
        process: asyncio.subprocess.Process | None = None
        try:
            hashing = await _HashChild.start(
                target,
                follow=mode is Digest.FOLLOW,
                metadata_end=metadata_end,
                spare=SPARE.take(),
                cancelled=cancelled,
            )
            # A follower still starting when qemu-img starts falls behind it for good.
            await hashing.ready(cancelled)
            process = await self._spawn(args)
            err = await self._watch(process, info.virtual_size, on_progress, cancelled)
            if process.returncode != 0:
                raise ExportFailedError(errors.CONVERSION_FAILED, _last_line(err))
            # The digest's tail (or all of it) is hashed after qemu-img exits: a cancel then
            # still stops it within a poll.
            await hashing.written()
            await SPARE.prime_quietly()  # for the next conversion, while the child hashes the tail
            digest = await hashing.digest(cancelled)
            if layout is not None and not await asyncio.to_thread(
                layout_kept, target, layout, planned
            ):
                logger.warning("qemu-img changed the planned qcow2 layout: hashing it again")
                hashing = await _HashChild.start(target, follow=False)
                digest = await hashing.digest(cancelled)
            if cancelled():
                raise ExportCancelledError
            await on_progress(info.virtual_size)
            return digest
        except BaseException:
            if process is not None:
                _kill_group(process)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(process.wait())
            if hashing is not None:
                await hashing.stop()
            _unlink(target)
            raise

    async def _data_runs(
        self, image: dict[str, Any], info: ImageInfo
    ) -> tuple[qcow2_layout.Run, ...] | None:
        """The guest clusters the source holds data in (``qemu-img map``), or None.

        None when the map cannot be had within its limits (a source too fragmented for
        :data:`MAX_MAP_OUTPUT`, a timeout, an error): the export then falls back to a
        compact convert hashed at close, slower and just as correct.
        """
        settings = self._settings
        process = await self._spawn(
            ["map", "--output=json", "-f", info.format, "json:" + json.dumps(image)],
            memory=settings.info_memory_bytes,
            cpu=settings.info_cpu_seconds,
        )
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            async with asyncio.timeout(settings.info_timeout_seconds):
                out = await process.stdout.read(MAX_MAP_OUTPUT + 1)
                if len(out) <= MAX_MAP_OUTPUT:
                    while chunk := await process.stdout.read(MAX_MAP_OUTPUT + 1 - len(out)):
                        out += chunk
                        if len(out) > MAX_MAP_OUTPUT:
                            break
                if len(out) > MAX_MAP_OUTPUT:
                    logger.warning("the source's map is too large: hashing the qcow2 at close")
                    return None
                err = await process.stderr.read(1 << 16)
                await process.wait()
        except TimeoutError:
            logger.warning("qemu-img map timed out: hashing the qcow2 at close")
            return None
        finally:
            _kill_group(process)
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
        if process.returncode != 0:
            logger.warning("qemu-img map failed (%s): hashing the qcow2 at close", _last_line(err))
            return None
        try:
            return qcow2_layout.runs_of(_data_extents(json.loads(out)))
        except (ValueError, TypeError, KeyError):
            logger.warning("unreadable qemu-img map: hashing the qcow2 at close")
            return None

    async def _watch(
        self,
        process: asyncio.subprocess.Process,
        size: int,
        on_progress: ByteProgress,
        cancelled: CancelCheck,
    ) -> bytes:
        """Read progress until qemu-img exits; kill its group on cancel. Returns stderr."""
        assert process.stdout is not None
        assert process.stderr is not None
        stderr_task = asyncio.create_task(process.stderr.read(1 << 20))
        buffer = b""
        reader = asyncio.create_task(process.stdout.read(4096))
        try:
            while True:
                done, _ = await asyncio.wait({reader}, timeout=CANCEL_POLL_SECONDS)
                if cancelled():
                    _kill_group(process)
                    raise ExportCancelledError
                if not done:
                    continue
                chunk = reader.result()
                if not chunk:
                    break
                buffer += chunk
                matches = _PROGRESS.findall(buffer)
                if matches:
                    buffer = buffer[buffer.rfind(b"%)") + 2 :]
                    await on_progress(int(size * float(matches[-1]) / 100))
                reader = asyncio.create_task(process.stdout.read(4096))
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(process.wait()), CANCEL_POLL_SECONDS)
                    break
                except TimeoutError:
                    if cancelled():
                        _kill_group(process)
                        raise ExportCancelledError from None
            return await stderr_task
        finally:
            reader.cancel()
            stderr_task.cancel()

    async def compare(
        self, first: Path, first_format: str, second: Path, second_format: str
    ) -> bool:
        """``qemu-img compare``: whether two images have the same guest-visible content."""
        process = await self._spawn(
            ["compare", "-q", "-f", first_format, "-F", second_format, str(first), str(second)]
        )
        _, err = await process.communicate()
        if process.returncode not in (0, 1):
            raise ExportFailedError(errors.CONVERSION_FAILED, _last_line(err))
        return process.returncode == 0


async def _unless_cancelled(task: asyncio.Task[_T], cancelled: CancelCheck) -> _T:
    """The task's result, or ExportCancelledError as soon as a cancel is seen.

    The caller then stops what the task waits for (the hashing child) and waits for it.
    """
    while True:
        done, _ = await asyncio.wait({task}, timeout=CANCEL_POLL_SECONDS)
        if done:
            return task.result()
        if cancelled():
            raise ExportCancelledError


def _reads_direct(source: Path) -> bool:
    """Whether the source's filesystem takes ``O_DIRECT`` reads (tmpfs before Linux 6.6 not).

    A source read once is better read past the page cache: copying every block through it
    cost qemu-img about three times the CPU, on the same cores as the hashing child, and the
    blocks pushed out cached pages that are read again (decision 0049). A FIFO swapped in for
    the source is opened without blocking (off the event loop) and answered no.
    """
    try:
        fd = os.open(source, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    return stat.S_ISREG(mode) or stat.S_ISBLK(mode)


def _kill_group(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _last_line(err: bytes) -> str:
    lines = err.decode(errors="replace").strip().splitlines()
    return lines[-1][:500] if lines else "no message"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _resolved(name: str, root: Path, reason: str) -> Path:
    """A reference qemu would open, as a real path inside ``root``; refused otherwise.

    Anything that is not an absolute file name (``json:``, ``nbd://``, ``http:``...) is refused.
    """
    if not name.startswith("/"):
        raise ExportFailedError(reason, "not a local file")
    path = Path(os.path.realpath(name))
    if not _inside(path, root):
        raise ExportFailedError(reason, "outside the provider's root")
    return path


def _check_references(info: dict[str, Any], root: Path) -> None:
    """Vmdk extents and a qcow2 data file must lie inside ``root``."""
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if not isinstance(data, dict):
        return
    extents = data.get("extents")
    if isinstance(extents, list):
        for extent in extents:
            name = extent.get("filename") if isinstance(extent, dict) else None
            if not isinstance(name, str):
                raise ExportFailedError(errors.UNSAFE_EXTERNAL_EXTENT, "unnamed extent")
            _resolved(name, root, errors.UNSAFE_EXTERNAL_EXTENT)
    data_file = data.get("data-file")
    if data_file is not None:
        _resolved(str(data_file), root, errors.UNSAFE_DATA_FILE)


def _data_extents(entries: Any) -> list[tuple[int, int]]:
    """(start, length) of what a ``qemu-img map`` says holds data that does not read as zeros."""
    if not isinstance(entries, list):
        raise ValueError("not a list")
    found: list[tuple[int, int]] = []
    for entry in entries:
        if entry["data"] is True and entry.get("zero") is not True:
            start, length = entry["start"], entry["length"]
            if type(start) is not int or type(length) is not int or start < 0 or length < 0:
                raise ValueError("bad extent")
            found.append((start, length))
    return found


def _prepare(
    target: Path,
    identity: tuple[int, int] | None,
    layout: qcow2_layout.Layout | None,
    size: int,
) -> str:
    """Create the target, 0600 and the conversion user's: a qcow2 layout or raw holes.

    A qcow2 target gets the layout's metadata; a raw one is ``size`` bytes of holes.
    Returns the SHA-256 of the qcow2 metadata as written (empty for raw).
    """
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        if identity is not None:
            os.fchown(fd, *identity)
        if layout is None:
            os.ftruncate(fd, size)
            return ""
        qcow2_layout.write(fd, layout)
        return _metadata_digest(fd, layout)
    except BaseException:
        _unlink(target)
        raise
    finally:
        os.close(fd)


def _metadata_digest(fd: int, layout: qcow2_layout.Layout) -> str:
    digest = hashlib.sha256()
    reader = BlockReader(fd)
    position = 0
    while position < layout.metadata_end:
        position = reader.hash(digest, position, layout.metadata_end)
    return digest.hexdigest()


def layout_kept(path: Path, layout: qcow2_layout.Layout, metadata: str) -> bool:
    """Whether qemu-img left a qcow2 layout as planned: the same length, the same metadata.

    Had it allocated a cluster the map did not show (the source changed under it), it would
    have appended the cluster and rewritten tables already hashed.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size != layout.file_size:
            return False
        return _metadata_digest(fd, layout) == metadata
    finally:
        os.close(fd)


# ---- the hashing child ---------------------------------------------------------------------


class _HashChild:
    """The SHA-256 of one output, computed by a child process (``digests.py``, decision 0043).

    Started before qemu-img: ``follow`` hashes behind it (qemu-img is started once the child
    holds the file open, :meth:`ready`), else it waits for the end. It runs as the service's
    own user with ``PR_SET_PDEATHSIG`` (it dies with its worker), and is killed on cancel.
    A child is started idle, waiting for its command line: the spare (:class:`_Spare`) the
    converter starts when it inspects a source is ready by the time the output is made.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._unready = True  # it says when it has taken its command

    @staticmethod
    async def spawn() -> asyncio.subprocess.Process:
        """A child waiting for its command line."""
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-m",
            digests.__name__,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=dict(ENVIRONMENT),
            cwd="/",
            start_new_session=True,
            preexec_fn=_preexec(os.getpid(), identity=None, memory=None, cpu=None),
        )

    @classmethod
    async def start(
        cls,
        path: Path,
        *,
        follow: bool,
        metadata_end: int = 0,
        spare: asyncio.subprocess.Process | None = None,
        cancelled: CancelCheck = lambda: False,
    ) -> _HashChild:
        """A child hashing ``path``: ``spare``, ready, if it takes the command; else a new one.

        A spare that died while it waited (its death not yet seen) says nothing: it is
        replaced, and the new child's readiness is left to :meth:`ready`.
        """
        command = digests.command_line(path, follow=follow, metadata_end=metadata_end)
        if spare is not None:
            child = cls(spare)
            await _send(spare, command)
            if await child._ready_line(cancelled) == digests.READY:
                return child
            await child.stop()
        process = await cls.spawn()
        await _send(process, command)  # one that dies at once fails its ready line
        return cls(process)

    async def ready(self, cancelled: CancelCheck) -> None:
        """Once the child has taken its command: a following child holds the file open.

        Started from a cold page cache behind qemu-img's reads, the child took up to a second
        to start, and then hashed what qemu-img had written meanwhile after qemu-img exited.
        """
        if self._unready and await self._ready_line(cancelled) != digests.READY:
            await self._process.wait()
            raise ExportFailedError(
                errors.ARTIFACT_WRITE_FAILED,
                f"the output could not be hashed (hashing ended {self._process.returncode})",
            )

    async def _ready_line(self, cancelled: CancelCheck) -> bytes:
        assert self._process.stdout is not None
        line = asyncio.create_task(self._process.stdout.readline())
        try:
            return await _unless_cancelled(line, cancelled)
        finally:
            line.cancel()
            self._unready = False

    async def written(self) -> None:
        """Tell it the output is complete (once)."""
        stdin = self._process.stdin
        assert stdin is not None
        if stdin.is_closing():
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(b"w")
            await stdin.drain()
        stdin.close()

    async def digest(self, cancelled: CancelCheck) -> str:
        """Tell it the output is complete; its digest, or ExportCancelledError on a cancel."""
        process = self._process
        assert process.stdout is not None
        await self.written()
        if self._unready:  # never waited for (what it says is checked with the digest)
            await self._ready_line(cancelled)
        answer = asyncio.create_task(process.stdout.read(128))
        try:
            out = await _unless_cancelled(answer, cancelled)
        finally:
            answer.cancel()
        await process.wait()
        text = out.decode(errors="replace").strip()
        if process.returncode != 0 or not re.fullmatch(r"[0-9a-f]{64}", text):
            raise ExportFailedError(
                errors.ARTIFACT_WRITE_FAILED,
                f"the output changed while it was hashed (hashing ended {process.returncode})",
            )
        return text

    async def stop(self) -> None:
        """Kill it and wait (a cancel, a failure)."""
        _kill_group(self._process)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(self._process.wait())


class _Spare:
    """The one idle hashing child of this process, started before it is needed.

    A child's interpreter, started from a cold page cache, takes about a tenth of a second to
    import its modules; qemu-img waits for the child to hold the output open, so that tenth
    was on every conversion's path. The spare is started when a source is inspected and after
    each conversion, awaited, never in the background (a cancelled process creation hangs the
    stdlib loop's shutdown). At most one waits per process, bound to the event loop that
    started it; it dies with the process (``PR_SET_PDEATHSIG``).
    """

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def prime(self) -> None:
        """Start the spare unless one waits."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # one left by another loop cannot be awaited here
            self._forget()
            self._loop, self._lock = loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._process is None or self._process.returncode is not None:
                self._process = await _HashChild.spawn()

    async def prime_quietly(self) -> None:
        """:meth:`prime`, a failure to start only logged: a conversion then starts its own."""
        try:
            await self.prime()
        except OSError as exc:
            logger.warning("no spare hashing child: %s", type(exc).__name__)

    def take(self) -> asyncio.subprocess.Process | None:
        """The waiting spare, now the caller's, or None."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return None
        if self._loop is not asyncio.get_running_loop():
            self._process = process
            self._forget()
            return None
        return process

    async def discard(self) -> None:
        """Kill the spare and wait for it (tests; a shutdown)."""
        process = self.take()
        if process is not None:
            await _HashChild(process).stop()

    def _forget(self) -> None:
        if self._process is not None and self._process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)
        self._process = None


async def _send(process: asyncio.subprocess.Process, command: bytes) -> bool:
    """Write a child its command line; False when it is gone."""
    assert process.stdin is not None
    try:
        process.stdin.write(command)
        await process.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


SPARE = _Spare()
"""This process's spare hashing child."""
