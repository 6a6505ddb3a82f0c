"""What every provider driver shares: typed config, opaque page tokens, file-backed disks."""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_exporter.core.models import SourceFingerprint
from hypersdk_exporter.ports.outbound import DiskSource

CHUNK_BYTES = 1 << 20
MAX_TOKEN_CHARS = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
ConfigT = TypeVar("ConfigT", bound="DriverConfig")


class DriverConfig(BaseModel):
    """Base of a driver's typed connection settings: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def parse_config(model: type[ConfigT], config: dict[str, str]) -> ConfigT:
    """``config`` as ``model``, or ServiceError(VALIDATION_FAILED) naming the fields.

    The message names fields and what is wrong with them, never the values given.
    """
    try:
        return model.model_validate(config)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "config"
            what = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
            problems.append(f"config.{where}: {what}")
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "; ".join(sorted(problems)) + ".") from exc


def encode_token(position: str) -> str:
    """An opaque page token for a position in a listing ordered by name."""
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_token(token: str | None) -> str | None:
    """The position of a token made by :func:`encode_token`; VALIDATION_FAILED otherwise."""
    if token is None:
        return None
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.")
    try:
        return base64.b64decode(
            token + "=" * (-len(token) % 4), altchars=b"-_", validate=True
        ).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ServiceError(ErrorCode.VALIDATION_FAILED, "Invalid page token.") from exc


def safe_name(text: str, *, fallback: str) -> str:
    """A file-name-safe form of ``text`` ([A-Za-z0-9._-], no leading dot)."""
    cleaned = _UNSAFE.sub("_", text).strip("._")[:100]
    return cleaned or fallback


def file_fingerprint(path: Path) -> SourceFingerprint:
    """Size, modification time (ns) and inode of a file: any rewrite changes one of them."""
    info = os.stat(path)
    return SourceFingerprint(
        size=info.st_size, change_id=f"{info.st_mtime_ns}:{info.st_dev}:{info.st_ino}"
    )


class FileDiskSource(DiskSource):
    """A disk that is an image file on this host."""

    def __init__(
        self, path: Path, *, format: str, capacity_bytes: int, root: Path | None = None
    ) -> None:
        self.path = path
        self.format = format
        self.capacity_bytes = capacity_bytes
        self.root = root
        self.closed = False

    async def local_path(self) -> Path | None:
        """The file itself."""
        return self.path

    async def stream(self) -> AsyncIterator[bytes]:
        """The file's bytes, read in threads 1 MiB at a time."""
        handle = await asyncio.to_thread(self.path.open, "rb")
        try:
            while block := await asyncio.to_thread(handle.read, CHUNK_BYTES):
                yield block
        finally:
            await asyncio.to_thread(handle.close)

    async def fingerprint(self) -> SourceFingerprint:
        """Size, mtime and inode now."""
        return await asyncio.to_thread(file_fingerprint, self.path)

    async def close(self) -> None:
        """Nothing is held open between reads."""
        self.closed = True
