"""The ``local`` provider: VMs described by files in a directory under the lab root.

Layout: ``<lab_root>/<directory>/<vm>/vm.json`` with ``{"cpus": 2, "memory_mib": 2048,
"disks": [{"file": "disk0.raw", "format": "raw"}]}`` next to the disk files. It stands in for a
hypervisor in development and tests; a provider can only point inside the lab root.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.adapters.outbound.driver_support import (
    DriverConfig,
    FileDiskSource,
    decode_token,
    encode_token,
    parse_config,
    safe_name,
)
from hypersdk_exporter.adapters.outbound.image_probe import ImageProbeError, virtual_size
from hypersdk_exporter.core.models import (
    Credential,
    DiskInfo,
    Firmware,
    NicInfo,
    Page,
    Provider,
    VmDescription,
    VmSummary,
)
from hypersdk_exporter.ports.outbound import DiskSource, ProviderDriver, ProviderSession

DESCRIPTOR = "vm.json"


class LocalConfig(DriverConfig):
    """Settings of a ``local`` provider."""

    directory: str = Field(min_length=1, max_length=255, description="Directory in the lab root.")


class LocalLabDriver(ProviderDriver):
    """Reads VM descriptors from the lab directory."""

    type: ClassVar[str] = "local"

    def __init__(self, lab_root: Path, *, qemu_img: str = "qemu-img") -> None:
        self._root = lab_root.resolve()
        self._qemu_img = qemu_img

    def _directory(self, config: dict[str, str]) -> Path:
        relative = parse_config(LocalConfig, config).directory
        if Path(relative).is_absolute() or ".." in Path(relative).parts:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED,
                "config.directory must be a relative path inside the lab root.",
            )
        path = (self._root / relative).resolve()
        if not path.is_relative_to(self._root):
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "config.directory leaves the lab root.")
        return path

    def validate_config(self, config: dict[str, str]) -> None:
        """Only ``directory`` is allowed, and it must exist inside the lab root."""
        if not self._directory(config).is_dir():
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "config.directory does not exist.")

    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        """A session over the provider's directory (a lab needs no credential)."""
        return LocalSession(
            self._directory(provider.config), provider=provider.name, qemu_img=self._qemu_img
        )


class LocalSession(ProviderSession):
    """The VMs of one lab directory: one subdirectory with a ``vm.json`` each."""

    def __init__(self, directory: Path, *, provider: str, qemu_img: str) -> None:
        self._directory = directory
        self._provider = provider
        self._qemu_img = qemu_img

    async def list_vms(self, *, page_token: str | None, limit: int) -> Page[VmSummary]:
        """VMs by name after the token's position."""
        after = decode_token(page_token)
        names = await asyncio.to_thread(self._names)
        if after is not None:
            names = [name for name in names if name > after]
        items: list[VmSummary] = []
        for name in names:
            vm = await self.get_vm(name)
            if vm is None:
                continue
            items.append(vm)
            if len(items) == limit:
                more = name != names[-1]
                return Page(items=items, next_token=encode_token(name) if more else None)
        return Page(items=items, next_token=None)

    def _names(self) -> list[str]:
        if not self._directory.is_dir():
            return []
        return sorted(
            descriptor.parent.name for descriptor in self._directory.glob(f"*/{DESCRIPTOR}")
        )

    async def get_vm(self, vm_id: str) -> VmDescription | None:
        """The VM in ``<directory>/<vm_id>`` (its name is its id)."""
        found = await asyncio.to_thread(self._resolve, vm_id)
        if found is None:
            return None
        spec, paths = found
        try:
            sizes = [
                await virtual_size(path, format=disk.format, qemu_img=self._qemu_img)
                for path, disk in zip(paths, spec.disks, strict=True)
            ]
        except (OSError, ImageProbeError):
            return None  # an unreadable disk makes an unusable VM
        return VmDescription(
            id=vm_id,
            name=vm_id,
            state=spec.state,
            cpus=spec.cpus,
            memory_mib=spec.memory_mib,
            path=f"{self._provider}/{vm_id}",
            firmware=spec.firmware,
            guest_os=spec.guest_os,
            disks=tuple(
                DiskInfo(
                    key=f"disk{unit}",
                    name=safe_name(Path(disk.file).stem, fallback=f"disk{unit}"),
                    format=disk.format,
                    capacity_bytes=size,
                    controller=disk.controller,
                    unit=unit,
                )
                for unit, (disk, size) in enumerate(zip(spec.disks, sizes, strict=True))
            ),
            nics=tuple(
                NicInfo(name=f"nic{index}", network=nic.network, mac=nic.mac, model=nic.model)
                for index, nic in enumerate(spec.nics)
            ),
        )

    def _resolve(self, vm_id: str) -> tuple[LabVm, list[Path]] | None:
        """The VM's descriptor and disk files, all inside its folder, or None."""
        if not vm_id or "/" in vm_id or "\\" in vm_id or vm_id in {".", ".."}:
            return None
        folder = self._directory / vm_id
        try:
            if not folder.resolve().is_relative_to(self._directory.resolve()):
                return None  # a symlinked VM folder must not lead out of the provider directory
            spec = LabVm.model_validate_json((folder / DESCRIPTOR).read_bytes())
        except (OSError, ValidationError):
            return None
        inside = folder.resolve()
        paths = [(folder / disk.file).resolve() for disk in spec.disks]
        if not all(path.is_relative_to(inside) and path.is_file() for path in paths):
            return None
        return spec, paths

    async def open_disk(self, vm: VmDescription, disk: DiskInfo) -> DiskSource:
        """The disk's file, checked again to be inside the VM's folder."""
        found = await asyncio.to_thread(self._resolve, vm.id)
        unit = disk.unit
        if found is None or not 0 <= unit < len(found[1]):
            raise ServiceError(ErrorCode.NOT_FOUND, "The disk is gone.")
        spec, paths = found
        return FileDiskSource(
            paths[unit],
            format=spec.disks[unit].format,
            capacity_bytes=disk.capacity_bytes,
            root=self._directory.resolve(),
        )

    async def close(self) -> None:
        """Nothing to close."""


class LabDisk(BaseModel):
    """A disk entry of ``vm.json``."""

    model_config = ConfigDict(extra="ignore")
    file: str = Field(min_length=1, description="File name in the VM's folder.")
    format: Literal["raw", "qcow2", "vmdk", "vhdx", "vpc"] = Field(description="Image format.")
    controller: str = Field(default="virtio", description="Controller it is attached to.")


class LabNic(BaseModel):
    """A NIC entry of ``vm.json``."""

    model_config = ConfigDict(extra="ignore")
    network: str = Field(description="Network name.")
    mac: str | None = Field(default=None, description="MAC address.")
    model: str = Field(default="virtio", description="Device model.")


class LabVm(BaseModel):
    """``vm.json``: what a lab VM looks like."""

    model_config = ConfigDict(extra="ignore")
    cpus: int = Field(ge=1, description="Virtual CPUs.")
    memory_mib: int = Field(ge=1, description="Memory in MiB.")
    disks: list[LabDisk] = Field(description="Disks, in controller order.")
    nics: list[LabNic] = Field(default_factory=list, description="Network interfaces.")
    firmware: Firmware = Field(default=Firmware.BIOS, description="Boot firmware.")
    guest_os: str = Field(default="other", description="Guest OS identifier.")
    state: str = Field(default="stopped", description="Power state.")


def write_demo_vm(directory: Path, *, name: str, size_mib: int, seed: int) -> Path:
    """Create a demo VM whose disk is a real raw image: random data, text and sparse holes."""
    vm_dir = directory / name
    vm_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    disk = vm_dir / "disk0.raw"
    if not disk.exists():
        rng = random.Random(seed)  # noqa: S311 - demo content, not security
        chunk = 1 << 20
        with disk.open("wb") as stream:
            for mib in range(size_mib):
                if mib % 4 == 0:
                    stream.write(rng.randbytes(chunk))
                elif mib % 4 == 1:
                    line = f"hypersdk demo {name} block {mib}\n".encode()
                    stream.write((line * (chunk // len(line) + 1))[:chunk])
                else:
                    stream.seek(chunk, 1)
            stream.truncate(size_mib * chunk)
        disk.chmod(0o600)
    spec = {"cpus": 2, "memory_mib": 2048, "disks": [{"file": disk.name, "format": "raw"}]}
    (vm_dir / "vm.json").write_text(json.dumps(spec, indent=2))
    return vm_dir
