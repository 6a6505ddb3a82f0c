"""Exporter domain: providers, VMs, disks and jobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from hypersdk_contracts.rpc import DiskFormat

FILE_EXTENSIONS: dict[DiskFormat, str] = {
    DiskFormat.RAW: "img",
    DiskFormat.QCOW2: "qcow2",
    DiskFormat.VMDK: "vmdk",
    DiskFormat.VHDX: "vhdx",
    DiskFormat.VPC: "vhd",
}


@dataclass(frozen=True)
class Provider:
    """A registered provider connection."""

    name: str
    type: str
    config: dict[str, str]
    credential_ref: str | None
    created_at: datetime


@dataclass(frozen=True)
class Disk:
    """A VM disk the exporter can read."""

    name: str
    path: Path
    format: str
    size_bytes: int


@dataclass(frozen=True)
class Vm:
    """A VM of a provider."""

    name: str
    cpus: int
    memory_mib: int
    disks: list[Disk]


@dataclass(frozen=True)
class SourceFingerprint:
    """What identifies a source disk's content cheaply, to detect a change during an export."""

    size: int
    change_id: str  # mtime_ns+inode, or the provider's change id
