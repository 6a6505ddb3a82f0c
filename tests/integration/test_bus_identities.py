"""Every platform process has its own least-privilege identity, on the real broker and database.

The stack's services connect to RabbitMQ as ``<vhost>-<service>`` with the permissions of
deploy/rabbitmq/definitions.json and to PostgreSQL as ``<database>_<service>``, a role that owns
only its schema. Here each identity tries what it must not do: read another service's RPC
queue, publish another service's events, reshape the topology, forge the AMQP ``user_id``, read
another service's tables; and ``guest`` tries the vhost at all. No secret may be in any command
line or log of the processes the stack started.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aio_pika
import aio_pika.abc
import aiormq
import asyncpg
import pytest

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.events import LoginFailed
from hypersdk_contracts.names import (
    AUDIT_EVENTS_QUEUE,
    EVENTS_EXCHANGE,
    EXPORT_JOBS_QUEUE,
    RpcQueue,
)
from hypersdk_contracts.rpc import RpcRequest
from hypersdk_kit.bus import (
    RabbitEventPublisher,
    RpcClient,
    build_broker,
    bus_login,
    current_message,
    serve_rpc,
)
from hypersdk_kit.database import ServiceRole, apply_migrations

from .conftest import ADMIN_PASSWORD, Stack, devstack, process_tree, until

SERVICES = devstack.SERVICES


@asynccontextmanager
async def channel_of(stack: Stack, service: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    """A confirming channel on a connection logged in as ``service``'s own user."""
    connection = await aio_pika.connect(stack.config.amqp_url(service))
    try:
        yield await connection.channel(publisher_confirms=True)
    finally:
        await connection.close()


async def _ignore(_message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """A consumer callback that is never meant to run."""


# ---- RabbitMQ ---------------------------------------------------------------------------------


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "identity"])
async def test_no_other_service_can_consume_identitys_login_queue(
    stack: Stack, service: str
) -> None:
    """The reproduced attack: a priority consumer on identity.rpc.login read passwords."""
    async with channel_of(stack, service) as channel:
        queue = await channel.get_queue(RpcQueue.IDENTITY_LOGIN.value)  # passive: exists
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.consume(_ignore, arguments={"x-priority": 10})


async def test_a_service_consumes_only_its_own_work_queues(stack: Stack) -> None:
    for service, queue in (("gateway", EXPORT_JOBS_QUEUE), ("exporter", AUDIT_EVENTS_QUEUE)):
        async with channel_of(stack, service) as channel:
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await (await channel.get_queue(queue)).consume(_ignore)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_publishes_only_its_own_routing_keys(stack: Stack, service: str) -> None:
    other = "identity" if service != "identity" else "policy"
    async with channel_of(stack, service) as channel:
        exchange = await channel.get_exchange(EVENTS_EXCHANGE)  # passive: exists
        # (That a service's own prefix passes is shown by every event the stack records.)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await exchange.publish(
                aio_pika.Message(b"{}", user_id=stack.config.amqp_login(service)),
                routing_key=f"{other}.login.failed",
            )


@pytest.mark.parametrize("service", [s for s in SERVICES if s not in ("audit", "gateway")])
async def test_a_service_cannot_declare_or_bind_on_the_events_exchange(
    stack: Stack, service: str
) -> None:
    async with channel_of(stack, service) as channel:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_exchange(
                EVENTS_EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True
            )
    async with channel_of(stack, service) as channel:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await channel.declare_queue(f"spy.{secrets.token_hex(4)}", exclusive=True)
    # A queue it may declare (an RPC queue name of its own) still cannot see the event stream.
    own = f"{service}.rpc.probe_{secrets.token_hex(4)}"
    async with channel_of(stack, service) as channel:
        queue = await channel.declare_queue(own, exclusive=True)
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.bind(EVENTS_EXCHANGE, routing_key="#")


async def test_audit_binds_the_event_stream_and_the_gateway_only_revocations(stack: Stack) -> None:
    async with channel_of(stack, "audit") as channel:
        # Its own queue only (binding it again with "#" changes nothing).
        await (await channel.get_queue(AUDIT_EVENTS_QUEUE)).bind(EVENTS_EXCHANGE, routing_key="#")
        queue = await channel.declare_queue(
            f"audit.rpc.probe_{secrets.token_hex(4)}", exclusive=True
        )
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.bind(EVENTS_EXCHANGE, routing_key="#")
    async with channel_of(stack, "gateway") as channel:
        queue = await channel.declare_queue(
            f"gateway.revocations.{secrets.token_hex(16)}", exclusive=True
        )
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await queue.bind(EVENTS_EXCHANGE, routing_key="#")


async def test_guest_has_no_access_to_the_platform_vhost(stack: Stack) -> None:
    # guest's password is right (it opens the default vhost); the platform's vhost is closed.
    connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/%2F")
    await connection.close()
    vhost = stack.config.amqp_vhost
    with pytest.raises(aiormq.exceptions.InvalidFrameError, match=r"got <Connection\.Close"):
        await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{vhost}")


async def test_the_broker_refuses_a_forged_user_id(stack: Stack) -> None:
    async with channel_of(stack, "identity") as channel:
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}", user_id=stack.config.amqp_login("gateway")),
                routing_key=RpcQueue.POLICY_DECIDE.value,
            )


async def test_events_requests_and_replies_carry_the_publishers_login(stack: Stack) -> None:
    identity = build_broker(stack.config.amqp_url("identity"), service="identity")
    gateway = build_broker(stack.config.amqp_url("gateway"), service="gateway")
    harness = build_broker(stack.amqp_url, service="harness")
    # The harness answers on a queue of its own and records who asked.
    probe_queue = f"harness.rpc.probe_{secrets.token_hex(4)}"
    askers: list[str | None] = []

    async def answer(_request: RpcRequest) -> None:
        askers.append(current_message(harness).raw_message.user_id)

    serve_rpc(harness, probe_queue, RpcRequest, answer)
    await harness.start()
    await identity.start()
    await gateway.start()
    try:
        assert bus_login(identity) == stack.config.amqp_login("identity")
        # An event from identity's publisher, seen on a queue the harness bound.
        connection = await aio_pika.connect(stack.amqp_url)
        channel = await connection.channel()
        events = await channel.declare_queue(exclusive=True)
        await events.bind(EVENTS_EXCHANGE, routing_key="identity.login.failed")
        published = await RabbitEventPublisher(
            identity, service="identity", declare_topology=False
        ).publish(
            LoginFailed(username="mallory", reason="invalid_credentials"),
            subject="user/mallory",
            context=RequestContext(),
        )
        seen: list[aio_pika.abc.AbstractIncomingMessage] = []

        async def keep(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            seen.append(message)

        await events.consume(keep, no_ack=True)
        assert await until(lambda: any(m.message_id == published.id for m in seen))
        (event,) = [m for m in seen if m.message_id == published.id]
        assert event.user_id == stack.config.amqp_login("identity")

        # A request from the gateway's RPC client, and the harness's reply to it.
        await RpcClient(gateway, timeout_seconds=10).call(probe_queue, RpcRequest())
        assert askers == [stack.config.amqp_login("gateway")]
        replies = await channel.get_queue("amq.rabbitmq.reply-to")
        got: asyncio.Future[aio_pika.abc.AbstractIncomingMessage] = (
            asyncio.get_running_loop().create_future()
        )

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.set_result(message)

        await replies.consume(take, no_ack=True)
        await channel.default_exchange.publish(
            aio_pika.Message(b"{}", reply_to="amq.rabbitmq.reply-to"), routing_key=probe_queue
        )
        reply = await asyncio.wait_for(got, timeout=10)
        assert reply.user_id == stack.config.amqp_login("harness")
        await connection.close()
    finally:
        await gateway.stop()
        await identity.stop()
        await harness.stop()


# ---- PostgreSQL -------------------------------------------------------------------------------


async def _as(stack: Stack, service: str, query: str) -> object:
    conn = await asyncpg.connect(stack.config.service_database_url(service))
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_each_service_role_reads_only_its_own_schema(stack: Stack) -> None:
    assert await _as(stack, "identity", "SELECT count(*) FROM identity.users")
    assert await _as(stack, "audit", "SELECT count(*) FROM audit.entries")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await _as(stack, "identity", "SELECT * FROM audit.entries")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await _as(stack, "audit", "SELECT * FROM identity.users")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await _as(stack, "exporter", "CREATE TABLE public.planted (x int)")
    with pytest.raises(asyncpg.exceptions.InsufficientPrivilegeError):
        await _as(stack, "policy", "CREATE ROLE planted LOGIN SUPERUSER")


def test_service_roles_are_unprivileged_and_own_their_schema(stack: Stack) -> None:
    """Each service's role owns its schema, but audit's: a NOLOGIN owner of its own (0048)."""
    roles = [
        stack.config.db_role(service) for service in (*devstack.MIGRATED, *devstack.EXTRA_DB_ROLES)
    ]
    rows = stack.db(
        "SELECT rolname, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = ANY($1::text[])",
        roles,
    )
    assert sorted(row["rolname"] for row in rows) == sorted(roles)
    for row in rows:
        assert not any(row[flag] for flag in list(row.keys())[1:]), dict(row)
    owners = stack.db(
        "SELECT n.nspname AS schema, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY($1::text[])",
        list(devstack.MIGRATED),
    )
    assert owners
    for row in owners:
        owner = "audit_owner" if row["schema"] == "audit" else row["schema"]
        assert row["owner"] == stack.config.db_role(owner), dict(row)
    (owner,) = stack.db(
        "SELECT rolcanlogin FROM pg_roles WHERE rolname = $1", stack.config.db_role("audit_owner")
    )
    assert owner["rolcanlogin"] is False


def test_each_role_has_the_password_of_its_services_url(stack: Stack) -> None:
    """PostgreSQL stored the verifier migrate computed, not a hash of the verifier's text."""
    for service in devstack.MIGRATED:
        (row,) = stack.db(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", stack.config.db_role(service)
        )
        iterations, salt = row["rolpassword"].split("$")[1].split(":")
        password = (stack.config.secret_dir / "postgres" / service).read_text().strip()
        salted = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
        server_key = hmac.new(salted, b"Server Key", "sha256").digest()
        assert row["rolpassword"].endswith(":" + base64.b64encode(server_key).decode())


async def test_migrate_hands_a_schema_made_by_the_administrator_to_the_role(stack: Stack) -> None:
    """A database from before per-service roles (tables owned by postgres) converts in place."""
    from hypersdk_identity.adapters.outbound.postgres import MIGRATIONS, SCHEMA

    database = f"{stack.config.database}_conv"
    role = ServiceRole(name=f"{database}_identity", password=secrets.token_urlsafe(18))
    admin = stack.database_url.rsplit("/", 1)[0]
    server = await asyncpg.connect(f"{admin}/postgres")
    await server.execute(f'CREATE DATABASE "{database}"')
    try:
        await apply_migrations(f"{admin}/{database}", schema=SCHEMA, migrations=MIGRATIONS[:1])
        applied = await apply_migrations(
            f"{admin}/{database}", schema=SCHEMA, migrations=MIGRATIONS, owner=role
        )
        assert applied == len(MIGRATIONS) - 1
        conn = await asyncpg.connect(f"{admin}/{database}")
        try:
            owners = await conn.fetch(
                "SELECT c.relname, pg_get_userbyid(c.relowner) AS owner FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
                SCHEMA,
            )
        finally:
            await conn.close()
        assert len(owners) > len(MIGRATIONS)
        assert {row["owner"] for row in owners} == {role.name}
    finally:
        await server.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await server.execute(f'DROP ROLE IF EXISTS "{role.name}"')
        await server.close()


def test_services_connect_as_their_own_roles(stack: Stack) -> None:
    users = {
        row["usename"]
        for row in stack.db(
            "SELECT usename FROM pg_stat_activity WHERE datname = $1", stack.config.database
        )
    }
    for service in devstack.MIGRATED:
        assert stack.config.db_role(service) in users


# ---- nothing secret in argv or logs -----------------------------------------------------------


def _stack_secrets(stack: Stack) -> dict[str, str]:
    secret_dir = stack.config.secret_dir
    found = {"admin password": ADMIN_PASSWORD}
    for name in ("openbao-root-token", "openbao-unseal-key", "secrets-secret-id"):
        found[name] = (secret_dir / name).read_text().strip()
    for kind in ("amqp", "postgres"):
        for path in (secret_dir / kind).iterdir():
            found[f"{kind} password of {path.name}"] = path.read_text().strip()
    return found


def test_no_secret_in_any_command_line_or_log(stack: Stack) -> None:
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None
    known = _stack_secrets(stack)
    assert len(known) >= 2 + len(SERVICES) + len(devstack.MIGRATED)
    command_lines = {}
    for pid in process_tree(supervisor):
        try:
            command_lines[pid] = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
    # The supervisor, OpenBao and the six services at least.
    assert len(command_lines) >= 2 + len(SERVICES)
    assert any(b"bao" in line and b"server" in line for line in command_lines.values())
    logs = {path.name: path.read_bytes() for path in stack.log_dir.iterdir() if path.is_file()}
    assert "openbao.log" in logs
    for name, value in known.items():
        for pid, line in command_lines.items():
            assert value.encode() not in line, f"{name} in the command line of pid {pid}"
        for log, text in logs.items():
            assert value.encode() not in text, f"{name} in {log}"
