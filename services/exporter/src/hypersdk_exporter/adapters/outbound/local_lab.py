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

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.core.models import Disk, Provider, Vm
from hypersdk_exporter.ports.outbound import ProviderDriver

SOURCE_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vhdx", "vpc"})


class LocalLabDriver(ProviderDriver):
    """Reads VM descriptors from the lab directory."""

    def __init__(self, lab_root: Path) -> None:
        self._root = lab_root.resolve()

    def _directory(self, config: dict[str, str]) -> Path:
        relative = config.get("directory", "")
        if not relative or Path(relative).is_absolute() or ".." in Path(relative).parts:
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
        unknown = sorted(set(config) - {"directory"})
        if unknown:
            raise ServiceError(
                ErrorCode.VALIDATION_FAILED, f"Unknown config keys: {', '.join(unknown)}."
            )
        if not self._directory(config).is_dir():
            raise ServiceError(ErrorCode.VALIDATION_FAILED, "config.directory does not exist.")

    async def list_vms(self, provider: Provider) -> list[Vm]:
        """Every subdirectory with a valid vm.json."""
        return await asyncio.to_thread(self._scan, self._directory(provider.config))

    def _scan(self, directory: Path) -> list[Vm]:
        vms: list[Vm] = []
        if not directory.is_dir():
            return vms
        for descriptor in sorted(directory.glob("*/vm.json")):
            if not descriptor.resolve().is_relative_to(directory):
                continue  # a symlinked VM folder must not lead out of the provider directory
            vm = _read_vm(descriptor)
            if vm is not None:
                vms.append(vm)
        return vms


def _read_vm(descriptor: Path) -> Vm | None:
    try:
        spec = json.loads(descriptor.read_text())
        disks = []
        for entry in spec["disks"]:
            path = (descriptor.parent / entry["file"]).resolve()
            if not path.is_relative_to(descriptor.parent.resolve()) or not path.is_file():
                return None
            if entry["format"] not in SOURCE_FORMATS:
                return None
            disks.append(
                Disk(
                    name=entry["file"],
                    path=path,
                    format=entry["format"],
                    size_bytes=path.stat().st_size,
                )
            )
        return Vm(
            name=descriptor.parent.name,
            cpus=int(spec["cpus"]),
            memory_mib=int(spec["memory_mib"]),
            disks=disks,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


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
