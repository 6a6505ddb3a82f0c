"""What a person sees in a terminal: hyperctl export --wait in a pseudo-terminal.

The platform's exporter converts slowly (qemu-img rate-limited, as in test_job_faults), so
an export of a 64 MiB disk takes seconds: the live bar shows percent, bytes, rate and time
left, then the final line. Ctrl-C sent through the terminal asks whether to cancel; "y"
cancels, and the platform's API then shows the job ``cancelled``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import ADMIN_PASSWORD, Stack
from .test_job_faults import _big_vm, job_stack

COLOURS = re.compile(r"\x1b\[[0-9;]*m|\x1b\][^\x07]*\x07")
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def shown(chunk: bytes) -> str:
    """Terminal output as text: colours dropped, cursor moves as line breaks."""
    return MOVES.sub("\n", COLOURS.sub("", chunk.decode(errors="replace")))


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with job_stack(tmp_path_factory.mktemp("hyperctl-tty")) as stack:
        yield stack


@dataclass
class Terminal:
    """hyperctl running in a pseudo-terminal of 120 columns, and everything it showed."""

    pid: int
    fd: int
    screen: str = ""
    raw: list[bytes] = field(default_factory=list)

    def read_until(self, pattern: str, seconds: float) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while True:
            match = re.search(pattern, self.screen)
            if match:
                return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{pattern!r} not seen within {seconds} s:\n{self.screen}")
            ready, _, _ = select.select([self.fd], [], [], min(remaining, 0.2))
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    raise AssertionError(
                        f"{pattern!r} never seen; the terminal closed:\n{self.screen}"
                    )
                self.raw.append(chunk)
                self.screen += shown(chunk)

    def type(self, text: bytes) -> None:
        os.write(self.fd, text)

    def exit_code(self, seconds: float = 30) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:  # keep reading so the child never blocks on a full terminal
                while select.select([self.fd], [], [], 0.05)[0]:
                    chunk = os.read(self.fd, 65536)
                    if not chunk:
                        break
                    self.screen += shown(chunk)
            except OSError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"hyperctl did not exit:\n{self.screen}")


def spawn(config_home: Path, server: str, *args: str) -> Terminal:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(config_home),
        "XDG_CONFIG_HOME": str(config_home),
        "HYPERSDK_SERVER": server,
        "TERM": "xterm-256color",
        "LANG": "C.UTF-8",
    }
    pid, fd = pty.fork()
    if pid == 0:  # the child: hyperctl, with the pty as its terminal
        os.execve(sys.executable, [sys.executable, "-m", "hypersdk_cli", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    return Terminal(pid=pid, fd=fd)


def _logged_in(stack: Stack, home: Path) -> None:
    terminal = spawn(home, stack.config.gateway_url, "login", "--username", "admin")
    terminal.read_until(r"Password: ?", 30)  # a prompt without echo
    terminal.type(ADMIN_PASSWORD.encode() + b"\r")
    terminal.read_until(r"Logged in to ", 30)
    assert terminal.exit_code() == 0
    assert ADMIN_PASSWORD not in terminal.screen  # not echoed


def test_the_export_progress_bar_as_a_person_sees_it(slow: Stack, tmp_path: Path) -> None:
    _big_vm(slow, "tty-01")
    _logged_in(slow, tmp_path)
    terminal = spawn(
        tmp_path,
        slow.config.gateway_url,
        "export",
        "demo-lab/tty-01",
        "--format",
        "qcow2",
        "--wait",
    )
    # A bar part-way: percent, bytes of the 64 MiB disk, a rate and the time left.
    bar = terminal.read_until(
        r"running .*?\b([1-9]\d?)%\s+(\d+\.\d) MiB/64\.0 MiB\s+(\d+\.\d) (?:KiB|MiB)/s\s+"
        r"ETA (\d+:\d\d)",
        60,
    )
    assert 0 < int(bar.group(1)) < 100
    assert float(bar.group(3)) > 0
    final = terminal.read_until(r"Job (\S+) succeeded: \d+ artifact\(s\), [\d.]+ \w+\.", 120)
    assert terminal.exit_code() == 0
    assert "Traceback" not in terminal.screen
    token = slow.api.login("admin", ADMIN_PASSWORD)
    status, job, _ = slow.api.call("GET", f"/api/v1/jobs/{final.group(1)}", token=token)
    assert status == 200
    assert job["status"] == "succeeded"


def test_ctrl_c_offers_to_cancel_and_yes_cancels_the_job(slow: Stack, tmp_path: Path) -> None:
    _big_vm(slow, "tty-02")
    _logged_in(slow, tmp_path)
    terminal = spawn(
        tmp_path,
        slow.config.gateway_url,
        "export",
        "demo-lab/tty-02",
        "--format",
        "qcow2",
        "--wait",
    )
    terminal.read_until(r"running .*?\b[1-9]\d?%", 60)
    terminal.type(b"\x03")  # Ctrl-C: the terminal sends SIGINT to hyperctl
    prompt = terminal.read_until(r"Cancel job (\S+)\? \[y/N\]: ", 15)
    job_id = prompt.group(1)
    terminal.type(b"y\r")
    terminal.read_until(rf"Job {re.escape(job_id)} cancelled\.", 20)
    assert terminal.exit_code() == 130
    assert "Traceback" not in terminal.screen

    token = slow.api.login("admin", ADMIN_PASSWORD)
    status, job, _ = slow.api.call("GET", f"/api/v1/jobs/{job_id}", token=token)
    assert status == 200
    assert job["status"] == "cancelled"
    assert job["cancel_requested_by"] is not None


def test_ctrl_c_then_no_leaves_the_job_running(slow: Stack, tmp_path: Path) -> None:
    _big_vm(slow, "tty-03")
    _logged_in(slow, tmp_path)
    terminal = spawn(
        tmp_path,
        slow.config.gateway_url,
        "export",
        "demo-lab/tty-03",
        "--format",
        "qcow2",
        "--wait",
    )
    terminal.read_until(r"running .*?\b[1-9]\d?%", 60)
    terminal.type(b"\x03")
    prompt = terminal.read_until(r"Cancel job (\S+)\? \[y/N\]: ", 15)
    terminal.type(b"\r")  # the default: no
    terminal.read_until(r"keeps running: follow it with 'hyperctl jobs watch", 15)
    assert terminal.exit_code() == 130

    token = slow.api.login("admin", ADMIN_PASSWORD)
    job_id = prompt.group(1)
    status, job, _ = slow.api.call("GET", f"/api/v1/jobs/{job_id}", token=token)
    assert status == 200
    assert job["status"] in {"running", "succeeded"}
    slow.api.call("POST", f"/api/v1/jobs/{job_id}/cancel", token=token)  # leave the stack idle
