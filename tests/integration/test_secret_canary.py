"""A canary secret written through the API, then used by an export, appears in no sink.

Sinks tried: every response the journey gets, every log file of the stack, the command line
and the environment of every process of the stack while the export runs (services, OpenBao,
qemu-img, the hashing child), a ``pg_dump`` of the stack's database (job records and their
history, outboxes, audit entries, every other table), the files of OpenBao's own storage
(the barrier encrypts them) and the artifacts' directory.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from .conftest import ADMIN_PASSWORD, Stack, devstack, process_tree

CANARY = "canary-" + secrets.token_hex(12)
CANARY_USER = "canary-user-" + secrets.token_hex(6)


class ProcessWatch:
    """Reads, in a thread, the command line and environment of every process of the stack."""

    def __init__(self, stack: Stack) -> None:
        supervisor = devstack.running_pid(stack.config)
        assert supervisor is not None
        self.root = supervisor
        self.seen: dict[tuple[int, str], bytes] = {}
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ProcessWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in process_tree(self.root):
                for part in ("cmdline", "environ"):
                    try:
                        content = (Path("/proc") / str(pid) / part).read_bytes()
                    except OSError:
                        continue
                    self.seen[(pid, part)] = content
                    for value in (CANARY, CANARY_USER):
                        if value.encode() in content:
                            self.leaks.append(f"{value[:6]} in {part} of {pid}")
            self._stop.wait(0.02)


def _no_canary(where: str, content: bytes | str) -> None:
    data = content.encode() if isinstance(content, str) else content
    for value in (CANARY, CANARY_USER):
        assert value.encode() not in data, f"the canary is in {where}"


def test_a_canary_secret_is_in_no_sink(stack: Stack) -> None:
    api = stack.api
    admin = api.login("admin", ADMIN_PASSWORD)
    responses: list[Any] = []

    def call(method: str, path: str, body: Any = None) -> Any:
        status, answer, headers = api.call(method, path, body, token=admin)
        responses.append((status, answer, headers))
        assert status < 400, (path, answer)
        return answer

    with ProcessWatch(stack) as watch:
        call(
            "PUT",
            "/api/v1/secrets/providers/canary",
            {"data": {"username": CANARY_USER, "password": CANARY}},
        )
        call(
            "POST",
            "/api/v1/providers",
            {
                "name": "canary-lab",
                "type": "local",
                "config": {"directory": "demo"},
                "credential_ref": "providers/canary",
            },
        )
        job = call(
            "POST", "/api/v1/exports", {"provider": "canary-lab", "vm": "web-01", "format": "raw"}
        )
        deadline = time.monotonic() + 90
        while job["status"] in {"queued", "running"}:  # the worker resolves the credential
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = call("GET", f"/api/v1/jobs/{job['id']}")
        assert job["status"] == "succeeded", job
        time.sleep(0.3)  # the last events reach audit
        call("GET", "/api/v1/providers/canary-lab")
        call("GET", "/api/v1/secrets")
        call("GET", "/api/v1/jobs?limit=50")
        for entry in api.recent_audit(admin, last=200):
            responses.append(entry)
    assert len(watch.seen) > 10  # it saw the stack's processes
    assert watch.leaks == []

    _no_canary("the responses", json.dumps(responses, default=str))
    for path in stack.config.log_dir.iterdir():
        _no_canary(f"log {path.name}", path.read_bytes())
    dump = subprocess.run(
        ["pg_dump", "--data-only", stack.database_url],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    assert b"canary-lab" in dump  # the dump holds the journey's records
    _no_canary("the database", dump)
    storage = devstack.openbao_dir(stack.config)
    for path in storage.rglob("*"):
        if path.is_file():
            _no_canary(f"OpenBao's storage {path.name}", path.read_bytes())
    for path in (stack.config.state_dir / "exports" / job["id"]).rglob("*"):
        if path.is_file() and path.suffix == ".json":
            _no_canary(f"artifact file {path.name}", path.read_bytes())
