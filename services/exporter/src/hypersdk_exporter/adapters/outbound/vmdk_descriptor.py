"""What a VMDK descriptor fetched from a datastore says about where the disk's bytes are.

A vSphere disk is a small text descriptor (``disk.vmdk``) naming one or more extents
(``disk-flat.vmdk``), or a single hosted sparse file with an embedded descriptor. The content
is untrusted: only flat extents that are plain file names in the descriptor's own directory are
accepted (never a path, so never a file elsewhere on the datastore or the host); snapshots
(a parent disk), sparse extents in separate files, raw device mappings and non-zero extent
offsets are refused with a sentence that says which.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTOR = 512
MAX_DESCRIPTOR_BYTES = 64 * 1024
MAX_EXTENTS = 64
SPARSE_MAGIC = b"KDMV"  # a hosted sparse / streamOptimized VMDK: one self-contained file
_FLAT_TYPES = frozenset({"FLAT", "VMFS"})
_EXTENT = re.compile(
    r'^(RW|RDONLY|NOACCESS)\s+(\d{1,15})\s+([A-Z]+)(?:\s+"([^"\x00-\x1f]*)"(?:\s+(\d{1,15}))?)?\s*$'
)
_FILE_NAME = re.compile(r"^[^/\\\x00-\x1f]{1,255}$")
_NO_PARENT = "ffffffff"


class DescriptorError(ValueError):
    """The descriptor is unusable; the message is safe to show (no file content)."""


@dataclass(frozen=True)
class Extent:
    """One flat extent: a file next to the descriptor holding ``size_bytes`` raw bytes."""

    file_name: str
    size_bytes: int


@dataclass(frozen=True)
class DiskLayout:
    """How to read one disk.

    ``format`` is ``raw`` for flat extents read in order, or ``vmdk`` when the descriptor file
    itself is a self-contained sparse image (``extents`` is then empty).
    """

    format: str
    extents: tuple[Extent, ...]

    @property
    def size_bytes(self) -> int:
        """Bytes the extents hold together (the disk's virtual size for flat extents)."""
        return sum(extent.size_bytes for extent in self.extents)


def parse(head: bytes, *, complete: bool) -> DiskLayout:
    """The layout a descriptor file describes.

    ``head`` is the start of the file (at most :data:`MAX_DESCRIPTOR_BYTES` + 1 bytes) and
    ``complete`` whether that is the whole file.
    """
    if head.startswith(SPARSE_MAGIC):
        return DiskLayout(format="vmdk", extents=())
    if not complete or len(head) > MAX_DESCRIPTOR_BYTES:
        raise DescriptorError("The disk descriptor is larger than a descriptor can be.")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise DescriptorError("The disk descriptor is neither text nor a sparse VMDK.") from None
    if "\x00" in text:
        raise DescriptorError("The disk descriptor is neither text nor a sparse VMDK.")
    settings: dict[str, str] = {}
    extents: list[Extent] = []
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        match = _EXTENT.match(line)
        if match:
            extents.append(_extent(match))
            if len(extents) > MAX_EXTENTS:
                raise DescriptorError("The disk descriptor names too many extents.")
            continue
        key, sep, value = line.partition("=")
        if sep:
            settings[key.strip().lower()] = value.strip().strip('"')
    if settings.get("parentcid", _NO_PARENT).lower() != _NO_PARENT or (
        "parentfilenamehint" in settings
    ):
        raise DescriptorError(
            "The disk is a snapshot delta (it has a parent disk); consolidate the VM's "
            "snapshots before exporting it."
        )
    if not extents:
        raise DescriptorError("The disk descriptor names no extent.")
    return DiskLayout(format="raw", extents=tuple(extents))


def _extent(match: re.Match[str]) -> Extent:
    access, sectors, kind, file_name, offset = match.groups()
    if access == "NOACCESS":
        raise DescriptorError("The disk has an extent that cannot be read (NOACCESS).")
    if kind not in _FLAT_TYPES:
        raise DescriptorError(
            f"The disk has a {kind} extent; only flat extents (FLAT, VMFS) are read over the "
            "datastore."
        )
    if file_name is None or not _FILE_NAME.match(file_name) or file_name in {".", ".."}:
        raise DescriptorError(
            "A disk extent must be a file next to its descriptor, not a path elsewhere."
        )
    if offset is not None and int(offset) != 0:
        raise DescriptorError("A disk extent that starts inside its file is not supported.")
    size = int(sectors) * SECTOR
    if size <= 0:
        raise DescriptorError("A disk extent is empty.")
    return Extent(file_name=file_name, size_bytes=size)
