"""The offline verifier in a child process: the same code an outsider runs, on a core of its own.

``hypersdk-audit-verify - --json --public-key ...`` reads the bundle from its standard input. A
child keeps the walk's CPU (SHA-256 of every entry and the tree) off the service's event loop,
which goes on recording events meanwhile; its memory is O(log n) however long the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from hypersdk_auditproof.bundle import public_key_pem

_REPORT_LIMIT = 1 << 20
"""The report lists at most 100 problems: a megabyte is far more than it can be."""


class ChildProcessVerifier:
    """Runs ``python -I -m hypersdk_auditproof`` per verification."""

    async def verify(
        self, lines: AsyncIterator[bytes], *, keys: Mapping[str, Ed25519PublicKey]
    ) -> dict[str, Any]:
        """Stream the bundle in; the JSON report out (exit 0 valid, 1 problems)."""
        with tempfile.TemporaryDirectory(prefix="audit-verify-") as directory:
            arguments = []
            for number, public_key in enumerate(keys.values()):
                path = Path(directory) / f"key-{number}.pem"
                path.write_text(public_key_pem(public_key))
                arguments += ["--public-key", str(path)]
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                "-m",
                "hypersdk_auditproof",
                "-",
                "--json",
                *arguments,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
            )
            assert child.stdin is not None
            assert child.stdout is not None
            report = asyncio.ensure_future(child.stdout.read(_REPORT_LIMIT))
            try:
                async for chunk in lines:
                    child.stdin.write(chunk)
                    await child.stdin.drain()
                child.stdin.close()
                output = await report
                status = await child.wait()
            finally:
                if child.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.kill()
                    await child.wait()
                report.cancel()
        if status not in (0, 1):
            raise RuntimeError(f"the audit verifier could not run (exit status {status})")
        result: dict[str, Any] = json.loads(output)
        return result
