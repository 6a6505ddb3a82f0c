"""The OVF descriptor (DSP0243 1.x envelope) and manifest of an exported VM."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from hypersdk_exporter.core.models import Firmware, VmDescription

OVF = "http://schemas.dmtf.org/ovf/envelope/1"
RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
VMW = "http://www.vmware.com/schema/ovf"
STREAM_OPTIMIZED = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
NAMESPACES = {"ovf": OVF, "rasd": RASD, "vssd": VSSD, "vmw": VMW}
for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)

# CIM resource types (DSP1041/DSP1043) and the controller each disk bus maps to.
CPU, MEMORY, IDE, SCSI, NIC, DISK, SATA = 3, 4, 5, 6, 10, 17, 20
_CONTROLLERS: dict[str, tuple[int, str | None]] = {
    "ide": (IDE, None),
    "scsi": (SCSI, "lsilogic"),
    "virtio": (SCSI, "VirtualSCSI"),  # paravirtual SCSI is the nearest OVF consumers know
    "sata": (SATA, "vmware.sata.ahci"),
    "nvme": (SATA, "vmware.nvme.controller"),
    "usb": (SCSI, "lsilogic"),
    "fdc": (IDE, None),
}
# A controller model a provider names (DiskInfo.controller_model), as OVF consumers know it.
_CONTROLLER_MODELS: dict[str, tuple[int, str]] = {
    "lsilogic": (SCSI, "lsilogic"),
    "lsilogicsas": (SCSI, "lsilogicsas"),
    "pvscsi": (SCSI, "VirtualSCSI"),
    "buslogic": (SCSI, "buslogic"),
}
_NIC_MODELS = {"virtio": "VmxNet3", "vmxnet3": "VmxNet3", "e1000": "E1000", "e1000e": "E1000e"}
# CIM operating system ids: 101 "Linux 64-Bit", 1 "Other".
_CIM_OS = (("linux", 101, "otherLinux64Guest"), ("windows", 1, "windows9_64Guest"))
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# A vSphere guest id (VirtualMachineGuestOsIdentifier: rhel8_64Guest, windows2019srv_64Guest):
# a vSphere provider's guest_os is one, and it is what vmw:osType carries, unchanged.
_VSPHERE_GUEST_ID = re.compile(r"^[a-z][A-Za-z0-9_]{0,62}Guest$")


@dataclass(frozen=True)
class OvfDisk:
    """One disk file of the package: the VM's disk ``index``, its file and sizes."""

    index: int
    file_name: str
    file_size: int


def safe_name(name: str) -> str:
    """A file-name-safe version of a provider's name."""
    cleaned = _SAFE.sub("_", name).strip("._") or "vm"
    return cleaned[:100]


def _q(prefix: str, tag: str) -> str:
    return f"{{{NAMESPACES[prefix]}}}{tag}"


def _sub(
    parent: ET.Element, prefix: str, tag: str, text: str | None = None, **attrs: str
) -> ET.Element:
    element = ET.SubElement(parent, _q(prefix, tag), {_attr(k): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _attr(key: str) -> str:
    prefix, _, name = key.partition("_")
    return _q(prefix, name)


def _item(section: ET.Element, fields: dict[str, str]) -> None:
    """A rasd Item; CIM requires its elements in alphabetical order."""
    item = _sub(section, "ovf", "Item")
    for key in sorted(fields):
        _sub(item, "rasd", key, fields[key])


def descriptor(vm: VmDescription, disks: list[OvfDisk]) -> bytes:  # noqa: PLR0915
    """The OVF envelope of ``vm`` whose ``disks`` are packaged as stream-optimized VMDKs."""
    envelope = ET.Element(_q("ovf", "Envelope"), {_q("ovf", "version"): "1.0"})
    references = _sub(envelope, "ovf", "References")
    disk_section = _sub(envelope, "ovf", "DiskSection")
    _sub(disk_section, "ovf", "Info", "Virtual disk information")
    for number, disk in enumerate(disks, start=1):
        info = vm.disks[disk.index]
        _sub(
            references,
            "ovf",
            "File",
            ovf_id=f"file{number}",
            ovf_href=disk.file_name,
            ovf_size=str(disk.file_size),
        )
        _sub(
            disk_section,
            "ovf",
            "Disk",
            ovf_diskId=f"vmdisk{number}",
            ovf_fileRef=f"file{number}",
            ovf_capacity=str(info.capacity_bytes),
            ovf_capacityAllocationUnits="byte",
            ovf_format=STREAM_OPTIMIZED,
        )
    networks = sorted({nic.network for nic in vm.nics})
    network_section = _sub(envelope, "ovf", "NetworkSection")
    _sub(network_section, "ovf", "Info", "The logical networks")
    for network in networks:
        element = _sub(network_section, "ovf", "Network", ovf_name=network)
        _sub(element, "ovf", "Description", f"The {network} network")

    system = _sub(envelope, "ovf", "VirtualSystem", ovf_id=vm.name)
    _sub(system, "ovf", "Info", "A virtual machine")
    _sub(system, "ovf", "Name", vm.name)
    cim_id, vmw_type = next(
        ((cim, vmw) for key, cim, vmw in _CIM_OS if key in vm.guest_os.lower()), (1, "otherGuest")
    )
    if _VSPHERE_GUEST_ID.match(vm.guest_os):
        vmw_type = vm.guest_os
    os_section = _sub(system, "ovf", "OperatingSystemSection", ovf_id=str(cim_id))
    os_section.set(_q("vmw", "osType"), vmw_type)
    _sub(os_section, "ovf", "Info", "The guest operating system")
    _sub(os_section, "ovf", "Description", vm.guest_os or "unknown")

    hardware = _sub(system, "ovf", "VirtualHardwareSection")
    _sub(hardware, "ovf", "Info", "Virtual hardware requirements")
    settings = _sub(hardware, "ovf", "System")
    _sub(settings, "vssd", "ElementName", "Virtual Hardware Family")
    _sub(settings, "vssd", "InstanceID", "0")
    _sub(settings, "vssd", "VirtualSystemIdentifier", vm.name)
    _sub(settings, "vssd", "VirtualSystemType", "vmx-13")
    instance = 0

    def next_id() -> str:
        nonlocal instance
        instance += 1
        return str(instance)

    _item(
        hardware,
        {
            "AllocationUnits": "hertz * 10^6",
            "Description": "Number of virtual CPUs",
            "ElementName": f"{vm.cpus} virtual CPU(s)",
            "InstanceID": next_id(),
            "ResourceType": str(CPU),
            "VirtualQuantity": str(vm.cpus),
        },
    )
    _item(
        hardware,
        {
            "AllocationUnits": "byte * 2^20",
            "Description": "Memory size",
            "ElementName": f"{vm.memory_mib} MB of memory",
            "InstanceID": next_id(),
            "ResourceType": str(MEMORY),
            "VirtualQuantity": str(vm.memory_mib),
        },
    )
    controllers: dict[tuple[str, str | None], str] = {}  # (bus, model) -> InstanceID
    for bus, model in dict.fromkeys(
        (vm.disks[d.index].controller, vm.disks[d.index].controller_model) for d in disks
    ):
        kind, subtype = _CONTROLLER_MODELS.get(model or "") or _CONTROLLERS.get(
            bus, (SCSI, "lsilogic")
        )
        controllers[bus, model] = next_id()
        fields = {
            "Address": "0",
            "Description": f"{bus} controller",
            "ElementName": f"{bus}0",
            "InstanceID": controllers[bus, model],
            "ResourceType": str(kind),
        }
        if subtype:
            fields["ResourceSubType"] = subtype
        _item(hardware, fields)
    for number, disk in enumerate(disks, start=1):
        info = vm.disks[disk.index]
        _item(
            hardware,
            {
                "AddressOnParent": str(info.unit),
                "ElementName": f"disk{number - 1}",
                "HostResource": f"ovf:/disk/vmdisk{number}",
                "InstanceID": next_id(),
                "Parent": controllers[info.controller, info.controller_model],
                "ResourceType": str(DISK),
            },
        )
    for index, nic in enumerate(vm.nics):
        fields = {
            "AddressOnParent": str(index + 7),
            "AutomaticAllocation": "true",
            "Connection": nic.network,
            "Description": f"{nic.model} ethernet adapter on {nic.network}",
            "ElementName": nic.name,
            "InstanceID": next_id(),
            "ResourceSubType": _NIC_MODELS.get(nic.model.lower(), "E1000"),
            "ResourceType": str(NIC),
        }
        if nic.mac:
            fields["Address"] = nic.mac
        _item(hardware, fields)
    firmware = ET.SubElement(hardware, _q("vmw", "Config"))
    firmware.set(_q("ovf", "required"), "false")
    firmware.set(_q("vmw", "key"), "firmware")
    firmware.set(_q("vmw", "value"), "efi" if vm.firmware is Firmware.EFI else "bios")
    ET.indent(envelope)
    text: bytes = ET.tostring(envelope, encoding="utf-8", xml_declaration=True)
    return text


def manifest(digests: dict[str, str]) -> bytes:
    """An OVF manifest: one ``SHA256(file)= hex`` line per file, in package order."""
    return "".join(f"SHA256({name})= {digest}\n" for name, digest in digests.items()).encode()


_MANIFEST_LINE = re.compile(r"^SHA256\(([^()/\\]+)\)= ([0-9a-f]{64})$")


def parse_manifest(text: str) -> dict[str, str]:
    """{file: sha256} of a manifest; ValueError on a line that is not a SHA-256 entry."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line.strip())
        if match is None:
            raise ValueError("not a SHA-256 manifest line")
        found[match.group(1)] = match.group(2)
    return found
