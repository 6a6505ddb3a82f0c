"""A whole platform per test session, started by the same code as ``make up``.

Each session gets its own RabbitMQ vhost, PostgreSQL database, state directory and ports, so
queue and database names never collide with another run or with a developer's ``make up``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from hypersdk_kit.bus import build_broker

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import devstack

from . import vsphere_sim

ADMIN_PASSWORD = "planted-admin-password-" + secrets.token_hex(8)
# Identity's PAM service and the Linux group mapped to a role: unique per run, so that the
# pam.d file and group the PAM test creates (and removes) never collide with the machine's.
PAM_SERVICE = "hypersdk-it-" + secrets.token_hex(4)
PAM_GROUP = "hsdk-it-ops-" + secrets.token_hex(3)


free_port = devstack.free_port
WEBHOOK_RECEIVER_HOST = "127.0.0.2"
WEBHOOK_RECEIVER_NETWORK = "127.0.0.2/32"


@dataclass
class Api:
    """A tiny JSON client of the gateway."""

    base: str

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data, method=method)
        request.add_header("content-type", "application/json")
        if token:
            request.add_header("authorization", f"Bearer {token}")
        for key, value in (headers or {}).items():
            request.add_header(key, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                status, response_headers = response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            raw = error.read()
            status, response_headers = error.code, dict(error.headers)
        headers_out = {k.lower(): v for k, v in response_headers.items()}
        if headers_out.get("content-type", "").startswith("application/x-ndjson"):
            return status, raw.decode(), headers_out  # JSON Lines: the text as it came
        payload = json.loads(raw) if raw else None
        return status, payload, headers_out

    def recent_audit(self, token: str, last: int = 500) -> list[dict[str, Any]]:
        """The newest ``last`` audit entries, in chain order."""
        status, verdict, _ = self.call("GET", "/api/v1/audit/verify", token=token)
        assert status == 200, verdict
        assert verdict["valid"], verdict
        after = max(0, int(verdict["verification"]["to_size"]) - last)
        entries: list[dict[str, Any]] = []
        while True:  # pages of at most 1000
            status, page, _ = self.call(
                "GET", f"/api/v1/audit/events?after_sequence={after}&limit=1000", token=token
            )
            assert status == 200, page
            entries += page
            if len(page) < 1000:
                return entries
            after = int(page[-1]["sequence"])

    def login(self, username: str, password: str) -> str:
        status, body, _ = self.call(
            "POST", "/api/v1/auth/login", {"username": username, "password": password}
        )
        assert status == 200, body
        return str(body["token"])


@dataclass
class BusLogin:
    """A RabbitMQ user of the tests' own that audit attributes to ``service``."""

    login: str
    url: str
    service: str

    async def publish(
        self, body: bytes, *, routing_key: str, message_id: str, user_id: str | None = None
    ) -> None:
        """Publish to the events exchange, confirmed, with this login as AMQP ``user_id``."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("hypersdk.events", ensure=False)
            await exchange.publish(
                aio_pika.Message(
                    body,
                    content_type="application/cloudevents+json",
                    message_id=message_id,
                    user_id=user_id or self.login,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=routing_key,
            )
        finally:
            await connection.close()


@contextmanager
def bus_login(config: devstack.StackConfig, service: str) -> Iterator[BusLogin]:
    """A RabbitMQ user that may only publish events, mapped to ``service`` for audit.

    Enter before the stack starts (it adds to ``HYPERSDK_AUDIT_PUBLISHERS``); deleted afterwards.
    """
    login = f"hsdk-it-{service}-{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(24)
    # The password on stdin, never in a command line.
    subprocess.run(
        ["rabbitmqctl", "add_user", login],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    try:
        devstack.rabbitmqctl(
            "set_permissions", "-p", config.amqp_vhost, login, "^$", "^hypersdk\\.events$", "^$"
        )
        config.extra_publishers[login] = service
        url = f"amqp://{login}:{password}@{config.amqp_host}:{config.amqp_port}/{config.amqp_vhost}"
        yield BusLogin(login=login, url=url, service=service)
    finally:
        devstack.rabbitmqctl("delete_user", login)


@dataclass
class Stack:
    """A running platform and how to reach its parts."""

    config: devstack.StackConfig
    api: Api
    amqp_url: str
    database_url: str
    identity_login: BusLogin | None = None
    """Publishes events audit attributes to identity (tests that replay identity's events)."""

    @property
    def log_dir(self) -> Path:
        return self.config.log_dir

    def db(self, query: str, *args: Any) -> Any:
        async def run() -> Any:
            conn = await asyncpg.connect(self.database_url)
            try:
                return await conn.fetch(query, *args)
            finally:
                await conn.close()

        # A thread of its own, so async tests can call it too.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, run()).result()


# Many tests log in from 127.0.0.1 within a minute (the limiter has its own tests); lockout
# tests pick their client address with X-Forwarded-For, so they never lock 127.0.0.1.
TEST_ENV = {
    "HYPERSDK_GATEWAY_LOGIN_RATE_LIMIT_PER_MINUTE": "1000",
    # The session's tests all call as admin, some in bursts (8 callers for 6 s while the broker
    # connection is closed): 600 a minute per principal answered some with 429 when the machine
    # was quick. The per-principal limiter has its own tests (tests/unit/test_gateway_limits.py).
    "HYPERSDK_GATEWAY_RATE_LIMIT_PER_MINUTE": "100000",
    # Revocation tests expect 401s from 127.0.0.1 by the dozen (the throttle has its own tests).
    "HYPERSDK_GATEWAY_AUTH_FAILURES_PER_MINUTE": "1000",
    "HYPERSDK_GATEWAY_TRUSTED_PROXIES": '["127.0.0.1"]',
    "HYPERSDK_IDENTITY_PAM_SERVICE": PAM_SERVICE,
    "HYPERSDK_IDENTITY_PAM_GROUP_ROLES": json.dumps({PAM_GROUP: "operator"}),
    "HYPERSDK_IDENTITY_SWEEP_INTERVAL_SECONDS": "1",
    # rotated-from versions live 3 s, graces are looked for twice a second
    "HYPERSDK_SECRETS_ROTATION_GRACE_SECONDS": "3",
    "HYPERSDK_SECRETS_GRACE_SWEEP_INTERVAL_SECONDS": "0.5",
    # Webhook receivers of the tests listen on 127.0.0.2, reachable only through the
    # allow-list (127.0.0.1 stays refused); retries after 1 s, then a dead letter; a lease
    # short enough for a killed worker's claim to lapse within a test.
    "HYPERSDK_WEBHOOKS_ALLOWED_NETWORKS": json.dumps([WEBHOOK_RECEIVER_NETWORK]),
    "HYPERSDK_WEBHOOKS_RETRY_SCHEDULE_SECONDS": "[0, 1, 1]",
    "HYPERSDK_WEBHOOKS_RETRY_JITTER_RATIO": "0",
    "HYPERSDK_WEBHOOKS_POLL_SECONDS": "0.2",
    "HYPERSDK_WEBHOOKS_LEASE_SECONDS": "6",
    "HYPERSDK_WEBHOOKS_DISABLE_AFTER_SECONDS": "2",
    "HYPERSDK_WEBHOOKS_DISABLE_AFTER_FAILURES": "5",
}


@contextmanager
def isolated_stack_config(
    state_dir: Path, *, broker_auth: bool = False
) -> Iterator[devstack.StackConfig]:
    """A stack config with its own vhost, database and ports; all removed afterwards."""
    with devstack.isolated(state_dir, extra_env=TEST_ENV, broker_auth=broker_auth) as config:
        yield config


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with (
        # the session's stack owns the broker's HTTP auth backend (AMQP subscriptions)
        isolated_stack_config(tmp_path_factory.mktemp("stack"), broker_auth=True) as config,
        bus_login(config, "identity") as identity_login,
    ):
        devstack.up(config, admin_password=ADMIN_PASSWORD)
        yield Stack(
            config=config,
            api=Api(config.gateway_url),
            amqp_url=config.amqp_url(),
            database_url=config.database_url(),
            identity_login=identity_login,
        )


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vsphere_sim.Simulator]:
    """govmomi's vCenter simulator for the session (tests/vsphere_sim), shared by its tests."""
    with vsphere_sim.started(tmp_path_factory, port=free_port()) as simulator:
        yield simulator


@pytest.fixture
async def broker(stack: Stack) -> AsyncIterator[RabbitBroker]:
    """A started broker on the stack's vhost, for tests that drive the kit's bus parts."""
    broker = build_broker(stack.amqp_url, service="test")
    await broker.start()
    yield broker
    await broker.stop()


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether ``condition`` holds within ``seconds`` (polled every 10 ms)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def close_under(channel: aio_pika.abc.AbstractChannel) -> None:
    """Make RabbitMQ close ``channel``, as a lost connection would; aio-pika then reopens it."""
    with pytest.raises(aio_pika.exceptions.ChannelClosed):
        await channel.declare_exchange("hypersdk.no-such-exchange", passive=True)


def service_pid(stack: Stack, service: str) -> int | None:
    """The pid of ``service``'s process under the stack's supervisor, or None (restarting)."""
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None
    module = f"hypersdk_{service}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if parent == supervisor and module in cmdline:
            return int(entry.name)
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found += frontier
    return found
