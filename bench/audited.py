"""Audited calls per second and the CPU each costs, process by process (issue 9's targets).

A chain server of its own (bench/chain_server.py) is loaded at 100 clients, first on its bare
endpoint, then through the whole chain, where every 2xx answer is released only after its
``gateway.request.completed`` event was confirmed. The chain's figure counts a call as audited
once the audit service has chained it: after wrk stops, the run waits until the chain holds an
entry for every 2xx answer, and that wait is part of the time measured.

CPU is read from ``/proc/<pid>/stat`` (user plus system time) before and after, for every
process that takes part: the chain server, the platform's services, RabbitMQ, and PostgreSQL
(the backends of the benchmark's database and the server's background processes). wrk is
not counted. On a machine shared with other work, RabbitMQ's and PostgreSQL's figures include
that work too: run it on a quiet machine.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

import devstack

CLIENTS = 100
RATIO_TARGET = 0.3
CPU_TARGET_MS = 0.625
"""Half of the 1.25 ms an audited call cost before events travelled in batches."""
CHAIN_CATCH_UP_SECONDS = 120

_TICK = os.sysconf("SC_CLK_TCK")
Snapshot = dict[str, dict[int, float]]
"""CPU seconds so far of each process, by group."""


def _cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (all its threads); None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == parent:
            pids.append(int(entry.name))
    return pids


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _named(comm: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == comm:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Processes:
    """The processes of one measurement, grouped: gateway, audit, other services, broker, db."""

    def __init__(self, config: devstack.StackConfig, chain_server: int) -> None:
        self.config = config
        self.chain_server = chain_server

    async def groups(self) -> dict[str, list[int]]:
        services = _children(devstack.running_pid(self.config) or -1)
        audit = [pid for pid in services if "hypersdk_audit" in _cmdline(pid)]
        conn = await asyncpg.connect(self.config.database_url())
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 OR datname IS NULL",
                self.config.database,
            )
        finally:
            await conn.close()
        return {
            "gateway": [self.chain_server],
            "audit": audit,
            "other services": [pid for pid in services if pid not in audit],
            "rabbitmq": _named("beam.smp"),
            "postgresql": [int(row["pid"]) for row in rows],
        }

    async def snapshot(self) -> Snapshot:
        """CPU seconds so far of each process, by group."""
        return {
            group: {pid: cpu for pid in pids if (cpu := _cpu_seconds(pid)) is not None}
            for group, pids in (await self.groups()).items()
        }


def _spent(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
) -> dict[str, float]:
    """CPU seconds spent per group between two snapshots (a process new since counts whole)."""
    return {
        group: sum(cpu - before.get(group, {}).get(pid, 0.0) for pid, cpu in pids.items())
        for group, pids in after.items()
    }


async def _chain_head(config: devstack.StackConfig) -> int:
    conn = await asyncpg.connect(config.database_url())
    try:
        return int(await conn.fetchval("SELECT coalesce(max(sequence), 0) FROM audit.entries"))
    finally:
        await conn.close()


async def _api_calls_chained(conn: asyncpg.Connection, *, after_sequence: int) -> int:
    """``api.call`` entries chained after a position: a range of the primary key, not a scan
    of the whole chain (which, polled while the chain catches up, cost PostgreSQL more CPU
    than the entries being measured)."""
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM audit.entries WHERE sequence > $1 AND action = 'api.call'",
            after_sequence,
        )
    )


async def measure(
    config: devstack.StackConfig,
    *,
    chain_server: int,
    bare: Callable[[], dict[str, Any]],
    chain: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """Bare, then audited calls; rates, CPU per call by process group, and the targets."""
    processes = Processes(config, chain_server)
    before = await processes.snapshot()
    bare_row = await asyncio.to_thread(bare)
    after = await processes.snapshot()
    bare_row["cpu_ms_per_call"] = _spent(before, after)["gateway"] * 1000 / bare_row["requests"]

    head = await _chain_head(config)
    before = await processes.snapshot()
    started = time.monotonic()
    chain_row = await asyncio.to_thread(chain)
    loaded = time.monotonic() - started
    answered = chain_row["requests"] - chain_row["errors"]
    deadline = time.monotonic() + CHAIN_CATCH_UP_SECONDS
    conn = await asyncpg.connect(config.database_url())
    try:
        while (chained := await _api_calls_chained(conn, after_sequence=head)) < answered:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    elapsed = time.monotonic() - started
    spent = _spent(before, await processes.snapshot())
    chain_row.update(
        answered=answered,
        chained=chained,
        all_answered_chained=chained >= answered,
        catch_up_s=elapsed - loaded,
        audited_per_s=answered / elapsed,
        cpu_ms_per_call={group: cpu * 1000 / answered for group, cpu in spent.items()},
    )
    chain_row["cpu_ms_per_call_total"] = sum(chain_row["cpu_ms_per_call"].values())
    return {
        "clients": CLIENTS,
        "bare": bare_row,
        "chain": chain_row,
        "ratio": chain_row["audited_per_s"] / bare_row["per_s"],
    }


def render(audited: dict[str, Any]) -> list[str]:
    """The section of docs/benchmarks.md on audited calls."""
    bare, chain = audited["bare"], audited["chain"]
    cpu = chain["cpu_ms_per_call"]
    total = chain["cpu_ms_per_call_total"]
    ratio = audited["ratio"]
    return [
        "## Audited calls",
        "",
        f"A chain server of its own, {audited['clients']} clients, no pause, after a warm-up:",
        "the bare endpoint, then `GET /api/v1/bench/jobs` through the whole chain. Each 2xx",
        "answer of the chain was released only after its `gateway.request.completed` event",
        "was confirmed (events travel several to a message, decision 0031); a call counts as",
        "audited once the audit service chained it, so the time includes the wait, after wrk",
        "stopped, until the chain held an entry for every 2xx answer.",
        "",
        "| endpoint | 2xx answers | calls/s | p50 | p99 |",
        "|---|---|---|---|---|",
        f"| bare | {bare['requests'] - bare['errors']} | {bare['per_s']:.0f} | "
        f"{bare['p50_ms']:.2f} ms | {bare['p99_ms']:.2f} ms |",
        f"| chain, audited | {chain['answered']} | {chain['audited_per_s']:.0f} | "
        f"{chain['p50_ms']:.2f} ms | {chain['p99_ms']:.2f} ms |",
        "",
        f"- Every 2xx answer chained: **{'yes' if chain['all_answered_chained'] else 'no'}** "
        f"({chain['chained']} `api.call` entries for {chain['answered']} answers; the chain "
        f"caught up {chain['catch_up_s']:.2f} s after the load stopped).",
        f"- Audited calls against the bare endpoint: **{ratio:.2f}x, "
        f"{'met' if ratio >= RATIO_TARGET else 'not met'}** (target at least {RATIO_TARGET}x).",
        f"- CPU per audited call across all processes: **{total:.3f} ms, "
        f"{'met' if total <= CPU_TARGET_MS else 'not met'}** (target at most "
        f"{CPU_TARGET_MS} ms, half of the 1.25 ms before batches); the bare call "
        f"{bare['cpu_ms_per_call']:.3f} ms in the gateway process.",
        "",
        "| process | CPU per audited call |",
        "|---|---|",
        *(f"| {group} | {ms * 1000:.0f} µs |" for group, ms in cpu.items()),
        f"| all | {total * 1000:.0f} µs |",
        "",
        "CPU is user plus system time from `/proc/<pid>/stat` over the whole measurement",
        "(load and catch-up): the chain server, every platform service (audit apart),",
        "RabbitMQ's `beam.smp`, and PostgreSQL's backends of the benchmark's database plus its",
        "background processes; not wrk. RabbitMQ and PostgreSQL serve the whole machine, so",
        "their figures are only this benchmark's on an otherwise quiet machine.",
    ]
