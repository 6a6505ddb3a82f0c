"""Zero trust on the bus: a message is not obeyed just because it arrived.

Forged export commands (no grant, a bad signature, an expired grant, a grant for another
permission or another user) published straight to RabbitMQ are rejected, dead-lettered and
audited as failures, and nothing is exported; a forged request is refused with ``forbidden``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import devstack
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.operations import EXPORT_COMMAND
from hypersdk_contracts.rpc import CreateExportRequest, DiskFormat, ListSecretsRequest
from hypersdk_kit.bus import RpcClient, build_broker
from hypersdk_kit.trust import AssertionSigner

from .conftest import ADMIN_PASSWORD, Stack
from .test_export_journey import _wait_for_job


def _command(job_id: str, grant: str, actor: str, request_id: str) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/test/forger",
            "type": "io.hypersdk.exporter.vm.export.requested",
            "time": datetime.now(UTC).isoformat(),
            "actor": actor,
            "requestid": request_id,
            "data": {
                "job_id": job_id,
                "provider": "demo-lab",
                "vm": "web-01",
                "format": "qcow2",
                "grant": grant,
            },
        }
    ).encode()


def _grant(signer: AssertionSigner | devstack.HarnessTransitSigner, *, sub: str, perm: str) -> str:
    return signer.sign({"typ": "grant", "sub": sub, "perm": perm, "op": [EXPORT_COMMAND]})


async def _audit_failures(stack: Stack, token: str, wanted: int) -> list[dict[str, Any]]:
    for _ in range(100):
        entries = stack.api.recent_audit(token)
        rejected = [e for e in entries if e["action"] == "bus.request"]
        if len(rejected) >= wanted:
            return rejected
        await asyncio.sleep(0.2)
    raise AssertionError("the rejections were not audited")


async def test_forged_export_commands_are_rejected_dead_lettered_and_audited(
    stack: Stack,
) -> None:
    admin = stack.api.login("admin", ADMIN_PASSWORD)
    # A real, finished job: forgeries aim at it too, and must not touch it.
    status, job, _ = stack.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": "web-01", "format": "raw"},
        token=admin,
    )
    assert status == 202
    _wait_for_job(stack, admin, job["id"])  # its directory exists before the snapshot
    jobs_before = stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"]
    exports_before = set((stack.config.state_dir / "exports").iterdir())

    real_policy = devstack.HarnessTransitSigner(stack.config, "policy")
    impostor = AssertionSigner(Ed25519PrivateKey.generate(), issuer="policy")
    expired = devstack.HarnessTransitSigner(
        stack.config, "policy", clock=lambda: time.time() - 3 * 86400
    )
    rid = "forged-request-0001"
    forgeries = {
        "missing_assertion": _command(str(uuid.uuid4()), "", "admin", rid),
        "bad_signature": _command(
            str(uuid.uuid4()),
            _grant(impostor, sub="admin", perm="vms:export"),
            "admin",
            rid,
        ),
        "expired": _command(
            str(uuid.uuid4()),
            _grant(expired, sub="admin", perm="vms:export"),
            "admin",
            rid,
        ),
        "permission_not_granted": _command(
            str(uuid.uuid4()),
            _grant(real_policy, sub="mallory", perm="jobs:view"),
            "mallory",
            rid,
        ),
        "actor_mismatch": _command(
            job["id"],
            _grant(real_policy, sub="mallory", perm="vms:export"),
            "mallory",
            rid,
        ),
        "unknown_job": _command(
            str(uuid.uuid4()),
            _grant(real_policy, sub="admin", perm="vms:export"),
            "admin",
            rid,
        ),
    }
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    for reason, body in forgeries.items():
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=f"forged-{reason}",
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="exporter.jobs",
        )

    dlq = await channel.get_queue("exporter.jobs.dlq", ensure=True)
    dead: set[str] = set()
    for _ in range(150):
        message = await dlq.get(no_ack=True, fail=False, timeout=5)
        if message is None:
            if len(dead) == len(forgeries):
                break
            await asyncio.sleep(0.2)
            continue
        dead.add(str(message.message_id))
    await connection.close()
    assert {f"forged-{reason}" for reason in forgeries} <= dead

    rejected = await _audit_failures(stack, admin, len(forgeries))
    reasons = {e["result"].removeprefix("failure: ") for e in rejected}
    assert set(forgeries) <= reasons
    assert all(e["result"].startswith("failure: ") for e in rejected)

    assert stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"] == jobs_before
    assert set((stack.config.state_dir / "exports").iterdir()) == exports_before
    status, verdict, _ = stack.api.call("GET", "/api/v1/audit/verify", token=admin)
    assert verdict["valid"] is True


@pytest.mark.parametrize(
    ("queue", "request_"),
    [
        (
            RpcQueue.EXPORTER_CREATE_EXPORT,
            CreateExportRequest(
                provider="demo-lab",
                vm="web-01",
                format=DiskFormat.QCOW2,
                context=RequestContext(actor="admin", request_id="forged-rpc-1"),
            ),
        ),
        (
            RpcQueue.SECRETS_LIST,
            ListSecretsRequest(context=RequestContext(actor="admin", request_id="forged-rpc-2")),
        ),
    ],
)
async def test_forged_requests_are_refused(stack: Stack, queue: str, request_: Any) -> None:
    jobs_before = stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"]
    broker = build_broker(stack.amqp_url, service="forger")
    await broker.start()
    try:
        with pytest.raises(ServiceError) as refused:
            await RpcClient(broker, timeout_seconds=10).call(queue, request_)
    finally:
        await broker.stop()
    assert refused.value.code is ErrorCode.FORBIDDEN
    assert stack.db("SELECT count(*) AS n FROM exporter.jobs")[0]["n"] == jobs_before
