"""A vSphere VM exported end to end: govmomi's simulator, the vsphere driver, qemu-img.

The disk's flat extent (random, text and zero blocks made here) is uploaded to the simulator's
datastore and a VM's disk pointed at it; the export runs through ExporterService as inject.py
wires it (the real driver, the real QemuImgConverter as the unprivileged conversion user, the
local artifact writer), with the in-memory stores of our own ports where the database is not
the point. Every output is compared with the original bytes by ``qemu-img compare``; the OVA is
read back by the repository's reader and its hardware checked against what the simulator says.

Faults are injected through a wrapper of our own DiskSource port that runs a hook after the
first block of the stream: the flat file is rewritten or truncated on the datastore, or the
simulator is killed or frozen, while the export reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pyVmomi import vim

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.rpc import DiskFormat, JobStatus
from hypersdk_exporter.adapters.outbound.artifacts import LocalArtifactWriter
from hypersdk_exporter.adapters.outbound.memory import (
    InMemoryCredentialDirectory,
    InMemoryCredentialResolver,
    InMemoryJobQueue,
    InMemoryJobStore,
    InMemoryProviderStore,
)
from hypersdk_exporter.adapters.outbound.ova import extract_member, read_ova
from hypersdk_exporter.adapters.outbound.qemu_img import QemuImgConverter, SandboxSettings
from hypersdk_exporter.adapters.outbound.vsphere_driver import VsphereDriver
from hypersdk_exporter.core import ovf
from hypersdk_exporter.core.jobs import Job
from hypersdk_exporter.core.models import (
    Credential,
    DiskInfo,
    Page,
    Provider,
    SourceFingerprint,
    VmDescription,
    VmSummary,
)
from hypersdk_exporter.core.service import ExporterService
from hypersdk_exporter.ports.outbound import DiskSource, ProviderDriver, ProviderSession
from hypersdk_kit.memory import InMemoryUnitOfWork

from . import vsphere_sim
from .conftest import free_port
from .conversion import CONVERSION_USER, conversion_owner

MIB = 1 << 20
EXPORT_VM = "/DC0/vm/DC0_H0_VM0"
TRUNCATED_VM = "/DC0/vm/DC0_H0_VM1"
REWRITTEN_VM = "/DC0/vm/DC0_H0_VM2"
PROVIDER = "vc-export"
REF = "providers/vc-export"
CONTEXT = RequestContext(actor="vera", source_ip="192.0.2.38", request_id="req-vsphere-export")
# A fault hook's view of the world: called once, after the first block was read.
Hook = Callable[[], Awaitable[None]]


# -- wrappers of our own ports, to run a hook in the middle of a stream ----------------------


class PausingSource(DiskSource):
    """The driver's source, with ``hook`` awaited after the first block it yields."""

    def __init__(self, inner: DiskSource, hook: Hook) -> None:
        self.inner = inner
        self.hook = hook
        self.format = inner.format
        self.capacity_bytes = inner.capacity_bytes

    async def local_path(self) -> Path | None:
        return await self.inner.local_path()

    async def stream(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        first = True
        async for block in self.inner.stream():
            yield block
            if first:
                first = False
                await self.hook()

    async def fingerprint(self) -> SourceFingerprint:
        return await self.inner.fingerprint()

    async def close(self) -> None:
        await self.inner.close()


class PausingSession(ProviderSession):
    def __init__(self, inner: ProviderSession, hook: Hook) -> None:
        self.inner = inner
        self.hook = hook

    async def list_vms(self, *, page_token: str | None, limit: int) -> Page[VmSummary]:
        return await self.inner.list_vms(page_token=page_token, limit=limit)

    async def get_vm(self, vm_id: str) -> VmDescription | None:
        return await self.inner.get_vm(vm_id)

    async def open_disk(self, vm: VmDescription, disk: DiskInfo) -> DiskSource:
        return PausingSource(await self.inner.open_disk(vm, disk), self.hook)

    async def close(self) -> None:
        await self.inner.close()


class PausingDriver(ProviderDriver):
    """The real vsphere driver whose disk streams pause for ``hook`` once."""

    type: ClassVar[str] = "vsphere"

    def __init__(self, hook: Hook) -> None:
        self.inner = VsphereDriver()
        self.hook = hook

    def validate_config(self, config: dict[str, str]) -> None:
        self.inner.validate_config(config)

    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        return PausingSession(await self.inner.connect(provider, credential), self.hook)


# -- the service as inject.py wires it --------------------------------------------------------


class Exporter:
    """An ExporterService over the simulator, and what a test inspects afterwards."""

    def __init__(
        self, sim: vsphere_sim.Simulator, root: Path, driver: ProviderDriver | None = None
    ) -> None:
        self.sim = sim
        self.export_dir = root / "exports"
        self.export_dir.mkdir(mode=0o700)
        owner = conversion_owner(self.export_dir)
        self.jobs = InMemoryJobStore()
        self.providers = InMemoryProviderStore()
        self.queue = InMemoryJobQueue()
        self.events = InMemoryUnitOfWork(service="exporter", stores=(self.providers, self.jobs))
        self.service = ExporterService(
            providers=self.providers,
            jobs=self.jobs,
            drivers={"vsphere": driver or VsphereDriver()},
            converter=QemuImgConverter(SandboxSettings(user=CONVERSION_USER)),
            writer=LocalArtifactWriter(owner=owner),
            queue=self.queue,
            credentials=InMemoryCredentialDirectory({REF}),
            resolver=InMemoryCredentialResolver(
                {REF: {"username": sim.username, "password": sim.password}}
            ),
            uow=self.events,
            export_dir=self.export_dir,
        )

    async def register(self, **config: str) -> None:
        settings = {"host": self.sim.host, "port": str(self.sim.port), "ca_file": self.sim.ca_file}
        settings.update(config)
        await self.service.register_provider(
            name=PROVIDER, type="vsphere", config=settings, credential_ref=REF, context=CONTEXT
        )

    async def vm_id(self, inventory_path: str) -> str:
        token = None
        while True:
            page = await self.service.list_vms(
                PROVIDER, limit=100, page_token=token, context=CONTEXT
            )
            for _, vm in page.items:
                if vm.path == inventory_path:
                    return vm.id
            token = page.next_token
            assert token is not None, inventory_path

    async def export(self, vm_id: str, target: DiskFormat) -> Job:
        await self.service.create_export(
            provider=PROVIDER, vm=vm_id, format=target, context=CONTEXT
        )
        return await self.service.run_export(self.queue.commands[-1], CONTEXT)

    def assert_credential_absent(self, *texts: str) -> None:
        """The planted password is nowhere: job directories, events, jobs, given texts."""
        secret = self.sim.password
        for directory, _, files in os.walk(self.export_dir):
            for name in files:
                assert secret.encode() not in (Path(directory) / name).read_bytes()
        for event in self.events.events:
            assert secret not in event.model_dump_json()
        for job in self.jobs.jobs.values():
            assert secret not in repr(job)
        for text in texts:
            assert secret not in text


def _qemu_img(*args: str) -> str:
    done = subprocess.run(
        ["qemu-img", *args], check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _hardware(admin: vsphere_sim.Admin, inventory_path: str) -> dict[str, Any]:
    """What the simulator itself reports for the VM (the test's pyvmomi session)."""
    vm = admin.vm(inventory_path)
    devices = {device.key: device for device in vm.config.hardware.device}
    (disk,) = [d for d in devices.values() if isinstance(d, vim.vm.device.VirtualDisk)]
    controller = devices[disk.controllerKey]
    subtypes = {
        vim.vm.device.VirtualLsiLogicController: (ovf.SCSI, "lsilogic"),
        vim.vm.device.ParaVirtualSCSIController: (ovf.SCSI, "VirtualSCSI"),
        vim.vm.device.VirtualIDEController: (ovf.IDE, None),
        vim.vm.device.VirtualAHCIController: (ovf.SATA, "vmware.sata.ahci"),
    }
    nics = [d for d in devices.values() if isinstance(d, vim.vm.device.VirtualEthernetCard)]
    return {
        "cpus": vm.config.hardware.numCPU,
        "memory_mib": vm.config.hardware.memoryMB,
        "firmware": vm.config.firmware,
        "guest_id": vm.config.guestId,
        "capacity": disk.capacityInBytes,
        "unit": disk.unitNumber,
        "controller": subtypes[type(controller)],
        "macs": sorted(nic.macAddress for nic in nics),
    }


@pytest.fixture(scope="module")
def original(sim: vsphere_sim.Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """EXPORT_VM's disk: uploaded to the datastore, and kept here as the reference raw image."""
    content = vsphere_sim.disk_content(12 * MIB, seed=38)
    content = (
        content[: 4 * MIB]
        + b"hypersdk vsphere export marker\n".ljust(512, b".")
        + content[4 * MIB + 512 :]
    )
    admin = vsphere_sim.Admin(sim)
    try:
        vsphere_sim.upload_disk(admin, vm_path=EXPORT_VM, name="export", body=content)
    finally:
        admin.close()
    reference = tmp_path_factory.mktemp("vsphere-original") / "disk.raw"
    reference.write_bytes(content)
    reference.chmod(0o600)
    return reference


def _assert_private(job_dir: Path, expected: set[str]) -> None:
    assert job_dir.stat().st_mode & 0o777 == 0o700
    assert {p.name for p in job_dir.iterdir()} == expected  # no spool, no partial left behind
    for path in job_dir.iterdir():
        assert path.is_file()
        assert path.stat().st_mode & 0o777 == 0o600, path.name


@pytest.mark.parametrize("target", [DiskFormat.QCOW2, DiskFormat.VMDK])
async def test_a_vsphere_disk_exports_byte_for_byte(
    sim: vsphere_sim.Simulator,
    original: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    target: DiskFormat,
) -> None:
    qemu_format = target.value
    caplog.set_level(logging.DEBUG)
    exporter = Exporter(sim, tmp_path)
    await exporter.register()
    job = await exporter.export(await exporter.vm_id(EXPORT_VM), target)

    assert job.status is JobStatus.SUCCEEDED, job.error
    (artifact,) = job.artifacts
    assert artifact.name == f"DC0_H0_VM0-export.{qemu_format}"
    job_dir = exporter.export_dir / job.id
    output = job_dir / artifact.name
    _qemu_img("compare", "-f", "raw", "-F", qemu_format, str(original), str(output))
    info = json.loads(_qemu_img("info", "--output=json", "-f", qemu_format, str(output)))
    assert info["virtual-size"] == original.stat().st_size
    if target is DiskFormat.VMDK:
        assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    _assert_private(job_dir, {artifact.name, "manifest.json"})
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["artifacts"][0]["sha256"] == artifact.sha256
    exporter.assert_credential_absent(caplog.text)


async def test_a_vsphere_vm_exports_as_a_valid_ova_with_its_hardware(
    sim: vsphere_sim.Simulator,
    original: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    exporter = Exporter(sim, tmp_path)
    await exporter.register()
    job = await exporter.export(await exporter.vm_id(EXPORT_VM), DiskFormat.OVA)

    assert job.status is JobStatus.SUCCEEDED, job.error
    (artifact,) = job.artifacts
    job_dir = exporter.export_dir / job.id
    ova = job_dir / artifact.name
    _assert_private(job_dir, {artifact.name, "manifest.json"})

    report = read_ova(ova)  # ustar order, every reference and every SHA-256 of the .mf
    assert report.members == [
        "DC0_H0_VM0.ovf",
        "DC0_H0_VM0-export.vmdk",
        "DC0_H0_VM0.mf",
    ]
    extracted = tmp_path / "extracted.vmdk"
    extract_member(ova, "DC0_H0_VM0-export.vmdk", extracted)
    _qemu_img("compare", "-f", "raw", "-F", "vmdk", str(original), str(extracted))

    admin = vsphere_sim.Admin(sim)
    try:
        expected = _hardware(admin, EXPORT_VM)
    finally:
        admin.close()
    assert (report.cpus, report.memory_mib, report.firmware) == (
        expected["cpus"],
        expected["memory_mib"],
        expected["firmware"],
    )
    assert report.capacities == {"DC0_H0_VM0-export.vmdk": expected["capacity"]}
    assert report.disks == {"DC0_H0_VM0-export.vmdk": ovf.STREAM_OPTIMIZED}
    envelope = report.envelope
    assert envelope is not None
    system = envelope.find(f"{{{ovf.OVF}}}VirtualSystem")
    assert system is not None
    os_section = system.find(f"{{{ovf.OVF}}}OperatingSystemSection")
    assert os_section is not None
    assert os_section.get(f"{{{ovf.VMW}}}osType") == expected["guest_id"]
    items = [
        {child.tag.rpartition("}")[2]: child.text for child in item}
        for item in system.iter(f"{{{ovf.OVF}}}Item")
    ]
    (disk,) = [i for i in items if i["ResourceType"] == str(ovf.DISK)]
    (controller,) = [i for i in items if i["InstanceID"] == disk["Parent"]]
    kind, subtype = expected["controller"]
    assert controller["ResourceType"] == str(kind)
    assert controller.get("ResourceSubType") == subtype
    assert disk["AddressOnParent"] == str(expected["unit"])
    nics = [i for i in items if i["ResourceType"] == str(ovf.NIC)]
    assert sorted(nic["Address"] for nic in nics) == expected["macs"]
    assert report.nics == len(expected["macs"]) >= 1
    exporter.assert_credential_absent(caplog.text)


# -- faults -------------------------------------------------------------------------------


def _upload(sim: vsphere_sim.Simulator, vm_path: str, name: str, body: bytes) -> str:
    admin = vsphere_sim.Admin(sim)
    try:
        return vsphere_sim.upload_disk(admin, vm_path=vm_path, name=name, body=body)
    finally:
        admin.close()


def _put(sim: vsphere_sim.Simulator, path: str, body: bytes) -> None:
    admin = vsphere_sim.Admin(sim)
    try:
        admin.put(datacenter="DC0", datastore="LocalDS_0", path=path, body=body)
    finally:
        admin.close()


@pytest.mark.parametrize(
    ("vm_path", "rewrite"),
    [
        (TRUNCATED_VM, lambda body: body[: len(body) // 2]),
        # same size, other content: only the file's Last-Modified (whole seconds) tells
        (REWRITTEN_VM, lambda body: bytes(reversed(body))),
    ],
    ids=["truncated", "rewritten-same-size"],
)
async def test_a_flat_file_changed_during_the_export_fails_the_job(
    sim: vsphere_sim.Simulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    vm_path: str,
    rewrite: Callable[[bytes], bytes],
) -> None:
    caplog.set_level(logging.DEBUG)
    body = vsphere_sim.disk_content(24 * MIB, seed=len(vm_path))
    flat = _upload(sim, vm_path, "moving", body)
    uploaded = time.time()
    calls = 0

    async def change() -> None:
        nonlocal calls
        calls += 1
        # Last-Modified has whole seconds: a rewrite in the upload's second is invisible to it
        await asyncio.sleep(max(0.0, uploaded + 1.2 - time.time()))
        await asyncio.to_thread(_put, sim, flat, rewrite(body))

    exporter = Exporter(sim, tmp_path, PausingDriver(change))
    await exporter.register()
    job = await asyncio.wait_for(
        exporter.export(await exporter.vm_id(vm_path), DiskFormat.QCOW2), 120
    )

    assert calls == 1
    assert (job.status, job.error) == (JobStatus.FAILED, "source_changed")
    assert not (exporter.export_dir / job.id).exists()
    assert list(exporter.export_dir.iterdir()) == []
    failed = [e for e in exporter.events.events if e.type.endswith("job.failed")]
    assert len(failed) == 1
    exporter.assert_credential_absent(caplog.text)


@pytest.fixture
def own_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vsphere_sim.Simulator]:
    """A simulator for this test alone: it is killed or frozen."""
    with vsphere_sim.started(tmp_path_factory, port=free_port()) as simulator:
        try:
            yield simulator
        finally:  # a frozen one must run again to hear its SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(simulator.pid, signal.SIGCONT)


@pytest.mark.parametrize("fault", ["killed", "frozen"])
async def test_a_simulator_gone_mid_stream_fails_cleanly_and_in_bounded_time(
    own_sim: vsphere_sim.Simulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    _upload(own_sim, EXPORT_VM, "doomed", vsphere_sim.disk_content(48 * MIB, seed=7))

    async def gone() -> None:
        os.kill(own_sim.pid, signal.SIGKILL if fault == "killed" else signal.SIGSTOP)

    exporter = Exporter(own_sim, tmp_path, PausingDriver(gone))
    await exporter.register(timeout_seconds="2")
    vm_id = await exporter.vm_id(EXPORT_VM)
    started = time.monotonic()
    job = await asyncio.wait_for(exporter.export(vm_id, DiskFormat.VMDK), 60)
    elapsed = time.monotonic() - started

    assert (job.status, job.error, elapsed < 30) == (JobStatus.FAILED, "source_unavailable", True)
    assert not (exporter.export_dir / job.id).exists()
    assert list(exporter.export_dir.iterdir()) == []
    # the read timeout (2 s), and the logout after it, bound a frozen host
    assert elapsed < 30, elapsed
    exporter.assert_credential_absent(caplog.text)
