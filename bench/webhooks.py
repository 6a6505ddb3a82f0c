"""Webhook deliveries through the platform (issue 14): deliveries/s and event-to-delivery time.

**Events.** The benchmark publishes them itself, as a genuine producer: the RabbitMQ login of
bench/audit.py's ``publisher_login``, which audit and webhooks both attribute to the gateway
(devstack gives both the same publishers, ``extra_publishers`` included), sends valid
``gateway.request.completed`` CloudEvents (audit's ``_events``) to the events exchange with
publisher confirms (audit's ``_Sender``), ids of the benchmark's own.

**Receiver.** One endpoint is registered through the gateway (``POST /api/v1/webhooks``,
``event_types`` that one routing key, ``max_in_flight`` ``MAX_IN_FLIGHT``) for a receiver on
127.0.0.2, which the webhooks service's allow-list lets in (``EXTRA_ENV``, set by run.py on the
whole benchmark platform). The receiver is a process of its own on uvloop (``python
bench/webhooks.py receive``): a bare asyncio protocol that answers 204 as soon as a request is
whole and records the monotonic time it was whole (CLOCK_MONOTONIC, the same clock in every
process of the machine), its ``webhook-id`` and the event id of its body.

1. **Throughput**: after ``WARMUP_EVENTS``, ``EVENTS`` events published at once, as fast as the
   broker confirms; deliveries/s is the events delivered over the time from the first publish
   to the last first arrival.
2. **Latency**: ``PACED_RATE`` events/s for ``PACED_SECONDS``, each timed from the moment it is
   published to its first arrival at the receiver: p50, p99, max.

Then, ``SETTLE_S`` later (past the first retry, so a retried delivery would show): every event
must have arrived once (a second request of one ``webhook-id`` is a duplicate, an event never
seen is lost); a sample of requests is verified with ``hypersdk_webhooks.core.signing.verify``
and the endpoint's secret; the audit log must hold one ``webhook.deliver`` entry per attempt
and each event's own entry, nothing quarantined; the webhooks service's log is read for what
it said during the phase. CPU per delivery, from ``/proc``, of the webhooks service, the audit
service and the receiver over the throughput run. The endpoint is deleted at the end.

Everything targets 127.0.0.1 and 127.0.0.2, is bounded in count and time, and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
SELF = str(Path(__file__).resolve())
sys.path.insert(0, str(ROOT / "tools"))

import asyncpg
import httpx
import uvloop

import audit
import audited
import devstack
from hypersdk_contracts.names import RoutingKey
from hypersdk_webhooks.core import signing

Log = Callable[[str], None]

EVENTS = int(os.environ.get("HYPERSDK_BENCH_WEBHOOK_EVENTS", "3000"))
WARMUP_EVENTS = 100
PACED_RATE = 20.0
PACED_SECONDS = float(os.environ.get("HYPERSDK_BENCH_SECONDS", "15"))
MAX_IN_FLIGHT = 16
TIMEOUT_SECONDS = 10.0
EVENT_TYPE = RoutingKey.REQUEST_COMPLETED.value
"""What audit's ``_events`` publish; the endpoint filters exactly this routing key."""
RECEIVER_HOST = "127.0.0.2"
EXTRA_ENV = {
    # Loopback is refused unless allow-listed: only the receiver's address.
    "HYPERSDK_WEBHOOKS_ALLOWED_NETWORKS": f'["{RECEIVER_HOST}/32"]',
    "HYPERSDK_WEBHOOKS_LOG_LEVEL": "WARNING",
}
"""The benchmark platform's webhooks settings (run.py); harmless to the other phases."""
DRAIN_LIMIT_S = 60.0 + EVENTS / 20
"""The throughput run's events all delivered within this, or the rest counts as lost."""
LATE_LIMIT_S = 60.0
"""After the last paced publish (and for the warm-up), the same."""
SETTLE_S = 8.0
"""After the runs, before the final count: past the first retry (5 s, +20 %)."""
AUDIT_LIMIT_S = 120.0
SIGNATURE_SAMPLES = 100
SAMPLE_EVERY = 37
PHASE_LIMIT_S = DRAIN_LIMIT_S + PACED_SECONDS + 2 * LATE_LIMIT_S + SETTLE_S + AUDIT_LIMIT_S + 180
"""The whole phase (run.py's ``bounded``); each wait inside is bounded too."""

assert EVENT_TYPE.split(".", 1)[0] == audit.PUBLISHER_SERVICE


def _stats_ms(samples_s: list[float]) -> dict[str, float]:
    ordered = sorted(samples_s)
    if not ordered:
        return {"count": 0}
    return {
        "count": len(ordered),
        "p50_ms": ordered[len(ordered) // 2] * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


# ---- the receiver (a process of its own) ---------------------------------------------------------

_RESPONSE = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
_KEPT_HEADERS = (signing.ID_HEADER, signing.TIMESTAMP_HEADER, signing.SIGNATURE_HEADER)
_MAX_REQUEST = 1 << 20


class _Requests:
    """What the receiver was sent: (monotonic, wall clock, webhook-id, event id) per request."""

    def __init__(self) -> None:
        self.rows: list[tuple[float, float, str, str]] = []
        self.first: dict[str, float] = {}
        """Event id -> first arrival."""
        self.samples: list[dict[str, Any]] = []
        self.seen: dict[str, int] = {}
        """Prefix (the id without its six digits, as audit's ``_events`` makes it) -> events."""
        self.arrived = asyncio.Event()

    def add(self, arrived: float, wall: float, headers: dict[str, str], body: bytes) -> None:
        try:
            event_id = str(json.loads(body)["id"])
        except (ValueError, KeyError, TypeError):
            event_id = ""
        webhook_id = headers.get(signing.ID_HEADER, "")
        index = len(self.rows)
        self.rows.append((arrived, wall, webhook_id, event_id))
        if event_id not in self.first:
            self.first[event_id] = arrived
            self.seen[event_id[:-6]] = self.seen.get(event_id[:-6], 0) + 1
            self.arrived.set()
        if len(self.samples) < SIGNATURE_SAMPLES and (index < 10 or index % SAMPLE_EVERY == 0):
            self.samples.append(
                {
                    "headers": {name: headers.get(name, "") for name in _KEPT_HEADERS},
                    "body": base64.b64encode(body).decode(),
                    "wall": wall,
                    "event_id": event_id,
                }
            )


class _Hook(asyncio.Protocol):
    """One connection (the service opens one per attempt): read one request, answer 204."""

    def __init__(self, requests: _Requests) -> None:
        self._requests = requests
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._answered = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._answered or self._transport is None:
            return
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_REQUEST:
                self._transport.close()
            return
        headers: dict[str, str] = {}
        for line in bytes(self._buffer[:end]).decode("latin-1").split("\r\n")[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self._buffer) < end + 4 + length:
            return
        arrived, wall = time.monotonic(), time.time()
        self._answered = True
        self._transport.write(_RESPONSE)
        self._transport.close()
        self._requests.add(arrived, wall, headers, bytes(self._buffer[end + 4 : end + 4 + length]))


async def _receive(host: str) -> None:
    """Serve on ``host``, an ephemeral port; driven by JSON lines on stdin."""

    def say(value: Any) -> None:
        sys.stdout.write(json.dumps(value) + "\n")
        sys.stdout.flush()

    requests = _Requests()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Hook(requests), host, 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    say({"port": port})

    async def wait(prefix: str, count: int, limit_s: float) -> int:
        deadline = time.monotonic() + limit_s
        while requests.seen.get(prefix, 0) < count and time.monotonic() < deadline:
            requests.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(requests.arrived.wait(), deadline - time.monotonic())
        return requests.seen.get(prefix, 0)

    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "wait":  # until ``count`` events of ``prefix`` arrived, or a limit
            say({"seen": await wait(command["prefix"], command["count"], command["limit_s"])})
        elif command["cmd"] == "report":
            say({"rows": requests.rows, "samples": requests.samples})
        else:
            break
    server.close()
    await server.wait_closed()


class _Receiver:
    """The parent's side of ``bench/webhooks.py receive``."""

    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @classmethod
    async def start(cls) -> _Receiver:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            SELF,
            "receive",
            "--host",
            RECEIVER_HOST,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=256 << 20,  # the report is one line
        )
        receiver = cls(process, 0)
        receiver.port = int((await receiver._line(limit_s=60))["port"])
        return receiver

    @property
    def url(self) -> str:
        return f"http://{RECEIVER_HOST}:{self.port}/hooks/bench"

    async def _line(self, *, limit_s: float) -> Any:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), limit_s)
        if not raw:
            raise RuntimeError("the receiver exited")
        return json.loads(raw)

    async def _ask(self, limit_s: float, command: dict[str, Any]) -> Any:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        await self.process.stdin.drain()
        return await self._line(limit_s=limit_s)

    async def wait(self, prefix: str, count: int, *, limit_s: float) -> int:
        """How many events of ``prefix`` arrived, once all ``count`` did or ``limit_s`` passed."""
        command = {"cmd": "wait", "prefix": prefix, "count": count, "limit_s": limit_s}
        reply = await self._ask(limit_s + 30, command)
        return int(reply["seen"])

    async def report(self) -> dict[str, Any]:
        """Every request so far and the samples kept."""
        return dict(await self._ask(60, {"cmd": "report"}))

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self._ask_quit()
                await asyncio.wait_for(self.process.wait(), 30)
            except (OSError, TimeoutError):
                self.process.kill()
                await self.process.wait()

    async def _ask_quit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b'{"cmd": "quit"}\n')
        await self.process.stdin.drain()


# ---- the runs ------------------------------------------------------------------------------------


async def _pids(
    config: devstack.StackConfig, conn: asyncpg.Connection, receiver: int
) -> dict[str, list[int]]:
    services = audited._children(devstack.running_pid(config) or -1)
    return {
        "webhooks": [pid for pid in services if "hypersdk_webhooks" in audited._cmdline(pid)],
        "audit": [pid for pid in services if "hypersdk_audit" in audited._cmdline(pid)],
        "receiver": [receiver],
        # These two serve the whole machine: theirs include other work on it.
        "postgresql": await audit._postgres_pids(conn, config.database),
        "rabbitmq": audited._named("beam.smp"),
    }


def _cpu(groups: dict[str, list[int]]) -> dict[str, float]:
    return {
        group: sum(cpu for pid in pids if (cpu := audited._cpu_seconds(pid)) is not None)
        for group, pids in groups.items()
    }


async def _burst(
    *,
    config: devstack.StackConfig,
    conn: asyncpg.Connection,
    sender: audit._Sender,
    receiver: _Receiver,
    prefix: str,
    count: int,
    limit_s: float,
) -> dict[str, Any]:
    """``count`` events published at once; when they were published and confirmed, CPU spent."""
    events = audit._events(prefix, count)
    groups = await _pids(config, conn, receiver.process.pid)
    cpu_before = _cpu(groups)
    started = time.monotonic()
    confirmed = await sender.publish(events)
    seen = await receiver.wait(prefix, count, limit_s=limit_s)
    waited = time.monotonic()
    cpu_after = _cpu(groups)
    return {
        "prefix": prefix,
        "events": count,
        "started": started,
        "confirmed": confirmed,
        "seen_at_wait": seen,
        "waited_s": waited - started,
        "cpu_s": {group: cpu_after[group] - cpu_before[group] for group in groups},
        "processes": {group: len(pids) for group, pids in groups.items()},
    }


async def _paced(
    sender: audit._Sender, receiver: _Receiver, prefix: str, rate: float, seconds: float
) -> dict[str, Any]:
    """``rate`` events/s for ``seconds``, each stamped as it is published."""
    events = audit._events(prefix, max(1, round(rate * seconds)))
    stamps: dict[str, float] = {}
    confirms: list[float] = []

    async def one(event_id: str, body: bytes) -> None:
        stamps[event_id] = time.monotonic()
        confirmed = await sender.publish([(event_id, body)])
        confirms.append(confirmed - stamps[event_id])

    tasks = []
    start = time.monotonic() + 0.1
    for index, (event_id, body) in enumerate(events):
        delay = start + index / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(event_id, body)))
    await asyncio.gather(*tasks)
    published_s = time.monotonic() - start
    seen = await receiver.wait(prefix, len(events), limit_s=LATE_LIMIT_S)
    return {
        "prefix": prefix,
        "events": len(events),
        "rate": rate,
        "seconds": seconds,
        "published_s": published_s,
        "stamps": stamps,
        "confirm": _stats_ms(confirms),
        "seen_at_wait": seen,
    }


def _arrivals(rows: list[list[Any]], prefix: str) -> dict[str, Any]:
    """First arrival per event of ``prefix``, duplicates by webhook-id."""
    first: dict[str, float] = {}
    per_webhook_id: dict[str, int] = {}
    ids_of: dict[str, set[str]] = {}
    for arrived, _, webhook_id, event_id in rows:
        if not event_id.startswith(prefix):
            continue
        first[event_id] = min(arrived, first.get(event_id, arrived))
        per_webhook_id[webhook_id] = per_webhook_id.get(webhook_id, 0) + 1
        ids_of.setdefault(event_id, set()).add(webhook_id)
    return {
        "first": first,
        "requests": sum(per_webhook_id.values()),
        "duplicates": sum(n - 1 for n in per_webhook_id.values()),
        "events_with_two_ids": sum(1 for ids in ids_of.values() if len(ids) > 1),
    }


def _verify_samples(samples: list[dict[str, Any]], root: str, secret: str) -> dict[str, Any]:
    checked, failures = 0, []
    for sample in samples:
        if not sample["event_id"].startswith(root):
            continue
        checked += 1
        try:
            signing.verify(
                headers=sample["headers"],
                body=base64.b64decode(sample["body"]),
                secret=secret,
                now=int(sample["wall"]),
            )
        except signing.SigningError as error:
            failures.append(error.code.value)
        body = json.loads(base64.b64decode(sample["body"]))
        if body.get("type") != "io.hypersdk." + EVENT_TYPE or "seal" in body:
            failures.append("unexpected_body")
    return {"checked": checked, "failed": len(failures), "failures": sorted(set(failures))}


async def _audit_counts(conn: asyncpg.Connection, endpoint_id: str, root: str) -> dict[str, int]:
    row = await conn.fetchrow(
        """
        SELECT
            (SELECT count(*) FROM audit.entries
              WHERE action = 'webhook.deliver' AND resource LIKE $1) AS attempts,
            (SELECT count(*) FROM audit.entries WHERE event_id LIKE $2) AS events,
            (SELECT count(*) FROM audit.quarantine) AS quarantined
        """,
        f"webhooks/{endpoint_id}/messages/%",
        f"{root}%",
    )
    assert row is not None
    return {key: int(row[key]) for key in ("attempts", "events", "quarantined")}


def _log_since(path: Path, offset: int) -> dict[str, Any]:
    """What the webhooks service logged from ``offset`` on: lines by level, the last warnings."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError as error:
        return {"unreadable": type(error).__name__}
    levels: dict[str, int] = {}
    notable: list[str] = []
    for line in text.splitlines():
        try:
            level = str(json.loads(line).get("level", "?"))
        except (ValueError, AttributeError):
            level = "unparsed"
        levels[level] = levels.get(level, 0) + 1
        if level != "INFO":
            notable.append(line[:400])
    return {"levels": levels, "tail": notable[-10:]}


def _log_offset(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


async def _register(client: httpx.AsyncClient, url: str) -> tuple[str, str]:
    """A new endpoint for ``url``: its id and signing secret."""
    response = await client.post(
        "/api/v1/webhooks",
        json={
            "url": url,
            "event_types": [EVENT_TYPE],
            "description": "bench/webhooks.py",
            "max_in_flight": MAX_IN_FLIGHT,
            "timeout_seconds": TIMEOUT_SECONDS,
        },
    )
    if response.status_code != 201:
        raise RuntimeError(
            f"registering the endpoint: {response.status_code} {response.text[:500]}"
        )
    issued = response.json()
    return str(issued["webhook"]["id"]), str(issued["secret"])


async def _endpoint_state(client: httpx.AsyncClient, endpoint_id: str) -> dict[str, Any]:
    endpoint = (await client.get(f"/api/v1/webhooks/{endpoint_id}")).json()
    dead = await client.get(f"/api/v1/webhooks/{endpoint_id}/dead-letters")
    state = {key: endpoint.get(key) for key in ("status", "consecutive_failures", "failing_since")}
    state["dead_letters"] = len(dead.json()) if dead.status_code == 200 else None
    return state


async def _audited(
    conn: asyncpg.Connection,
    endpoint_id: str,
    root: str,
    before: dict[str, int],
    *,
    published: int,
    requests: int,
) -> dict[str, int]:
    """Audit's entries of the phase, once it chained them all (or ``AUDIT_LIMIT_S`` passed)."""
    deadline = time.monotonic() + AUDIT_LIMIT_S
    while True:
        after = await _audit_counts(conn, endpoint_id, root)
        done = (
            after["attempts"] - before["attempts"] >= requests
            and after["events"] - before["events"] >= published
        )
        if done or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    return {
        "published": published,
        "requests": requests,
        "attempt_entries": after["attempts"] - before["attempts"],
        "event_entries": after["events"] - before["events"],
        "quarantined": after["quarantined"] - before["quarantined"],
    }


def _throughput(rows: list[list[Any]], burst: dict[str, Any]) -> dict[str, Any]:
    arrivals = _arrivals(rows, burst["prefix"])
    first = arrivals["first"]
    arrived = sorted(first.values())
    count = burst["events"]
    result: dict[str, Any] = {
        "events": count,
        "delivered": len(first),
        "lost": count - len(first),
        "duplicates": arrivals["duplicates"],
        "events_with_two_ids": arrivals["events_with_two_ids"],
        "publish_per_s": count / (burst["confirmed"] - burst["started"]),
        "cpu_s": burst["cpu_s"],
        "processes": burst["processes"],
    }
    if arrived:
        span = arrived[-1] - burst["started"]
        result.update(
            deliveries_per_s=len(first) / span,
            seconds=span,
            first_arrival_ms=(arrived[0] - burst["started"]) * 1000,
            steady_per_s=(len(arrived) - 1) / (arrived[-1] - arrived[0])
            if len(arrived) > 1
            else None,
            publish_to_arrival=_stats_ms([t - burst["started"] for t in arrived]),
            cpu_us_per_delivery={
                group: seconds / len(first) * 1e6 for group, seconds in burst["cpu_s"].items()
            },
            cores_busy={group: seconds / span for group, seconds in burst["cpu_s"].items()},
        )
    return result


def _latency(rows: list[list[Any]], paced: dict[str, Any]) -> dict[str, Any]:
    arrivals = _arrivals(rows, paced["prefix"])
    stamps: dict[str, float] = paced["stamps"]
    latencies = [t - stamps[event_id] for event_id, t in arrivals["first"].items()]
    return {
        "events": paced["events"],
        "rate": paced["rate"],
        "seconds": paced["seconds"],
        "published_s": paced["published_s"],
        "delivered": len(arrivals["first"]),
        "lost": paced["events"] - len(arrivals["first"]),
        "duplicates": arrivals["duplicates"],
        "events_with_two_ids": arrivals["events_with_two_ids"],
        "latency": _stats_ms(latencies),
        "confirm": paced["confirm"],
    }


async def _runs(
    *,
    config: devstack.StackConfig,
    conn: asyncpg.Connection,
    sender: audit._Sender,
    receiver: _Receiver,
    root: str,
    log: Log,
) -> dict[str, Any]:
    """Warm-up, throughput, latency, the settle."""
    log(f"  webhooks warm-up ({WARMUP_EVENTS} events)")
    runs: dict[str, Any] = {}
    runs["warmup"] = await _burst(
        config=config,
        conn=conn,
        sender=sender,
        receiver=receiver,
        prefix=root + "w",
        count=WARMUP_EVENTS,
        limit_s=LATE_LIMIT_S,
    )
    log(f"  webhooks throughput: {EVENTS} events at once, max_in_flight {MAX_IN_FLIGHT}")
    runs["burst"] = await _burst(
        config=config,
        conn=conn,
        sender=sender,
        receiver=receiver,
        prefix=root + "t",
        count=EVENTS,
        limit_s=DRAIN_LIMIT_S,
    )
    log(f"  webhooks latency: {PACED_RATE:g} events/s for {PACED_SECONDS:g} s")
    runs["paced"] = await _paced(sender, receiver, root + "l", PACED_RATE, PACED_SECONDS)
    await asyncio.sleep(SETTLE_S)
    return runs


async def measure(
    config: devstack.StackConfig, auth: dict[str, str], publisher: audit.Publisher, log: Log
) -> dict[str, Any]:
    """The figures of the webhooks section."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    log_path = config.log_dir / "webhooks.log"
    log_offset = _log_offset(log_path)
    root = f"whb-{secrets.token_hex(4)}-"
    receiver = await _Receiver.start()
    sender = audit._Sender(publisher)
    try:
        await sender.open()
        conn = await asyncpg.connect(config.database_url())
        try:
            async with httpx.AsyncClient(
                base_url=config.gateway_url, headers=auth, timeout=60
            ) as client:
                endpoint_id, secret = await _register(client, receiver.url)
                audit_before = await _audit_counts(conn, endpoint_id, root)
                try:
                    runs = await _runs(
                        config=config,
                        conn=conn,
                        sender=sender,
                        receiver=receiver,
                        root=root,
                        log=log,
                    )
                    endpoint = await _endpoint_state(client, endpoint_id)
                    # The deliveries of the gateway's own events of these calls, then all.
                    await asyncio.sleep(1.0)
                    report = await receiver.report()
                finally:
                    webhooks_log = _log_since(log_path, log_offset)
                    for line in webhooks_log.get("tail", []):
                        log(f"  webhooks.log: {line}")
                    deleted = await client.delete(f"/api/v1/webhooks/{endpoint_id}")
                    if deleted.status_code != 204:
                        log(f"  deleting the endpoint: {deleted.status_code} {deleted.text[:300]}")
            rows: list[list[Any]] = report["rows"]
            ours = sum(1 for row in rows if row[3].startswith(root))
            audited_entries = await _audited(
                conn,
                endpoint_id,
                root,
                audit_before,
                published=WARMUP_EVENTS + EVENTS + runs["paced"]["events"],
                requests=len(rows),
            )
        finally:
            await conn.close()
    finally:
        await sender.close()
        await receiver.stop()
    warm = _arrivals(rows, root + "w")
    return {
        "when": when,
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "max_in_flight": MAX_IN_FLIGHT,
        "warmup": {
            "events": WARMUP_EVENTS,
            "delivered": len(warm["first"]),
            "duplicates": warm["duplicates"],
            "seconds": runs["warmup"]["waited_s"],
        },
        "throughput": _throughput(rows, runs["burst"]),
        "latency": _latency(rows, runs["paced"]),
        "requests": {"ours": ours, "other": len(rows) - ours},
        "signatures": _verify_samples(report["samples"], root, secret),
        "endpoint": endpoint,
        "audit": audited_entries,
        "webhooks_log": webhooks_log,
    }


# ---- docs/benchmarks.md --------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def render(results: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md on webhook deliveries."""
    burst, paced = results["throughput"], results["latency"]
    sig, audit_counts, endpoint = results["signatures"], results["audit"], results["endpoint"]
    latency = paced["latency"]
    spread = burst.get("publish_to_arrival", {})
    levels = results["webhooks_log"].get("levels", {})
    said = ", ".join(f"{count} {level}" for level, count in sorted(levels.items())) or "nothing"
    cpu = burst.get("cpu_us_per_delivery", {})
    cores = burst.get("cores_busy", {})
    nan = float("nan")
    requests = results["requests"]
    lines = [
        "## Webhooks",
        "",
        "The benchmark publishes `gateway.request.completed` events itself, as a genuine",
        "producer (a RabbitMQ login of its own that audit and webhooks both attribute to the",
        "gateway), with publisher confirms. One endpoint, registered through the gateway for that",
        f"one routing key with `max_in_flight` {results['max_in_flight']}, points at a receiver "
        "on 127.0.0.2 (allow-listed",
        "for the run): a process of its own on uvloop that answers 204 as soon as a request is",
        "whole and records when. The webhooks service runs as shipped (one replica, `POLL_SECONDS`",
        "1, log level WARNING): one fresh connection per attempt, each attempt settled in",
        "PostgreSQL and told to audit as `webhooks.delivery.attempted`. After "
        f"{results['warmup']['events']} events of",
        f"warm-up, **throughput**: {burst['events']:,} events published at once, deliveries/s "
        "counted from the first",
        f"publish to the last arrival; **latency**: {paced['rate']:g} events/s for "
        f"{paced['seconds']:g} s, each timed from its",
        f"publish to its arrival. Everything is counted again {SETTLE_S:g} s later (past the "
        "first retry): a",
        "second request of one `webhook-id` is a duplicate, an event never received is lost.",
        "",
        "| run | events | delivered | duplicates | lost | deliveries/s | p50 | p99 | max |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| throughput ({burst['events']:,} at once; publish to arrival) | {burst['events']:,} | "
        f"{burst['delivered']:,} | {burst['duplicates']} | {burst['lost']} | "
        f"**{burst.get('deliveries_per_s', 0):.0f}** | {_ms(spread.get('p50_ms'))} | "
        f"{_ms(spread.get('p99_ms'))} | {_ms(spread.get('max_ms'))} |",
        f"| latency ({paced['rate']:g}/s for {paced['seconds']:g} s) | {paced['events']:,} | "
        f"{paced['delivered']:,} | {paced['duplicates']} | {paced['lost']} | - | "
        f"**{_ms(latency.get('p50_ms'))}** | **{_ms(latency.get('p99_ms'))}** | "
        f"{_ms(latency.get('max_ms'))} |",
        "",
        f"- Throughput: the broker confirmed the {burst['events']:,} events at "
        f"{burst['publish_per_s']:,.0f}/s; the first arrived after "
        f"{burst.get('first_arrival_ms', float('nan')):.0f} ms, the last after "
        f"{burst.get('seconds', float('nan')):.1f} s "
        f"(from the first to the last arrival {burst.get('steady_per_s') or 0:.0f}/s).",
        f"- CPU per delivery over the throughput run: the webhooks service "
        f"**{cpu.get('webhooks', nan):,.0f} µs** ({cores.get('webhooks', nan):.2f} of a core "
        f"busy), audit {cpu.get('audit', nan):,.0f} µs (the event's entry and the attempt's), "
        f"PostgreSQL {cpu.get('postgresql', nan):,.0f} µs, RabbitMQ "
        f"{cpu.get('rabbitmq', nan):,.0f} µs (these two serve the whole machine), the receiver "
        f"{cpu.get('receiver', nan):,.0f} µs.",
        f"- Latency: the broker's confirm took p50 {_ms(paced['confirm'].get('p50_ms'))}, "
        f"p99 {_ms(paced['confirm'].get('p99_ms'))} of it.",
        f"- Signatures: {sig['checked']} requests sampled, verified with "
        f"`hypersdk_webhooks.core.signing.verify` and the endpoint's secret: "
        f"{sig['checked'] - sig['failed']} valid.",
        f"- Audit: each delivered event costs two entries, its own and one `webhook.deliver` per "
        f"attempt: {audit_counts['event_entries']:,} of {audit_counts['published']:,} events and "
        f"{audit_counts['attempt_entries']:,} attempts chained for "
        f"{audit_counts['requests']:,} requests received ({requests['other']} of them the "
        "gateway's own events of the benchmark's API calls); "
        f"{audit_counts['quarantined']} quarantined.",
        f"- After the runs the endpoint was {endpoint.get('status')}, "
        f"{endpoint.get('consecutive_failures')} failures in a row, "
        f"{endpoint.get('dead_letters')} dead letters; the webhooks service logged {said} "
        "meanwhile.",
    ]
    return lines


# ---- the child process ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench/webhooks.py")
    commands = parser.add_subparsers(dest="command", required=True)
    receive = commands.add_parser("receive")
    receive.add_argument("--host", required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(_receive(args.host))


if __name__ == "__main__":
    main()
