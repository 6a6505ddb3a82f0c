"""Every export format in one table: file extension, qemu-img name and options, compression.

Nothing else in the exporter keeps a per-format list: the converter, the pipeline and the
request validation all read :data:`FORMATS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.core.models import SOURCE_FORMATS

__all__ = ["FORMATS", "SOURCE_FORMATS", "Compression", "Digest", "FormatSpec", "check_request"]


class Compression(StrEnum):
    """Whether a format can be compressed."""

    NEVER = "never"  # refused with validation_failed when asked for
    OPTIONAL = "optional"  # compressed when the request asks for it
    ALWAYS = "always"  # compressed whatever the request says


class Digest(StrEnum):
    """How the SHA-256 of a qemu-img output is computed (see decision 0034)."""

    FOLLOW = "follow"  # hashed behind qemu-img as it writes in order into a file made first
    AT_CLOSE = "at_close"  # the header is rewritten until qemu-img closes: hashed from cache


@dataclass(frozen=True)
class FormatSpec:
    """How one export format is produced."""

    extension: str  # of the artifact file
    qemu_name: str  # qemu-img -O
    options: tuple[str, ...]  # qemu-img -o, always
    compression: Compression
    digest: Digest  # when not compressed
    ova: bool = False  # disks packed with an OVF descriptor and manifest into a tar

    def qemu_args(self, *, compress: bool) -> list[str]:
        """``-O``, ``-o`` and ``-c`` arguments of qemu-img convert for this format."""
        options = list(self.options)
        args = ["-O", self.qemu_name]
        if self.compresses(compress) and self.compression is Compression.OPTIONAL:
            args.append("-c")
        if options:
            args += ["-o", ",".join(options)]
        return args

    def compresses(self, requested: bool) -> bool:
        """Whether the output is compressed for a request that asked ``requested``."""
        return self.compression is Compression.ALWAYS or (
            requested and self.compression is Compression.OPTIONAL
        )

    def digest_mode(self, *, compress: bool) -> Digest:
        """Compressed output is appended out of order with its tables: hashed at close."""
        return Digest.AT_CLOSE if self.compresses(compress) else self.digest


_STREAM_VMDK = ("subformat=streamOptimized",)
FORMATS: dict[DiskFormat, FormatSpec] = {
    DiskFormat.RAW: FormatSpec("img", "raw", (), Compression.NEVER, Digest.FOLLOW),
    DiskFormat.QCOW2: FormatSpec("qcow2", "qcow2", (), Compression.OPTIONAL, Digest.FOLLOW),
    DiskFormat.VMDK: FormatSpec("vmdk", "vmdk", _STREAM_VMDK, Compression.ALWAYS, Digest.AT_CLOSE),
    DiskFormat.VHDX: FormatSpec("vhdx", "vhdx", (), Compression.NEVER, Digest.AT_CLOSE),
    DiskFormat.VPC: FormatSpec(
        "vhd", "vpc", ("force_size=on",), Compression.NEVER, Digest.AT_CLOSE
    ),
    DiskFormat.OVA: FormatSpec(
        "ova", "vmdk", _STREAM_VMDK, Compression.ALWAYS, Digest.AT_CLOSE, ova=True
    ),
}
OVA_DISK_EXTENSION = "vmdk"


def check_request(format: DiskFormat, *, compress: bool) -> FormatSpec:
    """The format's spec, or VALIDATION_FAILED when compression is asked of a format without it."""
    spec = FORMATS[format]
    if compress and spec.compression is Compression.NEVER:
        raise ServiceError(
            ErrorCode.VALIDATION_FAILED,
            f"The {format.value} format cannot be compressed; "
            "compression is available for qcow2, vmdk and ova.",
        )
    return spec
