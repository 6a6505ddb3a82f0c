"""The review's attack on the real stack: a grant copied off one admin call, replayed on the bus.

Before request seals, the grant and context of one admin call, replayed straight to
``identity.rpc.create_user`` and ``policy.rpc.assign_roles``, minted a working admin; and 22
logins on the bus naming an arbitrary ``source_ip`` locked that address. Here the harness plays
the gateway once (it holds the stack's gateway key) to make a genuine ``POST /users`` call on
the bus, then replays what travelled as an attacker holding no key: every replay is refused,
and every refusal is published as a rejected-request event.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aio_pika
import pytest

import devstack
from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import EVENTS_EXCHANGE, RoutingKey, RpcQueue
from hypersdk_contracts.operations import EXPORT_COMMAND
from hypersdk_contracts.rpc import (
    AssignRolesRequest,
    AuthenticateRequest,
    CreateUserRequest,
    DecideRequest,
    LoginRequest,
    RpcRequest,
)
from hypersdk_gateway.adapters.inbound.operations import operations_of
from hypersdk_gateway.core.seals import SEAL_ISSUER, seal_request
from hypersdk_kit.bus import RpcClient, build_broker
from hypersdk_kit.trust import AssertionSigner, load_private_key

from .conftest import ADMIN_PASSWORD, Stack

REJECTED = (RoutingKey.IDENTITY_REQUEST_REJECTED, RoutingKey.POLICY_REQUEST_REJECTED)


class Rejections:
    """Rejected-request events, read from a queue of the test's own on the events exchange."""

    def __init__(self, queue: aio_pika.abc.AbstractQueue) -> None:
        self.queue = queue
        self.seen: list[dict[str, Any]] = []

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        for _ in range(100):
            message = await self.queue.get(no_ack=True, fail=False)
            if message is None:
                if len(self.seen) >= count:
                    return self.seen
                await asyncio.sleep(0.1)
                continue
            self.seen.append(json.loads(message.body))
        raise AssertionError(f"{len(self.seen)} of {count} rejections published")


@pytest.fixture
async def rejections(stack: Stack) -> AsyncIterator[Rejections]:
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    for key in REJECTED:
        await queue.bind(EVENTS_EXCHANGE, routing_key=key)
    yield Rejections(queue)
    await connection.close()


@pytest.fixture
async def rpc(stack: Stack) -> AsyncIterator[RpcClient]:
    broker = build_broker(stack.amqp_url, service="attacker")
    await broker.start()
    yield RpcClient(broker, timeout_seconds=10)
    await broker.stop()


async def refused(rpc: RpcClient, queue: str, request: RpcRequest) -> None:
    with pytest.raises(ServiceError) as error:
        await rpc.call(queue, request)
    assert error.value.code is ErrorCode.FORBIDDEN


def user_exists(stack: Stack, username: str) -> bool:
    return bool(stack.db("SELECT 1 FROM identity.users WHERE username = $1", username))


async def test_a_grant_copied_off_an_admin_call_cannot_mint_an_admin(
    stack: Stack, rpc: RpcClient, rejections: Rejections
) -> None:
    gateway = AssertionSigner(
        load_private_key(stack.config.key_dir / "gateway.key"), issuer=SEAL_ISSUER
    )
    token = stack.api.login("admin", ADMIN_PASSWORD)
    # What the gateway sends for POST /api/v1/users, made once with the gateway's key.
    base = RequestContext(actor="admin", source_ip="192.0.2.10", request_id=secrets.token_hex(8))
    principal = await rpc.call(
        RpcQueue.IDENTITY_AUTHENTICATE, AuthenticateRequest(token=token, context=base)
    )
    base = base.model_copy(update={"assertion": principal["assertion"]})
    decide = DecideRequest(
        username="admin",
        permission="users:manage",
        resource="POST /api/v1/users",
        operations=operations_of("POST /api/v1/users"),
        context=base,
    )
    decision = await rpc.call(
        RpcQueue.POLICY_DECIDE, seal_request(gateway, RpcQueue.POLICY_DECIDE, decide)
    )
    assert decision["allowed"] is True
    invited = f"invited-{secrets.token_hex(4)}"
    genuine = seal_request(
        gateway,
        RpcQueue.IDENTITY_CREATE_USER,
        CreateUserRequest(
            username=invited,
            password=f"genuine-{secrets.token_hex(8)}",
            context=base.model_copy(update={"grant": decision["grant"]}),
        ),
    )
    await rpc.call(RpcQueue.IDENTITY_CREATE_USER, genuine)
    assert user_exists(stack, invited)

    # The attacker copied that request's context (grant, assertion and seal) off the bus.
    copied = genuine.context
    mallory = f"mallory-{secrets.token_hex(4)}"
    password = f"minted-{secrets.token_hex(8)}"
    replays: list[tuple[str, RpcRequest]] = [
        (
            RpcQueue.IDENTITY_CREATE_USER,
            CreateUserRequest(username=mallory, password=password, context=copied),
        ),
        (
            RpcQueue.POLICY_ASSIGN_ROLES,
            AssignRolesRequest(username=mallory, roles=["admin"], context=copied),
        ),
        (RpcQueue.IDENTITY_CREATE_USER, genuine),  # the very message, once more
        (
            RpcQueue.POLICY_ASSIGN_ROLES,  # without the seal, as before the fix
            AssignRolesRequest(
                username=mallory, roles=["admin"], context=copied.model_copy(update={"seal": None})
            ),
        ),
        (
            RpcQueue.IDENTITY_CREATE_USER,  # without an actor: no "nobody to check"
            CreateUserRequest(
                username=mallory,
                password=password,
                context=copied.model_copy(update={"actor": None}),
            ),
        ),
    ]
    for queue, request in replays:
        await refused(rpc, queue, request)

    assert not user_exists(stack, mallory)
    assigned = "SELECT role FROM policy.role_assignments WHERE username = $1"
    assert stack.db(assigned, mallory) == []
    login = {"username": mallory, "password": password}
    assert stack.api.call("POST", "/api/v1/auth/login", login)[0] == 401
    events = await rejections.wait_for(len(replays))
    assert sorted((e["data"]["operation"], e["data"]["reason"]) for e in events) == sorted(
        [
            (RpcQueue.IDENTITY_CREATE_USER, "target_mismatch"),
            (RpcQueue.POLICY_ASSIGN_ROLES, "operation_mismatch"),
            (RpcQueue.IDENTITY_CREATE_USER, "seal_replayed"),
            (RpcQueue.POLICY_ASSIGN_ROLES, "missing_seal"),
            (RpcQueue.IDENTITY_CREATE_USER, "missing_actor"),
        ]
    )
    assert all(e["type"].endswith(".request.rejected") for e in events)


async def test_logins_on_the_bus_cannot_choose_the_address_that_is_throttled(
    stack: Stack, rpc: RpcClient, rejections: Rejections
) -> None:
    victim = f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"
    forged = RequestContext(source_ip=victim, request_id=secrets.token_hex(8))
    guess = {"username": f"ghost-{secrets.token_hex(4)}", "password": "wrong password"}
    attempts = 22
    for _ in range(attempts):
        await refused(rpc, RpcQueue.IDENTITY_LOGIN, LoginRequest(**guess, context=forged))
    await rejections.wait_for(attempts)
    assert {e["data"]["reason"] for e in rejections.seen} == {"missing_seal"}
    throttled = "SELECT failures FROM identity.login_throttle WHERE kind = 'address' AND key = $1"
    assert stack.db(throttled, victim) == []

    # Through the gateway, the address it saw (here: the trusted proxy's X-Forwarded-For) is
    # sealed, and that is the one identity counts.
    status, _, _ = stack.api.call(
        "POST", "/api/v1/auth/login", guess, headers={"X-Forwarded-For": victim}
    )
    assert status == 401
    assert [row["failures"] for row in stack.db(throttled, victim)] == [1]


def _export_command(job: dict[str, Any], *, grant: str, seal: str | None, rid: str) -> bytes:
    envelope = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/test/forger",
        "type": f"io.hypersdk.{EXPORT_COMMAND}",
        "time": datetime.now(UTC).isoformat(),
        "actor": "admin",
        "requestid": rid,
        "data": {
            "job_id": job["id"],
            "provider": job["provider"],
            "vm": job["vm"],
            "format": "qcow2",
            "grant": grant,
        },
    }
    if seal is not None:
        envelope["seal"] = seal
    return json.dumps(envelope).encode()


async def test_an_export_command_needs_the_seal_of_the_request_that_queued_it(
    stack: Stack, rejections: Rejections
) -> None:
    await rejections.queue.bind(EVENTS_EXCHANGE, routing_key=RoutingKey.EXPORTER_REQUEST_REJECTED)
    token = stack.api.login("admin", ADMIN_PASSWORD)
    status, job, _ = stack.api.call(
        "POST",
        "/api/v1/exports",
        {"provider": "demo-lab", "vm": "web-01", "format": "raw"},
        token=token,
    )
    assert status == 202, job
    # A genuine grant for the command, signed with policy's key right after the job was made.
    policy = devstack.HarnessTransitSigner(stack.config, "policy")
    grant = policy.sign(
        {"typ": "grant", "sub": "admin", "perm": "vms:export", "op": [EXPORT_COMMAND]}
    )
    gateway = AssertionSigner(
        load_private_key(stack.config.key_dir / "gateway.key"), issuer=SEAL_ISSUER
    )
    rid = secrets.token_hex(8)
    other_vm = gateway.sign(
        {
            "typ": "request",
            "rid": rid,
            "ip": None,
            "sub": "admin",
            "op": RpcQueue.EXPORTER_CREATE_EXPORT,
            "res": "demo-lab/another-vm",
        }
    )
    forgeries = {
        "missing_seal": _export_command(job, grant=grant, seal=None, rid=rid),
        "target_mismatch": _export_command(job, grant=grant, seal=other_vm, rid=rid),
    }
    connection = await aio_pika.connect(stack.amqp_url)
    channel = await connection.channel()
    for reason, body in forgeries.items():
        await channel.default_exchange.publish(
            aio_pika.Message(
                body,
                message_id=f"forged-{reason}-{rid}",
                content_type="application/cloudevents+json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key="exporter.jobs",
        )
    await connection.close()

    events = await rejections.wait_for(len(forgeries))
    assert sorted(e["data"]["reason"] for e in events) == sorted(forgeries)
    assert {e["data"]["operation"] for e in events} == {"exporter.jobs"}
