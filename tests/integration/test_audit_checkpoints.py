"""Checkpoints, proofs and the export bundle through the running platform (decision 0047).

Audit signs with its transit key in the real OpenBao; the checkpoint is published on the
events exchange for witnesses; the bundle exported over HTTP verifies offline with
``hypersdk_auditproof`` and nothing else, and the same bundle cut or edited does not.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hypersdk_auditproof import merkle
from hypersdk_auditproof.checkpoint import SignedCheckpoint, body, verify_signature
from hypersdk_auditproof.entries import canonical, entry_leaf
from hypersdk_auditproof.verify import verify_bundle

from .conftest import ADMIN_PASSWORD, Stack


def _bundle(stack: Stack, token: str) -> list[str]:
    with httpx.stream(
        "GET",
        f"{stack.config.gateway_url}/api/v1/audit/export",
        headers={"authorization": f"Bearer {token}"},
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("application/x-ndjson")
        return list(response.iter_lines())


async def test_a_checkpoint_is_signed_in_transit_published_and_its_proofs_verify(
    stack: Stack,
) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    connection = await aio_pika.connect(stack.amqp_url)
    try:
        channel = await connection.channel()
        witness = await channel.declare_queue(exclusive=True)
        await witness.bind("hypersdk.events", routing_key="audit.checkpoint.signed")
        status, signed, _ = stack.api.call("POST", "/api/v1/audit/checkpoints", token=admin)
        assert status == 200, signed
        message = await witness.get(timeout=10)
        await message.ack()
    finally:
        await connection.close()
    event = json.loads(message.body)
    assert event["type"].endswith("audit.checkpoint.signed")
    assert {k: event["data"][k] for k in signed} == signed  # witnesses see what the API says
    status, keys, _ = stack.api.call("GET", "/api/v1/audit/checkpoints/latest", token=admin)
    assert status == 200
    assert keys["size"] >= signed["size"]
    bundle = _bundle(stack, admin)
    header = json.loads(bundle[0])
    public = {kid: load_pem_public_key(pem.encode()) for kid, pem in header["keys"].items()}
    checkpoint = SignedCheckpoint.from_json(signed)
    assert verify_signature(checkpoint, public)  # type: ignore[arg-type]
    public[checkpoint.key_id].verify(  # type: ignore[union-attr]
        base64.b64decode(signed["signature"]), body(checkpoint.checkpoint)
    )
    # No private key of audit's on disk: it signs in transit.
    assert not list(stack.config.state_dir.rglob("audit.key"))
    # An inclusion proof of an entry verifies against the signed root.
    sequence = max(1, signed["size"] // 2)
    status, proof, _ = stack.api.call(
        "GET",
        f"/api/v1/audit/proofs/inclusion?sequence={sequence}&tree_size={signed['size']}",
        token=admin,
    )
    assert status == 200, proof
    entries = {
        json.loads(line)["sequence"]: json.loads(line)
        for line in bundle
        if json.loads(line).get("kind") == "entry"
    }
    leaf = entry_leaf(canonical(entries[sequence]))
    assert merkle.verify_inclusion(
        leaf,
        sequence - 1,
        signed["size"],
        [bytes.fromhex(h) for h in proof["hashes"]],
        bytes.fromhex(signed["root"]),
    )
    status, refused, _ = stack.api.call(
        "GET", f"/api/v1/audit/proofs/inclusion?sequence={10**12}", token=admin
    )
    assert status == 422
    assert refused["error"]["code"] == "validation_failed"


def test_the_exported_bundle_verifies_offline_and_a_cut_or_edit_is_located(
    stack: Stack, tmp_path: Path
) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    status, first, _ = stack.api.call("POST", "/api/v1/audit/checkpoints", token=admin)
    assert status == 200, first
    stack.api.call("GET", "/api/v1/auth/me", token=admin)  # grow the log past it
    deadline = time.monotonic() + 30
    while True:  # the calls' entries are chained within a batch wait of audit's
        status, second, _ = stack.api.call("POST", "/api/v1/audit/checkpoints", token=admin)
        assert status == 200, second
        if second["size"] > first["size"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert second["size"] > first["size"]
    lines = _bundle(stack, admin)
    report = verify_bundle(lines)
    assert report.valid, report.problems
    assert report.latest_checkpoint is not None
    assert report.latest_checkpoint >= second["size"]
    # The command needs nothing of the platform: run it with the bundle and a pinned key.
    path = tmp_path / "bundle.jsonl"
    path.write_text("\n".join(lines) + "\n")
    header: dict[str, Any] = json.loads(lines[0])
    pem = tmp_path / "audit.pub"
    pem.write_text(next(iter(header["keys"].values())))
    ran = subprocess.run(
        [sys.executable, "-I", "-m", "hypersdk_auditproof", str(path), "--public-key", str(pem)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    # The newest entries cut: caught against the newest checkpoint, with what is missing.
    entries = [line for line in lines if json.loads(line).get("kind") == "entry"]
    kept = [line for line in lines if json.loads(line).get("kind") != "entry"]
    cut = kept + [e for e in entries if json.loads(e)["sequence"] <= first["size"]]
    report = verify_bundle(cut)
    assert not report.valid
    assert "log_truncated" in {problem.code for problem in report.problems}
    # One entry's user changed: located to that entry.
    edited = list(lines)
    index = next(i for i, line in enumerate(edited) if json.loads(line).get("sequence") == 2)
    entry = json.loads(edited[index])
    entry["user"] = "someone-else"
    edited[index] = json.dumps(entry)
    report = verify_bundle(edited)
    assert not report.valid
    assert (report.problems[0].code, report.problems[0].sequence) == ("entry_edited", 2)
