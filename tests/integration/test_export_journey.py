"""The README journey end to end, against the real platform started as ``make up`` does.

Login -> store a provider credential -> register a provider that references it -> list VMs ->
export a real disk with qemu-img -> a viewer is refused the export -> every step is in the
hash-chained audit log, which detects an edited row -> no credential leaked anywhere.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from .conftest import ADMIN_PASSWORD, Api, Stack

PROVIDER_SECRET = "planted-provider-secret-7f3a9c"
VIEWER_PASSWORD = "planted-viewer-password-2b8e"


async def _capture_queue(stack: Stack) -> tuple[Any, Any]:
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("hypersdk.events", "topic", durable=True)
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, routing_key="#")
    return connection, queue


async def _drain(queue: Any) -> list[aio_pika.abc.AbstractIncomingMessage]:
    messages = []
    while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
        messages.append(message)
    return messages


def _qemu_img_info(path: Path) -> dict[str, Any]:
    result = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(result.stdout))


def _wait_for_job(stack: Stack, token: str, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status, job, _ = stack.api.call("GET", f"/api/v1/jobs/{job_id}", token=token)
        assert status == 200, job
        assert job["status"] in {"queued", "running", "succeeded"}, job
        assert 0 <= job["progress"] <= 100
        if job["status"] == "succeeded":
            return dict(job)
        time.sleep(0.2)
    raise AssertionError("export did not finish in 90 s")


def _audit_entries(stack: Stack, token: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        status, page, _ = stack.api.call(
            "GET", f"/api/v1/audit/events?after_sequence={len(entries)}&limit=1000", token=token
        )
        assert status == 200, page
        entries.extend(page)
        if len(page) < 1000:  # each call is itself audited, so never wait for an empty page
            return entries


def _wait_for_audit(stack: Stack, token: str, predicate: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        entries = _audit_entries(stack, token)
        if predicate(entries):
            return entries
        time.sleep(0.3)
    raise AssertionError("the audit log did not record the journey in 20 s")


async def test_export_journey(stack: Stack) -> None:
    connection, capture = await _capture_queue(stack)
    api = stack.api

    # 2. Log in (and one failed attempt, which must be audited too).
    status, failed, _ = api.call(
        "POST", "/api/v1/auth/login", {"username": "admin", "password": "wrong-password-123"}
    )
    assert status == 401
    assert failed["error"]["code"] == "invalid_credentials"
    admin = api.login("admin", ADMIN_PASSWORD)

    # 3. A provider credential in OpenBao, and a provider that references it by path.
    status, meta, _ = api.call(
        "PUT",
        "/api/v1/secrets/providers/lab2",
        {"data": {"username": "svc-export", "password": PROVIDER_SECRET}},
        token=admin,
    )
    assert status == 200, meta
    assert meta["path"] == "providers/lab2"
    assert meta["version"] == 1
    assert PROVIDER_SECRET not in json.dumps(meta)
    status, provider, _ = api.call(
        "POST",
        "/api/v1/providers",
        {
            "name": "lab2",
            "type": "local",
            "config": {"directory": "demo"},
            "credential_ref": "providers/lab2",
        },
        token=admin,
    )
    assert status == 201, provider
    status, provider, _ = api.call("GET", "/api/v1/providers/lab2", token=admin)
    assert status == 200
    assert provider["credential_ref"] == "providers/lab2"
    assert PROVIDER_SECRET not in json.dumps(provider)
    assert "svc-export" not in json.dumps(provider)
    status, missing, _ = api.call(
        "POST",
        "/api/v1/providers",
        {
            "name": "lab3",
            "type": "local",
            "config": {"directory": "demo"},
            "credential_ref": "providers/none",
        },
        token=admin,
    )
    assert status == 422, missing

    # 4. The provider's VMs.
    status, vms, _ = api.call("GET", "/api/v1/vms?provider=lab2", token=admin)
    assert status == 200
    assert {vm["id"] for vm in vms} >= {"lab2/web-01"}
    web = next(vm for vm in vms if vm["id"] == "lab2/web-01")
    assert web["disks"][0]["size_bytes"] >= 16 * 1024 * 1024

    # 5. Export to qcow2 with a real qemu-img; the manifest's hash matches sha256sum.
    status, job, _headers = api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "lab2", "vm": "web-01", "format": "qcow2"},
        token=admin,
    )
    assert status == 202, job
    assert job["status"] == "queued"
    job = _wait_for_job(stack, admin, job["id"])
    assert job["progress"] == 100
    assert len(job["artifacts"]) == 1
    artifact = job["artifacts"][0]
    job_dir = stack.config.state_dir / "exports" / job["id"]
    path = job_dir / artifact["name"]
    sha256sum = subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True)
    assert sha256sum.stdout.split()[0] == artifact["sha256"]
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["artifacts"][0]["sha256"] == artifact["sha256"]
    assert manifest["artifacts"][0]["size_bytes"] == path.stat().st_size == artifact["size_bytes"]
    for written in (path, job_dir / "manifest.json"):
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert stat.S_IMODE(job_dir.stat().st_mode) == 0o700
    info = _qemu_img_info(path)
    assert info["format"] == "qcow2"
    source = stack.config.state_dir / "lab" / "demo" / "web-01" / "disk0.raw"
    compare = subprocess.run(
        ["qemu-img", "compare", "-f", "raw", "-F", "qcow2", str(source), str(path)],
        check=False,
        capture_output=True,
        text=True,
    )
    assert compare.returncode == 0, compare.stdout + compare.stderr

    # 6. A viewer may browse but not export; no credential means 401. Both use the envelope.
    status, created, _ = api.call(
        "POST",
        "/api/v1/users",
        {"username": "vera", "password": VIEWER_PASSWORD, "roles": ["viewer"]},
        token=admin,
    )
    assert status == 201, created
    assert created["roles"] == ["viewer"]
    viewer = api.login("vera", VIEWER_PASSWORD)
    status, _, _ = api.call("GET", "/api/v1/vms", token=viewer)
    assert status == 200
    status, denied, denied_headers = api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "lab2", "vm": "web-01", "format": "qcow2"},
        token=viewer,
    )
    assert status == 403
    assert denied["error"]["code"] == "forbidden"
    assert denied["error"]["request_id"] == denied_headers["x-request-id"]
    status, anonymous, anonymous_headers = api.call("GET", "/api/v1/vms")
    assert status == 401
    assert anonymous["error"]["code"] == "unauthenticated"
    assert anonymous["error"]["request_id"] == anonymous_headers["x-request-id"]

    # 7. Everything is in the audit chain, with the DESIGN fields.
    denied_request = denied_headers["x-request-id"]

    def journey_recorded(entries: list[dict[str, Any]]) -> bool:
        actions = {(e["action"], e["result"]) for e in entries}
        return {
            ("vm.export.complete", "success"),
            ("authz.decide", "failure: permission_denied"),
        } <= actions and any(
            e["action"] == "api.call" and e["request_id"] == anonymous_headers["x-request-id"]
            for e in entries
        )

    entries = _wait_for_audit(stack, admin, journey_recorded)
    by_action: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        by_action.setdefault(entry["action"], []).append(entry)
    logins = by_action["auth.login"]
    assert any(e["user"] == "admin" and e["result"] == "success" for e in logins)
    assert any(e["result"] == "failure: invalid_credentials" for e in logins)
    assert any(e["user"] == "vera" and e["result"] == "success" for e in logins)
    denial = next(e for e in by_action["authz.decide"] if e["request_id"] == denied_request)
    assert denial["user"] == "vera"
    assert denial["resource"] == "POST /api/v1/exports"
    assert denial["source_ip"] == "127.0.0.1"
    secret_write = by_action["secret.write"][-1]
    assert secret_write["resource"] == "secret/providers/lab2"
    assert secret_write["user"] == "admin"
    assert any(e["resource"] == "provider/lab2" for e in by_action["provider.register"])
    export_entries = [e for e in entries if e["resource"] == f"job/{job['id']}"]
    assert next(e["action"] for e in export_entries) == "vm.export"
    assert {"vm.export", "vm.export.start", "vm.export.complete"} <= {
        e["action"] for e in export_entries
    }
    calls = by_action["api.call"]
    assert any(
        e["resource"] == "POST /api/v1/exports" and e["result"] == "failure: http_403"
        for e in calls
    )
    assert any(
        e["resource"] == "PUT /api/v1/secrets/{path:secretpath}" and e["result"] == "success"
        for e in calls
    )
    for entry in entries:
        assert entry["timestamp"].endswith("Z")
        assert len(entry["hash"]) == len(entry["prev_hash"]) == 64
    assert [e["sequence"] for e in entries] == list(range(1, len(entries) + 1))
    for previous, entry in itertools.pairwise(entries):
        assert entry["prev_hash"] == previous["hash"]

    status, verdict, _ = api.call("GET", "/api/v1/audit/verify", token=admin)
    assert status == 200
    assert verdict["valid"] is True
    assert verdict["verification"]["to_size"] >= entries[-1]["sequence"]

    # Edit one row behind the service's back, as a superuser who turns the append-only
    # triggers off for the session: a full verification names it.
    target = denial["sequence"]
    stack.db(
        "DO $$ BEGIN SET LOCAL session_replication_role = replica; "
        f"UPDATE audit.entries SET result = 'success' WHERE sequence = {int(target)}; END $$"
    )
    try:
        run = full_verification(api, admin)
        assert run["valid"] is False
        assert run["problems"][0]["sequence"] == target
        assert run["problems"][0]["code"] == "entry_edited"
    finally:
        stack.db(
            "DO $$ BEGIN SET LOCAL session_replication_role = replica; "
            "UPDATE audit.entries SET result = 'failure: permission_denied' "
            f"WHERE sequence = {int(target)}; END $$"
        )
    assert full_verification(api, admin)["valid"] is True

    # 8. No password, token or provider secret in logs, events or audit entries.
    messages = await _drain(capture)
    await connection.close()
    assert messages, "the capture queue saw no events"
    traces = {}
    for message in messages:
        assert message.content_type == "application/cloudevents+json"
        assert message.headers["traceparent"] == json.loads(message.body)["traceparent"]
        traces[json.loads(message.body)["id"]] = message.headers["traceparent"].split("-")[1]
        envelope = json.loads(message.body)
        assert envelope["specversion"] == "1.0"
        assert envelope["type"] == f"io.hypersdk.{message.routing_key}"
        assert envelope["id"] == message.message_id
    # The export's events, from two services and a worker, share the trace of its API call.
    job_traces = {
        traces[json.loads(m.body)["id"]]
        for m in messages
        if json.loads(m.body).get("subject") == f"job/{job['id']}"
    }
    assert len(job_traces) == 1
    planted = [ADMIN_PASSWORD, VIEWER_PASSWORD, PROVIDER_SECRET, admin, viewer]
    event_bodies = b"\n".join(m.body for m in messages).decode()
    audit_rows = json.dumps([dict(r) for r in stack.db("SELECT * FROM audit.entries")], default=str)
    logs = "\n".join(p.read_text(errors="replace") for p in Path(stack.log_dir).glob("*.log"))
    assert "exporter.job.completed" in event_bodies or any(
        m.routing_key == "exporter.job.completed" for m in messages
    )
    for secret in planted:
        assert secret not in event_bodies
        assert secret not in audit_rows
        assert secret not in logs


@pytest.mark.parametrize("fmt", ["raw", "vmdk", "vhdx", "vpc"])
def test_other_formats_export(stack: Stack, fmt: str) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, job, _ = stack.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": "db-01", "format": fmt},
        token=admin,
    )
    assert status == 202, job
    job = _wait_for_job(stack, admin, job["id"])
    path = stack.config.state_dir / "exports" / job["id"] / job["artifacts"][0]["name"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == job["artifacts"][0]["sha256"]
    info = _qemu_img_info(path)
    assert info["format"] == fmt
    source = stack.config.state_dir / "lab" / "demo" / "db-01" / "disk0.raw"
    assert info["virtual-size"] == source.stat().st_size


def full_verification(api: Api, token: str, seconds: float = 60) -> dict[str, Any]:
    """Start a full verification of the log and wait for its outcome."""
    status, run, _ = api.call("POST", "/api/v1/audit/verifications", token=token)
    assert status == 202, run
    deadline = time.monotonic() + seconds
    while run["status"] == "running":
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
        status, run, _ = api.call("GET", f"/api/v1/audit/verifications/{run['id']}", token=token)
        assert status == 200, run
    return dict(run)
