"""The virtual size of a disk image, from ``qemu-img info`` with the format spelled out."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

PROBE_TIMEOUT_SECONDS = 30.0
# Nothing of the service's environment (secrets included) reaches the child.
_ENV = {"PATH": os.defpath, "LC_ALL": "C"}


class ImageProbeError(Exception):
    """qemu-img could not read the image as the given format."""


async def virtual_size(path: Path, *, format: str, qemu_img: str = "qemu-img") -> int:
    """Virtual size in bytes; a raw image's is its file size (no child process).

    ``qemu-img info`` opens only the image itself (not its backing chain), with the format
    given: an image is never probed for its format.
    """
    if format == "raw":
        return (await asyncio.to_thread(path.stat)).st_size
    process = await asyncio.create_subprocess_exec(
        qemu_img,
        "info",
        "--output=json",
        "-f",
        format,
        "--",
        str(path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_ENV,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), PROBE_TIMEOUT_SECONDS)
    except TimeoutError as exc:
        process.kill()
        await process.wait()
        raise ImageProbeError("qemu-img info timed out") from exc
    if process.returncode != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        raise ImageProbeError(lines[-1] if lines else "qemu-img info failed")
    try:
        size = json.loads(out)["virtual-size"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ImageProbeError("qemu-img info gave no virtual size") from exc
    if not isinstance(size, int) or size < 0:
        raise ImageProbeError("qemu-img info gave an invalid virtual size")
    return size
