"""Reading an OVA back to prove it valid: envelope, references, manifest digests, disks.

The descriptor is parsed without a DTD: any DOCTYPE, entity declaration or external
reference is refused (no billion laughs, no external entities), and its size is bounded.
"""

from __future__ import annotations

import hashlib
import tarfile
import xml.etree.ElementTree as ET
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypersdk_exporter.core.ovf import OVF, RASD, parse_manifest

MAX_DESCRIPTOR = 4 << 20
READ_BLOCK = 4 << 20


class OvaInvalidError(Exception):
    """The OVA is not a valid package; the message says why (no content of it)."""


@dataclass
class OvaReport:
    """What a valid OVA holds."""

    descriptor: str
    manifest: str
    members: list[str]
    disks: dict[str, str] = field(default_factory=dict)  # file name -> its ovf:format
    capacities: dict[str, int] = field(default_factory=dict)  # file name -> bytes
    cpus: int = 0
    memory_mib: int = 0
    nics: int = 0
    firmware: str | None = None
    envelope: ET.Element | None = None


def parse_xml(data: bytes) -> ET.Element:
    """An element tree of ``data``; refuses DTDs, entities and oversized documents."""
    if len(data) > MAX_DESCRIPTOR:
        raise OvaInvalidError("descriptor too large")
    builder = ET.TreeBuilder()
    parser = xml.parsers.expat.ParserCreate(namespace_separator="}")

    def refuse(*_: Any) -> None:
        raise OvaInvalidError("DTDs and entities are not allowed in a descriptor")

    def start(tag: str, attrs: dict[str, str]) -> None:
        builder.start(_clark(tag), {_clark(k): v for k, v in attrs.items()})

    def end(tag: str) -> None:
        builder.end(_clark(tag))

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse  # type: ignore[assignment]
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as exc:
        raise OvaInvalidError(f"descriptor is not well-formed XML ({exc.code})") from exc
    return builder.close()


def _clark(name: str) -> str:
    return "{" + name if "}" in name else name


def _q(tag: str) -> str:
    return f"{{{OVF}}}{tag}"


def read_ova(path: Path) -> OvaReport:  # noqa: PLR0912 - one check after another
    """Validate an OVA; raise OvaInvalidError.

    ustar, descriptor first, every reference present with its size, every digest in the
    manifest matching, nothing unlisted.
    """
    with tarfile.open(path, mode="r:") as tar:
        members = tar.getmembers()
        if not members:
            raise OvaInvalidError("empty archive")
        for member in members:
            if not member.isreg() or "/" in member.name or member.name.startswith("."):
                raise OvaInvalidError("members must be plain files at the top level")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise OvaInvalidError("duplicate members")
        if not names[0].endswith(".ovf"):
            raise OvaInvalidError("the descriptor is not the first member")
        manifests = [n for n in names if n.endswith(".mf")]
        if len(manifests) != 1 or names.index(manifests[0]) not in (1, len(names) - 1):
            raise OvaInvalidError("one manifest, after the descriptor or at the end")
        digests: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        for member in members:
            stream = tar.extractfile(member)
            assert stream is not None
            digest = hashlib.sha256()
            keep = member.name.endswith((".ovf", ".mf"))
            if keep and member.size > MAX_DESCRIPTOR:
                raise OvaInvalidError("descriptor or manifest too large")
            kept = b""
            while block := stream.read(READ_BLOCK):
                digest.update(block)
                if keep:
                    kept += block
            digests[member.name] = digest.hexdigest()
            if keep:
                contents[member.name] = kept
    try:
        listed = parse_manifest(contents[manifests[0]].decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise OvaInvalidError("unreadable manifest") from exc
    expected = {n: d for n, d in digests.items() if n != manifests[0]}
    if listed != expected:
        raise OvaInvalidError("manifest digests do not match the members")
    envelope = parse_xml(contents[names[0]])
    report = OvaReport(descriptor=names[0], manifest=manifests[0], members=names)
    report.envelope = envelope
    _check_envelope(envelope, report, {m.name: m.size for m in members})
    order = [n for n in names if n not in (names[0], manifests[0])]
    if order != list(report.disks):
        raise OvaInvalidError("files are not in References order")
    return report


def _check_envelope(  # noqa: PLR0912 - one check after another
    envelope: ET.Element, report: OvaReport, sizes: dict[str, int]
) -> None:
    if envelope.tag != _q("Envelope"):
        raise OvaInvalidError("not an OVF envelope")
    references = envelope.find(_q("References"))
    disk_section = envelope.find(_q("DiskSection"))
    system = envelope.find(_q("VirtualSystem"))
    if references is None or disk_section is None or system is None:
        raise OvaInvalidError("References, DiskSection and VirtualSystem are required")
    files: dict[str, str] = {}
    for ref in references.findall(_q("File")):
        file_id, href, size = ref.get(_q("id")), ref.get(_q("href")), ref.get(_q("size"))
        if not file_id or not href or href not in sizes:
            raise OvaInvalidError("a referenced file is missing from the archive")
        if size is None or int(size) != sizes[href]:
            raise OvaInvalidError("a referenced file's size does not match")
        files[file_id] = href
    for disk in disk_section.findall(_q("Disk")):
        href = files.get(disk.get(_q("fileRef")) or "")
        if href is None:
            raise OvaInvalidError("a disk refers to no file")
        report.disks[href] = disk.get(_q("format")) or ""
        report.capacities[href] = int(disk.get(_q("capacity")) or 0)
    if set(report.disks) != set(files.values()):
        raise OvaInvalidError("a referenced file is not a disk")
    hardware = system.find(_q("VirtualHardwareSection"))
    if system.find(_q("OperatingSystemSection")) is None or hardware is None:
        raise OvaInvalidError("OperatingSystemSection and VirtualHardwareSection are required")
    disk_ids = {f"ovf:/disk/{d.get(_q('diskId'))}" for d in disk_section.findall(_q("Disk"))}
    seen_disks: set[str] = set()
    for item in hardware.findall(_q("Item")):
        kind = item.findtext(f"{{{RASD}}}ResourceType")
        quantity = item.findtext(f"{{{RASD}}}VirtualQuantity")
        if kind == "3":
            report.cpus = int(quantity or 0)
        elif kind == "4":
            report.memory_mib = int(quantity or 0)
        elif kind == "10":
            report.nics += 1
        elif kind == "17":
            seen_disks.add(item.findtext(f"{{{RASD}}}HostResource") or "")
    if seen_disks != disk_ids:
        raise OvaInvalidError("the hardware does not attach exactly the package's disks")
    for config in hardware:
        if config.tag.endswith("}Config") and any(
            k.endswith("}key") and v == "firmware" for k, v in config.attrib.items()
        ):
            report.firmware = next(v for k, v in config.attrib.items() if k.endswith("}value"))


def extract_member(ova: Path, name: str, target: Path) -> None:
    """Copy one member out (0600), for ``qemu-img compare``."""
    with tarfile.open(ova, mode="r:") as tar:
        stream = tar.extractfile(name)
        if stream is None:
            raise OvaInvalidError("no such member")
        with target.open("wb") as out:
            target.chmod(0o600)
            while block := stream.read(READ_BLOCK):
                out.write(block)
