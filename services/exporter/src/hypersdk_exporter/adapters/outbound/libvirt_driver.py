"""The ``libvirt`` provider: inventory and disks of the domains behind a libvirt URI.

Every libvirt call blocks, so each runs in a thread. A domain's hardware comes from its XML:
disks with the format of ``<driver type>``, the bus of ``<target>``, files or storage volumes;
NICs with MAC, network or bridge and model; EFI firmware if ``<os firmware='efi'>`` or a
loader is set. Disks are read from this host, so only local URIs can export, and only files
that resolve inside the configured disk roots (the lab root for the ``test`` driver): a domain
whose disk points at ``/etc/shadow`` does not export the host's file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import libvirt
from pydantic import Field, field_validator

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
    SOURCE_FORMATS,
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

logger = logging.getLogger(__name__)

# Transports that open no command and no file chosen by the URI: ``ext`` runs a command,
# ssh-based ones take ``command``/``netcat``/``keyfile`` parameters, so none are accepted.
_SCHEMES = frozenset({"qemu", "qemu+unix", "qemu+tls", "qemu+ssh", "qemu+libssh2", "test"})
_QUERY_KEYS = frozenset({"no_verify", "no_tty", "known_hosts_verify"})
_SAFE_QUERY_VALUE = re.compile(r"^[A-Za-z0-9_.-]{0,32}$")
_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
_NOT_FOUND = frozenset(
    {
        libvirt.VIR_ERR_NO_DOMAIN,
        libvirt.VIR_ERR_INVALID_ARG,
        libvirt.VIR_ERR_NO_STORAGE_POOL,
        libvirt.VIR_ERR_NO_STORAGE_VOL,
    }
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")
_DEV_INDEX = re.compile(r"^[a-z]+?d([a-z]+)$")
_LIBOSINFO = "{http://libosinfo.org/xmlns/libvirt/domain/1.0}os"


def _silence(_context: object, _error: object) -> None:
    """Libvirt prints every error on stderr by default; the driver reports them itself."""


libvirt.registerErrorHandler(_silence, None)


class LibvirtConfig(DriverConfig):
    """Settings of a ``libvirt`` provider."""

    uri: str = Field(min_length=1, max_length=512, description="libvirt connection URI.")

    @field_validator("uri")
    @classmethod
    def _known_transport(cls, uri: str) -> str:
        parts = urlsplit(uri)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(sorted(_SCHEMES))}")
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key not in _QUERY_KEYS or not _SAFE_QUERY_VALUE.match(value):
                raise ValueError(f"URI parameter {key!r} is not allowed")
        if parts.fragment:
            raise ValueError("URI must have no fragment")
        return uri


@dataclass(frozen=True)
class _Disk:
    """A disk of a domain's XML, before its size is known."""

    key: str
    format: str
    bus: str
    unit: int
    path: str | None  # a file (or block device) path
    pool: str | None
    volume: str | None


class LibvirtDriver(ProviderDriver):
    """Connects to libvirt with libvirt-python."""

    type: ClassVar[str] = "libvirt"

    def __init__(
        self, *, lab_root: Path, disk_roots: Sequence[Path], qemu_img: str = "qemu-img"
    ) -> None:
        self._lab_root = lab_root.resolve()
        self._disk_roots = tuple(root.resolve() for root in disk_roots)
        self._qemu_img = qemu_img

    def validate_config(self, config: dict[str, str]) -> None:
        """A URI of an allowed transport; a ``test`` URI names a file inside the lab root."""
        self._roots(parse_config(LibvirtConfig, config).uri)

    def _roots(self, uri: str) -> tuple[Path, ...] | None:
        """Where disks may be read from for ``uri``; None for a remote host (no local disks)."""
        parts = urlsplit(uri)
        if parts.scheme == "test":
            if parts.netloc or parts.path == "/default":
                raise ServiceError(
                    ErrorCode.VALIDATION_FAILED, "config.uri: the test driver needs a file."
                )
            path = Path(parts.path).resolve()
            if not path.is_relative_to(self._lab_root):
                raise ServiceError(
                    ErrorCode.VALIDATION_FAILED,
                    "config.uri: a test driver file must be inside the lab root.",
                )
            return (self._lab_root,)
        return None if parts.netloc else self._disk_roots

    async def connect(self, provider: Provider, credential: Credential | None) -> ProviderSession:
        """Open the URI (with the credential's username/password if given) in a thread."""
        uri = parse_config(LibvirtConfig, provider.config).uri
        roots = self._roots(uri)
        try:
            connection = await asyncio.to_thread(_open, uri, credential)
        except libvirt.libvirtError as exc:
            logger.warning(
                "libvirt connection failed",
                extra={"provider": provider.name, "code": exc.get_error_code()},
            )
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "The libvirt provider cannot be reached."
            ) from None  # libvirt's message may name hosts or users: not for the caller
        return LibvirtSession(
            connection, provider=provider.name, roots=roots, qemu_img=self._qemu_img
        )


def _open(uri: str, credential: Credential | None) -> Any:
    if credential is None:
        return libvirt.open(uri)
    answers = {
        libvirt.VIR_CRED_AUTHNAME: credential.get("username"),
        libvirt.VIR_CRED_USERNAME: credential.get("username"),
        libvirt.VIR_CRED_PASSPHRASE: credential.get("password"),
    }

    def answer(requests: list[list[Any]], _data: object) -> int:
        for request in requests:
            value = answers.get(request[0])
            if value is None:
                return -1
            request[4] = value
        return 0

    auth = [list(answers), answer, None]
    return libvirt.openAuth(uri, auth, 0)


class LibvirtSession(ProviderSession):
    """One libvirt connection; every call runs in a thread."""

    def __init__(
        self,
        connection: Any,
        *,
        provider: str,
        roots: tuple[Path, ...] | None,
        qemu_img: str,
    ) -> None:
        self._connection = connection
        self._provider = provider
        self._roots = roots
        self._qemu_img = qemu_img
        self._closed = False

    async def _call(self, function: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(function, *args)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _NOT_FOUND:
                raise LookupError from exc
            logger.warning(
                "libvirt call failed",
                extra={"provider": self._provider, "code": exc.get_error_code()},
            )
            raise ServiceError(
                ErrorCode.UPSTREAM_UNAVAILABLE, "The libvirt provider failed to answer."
            ) from None

    async def list_vms(self, *, page_token: str | None, limit: int) -> Page[VmSummary]:
        """Domains by name after the token's name: summaries from one XML each."""
        after = decode_token(page_token)
        try:
            named: list[tuple[str, Any]] = await self._call(_named_domains, self._connection)
        except LookupError:
            return Page(items=[], next_token=None)
        if after is not None:
            named = [(name, domain) for name, domain in named if name > after]
        items: list[VmSummary] = []
        for name, domain in named[:limit]:
            try:
                xml, state = await self._call(_xml_and_state, domain)
            except LookupError:
                continue  # undefined while we listed
            items.append(_summary(_parse(xml), state=state, path=f"{self._provider}/{name}"))
        more = len(named) > limit
        return Page(items=items, next_token=encode_token(named[limit - 1][0]) if more else None)

    async def get_vm(self, vm_id: str) -> VmDescription | None:
        """The domain with that UUID, or else that name: two lookups, no listing."""
        lookups = [self._connection.lookupByName]
        if _UUID.match(vm_id):
            lookups.insert(0, self._connection.lookupByUUIDString)
        for lookup in lookups:
            try:
                domain = await self._call(lookup, vm_id)
                xml, state = await self._call(_xml_and_state, domain)
            except LookupError:
                continue
            return await self._describe(xml, state)
        return None

    async def _describe(self, xml: str, state: str) -> VmDescription:
        root = _parse(xml)
        summary = _summary(root, state=state, path="")
        disks: list[DiskInfo] = []
        for disk in _disks(root):
            capacity = await self._capacity(disk)
            disks.append(
                DiskInfo(
                    key=disk.key,
                    name=safe_name(disk.key, fallback=f"disk{len(disks)}"),
                    format=disk.format,
                    capacity_bytes=capacity,
                    controller=disk.bus,
                    unit=disk.unit,
                )
            )
        return VmDescription(
            id=summary.id,
            name=summary.name,
            state=summary.state,
            cpus=summary.cpus,
            memory_mib=summary.memory_mib,
            path=f"{self._provider}/{summary.name}",
            firmware=_firmware(root),
            guest_os=_guest_os(root),
            disks=tuple(disks),
            nics=_nics(root),
        )

    async def _capacity(self, disk: _Disk) -> int:
        """A volume's capacity from libvirt; a file's virtual size from qemu-img (format given)."""
        if disk.pool is not None and disk.volume is not None:
            try:
                volume = await self._call(_volume, self._connection, disk.pool, disk.volume)
                info = await self._call(volume.info)
            except LookupError:
                return 0
            return int(info[1])
        path = self._readable(disk.path)
        if path is None:
            return 0  # not readable from here: the description says so by a zero size
        try:
            return await virtual_size(path, format=disk.format, qemu_img=self._qemu_img)
        except (OSError, ImageProbeError):
            return 0

    def _readable(self, path: str | None) -> Path | None:
        """``path`` resolved, if it is a regular file inside the disk roots."""
        if path is None or self._roots is None:
            return None
        resolved = Path(path).resolve()
        if not any(resolved.is_relative_to(root) for root in self._roots):
            return None
        return resolved if resolved.is_file() else None

    async def open_disk(self, vm: VmDescription, disk: DiskInfo) -> DiskSource:
        """The disk's file (its volume's path for a volume), read on this host."""
        try:
            domain = await self._call(self._connection.lookupByUUIDString, vm.id)
            xml, _ = await self._call(_xml_and_state, domain)
        except LookupError:
            raise ServiceError(ErrorCode.NOT_FOUND, "The VM is gone.") from None
        current = next((d for d in _disks(_parse(xml)) if d.key == disk.key), None)
        if current is None:
            raise ServiceError(ErrorCode.NOT_FOUND, "The disk is gone.")
        if current.format not in SOURCE_FORMATS:
            raise ServiceError(ErrorCode.CONFLICT, "The disk's format cannot be exported.")
        path_text = current.path
        if current.pool is not None and current.volume is not None:
            try:
                volume = await self._call(_volume, self._connection, current.pool, current.volume)
                path_text = await self._call(volume.path)
            except LookupError:
                raise ServiceError(ErrorCode.NOT_FOUND, "The disk's volume is gone.") from None
        if self._roots is None:
            raise ServiceError(
                ErrorCode.CONFLICT, "Disks of a remote libvirt host cannot be read from here."
            )
        path = await asyncio.to_thread(self._readable, path_text)
        if path is None:
            raise ServiceError(
                ErrorCode.FORBIDDEN, "The disk is not a file inside the provider's disk roots."
            )
        return FileDiskSource(
            path,
            format=current.format,
            capacity_bytes=disk.capacity_bytes,
            root=next(root for root in self._roots if path.is_relative_to(root)),
        )

    async def close(self) -> None:
        """Close the connection once."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(libvirt.libvirtError):  # a dead connection is closed too
                await asyncio.to_thread(self._connection.close)


def _named_domains(connection: Any) -> list[tuple[str, Any]]:
    return sorted(
        ((domain.name(), domain) for domain in connection.listAllDomains(0)),
        key=lambda pair: str(pair[0]),
    )


def _xml_and_state(domain: Any) -> tuple[str, str]:
    state = domain.state()[0]
    return domain.XMLDesc(0), _STATES.get(state, "unknown")


def _volume(connection: Any, pool: str, volume: str) -> Any:
    return connection.storagePoolLookupByName(pool).storageVolLookupByName(volume)


def _parse(xml: str) -> ET.Element:
    try:
        return ET.fromstring(xml)  # noqa: S314 - from libvirt, see the import
    except ET.ParseError as exc:
        raise ServiceError(
            ErrorCode.UPSTREAM_UNAVAILABLE, "libvirt gave an unreadable domain description."
        ) from exc


def _kib(element: ET.Element | None) -> int:
    if element is None or not (element.text or "").strip():
        return 0
    scale = {
        "b": 1 / 1024,
        "bytes": 1 / 1024,
        "k": 1,
        "kib": 1,
        "kb": 1000 / 1024,
        "m": 1024,
        "mib": 1024,
        "mb": 1e6 / 1024,
        "g": 1 << 20,
        "gib": 1 << 20,
        "gb": 1e9 / 1024,
    }
    unit = element.get("unit", "KiB").lower()
    return int(int(element.text or "0") * scale.get(unit, 1))


def _summary(root: ET.Element, *, state: str, path: str) -> VmSummary:
    vcpu = root.findtext("vcpu") or "0"
    return VmSummary(
        id=(root.findtext("uuid") or "").strip(),
        name=(root.findtext("name") or "").strip(),
        state=state,
        cpus=int(vcpu.strip() or "0"),
        memory_mib=_kib(root.find("memory")) // 1024,
        path=path,
    )


def _firmware(root: ET.Element) -> Firmware:
    os_element = root.find("os")
    if os_element is None:
        return Firmware.BIOS
    if os_element.get("firmware") == "efi" or os_element.find("loader") is not None:
        return Firmware.EFI
    return Firmware.BIOS


def _guest_os(root: ET.Element) -> str:
    os_info = root.find(f"metadata/{_LIBOSINFO}")
    if os_info is not None and os_info.get("id"):
        return str(os_info.get("id"))
    return "other"


def _disks(root: ET.Element) -> list[_Disk]:
    disks = []
    for element in root.findall("devices/disk"):
        if element.get("device", "disk") != "disk":
            continue  # cdroms, floppies and LUNs are not the VM's disks
        target = element.find("target")
        source = element.find("source")
        if target is None or not target.get("dev"):
            continue
        dev = str(target.get("dev"))
        driver = element.find("driver")
        # No <driver type> means raw to libvirt (it never probes); "vhd" is qemu-img's "vpc".
        fmt = (driver.get("type") if driver is not None else None) or "raw"
        fmt = "vpc" if fmt == "vhd" else fmt
        kind = element.get("type", "file")
        source_get = source.get if source is not None else (lambda _key: None)
        disks.append(
            _Disk(
                key=dev,
                format=fmt,
                bus=target.get("bus", "virtio"),
                unit=_unit(element, dev),
                path=source_get("file") if kind == "file" else source_get("dev"),
                pool=source_get("pool") if kind == "volume" else None,
                volume=source_get("volume") if kind == "volume" else None,
            )
        )
    return disks


def _unit(element: ET.Element, dev: str) -> int:
    """The ``unit`` of a drive address, else the index in the device name (vdb -> 1)."""
    address = element.find("address")
    if address is not None and address.get("unit", "").isdigit():
        return int(address.get("unit", "0"))
    match = _DEV_INDEX.match(dev)
    if not match:
        return 0
    index = 0
    for letter in match.group(1):
        index = index * 26 + (ord(letter) - ord("a") + 1)
    return index - 1


def _nics(root: ET.Element) -> tuple[NicInfo, ...]:
    nics = []
    for index, element in enumerate(root.findall("devices/interface")):
        source = element.find("source")
        kind = element.get("type", "network")
        network = ""
        if source is not None:
            network = source.get("network") or source.get("bridge") or source.get("dev") or ""
        mac = element.find("mac")
        model = element.find("model")
        target = element.find("target")
        nics.append(
            NicInfo(
                name=(target.get("dev") if target is not None else None) or f"nic{index}",
                network=network or kind,
                mac=mac.get("address") if mac is not None else None,
                model=(model.get("type") if model is not None else None) or "default",
            )
        )
    return tuple(nics)
