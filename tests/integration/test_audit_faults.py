"""The audit service under faults, on real components: no event lost, none chained twice.

A bounded load of distinct, genuine events (published as identity, single and in CloudEvents
batch messages) runs while one fault strikes mid-load: audit killed with -9 (devstack's
supervisor restarts it), a restart of RabbitMQ (after a clean stop, and after SIGKILL), a
restart of PostgreSQL (``-m fast`` and ``-m immediate``). The fault waits until audit is at
work on a backlog, with two thirds of the load still to come. Once the load has settled (every
event chained, audit's queue empty), every event is chained exactly once, nothing was
dead-lettered, the sequences have no gap, the Merkle tree has one leaf per entry, and the
chain verifies (audit's verification through the API, and the whole chain walked here).

The faults are the module's own: its stack runs on a RabbitMQ node (own node name, ports and
data directory) and a PostgreSQL instance (own data directory and port) that nothing else uses,
so no other test sees a restart. devstack's ``rabbitmqctl`` names no node; rabbitmqctl honours
``RABBITMQ_NODENAME``, which is set to the private node for as long as the stack exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import asyncpg
import pytest
from tools import devstack

from hypersdk_audit.core.chain import ChainedEntry
from hypersdk_audit.core.chain import verify as verify_chain
from hypersdk_contracts.envelope import (
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
    CLOUDEVENTS_CONTENT_TYPE,
    CloudEvent,
    batch_to_json,
    event_envelope,
)
from hypersdk_contracts.events import LoginFailed
from hypersdk_contracts.names import AUDIT_EVENTS_QUEUE, EVENTS_EXCHANGE

from .conftest import ADMIN_PASSWORD, Api, BusLogin, bus_login, isolated_stack_config

LOAD = 3000
"""Events per scenario."""
BURST_BATCH_EVENTS = 60
"""The first third goes at once: single messages and CloudEvents batch messages of 60."""
TICK_EVENTS = 50
TICK_BATCH_EVENTS = 10
TICK_SECONDS = 0.05
"""The rest in ticks of 50 events (single and batch messages) every 50 ms: seconds of load
left when the fault strikes."""
BACKLOG = 200
"""The fault waits for this many events published but not chained yet (a batch's worth)."""
PUBLISH_SECONDS = 90.0
SETTLE_SECONDS = 120.0
ROUTING_KEY = "identity.login.failed"


# ---- a RabbitMQ node of this module's own ------------------------------------------------------


def _rabbitmq_server() -> Path | None:
    """The real rabbitmq-server script (Debian's /usr/sbin one is a wrapper that su's)."""
    found = shutil.which("rabbitmq-server")
    if found is None:
        return None
    script = Path(found).resolve().parent / "rabbitmq-server"
    return script if script.exists() else None


@dataclass
class PrivateRabbitMQ:
    """A second RabbitMQ node: own node name, AMQP and distribution ports, data and logs.

    It runs as the ``rabbitmq`` user, whose Erlang cookie (/var/lib/rabbitmq/.erlang.cookie,
    its home) rabbitmqctl uses too when run as root.
    """

    server: Path
    root: Path
    node: str
    port: int
    dist_port: int
    process: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return {
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.root / "advanced.config"),
            # Erlang distribution on loopback only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def write_config(self) -> None:
        # No plugins (so no management or Prometheus listener); AMQP on loopback only.
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\nloopback_users.guest = true\n"
        )
        for path in (self.root, *self.root.iterdir()):
            shutil.chown(path, "rabbitmq", "rabbitmq")

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            capture_output=True,
            text=True,
            check=check,
            timeout=90,
        )

    def start(self) -> None:
        with open(self.root / "server.out", "ab") as out:
            self.process = subprocess.Popen(
                ["runuser", "-u", "rabbitmq", "--", str(self.server)],
                env={**os.environ, **self.env()},
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 90
        while self.ctl("-q", "await_startup", "--timeout", "10", check=False).returncode != 0:
            if self.process.poll() is not None:
                raise RuntimeError(f"the private RabbitMQ node exited; see {self.root}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the private RabbitMQ node did not start; see {self.root}")
            time.sleep(0.3)

    def stop(self) -> None:
        """A clean stop of the node (SIGTERM: it closes its clients' connections, halts)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.kill(int((self.root / "rabbitmq.pid").read_text()), signal.SIGTERM)
            except (OSError, ValueError):
                self.ctl("stop", check=False)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        self.process = None

    def restart(self, mode: str) -> None:
        """``stop``: a clean stop, then a start; ``kill``: SIGKILL to the node, then a start."""
        if mode == "kill":
            self.kill()
        else:
            self.stop()
        self.start()

    def queue_depth(self, vhost: str, queue: str) -> int:
        """Messages in ``queue`` (ready and unacknowledged)."""
        listed = self.ctl(
            "-q", "list_queues", "-p", vhost, "name", "messages", "--no-table-headers"
        ).stdout
        for line in listed.splitlines():
            name, _, count = line.partition("\t")
            if name == queue:
                return int(count)
        raise AssertionError(f"no queue {queue} on {vhost}")


@pytest.fixture(scope="module")
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    server = _rabbitmq_server()
    if os.geteuid() != 0 or server is None or shutil.which("runuser") is None:
        pytest.skip("needs root, rabbitmq-server and runuser")
    # Not under pytest's 0700 temporary directory: the rabbitmq user must reach it.
    root = Path(tempfile.mkdtemp(prefix="hypersdk-audit-faults-rabbitmq-"))
    node = PrivateRabbitMQ(
        server=server,
        root=root,
        node=f"hsdk-it-{secrets.token_hex(4)}@localhost",
        port=devstack.free_port(),
        dist_port=devstack.free_port(),
    )
    try:
        node.write_config()
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            node.kill()
            shutil.rmtree(root, ignore_errors=True)


# ---- a PostgreSQL instance of this module's own ------------------------------------------------


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of this module's own (own data directory and port), trust auth."""

    bin_dir: Path
    root: Path
    port: int

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [
                "runuser", "-u", "postgres", "--", str(self.bin_dir / "pg_ctl"),
                "-D", str(self.data_dir), "-w", "-t", "60", *args,
            ],
            check=check,
            capture_output=True,
            timeout=90,
        )  # fmt: skip

    def _server(self) -> list[str]:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        return ["-l", str(self.root / "server.log"), "-o", options]

    def start(self) -> None:
        self.ctl(*self._server(), "start")

    def restart(self, mode: str) -> None:
        self.ctl(*self._server(), "-m", mode, "restart")

    def stop(self) -> None:
        if self.ctl("-m", "fast", "stop", check=False).returncode != 0:
            self.ctl("-m", "immediate", "stop", check=False)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PrivatePostgres]:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if os.geteuid() != 0 or not versions or shutil.which("runuser") is None:
        pytest.skip("needs root, PostgreSQL server binaries and runuser")
    root = Path(tempfile.mkdtemp(prefix="hypersdk-audit-faults-pg-"))
    shutil.chown(root, "postgres", "postgres")
    server = PrivatePostgres(bin_dir=versions[-1].parent, root=root, port=devstack.free_port())
    try:
        subprocess.run(
            [
                "runuser", "-u", "postgres", "--", str(server.bin_dir / "initdb"),
                "-D", str(server.data_dir), "-U", "postgres", "--auth=trust", "--no-sync",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )  # fmt: skip
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)


# ---- the stack, on both ------------------------------------------------------------------------


@contextlib.contextmanager
def rabbitmqctl_on(node: str) -> Iterator[None]:
    """rabbitmqctl without ``-n`` (devstack's, conftest's) reaches ``node`` meanwhile."""
    saved = os.environ.get("RABBITMQ_NODENAME")
    os.environ["RABBITMQ_NODENAME"] = node
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RABBITMQ_NODENAME", None)
        else:
            os.environ["RABBITMQ_NODENAME"] = saved


@dataclass
class FaultStack:
    """A platform on the private RabbitMQ node and PostgreSQL instance."""

    config: devstack.StackConfig
    api: Api
    identity: BusLogin
    """Publishes events audit attributes to identity."""
    rabbitmq: PrivateRabbitMQ
    postgres: PrivatePostgres

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.config.database_url(), timeout=5)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args, timeout=30)
            return rows
        finally:
            await conn.close(timeout=5)

    def audit_log_tail(self, lines: int = 40) -> str:
        path = self.config.log_dir / "audit.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no audit log)"


@pytest.fixture(scope="module")
def fault_stack(
    tmp_path_factory: pytest.TempPathFactory,
    private_rabbitmq: PrivateRabbitMQ,
    private_postgres: PrivatePostgres,
) -> Iterator[FaultStack]:
    with (
        rabbitmqctl_on(private_rabbitmq.node),
        isolated_stack_config(tmp_path_factory.mktemp("audit-faults")) as config,
    ):
        # Nothing has used the ports yet (the vhost was made by rabbitmqctl, on the node);
        # teardown drops the database on the private instance too.
        config.amqp_port = private_rabbitmq.port
        config.pg_port = private_postgres.port
        with bus_login(config, "identity") as identity:
            devstack.up(config, admin_password=ADMIN_PASSWORD)
            yield FaultStack(
                config=config,
                api=Api(config.gateway_url),
                identity=identity,
                rabbitmq=private_rabbitmq,
                postgres=private_postgres,
            )


# ---- the load ----------------------------------------------------------------------------------


@dataclass
class Unit:
    """One message: a single event or a CloudEvents batch of several."""

    ids: list[str]
    body: bytes
    content_type: str


def genuine_events(run: str, count: int) -> list[CloudEvent]:
    """Distinct, valid identity events that name no request (so need no gateway seal)."""
    return [
        event_envelope(
            LoginFailed(username=f"fault-{run}-{index}", reason="invalid_credentials"),
            service="identity",
            subject=f"user/fault-{run}-{index}",
            context=None,
        )
        for index in range(count)
    ]


def messages(events: list[CloudEvent], *, batched: int) -> list[Unit]:
    """Two in five events as single messages, the rest in batch messages of ``batched``."""
    singles, rest = events[: len(events) * 2 // 5], events[len(events) * 2 // 5 :]
    units = [
        Unit(
            [event.id],
            event.model_dump_json(by_alias=True, exclude_none=True).encode(),
            CLOUDEVENTS_CONTENT_TYPE,
        )
        for event in singles
    ]
    for start in range(0, len(rest), batched):
        part = rest[start : start + batched]
        units.append(
            Unit([event.id for event in part], batch_to_json(part), CLOUDEVENTS_BATCH_CONTENT_TYPE)
        )
    return units


def as_ticks(events: list[CloudEvent]) -> list[list[Unit]]:
    """A burst of the first third (audit gets a backlog to work on), then steady ticks."""
    burst, rest = events[: len(events) // 3], events[len(events) // 3 :]
    ticks = [messages(burst, batched=BURST_BATCH_EVENTS)]
    for start in range(0, len(rest), TICK_EVENTS):
        ticks.append(messages(rest[start : start + TICK_EVENTS], batched=TICK_BATCH_EVENTS))
    return ticks


@dataclass
class Load:
    """Publishes ticks of messages with confirms; what is not confirmed goes again (same ids).

    Reconnects when the broker goes away; gives up after ``PUBLISH_SECONDS``.
    """

    publisher: BusLogin
    ticks: list[list[Unit]]
    confirmed: set[str] = field(default_factory=set)
    retried: int = 0
    connections: int = 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_SECONDS
        pending: deque[list[Unit]] = deque(self.ticks)
        while pending:
            if loop.time() > deadline:
                left = sum(len(unit.ids) for tick in pending for unit in tick)
                raise TimeoutError(f"{left} events still unconfirmed after {PUBLISH_SECONDS} s")
            try:
                connection = await aio_pika.connect(self.publisher.url, timeout=5)
            except Exception:  # the broker is down or starting: try again shortly
                await asyncio.sleep(0.2)
                continue
            self.connections += 1
            try:
                await self._publish(connection, pending)
            except Exception:  # the connection broke outside a publish: reconnect
                await asyncio.sleep(0.2)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=5)

    async def _publish(
        self, connection: aio_pika.abc.AbstractConnection, pending: deque[list[Unit]]
    ) -> None:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(EVENTS_EXCHANGE, ensure=False)
        while pending:
            tick = pending.popleft()
            outcomes = await asyncio.gather(
                *(self._send(exchange, unit) for unit in tick), return_exceptions=True
            )
            failed = []
            for unit, outcome in zip(tick, outcomes, strict=True):
                if isinstance(outcome, aiormq.spec.Basic.Ack):
                    self.confirmed.update(unit.ids)
                else:
                    failed.append(unit)
            if failed:  # sent again on a new connection; audit keeps each event once
                self.retried += len(failed)
                pending.appendleft(failed)
                return
            await asyncio.sleep(TICK_SECONDS)

    async def _send(self, exchange: aio_pika.abc.AbstractExchange, unit: Unit) -> object:
        return await exchange.publish(
            aio_pika.Message(
                unit.body,
                content_type=unit.content_type,
                message_id=unit.ids[0] if len(unit.ids) == 1 else f"batch-{unit.ids[0]}",
                user_id=self.publisher.login,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=ROUTING_KEY,
            timeout=15,
        )


# ---- checks ------------------------------------------------------------------------------------

ENTRY_COLUMNS = ", ".join(
    f'"{column.name}"' if column.name == "user" else column.name
    for column in dataclasses.fields(ChainedEntry)
)
DATABASE_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def chained(stack: FaultStack, ids: list[str]) -> int:
    """How many entries hold these event ids (0 while PostgreSQL is away)."""
    try:
        rows = await stack.fetch(
            "SELECT count(*) AS n FROM audit.entries WHERE event_id = ANY($1::text[])", ids
        )
    except DATABASE_DOWN:
        return 0
    return int(rows[0]["n"])


async def eventually(
    check: Callable[[], Awaitable[bool]], *, seconds: float, what: str, poll: float = 0.05
) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"{what} within {seconds} s"
        await asyncio.sleep(poll)


async def settled(stack: FaultStack, ids: list[str]) -> None:
    """Wait until every id is chained and audit's queue is empty (redeliveries done too)."""
    deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
    vhost = stack.config.amqp_vhost
    while True:
        if await chained(stack, ids) >= len(ids):
            depth = await asyncio.to_thread(stack.rabbitmq.queue_depth, vhost, AUDIT_EVENTS_QUEUE)
            if depth == 0:
                return
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    rows = await stack.fetch(
        "SELECT event_id FROM audit.entries WHERE event_id = ANY($1::text[])", ids
    )
    missing = sorted(set(ids) - {row["event_id"] for row in rows})
    quarantined = await stack.fetch(
        "SELECT event_id, reason FROM audit.quarantine WHERE event_id = ANY($1::text[])", ids
    )
    depths = {
        queue: await asyncio.to_thread(stack.rabbitmq.queue_depth, vhost, queue)
        for queue in (AUDIT_EVENTS_QUEUE, f"{AUDIT_EVENTS_QUEUE}.dlq")
    }
    raise AssertionError(
        f"after {SETTLE_SECONDS} s, {len(missing)} of {len(ids)} events not chained "
        f"(e.g. {missing[:5]}); quarantined: {[dict(r) for r in quarantined][:5]}; "
        f"queues: {depths}\naudit.log:\n{stack.audit_log_tail()}"
    )


def admin_call(api: Api, method: str, path: str, *, seconds: float = 60) -> Any:
    """Log in as admin and call ``path``; retried while the platform recovers (503s)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            status, body, _ = api.call(
                "POST", "/api/v1/auth/login", {"username": "admin", "password": ADMIN_PASSWORD}
            )
            if status == 200:
                status, body, _ = api.call(method, path, token=str(body["token"]))
                if status == 200:
                    return body
        except OSError as exc:  # the gateway not answering yet
            status, body = 0, repr(exc)
        assert time.monotonic() < deadline, f"{method} {path}: {status} {body}"
        time.sleep(0.5)


async def assert_each_chained_once(stack: FaultStack, ids: list[str]) -> None:
    """Nothing lost, nothing twice, no gap, a leaf per entry, and the chain verifies."""
    rows = await stack.fetch(
        "SELECT event_id, count(*) AS n FROM audit.entries WHERE event_id = ANY($1::text[]) "
        "GROUP BY event_id",
        ids,
    )
    counts = {row["event_id"]: int(row["n"]) for row in rows}
    assert sorted(set(ids) - counts.keys()) == [], "events lost"
    assert {i: n for i, n in counts.items() if n > 1} == {}, "events chained twice"
    twice = await stack.fetch(
        "SELECT event_id, count(*) AS n FROM audit.entries GROUP BY event_id HAVING count(*) > 1"
    )
    assert [dict(row) for row in twice] == []
    # One statement, so one snapshot: entries and their leaves are committed together.
    (shape,) = await stack.fetch(
        "SELECT (SELECT count(*) FROM audit.entries) AS entries,"
        " (SELECT min(sequence) FROM audit.entries) AS first,"
        " (SELECT max(sequence) FROM audit.entries) AS last,"
        " (SELECT count(*) FROM audit.tree WHERE level = 0) AS leaves,"
        " (SELECT max(index) FROM audit.tree WHERE level = 0) AS last_leaf"
    )
    # This stack never cuts its log (no retention runs), so the chain starts at 1.
    assert shape["first"] == 1, dict(shape)
    assert shape["last"] == shape["entries"], f"the sequences have a gap: {dict(shape)}"
    assert shape["leaves"] == shape["entries"], f"the Merkle tree is incomplete: {dict(shape)}"
    assert shape["last_leaf"] == shape["entries"] - 1, dict(shape)
    dead = await asyncio.to_thread(
        stack.rabbitmq.queue_depth, stack.config.amqp_vhost, f"{AUDIT_EVENTS_QUEUE}.dlq"
    )
    assert dead == 0, f"{dead} messages dead-lettered by audit"
    # The audit service's verification, through the API as admin...
    verdict = await asyncio.to_thread(admin_call, stack.api, "GET", "/api/v1/audit/verify")
    assert verdict["valid"] is True, verdict
    # ...and the whole chain walked here, from the first entry, with the chain's own rules.
    everything = await stack.fetch(f"SELECT {ENTRY_COLUMNS} FROM audit.entries ORDER BY sequence")
    walked = verify_chain(ChainedEntry(**dict(row)) for row in everything)
    assert walked.valid, walked
    assert walked.entries >= shape["entries"], walked


@dataclass
class Scenario:
    """What happened around the fault (for the assertions and their messages)."""

    ids: list[str]
    load: Load
    chained_at_fault: int = -1
    backlog_at_fault: int = -1
    """Events published, not chained yet, when the fault struck."""


async def under_fault(
    stack: FaultStack, name: str, fault: Callable[[Scenario], Awaitable[None]]
) -> Scenario:
    """Publish the load, strike with ``fault`` a third of the way in, wait until settled."""
    run = f"{name}-{secrets.token_hex(4)}"
    events = genuine_events(run, LOAD)
    ids = [event.id for event in events]
    assert len(set(ids)) == LOAD
    scenario = Scenario(ids=ids, load=Load(stack.identity, as_ticks(events)))
    publishing = asyncio.create_task(scenario.load.run())
    try:

        async def mid_load() -> bool:
            """A third published, and audit at work on a backlog (or half published)."""
            if publishing.done():
                return True  # its exception (or the assertion below) says what went wrong
            confirmed = len(scenario.load.confirmed)
            if confirmed < LOAD // 3:
                return False
            scenario.chained_at_fault = await chained(stack, ids)
            # (audit may chain an event before its publisher has the confirm)
            scenario.backlog_at_fault = max(0, confirmed - scenario.chained_at_fault)
            at_work = scenario.chained_at_fault > 0 and scenario.backlog_at_fault >= BACKLOG
            return at_work or confirmed >= LOAD // 2

        await eventually(mid_load, seconds=60, what="a third of the load published and chained")
        assert not publishing.done(), "the load was over before the fault"
        await fault(scenario)
        await asyncio.wait_for(asyncio.shield(publishing), timeout=PUBLISH_SECONDS + 10)
    finally:
        if not publishing.done():
            publishing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await publishing  # its exception, if any, fails the test here
    assert scenario.load.confirmed == set(ids)
    assert scenario.chained_at_fault < LOAD, "the fault was not mid-load"
    await settled(stack, ids)
    await assert_each_chained_once(stack, ids)
    print(  # shown with -s, and in the report of a failure that follows
        f"{name}: {scenario.chained_at_fault}/{LOAD} chained at the fault, "
        f"{scenario.backlog_at_fault} published and not chained yet, "
        f"{scenario.load.retried} messages published again, "
        f"{scenario.load.connections} publisher connections"
    )
    return scenario


# ---- the faults --------------------------------------------------------------------------------


def audit_pid(stack: FaultStack) -> int | None:
    """The audit service process, a child of the stack's supervisor."""
    supervisor = devstack.running_pid(stack.config)
    assert supervisor is not None, "the stack's supervisor is gone"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == supervisor and b"hypersdk_audit" in cmdline:
            return int(entry.name)
    return None


def audit_ready(stack: FaultStack) -> bool:
    port = stack.config.health_base_port + devstack.SERVICES.index("audit")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


async def test_audit_killed_with_9_mid_load_loses_and_duplicates_nothing(
    fault_stack: FaultStack,
) -> None:
    victims: list[int] = []

    async def kill_audit(scenario: Scenario) -> None:
        victim = audit_pid(fault_stack)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        victims.append(victim)

        async def restarted() -> bool:
            pid = audit_pid(fault_stack)
            return pid is not None and pid != victim and audit_ready(fault_stack)

        await eventually(restarted, seconds=60, what="the supervisor restarted audit", poll=0.2)

    scenario = await under_fault(fault_stack, "kill", kill_audit)

    assert victims
    assert audit_pid(fault_stack) not in victims
    assert 0 < scenario.chained_at_fault < LOAD


@pytest.mark.parametrize("mode", ["stop", "kill"])
async def test_a_rabbitmq_restart_mid_load_loses_and_duplicates_nothing(
    fault_stack: FaultStack, mode: str
) -> None:
    node = fault_stack.rabbitmq
    assert node.port != 5672
    assert node.port == fault_stack.config.amqp_port
    assert not node.node.startswith("rabbit@")
    before = node.process.pid if node.process else None

    async def restart_rabbitmq(scenario: Scenario) -> None:
        await asyncio.to_thread(node.restart, mode)

    scenario = await under_fault(fault_stack, f"rabbitmq-{mode}", restart_rabbitmq)

    assert node.process is not None
    assert node.process.pid != before
    assert scenario.load.connections >= 2  # the publisher lost its connection and made anew


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_postgresql_restart_mid_load_loses_and_duplicates_nothing(
    fault_stack: FaultStack, mode: str
) -> None:
    server = fault_stack.postgres
    assert server.port == fault_stack.config.pg_port != 5432
    started = await fault_stack.fetch("SELECT pg_postmaster_start_time() AS t")

    async def restart_postgresql(scenario: Scenario) -> None:
        await asyncio.to_thread(server.restart, mode)

    await under_fault(fault_stack, f"postgres-{mode}", restart_postgresql)

    restarted = await fault_stack.fetch("SELECT pg_postmaster_start_time() AS t")
    assert restarted[0]["t"] > started[0]["t"]  # it really restarted
