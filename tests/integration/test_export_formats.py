"""Export formats with the real qemu-img: round trips, the OVA read back, hostile sources refused,
the conversion unprivileged, without the worker's environment, and dead with its worker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import uvloop

from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.ova import extract_member, read_ova
from hypersdk_exporter.adapters.outbound.qemu_img import (
    ENVIRONMENT,
    QemuImgConverter,
    SandboxSettings,
    conversion_identity,
)
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import FORMATS
from hypersdk_exporter.core.models import (
    DiskInfo,
    Firmware,
    NicInfo,
    SourceFingerprint,
    VmDescription,
)
from hypersdk_exporter.core.pipeline import ExportPipeline
from hypersdk_exporter.ports.outbound import DiskSource

CONVERT_USER = "hypersdk-convert"
HOST_FILE = Path("/etc/os-release")
SECRET = "planted-secret-value-0034"


class FileSource(DiskSource):
    """A disk that is a local file."""

    def __init__(self, path: Path, format: str) -> None:
        self.path = path
        self.format = format
        self.capacity_bytes = path.stat().st_size

    async def local_path(self) -> Path | None:
        return self.path

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        yield self.path.read_bytes()

    async def fingerprint(self) -> SourceFingerprint:
        info = self.path.stat()
        return SourceFingerprint(size=info.st_size, change_id=f"{info.st_mtime_ns}:{info.st_ino}")

    async def close(self) -> None:
        return None


@pytest.fixture(scope="module")
def convert_user() -> tuple[int, int] | None:
    """The conversion user exists when the tests run as root (created like `make up` does)."""
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(CONVERT_USER)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/nonexistent",
                    "--shell",
                    "/usr/sbin/nologin",
                    CONVERT_USER,
                ],
                check=True,
            )
    return conversion_identity(CONVERT_USER)


@pytest.fixture
def area(convert_user: tuple[int, int] | None) -> Iterator[Path]:
    """A directory the conversion user can reach (pytest's own tmp is 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="hypersdk-formats-", dir="/var/tmp"))
    base.chmod(0o711)
    (base / "disks").mkdir(mode=0o755)
    (base / "disks").chmod(0o755)
    exports = base / "exports"
    exports.mkdir(mode=0o700)
    if convert_user is not None:
        os.chown(exports, *convert_user)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _raw_disk(path: Path, *, mib: int, seed: int) -> Path:
    """Data, a hole, data: a realistic sparse-ish disk with known content."""
    block = hashlib.sha256(str(seed).encode()).digest() * (1 << 15)  # 1 MiB
    with path.open("wb") as out:
        for index in range(mib):
            out.write(block if index % 3 != 1 else b"\0" * (1 << 20))
    path.chmod(0o644)
    return path


def _vm(disks: list[tuple[str, str, int]], *, name: str = "web 01") -> VmDescription:
    return VmDescription(
        id="vm-1",
        name=name,
        state="stopped",
        cpus=2,
        memory_mib=1024,
        path="lab/web",
        firmware=Firmware.EFI,
        guest_os="Debian Linux 12",
        disks=tuple(
            DiskInfo(key=f"vd{i}", name=n, format=f, capacity_bytes=c, controller="virtio", unit=i)
            for i, (n, f, c) in enumerate(disks)
        ),
        nics=(NicInfo(name="eth0", network="lan", mac="52:54:00:12:34:56", model="virtio"),),
    )


def _pipeline() -> ExportPipeline:
    return ExportPipeline(
        converter=QemuImgConverter(SandboxSettings(user=CONVERT_USER)),
        writer=LocalArtifactWriter(owner=conversion_identity(CONVERT_USER)),
    )


async def _nothing(done: int, total: int) -> None:
    return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same(first: Path, first_format: str, second: Path, second_format: str) -> bool:
    result = subprocess.run(
        ["qemu-img", "compare", "-q", "-f", first_format, "-F", second_format, first, second],
        check=False,
    )
    return result.returncode == 0


@pytest.mark.parametrize(
    ("target", "compress"),
    [(f, False) for f in DiskFormat if f is not DiskFormat.OVA] + [(DiskFormat.QCOW2, True)],
)
async def test_every_format_round_trips(area: Path, target: DiskFormat, compress: bool) -> None:
    raw = _raw_disk(area / "disks" / "disk0.raw", mib=9, seed=1)
    qcow = area / "disks" / "disk1.qcow2"
    _qemu(
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        str(_raw_disk(area / "disks" / "b.raw", mib=5, seed=2)),
        str(qcow),
    )
    qcow.chmod(0o644)
    vm = _vm([("disk0", "raw", raw.stat().st_size), ("disk1", "qcow2", 5 << 20)])
    job_dir = area / "exports" / "job"
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    artifacts = await _pipeline().run(
        vm,
        [FileSource(raw, "raw"), FileSource(qcow, "qcow2")],
        target,
        job_dir,
        compress=compress,
        on_progress=progress,
        cancelled=lambda: False,
    )

    spec = FORMATS[target]
    assert [a.name for a in artifacts] == [
        f"web_01-disk0.{spec.extension}",
        f"web_01-disk1.{spec.extension}",
    ]
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    for artifact, (source, source_format) in zip(
        artifacts, [(raw, "raw"), (area / "disks" / "b.raw", "raw")], strict=True
    ):
        path = job_dir / artifact.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert artifact.size_bytes == path.stat().st_size
        assert artifact.sha256 == _sha256(path)  # the digest of the write pass is the file's
        assert _same(source, source_format, path, spec.qemu_name)
    assert sorted(os.listdir(job_dir)) == sorted(a.name for a in artifacts)  # no partials
    assert seen[-1] == ((9 << 20) + (5 << 20), (9 << 20) + (5 << 20))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


async def test_ova_reads_back_valid(area: Path) -> None:
    first = _raw_disk(area / "disks" / "root.raw", mib=7, seed=3)
    second = _raw_disk(area / "disks" / "data.raw", mib=4, seed=4)
    vm = _vm([("root", "raw", 7 << 20), ("data", "raw", 4 << 20)])
    job_dir = area / "exports" / "ova"

    artifacts = await _pipeline().run(
        vm,
        [FileSource(first, "raw"), FileSource(second, "raw")],
        DiskFormat.OVA,
        job_dir,
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )

    assert [a.name for a in artifacts] == ["web_01.ova"]
    ova = job_dir / "web_01.ova"
    assert os.listdir(job_dir) == ["web_01.ova"]  # the VMDKs were moved into the tar
    assert artifacts[0].sha256 == _sha256(ova)
    assert stat.S_IMODE(ova.stat().st_mode) == 0o600
    report = read_ova(ova)
    assert report.members == ["web_01.ovf", "web_01-root.vmdk", "web_01-data.vmdk", "web_01.mf"]
    assert report.cpus == 2
    assert report.memory_mib == 1024
    assert report.nics == 1
    assert report.firmware == "efi"
    assert report.capacities == {"web_01-root.vmdk": 7 << 20, "web_01-data.vmdk": 4 << 20}
    assert all(f.endswith("#streamOptimized") for f in report.disks.values())
    for name, source in (("web_01-root.vmdk", first), ("web_01-data.vmdk", second)):
        extracted = area / name
        extract_member(ova, name, extracted)
        info = subprocess.run(
            ["qemu-img", "info", "-f", "vmdk", extracted],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "streamOptimized" in info
        assert _same(source, "raw", extracted, "vmdk")


def _assert_refused(exc: ExportFailedError, reason: str, job_dir: Path) -> None:
    assert exc.reason == reason
    assert not job_dir.exists()  # nothing left behind, so nothing of the host file either


async def test_backing_file_outside_the_root_is_refused(area: Path) -> None:
    evil = area / "disks" / "evil.qcow2"
    _qemu("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(HOST_FILE), str(evil), "1M")
    evil.chmod(0o644)
    job_dir = area / "exports" / "evil"
    for target in (DiskFormat.RAW, DiskFormat.OVA):
        with pytest.raises(ExportFailedError) as caught:
            await _pipeline().run(
                _vm([("evil", "qcow2", 1 << 20)]),
                [FileSource(evil, "qcow2")],
                target,
                job_dir,
                compress=False,
                on_progress=_nothing,
                cancelled=lambda: False,
            )
        _assert_refused(caught.value, "unsafe_source_backing_file", job_dir)


async def test_vmdk_extent_outside_the_root_is_refused(area: Path) -> None:
    evil = area / "disks" / "evil.vmdk"
    evil.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW 2048 FLAT "{HOST_FILE}" 0\n\n'
        'ddb.virtualHWVersion = "4"\nddb.adapterType = "ide"\n'
    )
    evil.chmod(0o644)
    job_dir = area / "exports" / "extent"
    with pytest.raises(ExportFailedError) as caught:
        await _pipeline().run(
            _vm([("evil", "vmdk", 1 << 20)]),
            [FileSource(evil, "vmdk")],
            DiskFormat.RAW,
            job_dir,
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    _assert_refused(caught.value, "unsafe_source_external_extent", job_dir)


async def test_qcow2_data_file_outside_the_root_is_refused(area: Path) -> None:
    outside = area / "outside.raw"
    evil = area / "disks" / "data.qcow2"
    _qemu("create", "-q", "-f", "qcow2", "-o", f"data_file={outside}", str(evil), "1M")
    evil.chmod(0o644)
    job_dir = area / "exports" / "datafile"
    with pytest.raises(ExportFailedError) as caught:
        await _pipeline().run(
            _vm([("evil", "qcow2", 1 << 20)]),
            [FileSource(evil, "qcow2")],
            DiskFormat.QCOW2,
            job_dir,
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    _assert_refused(caught.value, "unsafe_source_data_file", job_dir)


async def test_a_raw_disk_holding_a_qcow2_header_is_copied_not_probed(area: Path) -> None:
    # A guest can write a qcow2 header naming a backing file into its own raw disk.
    disguised = area / "disks" / "guest.raw"
    _qemu("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(HOST_FILE), str(disguised), "1M")
    disguised.chmod(0o644)
    job_dir = area / "exports" / "disguised"
    artifacts = await _pipeline().run(
        _vm([("guest", "raw", disguised.stat().st_size)]),
        [FileSource(disguised, "raw")],
        DiskFormat.RAW,
        job_dir,
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )
    output = (job_dir / artifacts[0].name).read_bytes()
    original = disguised.read_bytes()
    assert output[: len(original)] == original  # the bytes as they are (rounded to sectors)
    assert not output[len(original) :].strip(b"\0")
    assert HOST_FILE.read_bytes()[:32] not in output


async def test_backing_chain_inside_the_root_is_followed(area: Path) -> None:
    base = _raw_disk(area / "disks" / "base.raw", mib=3, seed=5)
    top = area / "disks" / "top.qcow2"
    _qemu("create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), str(top))
    top.chmod(0o644)
    job_dir = area / "exports" / "chain"
    artifacts = await _pipeline().run(
        _vm([("top", "qcow2", 3 << 20)]),
        [FileSource(top, "qcow2")],
        DiskFormat.RAW,
        job_dir,
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )
    assert (job_dir / artifacts[0].name).read_bytes() == base.read_bytes()


async def test_insufficient_space_fails_before_converting(area: Path) -> None:
    huge = area / "disks" / "huge.qcow2"
    _qemu("create", "-q", "-f", "qcow2", str(huge), "64T")
    huge.chmod(0o644)
    job_dir = area / "exports" / "huge"
    with pytest.raises(ExportFailedError) as caught:
        await _pipeline().run(
            _vm([("huge", "qcow2", 64 << 40)]),
            [FileSource(huge, "qcow2")],
            DiskFormat.QCOW2,
            job_dir,
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    _assert_refused(caught.value, "insufficient_space", job_dir)


def _slow_source(area: Path) -> Path:
    """Incompressible data: a streamOptimized conversion of it takes seconds."""
    path = area / "disks" / "slow.raw"
    with path.open("wb") as out:
        for _ in range(96):
            out.write(os.urandom(1 << 20))
    path.chmod(0o644)
    return path


def _qemu_children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() == "qemu-img" and fields.get("PPid", "").strip() == str(
            parent
        ):
            found.append(int(entry))
    return found


def test_conversion_is_unprivileged_without_secrets_and_cancels_fast(
    area: Path, convert_user: tuple[int, int] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On uvloop, the services' loop (decision 0040)."""
    monkeypatch.setenv("HYPERSDK_PLANTED_SECRET", SECRET)
    uvloop.run(_unprivileged_and_cancelled(area, convert_user))


async def _unprivileged_and_cancelled(area: Path, convert_user: tuple[int, int] | None) -> None:
    source = _slow_source(area)
    job_dir = area / "exports" / "cancel"
    cancel = asyncio.Event()
    task = asyncio.create_task(
        _pipeline().run(
            _vm([("slow", "raw", 96 << 20)]),
            [FileSource(source, "raw")],
            DiskFormat.VMDK,
            job_dir,
            compress=False,
            on_progress=_nothing,
            cancelled=cancel,
        )
    )
    deadline = time.monotonic() + 20
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        children = [
            pid
            for pid in _qemu_children(os.getpid())
            if b"convert" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
    assert children, "qemu-img convert never started"
    pid = children[0]
    status = Path(f"/proc/{pid}/status").read_text()
    uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
    expected = os.geteuid() if convert_user is None else convert_user[0]
    assert uid_line.split()[1:] == [str(expected)] * 4
    if convert_user is not None:
        assert expected != 0
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert SECRET.encode() not in environ
    assert sorted(e.split(b"=", 1)[0].decode() for e in environ.split(b"\0") if e) == sorted(
        ENVIRONMENT
    )
    assert os.getpgid(pid) == pid  # its own process group: a cancel kills all of it

    started = time.monotonic()
    cancel.set()
    with pytest.raises(ExportCancelledError):
        await task
    assert time.monotonic() - started < 1.0
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not job_dir.exists()


def _worker_kill_check(worker: str) -> None:
    """Start the worker, wait for its qemu-img, kill the worker with -9: qemu-img dies too."""
    process = subprocess.Popen([sys.executable, "-c", worker])
    try:
        deadline = time.monotonic() + 20
        children: list[int] = []
        while not children and time.monotonic() < deadline:
            time.sleep(0.05)
            children = _qemu_children(process.pid)
        assert children, "the worker never started qemu-img"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 2
        while Path(f"/proc/{children[0]}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not Path(f"/proc/{children[0]}").exists(), "qemu-img outlived its worker"
    finally:
        if process.poll() is None:
            process.kill()


async def test_killing_the_worker_kills_qemu_img(area: Path) -> None:
    source = _slow_source(area)
    job_dir = area / "exports" / "killed"
    worker = textwrap.dedent(
        f"""
        import asyncio
        from pathlib import Path
        from hypersdk_exporter.adapters.outbound.qemu_img import QemuImgConverter, SandboxSettings
        from hypersdk_exporter.core.formats import FORMATS
        from hypersdk_exporter.core.models import ImageInfo
        from hypersdk_contracts.rpc import DiskFormat

        async def main():
            async def progress(n):
                pass
            await QemuImgConverter(SandboxSettings(user={CONVERT_USER!r})).convert(
                source=Path({str(source)!r}),
                info=ImageInfo(format="raw", virtual_size={96 << 20}),
                target=Path({str(job_dir / "out.vmdk")!r}),
                spec=FORMATS[DiskFormat.VMDK],
                compress=False,
                on_progress=progress,
                cancelled=lambda: False,
            )
        import uvloop
        uvloop.run(main())
        """
    )
    await LocalArtifactWriter(owner=conversion_identity(CONVERT_USER)).prepare(job_dir)
    await asyncio.to_thread(_worker_kill_check, worker)


# ---- the compact qcow2 layout written first (decision 0043) --------------------------------


def _patterned(path: Path, size: int, writes: list[tuple[int, int]], seed: int) -> Path:
    """A sparse raw disk of ``size`` bytes holding seeded bytes at (offset, length) places."""
    with path.open("wb") as out:
        out.truncate(size)
        for index, (offset, length) in enumerate(writes):
            out.seek(offset)
            block = hashlib.sha256(f"{seed}-{index}".encode()).digest()
            out.write((block * (length // 32 + 1))[:length])
    path.chmod(0o644)
    return path


async def _convert_qcow2(area: Path, source: Path, source_format: str, name: str) -> Path:
    converter = QemuImgConverter(SandboxSettings(user=CONVERT_USER))
    info = await converter.inspect(source, format=source_format, allowed_root=area / "disks")
    job_dir = area / "exports" / name
    await LocalArtifactWriter(owner=conversion_identity(CONVERT_USER)).prepare(job_dir)
    target = job_dir / "out.qcow2"
    digest = await converter.convert(
        source=source,
        info=info,
        target=target,
        spec=FORMATS[DiskFormat.QCOW2],
        compress=False,
        on_progress=lambda done: asyncio.sleep(0),
        cancelled=lambda: False,
    )
    assert digest == _sha256(target)  # hashed behind qemu-img, equal to the finished file
    check = subprocess.run(
        ["qemu-img", "check", "-f", "qcow2", target], check=False, capture_output=True
    )
    assert check.returncode == 0, check.stdout + check.stderr  # nothing to repair or leak
    assert _same(source, source_format, target, "qcow2")
    return target


GIB = 1 << 30
MIB = 1 << 20


@pytest.mark.parametrize(
    ("size", "writes"),
    [
        (10 * MIB, []),
        (10 * MIB, [(100, 5000), (3 * MIB + 7, 70000), (10 * MIB - 1, 1)]),
        (3 * GIB, [(0, MIB), (600 * MIB, 2 * MIB), (2 * GIB + 5, 100), (3 * GIB - 4096, 4096)]),
        (1200 * MIB, [(500 * MIB, 30 * MIB)]),
        (GIB + 12345, [(GIB, 12345)]),
    ],
    ids=["empty", "unaligned", "regions far apart", "across a region", "odd size"],
)
async def test_qcow2_is_compact_and_hashed_as_written(
    area: Path, size: int, writes: list[tuple[int, int]], caplog: pytest.LogCaptureFixture
) -> None:
    source = _patterned(area / "disks" / "sparse.raw", size, writes, seed=size)
    target = await _convert_qcow2(area, source, "raw", "compact")
    plain = area / "plain.qcow2"
    _qemu("convert", "-f", "raw", "-O", "qcow2", str(source), str(plain))
    # as compact as qemu-img's own: a cluster more at most, for odd placements
    assert target.stat().st_blocks * 512 <= plain.stat().st_blocks * 512 + (64 << 10)
    assert target.stat().st_size < max(size, 1 << 20)
    assert "hashing" not in caplog.text  # the planned layout held: no fallback


async def test_a_qcow2_source_with_zero_clusters_maps_to_the_same_layout(area: Path) -> None:
    raw = _patterned(area / "base.raw", 64 * MIB, [(0, 4 * MIB), (40 * MIB, 3 * MIB)], seed=7)
    source = area / "disks" / "zeroes.qcow2"
    _qemu("convert", "-f", "raw", "-O", "qcow2", str(raw), str(source))
    # a zeroed range inside allocated data: zero clusters in the source, read as zeros
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -z 1M 2M", str(source)],
        check=True,
        capture_output=True,
    )
    source.chmod(0o644)
    await _convert_qcow2(area, source, "qcow2", "zeroes")


async def test_a_map_too_large_falls_back_to_hashing_at_close(
    area: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from hypersdk_exporter.adapters.outbound import qemu_img

    monkeypatch.setattr(qemu_img, "MAX_MAP_OUTPUT", 10)
    source = _patterned(area / "disks" / "s.raw", 20 * MIB, [(MIB, MIB), (9 * MIB, 5)], seed=3)
    await _convert_qcow2(area, source, "raw", "fallback")
    assert "map is too large" in caplog.text


async def test_a_layout_qemu_img_had_to_change_is_hashed_again(
    area: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A source that gained data after it was mapped: qemu-img appends clusters and rewrites
    tables already hashed; the digest is then taken again from the finished file."""
    source = _patterned(area / "disks" / "g.raw", 20 * MIB, [(MIB, MIB), (9 * MIB, MIB)], seed=4)
    real = QemuImgConverter._data_runs

    async def stale(self: QemuImgConverter, image: object, info: object) -> object:
        runs = await real(self, image, info)  # type: ignore[arg-type]
        assert runs
        return runs[:1]  # the map missed the second run

    monkeypatch.setattr(QemuImgConverter, "_data_runs", stale)
    await _convert_qcow2(area, source, "raw", "changed")
    assert "changed the planned qcow2 layout" in caplog.text


# ---- reading the source past the page cache (decision 0049) --------------------------------


class _Recording(QemuImgConverter):
    """The real converter, recording the arguments of every qemu-img it runs."""

    def __init__(self) -> None:
        super().__init__(SandboxSettings(user=CONVERT_USER))
        self.runs: list[list[str]] = []

    async def _spawn(
        self, args: list[str], *, memory: int | None = None, cpu: int | None = None
    ) -> asyncio.subprocess.Process:
        self.runs.append(args)
        return await super()._spawn(args, memory=memory, cpu=cpu)


@pytest.mark.parametrize("spooled", [False, True], ids=["the provider's file", "a spool"])
@pytest.mark.parametrize("target", [DiskFormat.QCOW2, DiskFormat.VMDK, DiskFormat.RAW])
async def test_a_source_is_read_past_the_page_cache_unless_just_spooled(
    area: Path, target: DiskFormat, spooled: bool
) -> None:
    source = _patterned(area / "disks" / "d.raw", 24 * MIB, [(MIB, 3 * MIB), (20 * MIB, 5)], 11)
    converter = _Recording()
    info = await converter.inspect(source, format="raw", allowed_root=area / "disks")
    job_dir = area / "exports" / f"direct-{target.value}-{spooled}"
    await LocalArtifactWriter(owner=conversion_identity(CONVERT_USER)).prepare(job_dir)
    output = job_dir / "out"
    digest = await converter.convert(
        source=source,
        info=info,
        target=output,
        spec=FORMATS[target],
        compress=False,
        on_progress=lambda done: asyncio.sleep(0),
        cancelled=lambda: False,
        spooled=spooled,
    )
    (convert,) = [args for args in converter.runs if args[0] == "convert"]
    assert ("-T" in convert and convert[convert.index("-T") + 1] == "none") is not spooled
    assert digest == _sha256(output)
    assert _same(source, "raw", output, FORMATS[target].qemu_name)
