"""The provider drivers, by type: the one place a new provider type is registered."""

from __future__ import annotations

from collections.abc import Callable

from hypersdk_exporter.adapters.outbound.libvirt_driver import LibvirtDriver
from hypersdk_exporter.adapters.outbound.local_lab import LocalLabDriver
from hypersdk_exporter.adapters.outbound.vsphere_driver import VsphereDriver
from hypersdk_exporter.config import ExporterSettings
from hypersdk_exporter.ports.outbound import ProviderDriver

DriverFactory = Callable[[ExporterSettings], ProviderDriver]

DRIVERS: dict[str, DriverFactory] = {
    LocalLabDriver.type: lambda settings: LocalLabDriver(
        settings.lab_root, qemu_img=settings.qemu_img
    ),
    LibvirtDriver.type: lambda settings: LibvirtDriver(
        lab_root=settings.lab_root,
        disk_roots=settings.libvirt_disk_roots,
        qemu_img=settings.qemu_img,
    ),
    VsphereDriver.type: lambda settings: VsphereDriver(),
}


def build_drivers(settings: ExporterSettings) -> dict[str, ProviderDriver]:
    """One driver of every registered type, configured from the service's settings."""
    return {type_: factory(settings) for type_, factory in DRIVERS.items()}
