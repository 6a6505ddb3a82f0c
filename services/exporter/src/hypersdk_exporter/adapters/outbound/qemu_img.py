"""Disk conversion with qemu-img, reporting its progress."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import re
import signal
from pathlib import Path

from hypersdk_contracts.rpc import DiskFormat
from hypersdk_exporter.ports.outbound import DiskConverter, ProgressCallback

_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
_TARGET_OPTIONS: dict[DiskFormat, list[str]] = {
    DiskFormat.VMDK: ["-o", "subformat=streamOptimized"],
    DiskFormat.VPC: ["-o", "force_size=on"],
}


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the worker dies (even by kill -9)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class QemuImgConverter(DiskConverter):
    """Runs ``qemu-img convert -p`` and parses its progress lines."""

    def __init__(self, executable: str = "qemu-img") -> None:
        self._executable = executable

    async def convert(
        self,
        *,
        source: Path,
        source_format: str,
        target: Path,
        target_format: DiskFormat,
        on_progress: ProgressCallback,
    ) -> None:
        """Convert; raise OSError if qemu-img fails."""
        process = await asyncio.create_subprocess_exec(
            self._executable,
            "convert",
            "-p",
            "-f",
            source_format,
            "-O",
            target_format.value,
            *_TARGET_OPTIONS.get(target_format, []),
            str(source),
            str(target),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent,  # only prctl: safe between fork and exec
        )
        assert process.stdout is not None
        assert process.stderr is not None
        try:
            buffer = b""
            while chunk := await process.stdout.read(4096):
                buffer += chunk
                matches = _PROGRESS.findall(buffer)
                if matches:
                    await on_progress(int(float(matches[-1])))
                    buffer = buffer[buffer.rfind(b"%)") + 2 :]
            stderr = await process.stderr.read()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # cancelled (or failed) mid-way: the conversion stops now
            await process.wait()
            raise
        if await process.wait() != 0:
            message = stderr.decode(errors="replace").strip().splitlines()
            raise OSError(f"qemu-img failed: {message[-1] if message else 'no message'}")
        await on_progress(100)
