"""Exporter domain: providers, VMs as providers describe them, disks and jobs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

# Source formats a provider may report; a source is always opened with its format spelled out.
SOURCE_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vhdx", "vpc"})
CONTROLLERS = frozenset({"virtio", "scsi", "ide", "sata", "nvme", "usb", "fdc"})
T = TypeVar("T")


@dataclass(frozen=True)
class Provider:
    """A registered provider connection."""

    name: str
    type: str
    config: dict[str, str]
    credential_ref: str | None
    created_at: datetime


@dataclass(frozen=True)
class Credential:
    """A provider credential resolved from the secrets service for one session.

    Its values never leave the driver that uses them: ``repr`` (and so logs and tracebacks)
    shows the reference and the key names only.
    """

    ref: str
    values: Mapping[str, str] = field(repr=False)

    def get(self, key: str) -> str | None:
        """One value, or None."""
        return self.values.get(key)

    def __repr__(self) -> str:
        return f"Credential(ref={self.ref!r}, keys={sorted(self.values)!r})"

    __str__ = __repr__


class Firmware(StrEnum):
    """How the VM boots."""

    BIOS = "bios"
    EFI = "efi"


@dataclass(frozen=True)
class DiskInfo:
    """One disk of a VM, as the provider describes it."""

    key: str  # stable within the VM: "vda", "scsi0:0", "disk0"
    name: str  # base file name for artifacts, safe ([A-Za-z0-9._-])
    format: str  # source format: raw|qcow2|vmdk|vhdx|vpc
    capacity_bytes: int  # virtual size
    controller: str  # virtio|scsi|ide|sata|nvme
    unit: int  # position on the controller
    # the controller's model where the provider knows it (a descriptor names it):
    # lsilogic|lsilogicsas|pvscsi|buslogic for scsi; None for "the bus's usual one"
    controller_model: str | None = None


@dataclass(frozen=True)
class NicInfo:
    """One network interface of a VM."""

    name: str
    network: str
    mac: str | None
    model: str


@dataclass(frozen=True)
class VmSummary:
    """A VM as an inventory listing shows it."""

    id: str  # the provider's stable id (libvirt UUID, vSphere instance UUID, lab name)
    name: str
    state: str  # running|stopped|paused|suspended|unknown
    cpus: int
    memory_mib: int
    path: str  # where it lives in the provider: folder path, URI/name, directory/name


@dataclass(frozen=True)
class VmDescription(VmSummary):
    """A VM with the hardware a descriptor needs."""

    firmware: Firmware
    guest_os: str
    disks: tuple[DiskInfo, ...]
    nics: tuple[NicInfo, ...]


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; ``next_token`` is opaque and None on the last page."""

    items: list[T]
    next_token: str | None


@dataclass(frozen=True)
class SourceFingerprint:
    """What identifies a source's content: compared before and after an export."""

    size: int
    change_id: str  # mtime_ns+inode of a file, or the provider's change id


@dataclass(frozen=True)
class ImageInfo:
    """A source image as qemu-img read it, with the format spelled out."""

    format: str
    virtual_size: int
    backing_chain: bool = False  # a backing chain inside the provider's root is to be followed
