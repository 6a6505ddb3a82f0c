"""The libvirt provider over libvirt's test driver (``test:///node.xml``, no daemon).

The domains' disks are real image files made here with qemu-img; one disk is a storage volume
of a ``dir`` pool (the test driver keeps pools and volumes, not their content: the volume's
path is a real file too). A hostile domain points a disk at a host file outside the lab.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.libvirt_driver import LibvirtDriver
from hypersdk_exporter.adapters.outbound.memory import (
    InMemoryCredentialDirectory,
    InMemoryCredentialResolver,
    InMemoryJobQueue,
    InMemoryJobStore,
    InMemoryProviderStore,
)
from hypersdk_exporter.adapters.outbound.qemu_img import QemuImgConverter, SandboxSettings
from hypersdk_exporter.core.models import Firmware, NicInfo, Provider
from hypersdk_exporter.core.service import ExporterService
from hypersdk_exporter.ports.outbound import ProviderSession
from hypersdk_kit.memory import InMemoryUnitOfWork

from .conversion import CONVERSION_USER, conversion_owner

MIB = 1 << 20
WEB_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
DB_UUID = "0c1d2e3f-4a5b-4c6d-8e9f-a0b1c2d3e4f5"
EVIL_UUID = "deadbeef-0000-4000-8000-000000000001"
CONTEXT = RequestContext(actor="olga", source_ip="192.0.2.20", request_id="req-libvirt-1")


@dataclass
class Lab:
    root: Path
    node: Path
    web_disk: Path  # qcow2, 64 MiB virtual
    web_data: Path  # raw volume, 32 MiB
    db_disk: Path  # raw, 16 MiB
    web_content: bytes  # what the guest sees on web_disk (first 8 MiB)


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def _domain(name: str, uuid: str, *, os_xml: str, disks: str, nics: str, vcpu: int) -> str:
    return f"""
  <domain type='test'>
    <name>{name}</name>
    <uuid>{uuid}</uuid>
    <memory unit='MiB'>{512 * vcpu}</memory>
    <vcpu>{vcpu}</vcpu>
    {os_xml}
    <devices>{disks}{nics}</devices>
  </domain>"""


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    root = tmp_path / "lab"
    images = root / "images"
    images.mkdir(parents=True)
    content = os.urandom(8 * MIB)
    seed = tmp_path / "seed.raw"
    seed.write_bytes(content)
    _qemu_img("resize", "-f", "raw", str(seed), str(64 * MIB))
    web_disk = images / "web-01.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(seed), str(web_disk))
    web_data = images / "web-data.raw"
    _qemu_img("create", "-f", "raw", str(web_data), str(32 * MIB))
    db_disk = images / "db-01.img"
    db_disk.write_bytes(os.urandom(16 * MIB))
    web = _domain(
        "web-01",
        WEB_UUID,
        vcpu=2,
        os_xml="<os firmware='efi'><type arch='x86_64'>hvm</type></os>",
        disks=f"""
      <disk type='file' device='disk'>
        <driver name='qemu' type='qcow2'/>
        <source file='{web_disk}'/>
        <target dev='vda' bus='virtio'/>
      </disk>
      <disk type='volume' device='disk'>
        <driver name='qemu' type='raw'/>
        <source pool='images' volume='web-data.raw'/>
        <target dev='sdb' bus='scsi'/>
        <address type='drive' controller='0' bus='0' target='0' unit='3'/>
      </disk>
      <disk type='file' device='cdrom'>
        <driver name='qemu' type='raw'/>
        <target dev='hdc' bus='ide'/>
        <readonly/>
      </disk>""",
        nics="""
      <interface type='network'>
        <mac address='52:54:00:aa:bb:01'/>
        <source network='default'/>
        <model type='virtio'/>
      </interface>
      <interface type='bridge'>
        <mac address='52:54:00:aa:bb:02'/>
        <source bridge='br0'/>
        <model type='e1000'/>
      </interface>""",
    )
    db = _domain(
        "db-01",
        DB_UUID,
        vcpu=4,
        os_xml="<os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>",
        disks=f"""
      <disk type='file' device='disk'>
        <source file='{db_disk}'/>
        <target dev='hdb' bus='ide'/>
      </disk>""",
        nics="",
    )
    evil = _domain(
        "evil",
        EVIL_UUID,
        vcpu=1,
        os_xml=(
            "<os><type arch='x86_64'>hvm</type>"
            "<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>"
        ),
        disks="""
      <disk type='file' device='disk'>
        <driver name='qemu' type='raw'/>
        <source file='/etc/os-release'/>
        <target dev='vda' bus='virtio'/>
      </disk>""",
        nics="",
    )
    node = root / "node.xml"
    node.write_text(
        f"""<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
    <mhz>2000</mhz><model>x86_64</model><active>4</active></cpu>
  <memory>8388608</memory>
  {web}{db}{evil}
  <pool type='dir'>
    <name>images</name>
    <uuid>35bb2ad9-388a-cdfe-461a-b8907f6e53fe</uuid>
    <capacity unit='GiB'>10</capacity>
    <target><path>{images}</path></target>
    <volume type='file'>
      <name>web-data.raw</name>
      <capacity unit='MiB'>32</capacity>
      <target><path>{web_data}</path><format type='raw'/></target>
    </volume>
  </pool>
</node>
"""
    )
    return Lab(root, node, web_disk, web_data, db_disk, content)


def _provider(lab: Lab, *, node: Path | None = None) -> Provider:
    return Provider(
        name="kvm",
        type="libvirt",
        config={"uri": f"test://{node or lab.node}"},
        credential_ref=None,
        created_at=datetime.now(UTC),
    )


@pytest.fixture
async def session(lab: Lab) -> ProviderSession:
    driver = LibvirtDriver(lab_root=lab.root, disk_roots=[])
    return await driver.connect(_provider(lab), None)


async def test_listing_pages_by_name_with_opaque_tokens(session: ProviderSession) -> None:
    first = await session.list_vms(page_token=None, limit=2)
    assert [vm.name for vm in first.items] == ["db-01", "evil"]
    assert first.next_token is not None
    assert "evil" not in first.next_token  # opaque, not the name itself

    second = await session.list_vms(page_token=first.next_token, limit=2)
    assert [vm.name for vm in second.items] == ["web-01"]
    assert second.next_token is None

    (web,) = second.items
    assert (web.id, web.state, web.cpus, web.memory_mib) == (WEB_UUID, "running", 2, 1024)
    assert web.path == "kvm/web-01"

    everything = await session.list_vms(page_token=None, limit=3)
    assert [vm.id for vm in everything.items] == [DB_UUID, EVIL_UUID, WEB_UUID]
    assert everything.next_token is None


@pytest.mark.parametrize("token", ["%%%", "", "x" * 5000, "////"])
async def test_a_forged_page_token_is_refused(session: ProviderSession, token: str) -> None:
    with pytest.raises(ServiceError) as error:
        await session.list_vms(page_token=token, limit=2)
    assert error.value.code is ErrorCode.VALIDATION_FAILED


async def test_describe_by_uuid_and_by_name(session: ProviderSession, lab: Lab) -> None:
    by_uuid = await session.get_vm(WEB_UUID)
    by_name = await session.get_vm("web-01")

    assert by_uuid is not None
    assert by_uuid == by_name
    assert by_uuid.firmware is Firmware.EFI
    assert [(d.key, d.format, d.capacity_bytes, d.controller, d.unit) for d in by_uuid.disks] == [
        ("vda", "qcow2", 64 * MIB, "virtio", 0),  # the virtual size, not the file's
        ("sdb", "raw", 32 * MIB, "scsi", 3),  # the volume's capacity; the cdrom is no disk
    ]
    assert lab.web_disk.stat().st_size < 64 * MIB
    assert by_uuid.nics == (
        NicInfo(name="testnet0", network="default", mac="52:54:00:aa:bb:01", model="virtio"),
        NicInfo(name="testnet1", network="br0", mac="52:54:00:aa:bb:02", model="e1000"),
    )

    db = await session.get_vm(DB_UUID)
    assert db is not None
    assert db.firmware is Firmware.BIOS
    assert (db.cpus, db.memory_mib, db.nics) == (4, 2048, ())
    (disk,) = db.disks
    # No <driver type>: libvirt means raw and never probes, so neither does the exporter.
    assert (disk.key, disk.format, disk.capacity_bytes, disk.controller, disk.unit) == (
        "hdb",
        "raw",
        16 * MIB,
        "ide",
        1,
    )

    evil = await session.get_vm("evil")
    assert evil is not None
    assert evil.firmware is Firmware.EFI  # a loader means UEFI
    assert evil.disks[0].capacity_bytes == 0  # outside the lab: not even looked at


@pytest.mark.parametrize(
    "vm_id", ["no-such-vm", "00000000-0000-4000-8000-000000000000", "not-a-uuid", "../web-01"]
)
async def test_unknown_vm_is_none(session: ProviderSession, vm_id: str) -> None:
    assert await session.get_vm(vm_id) is None


async def test_disks_open_as_files_and_volumes_with_fingerprints(
    session: ProviderSession, lab: Lab
) -> None:
    web = await session.get_vm(WEB_UUID)
    assert web is not None
    vda, sdb = web.disks

    async with await session.open_disk(web, vda) as source:
        assert await source.local_path() == lab.web_disk.resolve()
        assert source.format == "qcow2"
        assert source.capacity_bytes == 64 * MIB
        assert source.root == lab.root.resolve()
        streamed = b"".join([block async for block in source.stream()])
        assert (
            hashlib.sha256(streamed).digest() == hashlib.sha256(lab.web_disk.read_bytes()).digest()
        )
        before = await source.fingerprint()
        subprocess.run(
            ["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", str(lab.web_disk)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert await source.fingerprint() != before

    async with await session.open_disk(web, sdb) as volume:
        assert await volume.local_path() == lab.web_data.resolve()
        assert (volume.format, volume.capacity_bytes) == ("raw", 32 * MIB)
        assert (await volume.fingerprint()).size == 32 * MIB


async def test_a_disk_outside_the_lab_is_not_opened(session: ProviderSession) -> None:
    evil = await session.get_vm(EVIL_UUID)
    assert evil is not None

    with pytest.raises(ServiceError) as error:
        await session.open_disk(evil, evil.disks[0])

    assert error.value.code is ErrorCode.FORBIDDEN
    assert "os-release" not in error.value.message


async def test_a_symlink_out_of_the_lab_is_not_opened(lab: Lab) -> None:
    link = lab.root / "images" / "link.raw"
    link.symlink_to("/etc/os-release")
    node = lab.node.read_text().replace(str(lab.db_disk), str(link))
    lab.node.write_text(node)
    session = await LibvirtDriver(lab_root=lab.root, disk_roots=[]).connect(_provider(lab), None)
    async with session:
        db = await session.get_vm("db-01")
        assert db is not None
        assert db.disks[0].capacity_bytes == 0
        with pytest.raises(ServiceError) as error:
            await session.open_disk(db, db.disks[0])
    assert error.value.code is ErrorCode.FORBIDDEN


async def test_an_unreachable_uri_is_upstream_unavailable(lab: Lab) -> None:
    driver = LibvirtDriver(lab_root=lab.root, disk_roots=[])

    with pytest.raises(ServiceError) as error:
        await driver.connect(_provider(lab, node=lab.root / "missing.xml"), None)

    assert error.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert "missing.xml" not in error.value.message


def _share_with_conversion_user(lab: Path, export_dir: Path) -> tuple[int, int] | None:
    """As root, qemu-img runs as the conversion user: let it reach the lab and the exports."""
    owner = conversion_owner(export_dir)
    if owner is None:
        return None
    for directory, _, files in os.walk(lab):
        os.chown(directory, -1, owner[1])
        os.chmod(directory, 0o750)
        for name in files:
            os.chown(os.path.join(directory, name), -1, owner[1])
            os.chmod(os.path.join(directory, name), 0o640)
    return owner


async def test_a_libvirt_vm_exports_through_the_service(lab: Lab, tmp_path: Path) -> None:
    """The whole path: register, describe, queue, convert with qemu-img, compare the disks."""
    providers, jobs, queue = InMemoryProviderStore(), InMemoryJobStore(), InMemoryJobQueue()
    events = InMemoryUnitOfWork(service="exporter", stores=(providers, jobs))
    export_dir = tmp_path / "exports"
    export_dir.mkdir(mode=0o700)
    owner = _share_with_conversion_user(lab.root, export_dir)
    service = ExporterService(
        providers=providers,
        jobs=jobs,
        drivers={"libvirt": LibvirtDriver(lab_root=lab.root, disk_roots=[])},
        converter=QemuImgConverter(SandboxSettings(user=CONVERSION_USER)),
        writer=LocalArtifactWriter(owner=owner),
        queue=queue,
        credentials=InMemoryCredentialDirectory(),
        resolver=InMemoryCredentialResolver(),
        uow=events,
        export_dir=export_dir,
    )
    await service.register_provider(
        name="kvm",
        type="libvirt",
        config={"uri": f"test://{lab.node}"},
        credential_ref=None,
        context=CONTEXT,
    )
    page = await service.list_vms("kvm", limit=10, context=CONTEXT)
    assert [vm.name for _, vm in page.items] == ["db-01", "evil", "web-01"]

    await service.create_export(provider="kvm", vm=WEB_UUID, format=DiskFormat.RAW, context=CONTEXT)
    (command,) = queue.commands
    job = await service.run_export(command, CONTEXT)

    assert job.status is JobStatus.SUCCEEDED, job.error
    assert [a.name for a in job.artifacts] == ["web-01-vda.img", "web-01-sdb.img"]
    exported = export_dir / job.id / "web-01-vda.img"
    _qemu_img("compare", "-f", "qcow2", "-F", "raw", str(lab.web_disk), str(exported))
    assert exported.read_bytes()[: len(lab.web_content)] == lab.web_content

    await service.create_export(provider="kvm", vm="evil", format=DiskFormat.RAW, context=CONTEXT)
    evil_job = await service.run_export(queue.commands[-1], CONTEXT)
    assert evil_job.status is JobStatus.FAILED
    assert not (export_dir / evil_job.id).exists()
