"""The export pipeline with fakes of our ports: formats table, refusals, cancel, OVF/OVA."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import CreateExportRequest, DiskFormat
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.memory import InMemoryConverter
from hypersdk_exporter.adapters.outbound.ova import OvaInvalidError, parse_xml, read_ova
from hypersdk_exporter.core import ovf
from hypersdk_exporter.core.errors import ExportCancelledError, ExportFailedError
from hypersdk_exporter.core.formats import FORMATS, Compression, check_request
from hypersdk_exporter.core.models import (
    DiskInfo,
    Firmware,
    NicInfo,
    SourceFingerprint,
    VmDescription,
)
from hypersdk_exporter.core.pipeline import ExportPipeline
from hypersdk_exporter.ports.outbound import DiskSource


class InMemorySource(DiskSource):
    """A disk backed by a file whose fingerprint the test can change."""

    def __init__(self, path: Path | None, data: bytes = b"", *, format: str = "raw") -> None:
        self.path = path
        self.data = data
        self.format = format
        self.capacity_bytes = len(data)
        self.change = "1"

    async def local_path(self) -> Path | None:
        return self.path

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        yield self.data

    async def fingerprint(self) -> SourceFingerprint:
        return SourceFingerprint(size=len(self.data), change_id=self.change)

    async def close(self) -> None:
        return None


class SmallDisk(LocalArtifactWriter):
    """A filesystem with little free space."""

    async def free_bytes(self, job_dir: Path) -> int:
        return 10 << 20


def _vm(names: list[str]) -> VmDescription:
    return VmDescription(
        id="1",
        name="db/01",
        state="stopped",
        cpus=4,
        memory_mib=2048,
        path="lab/db",
        firmware=Firmware.BIOS,
        guest_os="Windows Server",
        disks=tuple(
            DiskInfo(
                key=f"d{i}", name=n, format="raw", capacity_bytes=1024, controller="scsi", unit=i
            )
            for i, n in enumerate(names)
        ),
        nics=(
            NicInfo(name="nic0", network="prod", mac=None, model="e1000"),
            NicInfo(name="nic1", network="backup", mac="00:50:56:00:00:01", model="virtio"),
        ),
    )


def _disk(tmp_path: Path, name: str, content: bytes) -> InMemorySource:
    path = tmp_path / "src" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(content)
    return InMemorySource(path, content)


async def _nothing(done: int, total: int) -> None:
    return None


def test_one_table_covers_every_format() -> None:
    assert set(FORMATS) == set(DiskFormat)
    assert FORMATS[DiskFormat.VPC].extension == "vhd"
    assert FORMATS[DiskFormat.OVA].ova
    assert FORMATS[DiskFormat.OVA].qemu_args(compress=False) == [
        "-O",
        "vmdk",
        "-o",
        "subformat=streamOptimized",
    ]
    assert "-c" in FORMATS[DiskFormat.QCOW2].qemu_args(compress=True)
    assert FORMATS[DiskFormat.QCOW2].qemu_args(compress=False) == ["-O", "qcow2"]


@pytest.mark.parametrize(
    "fmt", [f for f in DiskFormat if FORMATS[f].compression is Compression.NEVER]
)
def test_compression_is_refused_where_the_format_has_none(fmt: DiskFormat) -> None:
    with pytest.raises(ServiceError) as caught:
        check_request(fmt, compress=True)
    assert caught.value.code is ErrorCode.VALIDATION_FAILED
    assert check_request(fmt, compress=False) is FORMATS[fmt]


def test_the_request_carries_compress() -> None:
    request = CreateExportRequest.model_validate(
        {"provider": "lab", "vm": "x", "format": "ova", "compress": True, "context": {}}
    )
    assert request.compress
    assert request.format is DiskFormat.OVA


async def test_disks_convert_with_digests_and_progress(tmp_path: Path) -> None:
    converter = InMemoryConverter()
    sources = [_disk(tmp_path, "a.raw", b"a" * 1000), _disk(tmp_path, "b.raw", b"b" * 3000)]
    seen: list[tuple[int, int]] = []

    async def progress(done: int, total: int) -> None:
        seen.append((done, total))

    artifacts = await ExportPipeline(converter=converter, writer=LocalArtifactWriter()).run(
        _vm(["root", "data"]),
        sources,
        DiskFormat.QCOW2,
        tmp_path / "job",
        compress=True,
        on_progress=progress,
        cancelled=lambda: False,
    )

    assert [a.name for a in artifacts] == ["db_01-root.qcow2", "db_01-data.qcow2"]
    assert artifacts[1].sha256 == hashlib.sha256(b"b" * 3000).hexdigest()
    assert [c[3] for c in converter.converted] == [True, True]  # compressed as asked
    assert converter.spooled == [False, False]  # the provider's own files: read past the cache
    assert [root for _, _, root in converter.inspected] == [tmp_path / "src"] * 2
    assert seen[-1] == (4000, 4000)
    assert (tmp_path / "job").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("evil-backing.qcow2", "unsafe_source_backing_file"),
        ("x-extent.vmdk", "unsafe_source_external_extent"),
    ],
)
async def test_unsafe_sources_are_refused_before_any_conversion(
    tmp_path: Path, name: str, reason: str
) -> None:
    converter = InMemoryConverter()
    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=converter, writer=LocalArtifactWriter()).run(
            _vm(["ok", "bad"]),
            [_disk(tmp_path, "ok.raw", b"1"), _disk(tmp_path, name, b"2")],
            DiskFormat.RAW,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    assert caught.value.reason == reason
    assert converter.converted == []
    assert not (tmp_path / "job").exists()


async def test_a_failed_disk_removes_the_earlier_ones(tmp_path: Path) -> None:
    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=InMemoryConverter(), writer=LocalArtifactWriter()).run(
            _vm(["ok", "bad"]),
            [_disk(tmp_path, "ok.raw", b"1"), _disk(tmp_path, "fail.raw", b"2")],
            DiskFormat.VHDX,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    assert caught.value.reason == "conversion_failed"
    assert not (tmp_path / "job").exists()


async def test_insufficient_space_is_refused_before_converting(tmp_path: Path) -> None:
    converter = InMemoryConverter()
    converter.sizes["big.raw"] = 20 << 20
    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=converter, writer=SmallDisk()).run(
            _vm(["big"]),
            [_disk(tmp_path, "big.raw", b"x")],
            DiskFormat.RAW,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    assert caught.value.reason == "insufficient_space"
    assert converter.converted == []


async def test_a_source_that_changes_during_the_export_fails_it(tmp_path: Path) -> None:
    source = _disk(tmp_path, "a.raw", b"abc")

    async def progress(done: int, total: int) -> None:
        source.change = "2"  # overwritten while being read

    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=InMemoryConverter(), writer=LocalArtifactWriter()).run(
            _vm(["a"]),
            [source],
            DiskFormat.RAW,
            tmp_path / "job",
            compress=False,
            on_progress=progress,
            cancelled=lambda: False,
        )
    assert caught.value.reason == "source_changed"
    assert not (tmp_path / "job").exists()


class RewrittenWhileStreamed(InMemorySource):
    """A streamed disk rewritten (same size, new content) after its first block was read."""

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        yield self.data[:2]
        self.change = "rewritten"
        self.data = b"XY" + self.data[2:].upper()
        yield self.data[2:]


class FailingStream(InMemorySource):
    """A streamed disk whose provider raises ``error`` after the first block."""

    def __init__(self, error: ServiceError) -> None:
        super().__init__(None, b"first")
        self.error = error

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        yield self.data
        raise self.error


async def test_a_streamed_source_rewritten_during_the_spool_fails_it(tmp_path: Path) -> None:
    # the fingerprint is taken before the first byte is read, not after the spool
    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=InMemoryConverter(), writer=LocalArtifactWriter()).run(
            _vm(["a"]),
            [RewrittenWhileStreamed(None, b"abcd")],
            DiskFormat.RAW,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    assert caught.value.reason == "source_changed"
    assert not (tmp_path / "job").exists()


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (ErrorCode.CONFLICT, "source_changed"),
        (ErrorCode.UPSTREAM_UNAVAILABLE, "source_unavailable"),
        (ErrorCode.NOT_FOUND, "source_unavailable"),
    ],
)
async def test_a_provider_error_mid_stream_is_a_stable_reason(
    tmp_path: Path, code: ErrorCode, reason: str
) -> None:
    with pytest.raises(ExportFailedError) as caught:
        await ExportPipeline(converter=InMemoryConverter(), writer=LocalArtifactWriter()).run(
            _vm(["a"]),
            [FailingStream(ServiceError(code, "The host went away."))],
            DiskFormat.QCOW2,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=lambda: False,
        )
    assert caught.value.reason == reason
    assert caught.value.detail == "The host went away."
    assert not (tmp_path / "job").exists()


async def test_cancel_stops_the_conversion_and_removes_partial_output(tmp_path: Path) -> None:
    converter = InMemoryConverter()
    cancel = asyncio.Event()
    run = asyncio.create_task(
        ExportPipeline(converter=converter, writer=LocalArtifactWriter()).run(
            _vm(["a"]),
            [_disk(tmp_path, "slow.raw", b"z" * 100)],
            DiskFormat.QCOW2,
            tmp_path / "job",
            compress=False,
            on_progress=_nothing,
            cancelled=cancel,
        )
    )
    await asyncio.wait_for(converter.started.wait(), 5)
    assert any((tmp_path / "job").iterdir())  # partial output exists
    cancel.set()
    with pytest.raises(ExportCancelledError):
        await asyncio.wait_for(run, 1)
    assert not (tmp_path / "job").exists()


async def test_a_streamed_source_is_spooled_with_a_root_of_its_own(tmp_path: Path) -> None:
    converter = InMemoryConverter()
    artifacts = await ExportPipeline(converter=converter, writer=LocalArtifactWriter()).run(
        _vm(["s"]),
        [InMemorySource(None, b"streamed bytes")],
        DiskFormat.RAW,
        tmp_path / "job",
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )
    source, _, root = converter.inspected[0]
    assert source.parent == root
    assert root.parent == tmp_path / "job"
    assert artifacts[0].sha256 == hashlib.sha256(b"streamed bytes").hexdigest()
    # the staged copy is gone once converted: only the artifact stays
    assert [p.name for p in (tmp_path / "job").iterdir()] == [artifacts[0].name]
    assert converter.spooled == [True]  # just written: read through the page cache


async def test_the_ova_is_descriptor_disks_manifest_and_reads_back(tmp_path: Path) -> None:
    vm = _vm(["root", "data"])
    artifacts = await ExportPipeline(
        converter=InMemoryConverter(), writer=LocalArtifactWriter()
    ).run(
        vm,
        [_disk(tmp_path, "a.raw", b"A" * 5000), _disk(tmp_path, "b.raw", b"B" * 7000)],
        DiskFormat.OVA,
        tmp_path / "job",
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )
    ova = tmp_path / "job" / "db_01.ova"
    assert artifacts[0].sha256 == hashlib.sha256(ova.read_bytes()).hexdigest()
    report = read_ova(ova)
    assert report.members == ["db_01.ovf", "db_01-root.vmdk", "db_01-data.vmdk", "db_01.mf"]
    assert (report.cpus, report.memory_mib, report.nics, report.firmware) == (4, 2048, 2, "bios")
    assert report.envelope is not None
    text = ovf.descriptor(vm, [ovf.OvfDisk(index=0, file_name="r.vmdk", file_size=1)]).decode()
    for section in ("References", "DiskSection", "NetworkSection", "OperatingSystemSection"):
        assert f"<ovf:{section}" in text
    assert "00:50:56:00:00:01" in text


@pytest.mark.parametrize(
    ("guest_os", "cim", "os_type"),
    [
        ("rhel8_64Guest", "1", "rhel8_64Guest"),  # a vSphere guest id is carried unchanged
        ("otherLinux64Guest", "101", "otherLinux64Guest"),
        ("Windows Server", "1", "windows9_64Guest"),  # a libvirt/local description is mapped
        ("Debian GNU/Linux", "101", "otherLinux64Guest"),
        ('evilGuest"/><x', "1", "otherGuest"),  # not a guest id: not copied into the XML
    ],
)
def test_the_guest_os_becomes_the_os_type(guest_os: str, cim: str, os_type: str) -> None:
    vm = dataclasses.replace(_vm(["root"]), guest_os=guest_os)
    envelope = parse_xml(
        ovf.descriptor(vm, [ovf.OvfDisk(index=0, file_name="r.vmdk", file_size=1)])
    )
    section = envelope.find(f"{{{ovf.OVF}}}VirtualSystem/{{{ovf.OVF}}}OperatingSystemSection")
    assert section is not None
    assert section.get(f"{{{ovf.OVF}}}id") == cim
    assert section.get(f"{{{ovf.VMW}}}osType") == os_type


async def test_a_tampered_ova_is_invalid(tmp_path: Path) -> None:
    await ExportPipeline(converter=InMemoryConverter(), writer=LocalArtifactWriter()).run(
        _vm(["root"]),
        [_disk(tmp_path, "a.raw", b"A" * 5000)],
        DiskFormat.OVA,
        tmp_path / "job",
        compress=False,
        on_progress=_nothing,
        cancelled=lambda: False,
    )
    ova = tmp_path / "job" / "db_01.ova"
    data = bytearray(ova.read_bytes())
    offset = data.index(b"A" * 100)
    data[offset] = ord("X")
    ova.write_bytes(bytes(data))
    with pytest.raises(OvaInvalidError, match="digests"):
        read_ova(ova)


@pytest.mark.parametrize(
    "document",
    [
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx"><!ENTITY y "&x;&x;">]><a>&y;</a>',
        b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "file:///etc/passwd"><a/>',
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]><a>&e;</a>',
    ],
)
def test_descriptors_with_dtds_or_entities_are_refused(document: bytes) -> None:
    with pytest.raises(OvaInvalidError):
        parse_xml(document)


def test_manifest_lines_round_trip() -> None:
    digests = {"a.ovf": "0" * 64, "a-disk.vmdk": "f" * 64}
    assert ovf.parse_manifest(ovf.manifest(digests).decode()) == digests
    with pytest.raises(ValueError, match="manifest"):
        ovf.parse_manifest("SHA1(a.ovf)= 00\n")
