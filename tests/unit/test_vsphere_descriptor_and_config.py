"""The vsphere driver's pure parts: VMDK descriptors from a datastore (untrusted) and its config."""

from __future__ import annotations

import pytest

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.outbound import vmdk_descriptor
from hypersdk_exporter.adapters.outbound.vsphere_driver import VsphereDriver
from hypersdk_exporter.adapters.outbound.vsphere_tls import client_context, normalise_thumbprint


def descriptor(*extents: str, extra: str = "") -> bytes:
    return (
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n'
        + "".join(line + "\n" for line in extents)
        + extra
        + 'ddb.adapterType = "lsilogic"\n'
    ).encode()


def test_a_flat_descriptor_names_its_extent_and_size() -> None:
    layout = vmdk_descriptor.parse(descriptor('RW 2048 VMFS "vm-flat.vmdk"'), complete=True)
    assert layout.format == "raw"
    assert layout.extents == (vmdk_descriptor.Extent("vm-flat.vmdk", 2048 * 512),)
    assert layout.size_bytes == 1024 * 1024


def test_split_flat_extents_are_read_in_order() -> None:
    layout = vmdk_descriptor.parse(
        descriptor('RW 100 FLAT "vm-s001.vmdk" 0', 'RW 50 FLAT "vm-s002.vmdk" 0'), complete=True
    )
    assert [extent.file_name for extent in layout.extents] == ["vm-s001.vmdk", "vm-s002.vmdk"]
    assert layout.size_bytes == 150 * 512


def test_a_sparse_vmdk_is_one_self_contained_file() -> None:
    layout = vmdk_descriptor.parse(b"KDMV\x01\x00\x00\x00" + b"\0" * 100, complete=False)
    assert layout.format == "vmdk"
    assert layout.extents == ()


@pytest.mark.parametrize(
    "extent",
    [
        'RW 2048 VMFS "/etc/os-release"',
        'RW 2048 VMFS "../other-vm/disk-flat.vmdk"',
        'RW 2048 FLAT "sub/dir-flat.vmdk"',
        'RW 2048 FLAT "..\\\\windows"',
        'RW 2048 FLAT ".."',
        "RW 2048 FLAT",
    ],
)
def test_an_extent_outside_the_descriptors_folder_is_refused(extent: str) -> None:
    with pytest.raises(vmdk_descriptor.DescriptorError) as refused:
        vmdk_descriptor.parse(descriptor(extent), complete=True)
    assert "os-release" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (descriptor('RW 2048 VMFSSPARSE "vm-delta.vmdk"'), "VMFSSPARSE extent"),
        (descriptor('RW 2048 VMFSRDM "vm-rdm.vmdk"'), "VMFSRDM extent"),
        (descriptor('RW 2048 SESPARSE "vm-sesparse.vmdk"'), "SESPARSE extent"),
        (descriptor('NOACCESS 2048 FLAT "vm-flat.vmdk"'), "NOACCESS"),
        (descriptor('RW 2048 FLAT "vm-flat.vmdk" 7'), "starts inside"),
        (descriptor('RW 0 FLAT "vm-flat.vmdk"'), "empty"),
        (descriptor(), "no extent"),
        (
            descriptor('RW 2048 VMFS "vm-000001-flat.vmdk"', extra="parentCID=1234abcd\n"),
            "snapshot",
        ),
        (
            descriptor('RW 8 VMFS "x-flat.vmdk"', extra='parentFileNameHint="/etc/passwd"\n'),
            "snapshot",
        ),
        (b"\xff\xfe binary \x00 junk", "neither text"),
        (descriptor('RW 8 VMFS "x-flat.vmdk"') + b"\0", "neither text"),
    ],
)
def test_what_cannot_be_read_safely_is_refused_with_a_reason(text: bytes, why: str) -> None:
    with pytest.raises(vmdk_descriptor.DescriptorError, match=why):
        vmdk_descriptor.parse(text, complete=True)


def test_an_oversized_descriptor_is_refused_without_reading_it_all() -> None:
    with pytest.raises(vmdk_descriptor.DescriptorError, match="larger"):
        vmdk_descriptor.parse(b"# " * 40000, complete=False)
    many = descriptor(*[f'RW 8 FLAT "x{i}-flat.vmdk"' for i in range(65)])
    with pytest.raises(vmdk_descriptor.DescriptorError, match="too many"):
        vmdk_descriptor.parse(many, complete=True)


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"host": "https://vc.example.com"},
        {"host": "vc.example.com/sdk"},
        {"host": "user@vc.example.com"},
        {"host": "vc.example.com", "port": "0"},
        {"host": "vc.example.com", "port": "70000"},
        {"host": "vc.example.com", "thumbprint": "ab" * 20},  # SHA-1: refused
        {"host": "vc.example.com", "thumbprint": "zz" * 32},
        {"host": "vc.example.com", "ca_file": "relative.pem"},
        {"host": "vc.example.com", "ca_file": "/nonexistent/ca.pem"},
        {"host": "vc.example.com", "insecure": "maybe"},
        {"host": "vc.example.com", "insecure": "true", "thumbprint": "ab" * 32},
        {"host": "vc.example.com", "datacenter": "DC\n0"},
        {"host": "vc.example.com", "password": "planted-config-secret"},
    ],
)
def test_bad_config_is_refused_without_echoing_values(config: dict[str, str]) -> None:
    with pytest.raises(ServiceError) as refused:
        VsphereDriver().validate_config(config)
    assert refused.value.code == ErrorCode.VALIDATION_FAILED
    assert "planted-config-secret" not in refused.value.message
    assert "config." in refused.value.message


def test_a_file_that_is_not_pem_is_refused_as_ca_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    junk = tmp_path / "ca.pem"
    junk.write_text("planted-not-a-certificate")
    with pytest.raises(ServiceError) as refused:
        VsphereDriver().validate_config({"host": "vc.example.com", "ca_file": str(junk)})
    assert "config.ca_file" in refused.value.message
    assert "planted-not-a-certificate" not in refused.value.message


@pytest.mark.parametrize(
    "config",
    [
        {"host": "vc.example.com"},
        {"host": "10.0.0.5", "port": "8443", "datacenter": "Folder/DC0"},
        {"host": "::1", "insecure": "true"},
        {"host": "esx1", "thumbprint": ":".join(["AB"] * 32)},
    ],
)
def test_good_config_is_accepted(config: dict[str, str]) -> None:
    VsphereDriver().validate_config(config)


def test_tls_is_verified_unless_insecure_is_explicit() -> None:
    import ssl

    default = client_context(ca_file=None, thumbprint=None, insecure=False)
    assert default.verify_mode == ssl.CERT_REQUIRED
    assert default.check_hostname
    pinned = client_context(ca_file=None, thumbprint="AB" * 32, insecure=False)
    assert getattr(pinned, "pin", None) == "ab" * 32
    assert pinned.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert normalise_thumbprint("aB:" * 31 + "aB") == "ab" * 32
