"""Ports for a local stack come from below the ephemeral range, free and consecutive."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
import devstack


def test_ports_are_free_consecutive_and_never_ones_a_client_socket_could_hold() -> None:
    ephemeral_low, _ = devstack._ephemeral_ports()
    for _ in range(20):
        base = devstack.free_port(count=devstack.HEALTH_PORTS)
        assert base >= 10000
        assert base + devstack.HEALTH_PORTS <= ephemeral_low
        for port in range(base, base + devstack.HEALTH_PORTS):
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_handed_out() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not devstack._bindable(port)
