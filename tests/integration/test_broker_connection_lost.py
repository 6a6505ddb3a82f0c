"""A broker connection closed under its user fails what waits on it at once, never as a 500.

RabbitMQ closes the connection (``rabbitmqctl close_connection``), as a broker restart or a
network cut would: questions waiting for their answers fail with ``upstream_unavailable`` (503
with Retry-After through the gateway) at once instead of after the 10 s timeout, and aio-pika
reconnects so later calls work again.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from faststream.rabbit import RabbitBroker, RabbitQueue

from hypersdk_contracts.envelope import RequestContext
from hypersdk_contracts.errors import ErrorCode, ServiceError
from hypersdk_contracts.names import RpcQueue
from hypersdk_contracts.rpc import VerifyRequest
from hypersdk_kit.bus import RpcClient

from .conftest import ADMIN_PASSWORD, Stack

AMQP_PORT = 5672


def _ss(*args: str) -> list[str]:
    out = subprocess.run(["ss", "-Htnp", *args], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def _pid_listening_on(port: int) -> int:
    for line in _ss("-l", f"sport = :{port}"):
        found = re.search(r"pid=(\d+)", line)
        if found:
            return int(found.group(1))
    raise AssertionError(f"nothing listens on {port}")


def amqp_ports_of(pid: int) -> set[str]:
    """Local ports of the connections process ``pid`` holds to RabbitMQ."""
    return {
        line.split()[3].rsplit(":", 1)[1]
        for line in _ss(f"dport = :{AMQP_PORT}")
        if f"pid={pid}," in line
    }


def close_amqp_connections_of(pid: int, vhost: str) -> int:
    """Make RabbitMQ close every connection of process ``pid`` on ``vhost``; how many it closed."""
    ports = amqp_ports_of(pid)
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "list_connections",
            "pid",
            "peer_port",
            "vhost",
            "-q",
            "--no-table-headers",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    closed = 0
    for line in listed:
        connection, peer_port, on_vhost = line.split("\t")
        if peer_port in ports and on_vhost == vhost:
            subprocess.run(
                ["rabbitmqctl", "close_connection", connection, "closed by a test"],
                capture_output=True,
                check=True,
            )
            closed += 1
    return closed


async def test_a_question_waiting_for_its_answer_fails_at_once_when_the_connection_closes(
    stack: Stack, broker: RabbitBroker
) -> None:
    silent = f"edge-test-silent-{uuid.uuid4().hex[:8]}"  # a queue nobody answers on
    await broker.declare_queue(RabbitQueue(silent, auto_delete=True))
    client = RpcClient(broker, timeout_seconds=10)
    question = VerifyRequest(context=RequestContext(request_id="connection-lost-1"))
    waiting = asyncio.create_task(client.call(silent, question))
    await asyncio.sleep(0.3)

    started = time.monotonic()
    closed = await asyncio.to_thread(
        close_amqp_connections_of, os.getpid(), stack.config.amqp_vhost
    )
    with pytest.raises(ServiceError) as failed:
        await asyncio.wait_for(waiting, timeout=8)

    assert closed == 1
    assert time.monotonic() - started < 5  # rabbitmqctl itself takes a second or two
    assert failed.value.code is ErrorCode.UPSTREAM_UNAVAILABLE
    assert failed.value.retry_after_seconds == 1
    # aio-pika reconnects (after its 5 s interval); questions are answered again (audit
    # refuses one without a grant). Until then each question is refused at once.
    deadline = time.monotonic() + 30
    while True:
        with pytest.raises(ServiceError) as answered:
            await client.call(RpcQueue.AUDIT_VERIFY, question)
        if answered.value.code is not ErrorCode.UPSTREAM_UNAVAILABLE:
            break
        assert time.monotonic() < deadline, "no answer after the reconnection"
        await asyncio.sleep(0.2)
    assert answered.value.code is ErrorCode.FORBIDDEN


def raw_call(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Status and headers of a GET, whatever its body (uvicorn's own 500 is plain text)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, {k.lower(): v for k, v in error.headers.items()}


def test_calls_in_flight_when_the_gateway_loses_the_broker_get_2xx_or_a_prompt_503(
    stack: Stack,
) -> None:
    token = stack.api.login("admin", ADMIN_PASSWORD)
    gateway = _pid_listening_on(stack.config.gateway_port)
    answers: list[tuple[str, int, dict[str, str], float]] = []
    stop = time.monotonic() + 6

    def caller(worker: int) -> None:
        sequence = 0
        while time.monotonic() < stop:
            sequence += 1
            request_id = f"conn-lost-{worker}-{sequence}-{uuid.uuid4().hex[:6]}"
            started = time.monotonic()
            status, headers = raw_call(
                f"{stack.api.base}/api/v1/users",
                {"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
            )
            answers.append((request_id, status, headers, time.monotonic() - started))

    before = amqp_ports_of(gateway)
    with ThreadPoolExecutor(max_workers=8) as pool:
        callers = [pool.submit(caller, worker) for worker in range(8)]
        time.sleep(1.5)
        closed = close_amqp_connections_of(gateway, stack.config.amqp_vhost)
        for done in callers:
            done.result()

    assert closed >= 1
    assert amqp_ports_of(gateway).isdisjoint(before)  # it lost its connection and made anew
    statuses = {status for _, status, _, _ in answers}
    assert statuses <= {200, 503}, statuses
    slowest = max(seconds for *_, seconds in answers)
    assert slowest < 5, f"a call waited {slowest:.1f} s"
    assert all(headers.get("retry-after") for _, s, headers, _ in answers if s == 503)
    # A 200 was released only once its event was confirmed: each is in the audit chain.
    answered = [request_id for request_id, status, _, _ in answers if status == 200]
    assert answered

    def unaudited() -> set[str]:
        rows = stack.db(
            "SELECT request_id FROM audit.entries WHERE action = 'api.call' "
            "AND request_id = ANY($1::text[])",
            answered,
        )
        return set(answered) - {row["request_id"] for row in rows}

    deadline = time.monotonic() + 30
    while missing := unaudited():
        assert time.monotonic() < deadline, f"{len(missing)} calls answered 200, not audited"
        time.sleep(0.2)
    # aio-pika reconnects after its 5 s interval; then calls succeed again.
    deadline = time.monotonic() + 30
    while (
        raw_call(f"{stack.api.base}/api/v1/users", {"Authorization": f"Bearer {token}"})[0] != 200
    ):
        assert time.monotonic() < deadline, "the gateway did not reconnect"
        time.sleep(0.2)
