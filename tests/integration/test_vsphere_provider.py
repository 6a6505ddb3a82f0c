"""The vsphere driver against govmomi's vCenter simulator (built from Debian's source).

Real disk content is uploaded to the simulator's datastore over /folder/ and a simulated VM's
disk is pointed at it with ReconfigVM_Task; the driver must read those exact bytes back over
TLS it verified, with the session cookie the simulator insists on.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import ssl
import traceback
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.outbound.drivers import DRIVERS
from hypersdk_exporter.adapters.outbound.vsphere_driver import (
    VsphereDriver,
    VsphereError,
    VsphereVmDescription,
)
from hypersdk_exporter.core.models import Credential, Provider, VmSummary

from . import vsphere_sim
from .conftest import free_port

DISK_BYTES = 6 * 1024 * 1024
DISK_VM = "/DC0/vm/DC0_C0_RP0_VM0"
CHANGING_VM = "/DC0/vm/DC0_C0_RP0_VM1"
HOSTILE_VM = "/DC0/vm/DC0_C0_RP0_VM2"


@pytest.fixture(scope="session")
def disk(sim: vsphere_sim.Simulator) -> bytes:
    """The content of DISK_VM's disk, uploaded, and two more VMs' disks prepared."""
    content = vsphere_sim.disk_content(DISK_BYTES, seed=10)
    admin = vsphere_sim.Admin(sim)
    try:
        for vm_path, name, body in (
            (DISK_VM, "data", content),
            (CHANGING_VM, "changing", vsphere_sim.disk_content(DISK_BYTES, seed=11)),
        ):
            vsphere_sim.upload_disk(admin, vm_path=vm_path, name=name, body=body)
        # a descriptor whose extent is a file of the host running the exporter
        hostile = vsphere_sim.descriptor("/etc/os-release", DISK_BYTES).replace(
            b'"/etc/os-release"', b'"../../../../etc/os-release"'
        )
        for name, body in (("hostile.vmdk", hostile), ("hostile-flat.vmdk", b"\0" * 512)):
            # (the simulator only attaches a disk whose -flat file exists)
            admin.put(
                datacenter="DC0", datastore="LocalDS_0", path=f"DC0_C0_RP0_VM2/{name}", body=body
            )
        admin.attach(
            admin.vm(HOSTILE_VM),
            file_name="[LocalDS_0] DC0_C0_RP0_VM2/hostile.vmdk",
            capacity=DISK_BYTES,
        )
    finally:
        admin.close()
    return content


def provider(sim: vsphere_sim.Simulator, **config: str) -> Provider:
    settings = {"host": sim.host, "port": str(sim.port)}
    settings.update(config)
    return Provider(
        name="vc-test",
        type="vsphere",
        config=settings,
        credential_ref="providers/vc-test",
        created_at=datetime.now(UTC),
    )


def credential(sim: vsphere_sim.Simulator, password: str | None = None) -> Credential:
    return Credential(
        ref="providers/vc-test",
        values={"username": sim.username, "password": password or sim.password},
    )


def assert_secret_absent(secret: str, *texts: str) -> None:
    for text in texts:
        assert secret not in text


async def all_vms(session, limit: int = 100) -> list[VmSummary]:  # type: ignore[no-untyped-def]
    items: list[VmSummary] = []
    token = None
    while True:
        page = await session.list_vms(page_token=token, limit=limit)
        items += page.items
        token = page.next_token
        if token is None:
            return items


def test_registered_as_vsphere() -> None:
    assert DRIVERS["vsphere"] is not None
    assert VsphereDriver.type == "vsphere"


async def test_inventory_with_datacenter_folder_paths(
    sim: vsphere_sim.Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    session = await VsphereDriver().connect(provider(sim, ca_file=sim.ca_file), credential(sim))
    async with session:
        vms = await all_vms(session)
    paths = {vm.name: vm.path for vm in vms}
    assert len(vms) == 12
    assert paths["DC0_H0_VM0"] == "/DC0/vm/DC0_H0_VM0"
    assert paths["DC0_C0_RP0_VM1"] == "/DC0/vm/DC0_C0_RP0_VM1"
    # the second datacenter lives in folder F0, its VMs in vm folder F0
    assert paths["DC1_C0_RP0_VM2"] == "/F0/DC1/vm/F0/DC1_C0_RP0_VM2"
    assert [vm.name for vm in vms] == sorted(vm.name for vm in vms)
    for vm in vms:
        assert len(vm.id) == 36  # instance UUIDs
        assert vm.id.count("-") == 4
        assert vm.state == "running"
        assert vm.cpus >= 1
        assert vm.memory_mib >= 32
    assert len({vm.id for vm in vms}) == 12
    assert_secret_absent(sim.password, caplog.text)


async def test_inventory_confined_to_a_datacenter(sim: vsphere_sim.Simulator) -> None:
    config = provider(sim, ca_file=sim.ca_file, datacenter="F0/DC1")
    async with await VsphereDriver().connect(config, credential(sim)) as session:
        vms = await all_vms(session)
    assert len(vms) == 6
    assert all(vm.path.startswith("/F0/DC1/vm/F0/DC1_") for vm in vms), [v.path for v in vms]

    with pytest.raises(ServiceError) as missing:
        await VsphereDriver().connect(
            provider(sim, ca_file=sim.ca_file, datacenter="NoSuchDC"), credential(sim)
        )
    assert missing.value.code == ErrorCode.VALIDATION_FAILED
    assert "datacenter" in missing.value.message


async def test_paging_is_complete_and_stable(sim: vsphere_sim.Simulator) -> None:
    async with await VsphereDriver().connect(
        provider(sim, ca_file=sim.ca_file), credential(sim)
    ) as session:
        everything = await all_vms(session, limit=100)
        first = await session.list_vms(page_token=None, limit=5)
        assert len(first.items) == 5
        assert first.next_token is not None
        paged = await all_vms(session, limit=5)
        assert [vm.id for vm in paged] == [vm.id for vm in everything]
        last = await session.list_vms(page_token=None, limit=12)
        assert last.next_token is None
        for bad in ("not-a-token!", "W10", "x" * 2000):
            with pytest.raises(ServiceError) as refused:
                await session.list_vms(page_token=bad, limit=5)
            assert refused.value.code == ErrorCode.VALIDATION_FAILED


async def test_get_vm_by_instance_uuid(sim: vsphere_sim.Simulator, disk: bytes) -> None:
    async with await VsphereDriver().connect(
        provider(sim, ca_file=sim.ca_file), credential(sim)
    ) as session:
        listed = {vm.path: vm for vm in await all_vms(session)}
        summary = listed[DISK_VM]
        vm = await session.get_vm(summary.id)
        assert isinstance(vm, VsphereVmDescription)
        assert (vm.id, vm.name, vm.path) == (summary.id, summary.name, summary.path)
        assert vm.placement.startswith("/DC0/host/DC0_C0/DC0_C0_H")
        assert vm.firmware == "bios"
        assert vm.guest_os == "otherGuest"
        assert len(vm.disks) == 1
        only = vm.disks[0]
        assert (only.key, only.controller, only.unit, only.format) == ("scsi0:0", "scsi", 0, "vmdk")
        assert only.name == "data"
        assert only.capacity_bytes == len(disk)
        assert len(vm.nics) == 1
        nic = vm.nics[0]
        assert nic.model == "e1000"
        assert nic.network == "DC0_DVPG0"
        assert nic.mac is not None
        assert nic.mac.count(":") == 5
        standalone = await session.get_vm(listed["/DC0/vm/DC0_H0_VM0"].id)
        assert isinstance(standalone, VsphereVmDescription)
        assert standalone.placement == "/DC0/host/DC0_H0"

        by_moref = await session.get_vm(vm.moref)
        assert by_moref is not None
        assert by_moref.id == vm.id
        assert await session.get_vm("00000000-0000-0000-0000-000000000000") is None
        assert await session.get_vm("vm-999999") is None
        assert await session.get_vm("../../etc/passwd") is None


async def test_disk_bytes_read_over_the_datastore_equal_the_upload(
    sim: vsphere_sim.Simulator, disk: bytes
) -> None:
    async with await VsphereDriver().connect(
        provider(sim, ca_file=sim.ca_file), credential(sim)
    ) as session:
        vm = next(vm for vm in await all_vms(session) if vm.path == DISK_VM)
        described = await session.get_vm(vm.id)
        assert described is not None
        async with await session.open_disk(described, described.disks[0]) as source:
            assert source.format == "raw"
            assert source.capacity_bytes == len(disk)
            assert await source.local_path() is None
            before = await source.fingerprint()
            digest = hashlib.sha256()
            count = 0
            async for block in source.stream():
                digest.update(block)
                count += len(block)
            after = await source.fingerprint()
    assert count == len(disk)
    assert digest.hexdigest() == hashlib.sha256(disk).hexdigest()
    assert before == after
    assert before.size == len(disk)


async def test_a_disk_changed_during_the_read_is_detected(
    sim: vsphere_sim.Simulator, disk: bytes
) -> None:
    admin = vsphere_sim.Admin(sim)
    async with await VsphereDriver().connect(
        provider(sim, ca_file=sim.ca_file), credential(sim)
    ) as session:
        vm = next(vm for vm in await all_vms(session) if vm.path == CHANGING_VM)
        described = await session.get_vm(vm.id)
        assert described is not None
        source = await session.open_disk(described, described.disks[0])
        before = await source.fingerprint()
        try:  # the flat file is truncated on the datastore after the export started
            admin.put(
                datacenter="DC0",
                datastore="LocalDS_0",
                path="DC0_C0_RP0_VM1/changing-flat.vmdk",
                body=b"\0" * (DISK_BYTES // 2),
            )
        finally:
            admin.close()
        after = await source.fingerprint()
        assert after != before
        assert after.size == DISK_BYTES // 2
        with pytest.raises(ServiceError) as changed:
            async for _ in source.stream():
                pass
        assert changed.value.code == ErrorCode.CONFLICT
        assert "changed or truncated" in changed.value.message


async def test_a_hostile_extent_outside_the_vm_folder_is_refused(
    sim: vsphere_sim.Simulator, disk: bytes
) -> None:
    async with await VsphereDriver().connect(
        provider(sim, ca_file=sim.ca_file), credential(sim)
    ) as session:
        vm = next(vm for vm in await all_vms(session) if vm.path == HOSTILE_VM)
        described = await session.get_vm(vm.id)
        assert described is not None
        with pytest.raises(ServiceError) as refused:
            await session.open_disk(described, described.disks[0])
    assert refused.value.code == ErrorCode.VALIDATION_FAILED
    assert "next to its descriptor" in refused.value.message
    assert "os-release" not in refused.value.message


async def test_the_datastore_refuses_files_without_a_session(
    sim: vsphere_sim.Simulator, disk: bytes
) -> None:
    # what makes the cookie in the driver's requests meaningful
    context = ssl.create_default_context(cafile=sim.ca_file)
    connection = http.client.HTTPSConnection(sim.host, sim.port, context=context, timeout=30)
    try:
        connection.request(
            "GET", "/folder/DC0_C0_RP0_VM0/data-flat.vmdk?dcPath=DC0&dsName=LocalDS_0"
        )
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 401


async def test_tls_pinned_thumbprint_is_accepted_for_api_and_datastore(
    sim: vsphere_sim.Simulator, disk: bytes
) -> None:
    colons = ":".join(sim.thumbprint[i : i + 2] for i in range(0, 64, 2)).upper()
    async with await VsphereDriver().connect(
        provider(sim, thumbprint=colons), credential(sim)
    ) as session:
        assert len((await session.list_vms(page_token=None, limit=3)).items) == 3
        vm = next(vm for vm in await all_vms(session) if vm.path == DISK_VM)
        described = await session.get_vm(vm.id)
        assert described is not None
        async with await session.open_disk(described, described.disks[0]) as source:
            read = b"".join([block async for block in source.stream()])
    assert hashlib.sha256(read).digest() == hashlib.sha256(disk).digest()


async def test_tls_wrong_thumbprint_is_refused_before_any_login(
    sim: vsphere_sim.Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "ab" * 32
    with pytest.raises(VsphereError) as refused:
        await VsphereDriver().connect(provider(sim, thumbprint=wrong), credential(sim))
    error = refused.value
    assert error.code == ErrorCode.UPSTREAM_UNAVAILABLE
    assert error.reason == "tls_untrusted"
    assert "pinned thumbprint" in error.message
    assert error.__cause__ is None  # pyvmomi's and ssl's exceptions are not chained
    assert error.__suppress_context__
    text = "".join(traceback.format_exception(error))
    assert_secret_absent(sim.password, text, caplog.text, str(error), repr(error))


async def test_tls_unknown_ca_is_refused_by_default(sim: vsphere_sim.Simulator) -> None:
    with pytest.raises(VsphereError) as refused:
        await VsphereDriver().connect(provider(sim), credential(sim))
    assert refused.value.reason == "tls_untrusted"
    assert "not trusted" in refused.value.message


async def test_insecure_is_explicit_and_logged_once_per_connection(
    sim: vsphere_sim.Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with await VsphereDriver().connect(
        provider(sim, insecure="true"), credential(sim)
    ) as session:
        await session.list_vms(page_token=None, limit=2)
        await session.list_vms(page_token=None, limit=2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "TLS verification is disabled" in warnings[0].getMessage()
    assert "vc-test" in warnings[0].getMessage()
    assert_secret_absent(sim.password, caplog.text)


async def test_wrong_password_is_a_clear_error_that_never_echoes_it(
    sim: vsphere_sim.Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    planted = "planted-wrong-password-7f3a9c"
    with pytest.raises(VsphereError) as refused:
        await VsphereDriver().connect(
            provider(sim, ca_file=sim.ca_file), credential(sim, password=planted)
        )
    error = refused.value
    assert error.reason == "login_failed"
    assert "refused the provider's credential" in error.message
    text = "".join(traceback.format_exception(error))
    for secret in (planted, sim.password):
        assert_secret_absent(secret, text, caplog.text, str(error), repr(error))


async def test_no_credential_is_refused(sim: vsphere_sim.Simulator) -> None:
    with pytest.raises(ServiceError) as refused:
        await VsphereDriver().connect(provider(sim, ca_file=sim.ca_file), None)
    assert refused.value.code == ErrorCode.VALIDATION_FAILED


async def test_unreachable_host_is_a_clear_error(sim: vsphere_sim.Simulator) -> None:
    config = provider(sim, ca_file=sim.ca_file)
    config.config["port"] = str(free_port())
    with pytest.raises(VsphereError) as refused:
        await VsphereDriver().connect(config, credential(sim))
    assert refused.value.reason == "unreachable"


def test_simulator_process_is_bounded(sim: vsphere_sim.Simulator) -> None:
    # its datastores live in this session's temporary directory, nowhere else
    assert any(Path(sim.root).iterdir())
