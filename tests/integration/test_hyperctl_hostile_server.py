"""hyperctl, the real process, against servers that misbehave on purpose.

A socket server on loopback plays the platform: a body larger than any answer should be,
one that trickles in byte by byte, a body that is not JSON, an error envelope carrying
terminal escapes, nobody listening, and TLS with the wrong certificate (the pin is checked
in the handshake: the server must receive no request, so no credential, at all).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.pki import make_authority

API_KEY = "hsk_test_" + "k" * 40


@dataclass
class Server:
    """What the fake platform received."""

    port: int
    received: list[bytes] = field(default_factory=list)


Behaviour = Callable[[socket.socket], None]


@contextmanager
def serving(behaviour: Behaviour, *, tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    listener = socket.create_server(("127.0.0.1", 0))
    server = Server(port=listener.getsockname()[1])
    stop = threading.Event()

    def run() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                if tls is not None:
                    conn = tls.wrap_socket(conn, server_side=True)
                conn.settimeout(5)
                request = conn.recv(65536)
                server.received.append(request)
                if request:
                    behaviour(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def _answer(status: str, body: bytes, content_type: str = "application/json") -> Behaviour:
    def behaviour(conn: socket.socket) -> None:
        head = (
            f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        conn.sendall(head.encode() + body)

    return behaviour


def hyperctl(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "HYPERSDK_API_KEY": API_KEY,
    }
    return subprocess.run(
        [sys.executable, "-m", "hypersdk_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _one_clean_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    assert API_KEY not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_huge_body_is_refused(tmp_path: Path) -> None:
    def huge(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n["
        )
        chunk = b'"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",' * 32768  # 1 MiB
        for _ in range(40):
            conn.sendall(chunk)

    with serving(huge) as server:
        result = hyperctl(tmp_path, "--server", f"http://127.0.0.1:{server.port}", "vms", "list")
    assert result.returncode == 1
    assert "larger than 32 MiB" in _one_clean_line(result)


def test_a_trickling_server_is_cut_off_at_the_timeout(tmp_path: Path) -> None:
    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        for _ in range(60):
            conn.sendall(b" ")
            time.sleep(0.25)

    with serving(trickle) as server:
        began = time.monotonic()
        result = hyperctl(
            tmp_path, "--server", f"http://127.0.0.1:{server.port}", "--timeout", "2", "vms", "list"
        )
        took = time.monotonic() - began
    assert result.returncode == 7
    assert "error: timeout:" in _one_clean_line(result)
    assert took < 10


def test_a_body_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    with serving(_answer("200 OK", b"<html>surprise</html>", "text/html")) as server:
        result = hyperctl(tmp_path, "--server", f"http://127.0.0.1:{server.port}", "vms", "list")
    assert result.returncode == 1
    assert "with a body that is not JSON" in _one_clean_line(result)


def test_an_error_envelope_cannot_drive_the_terminal(tmp_path: Path) -> None:
    body = json.dumps(
        {
            "error": {
                "code": "forbidden\x1b[2J",
                "message": "No.\x1b]0;owned\x07\r\nerror: fake second line \u202e",
                "request_id": "r-1\x1b[0m",
            }
        }
    ).encode()
    with serving(_answer("403 Forbidden", body)) as server:
        result = hyperctl(tmp_path, "--server", f"http://127.0.0.1:{server.port}", "vms", "list")
    assert result.returncode == 4
    line = _one_clean_line(result)
    assert "\x1b" not in line
    assert "\u202e" not in line
    assert "\x07" not in line
    assert line.startswith("error: forbidden\\u001b[2J: No.")
    assert "(request r-1\\u001b[0m)" in line


def test_nobody_listening_is_unavailable(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = hyperctl(tmp_path, "--server", f"http://127.0.0.1:{port}", "vms", "list")
    assert result.returncode == 7
    assert _one_clean_line(result).startswith("error: connection_failed: Cannot reach")


# ---- TLS ---------------------------------------------------------------------------------------


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path, str]:
    """A server context, the CA bundle that signs its certificate, the cert's fingerprint."""
    authority = make_authority(tmp_path / "pki", "hyperctl")
    issued = authority.issue("localhost", server=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.cert_file, issued.key_file)
    der = x509.load_pem_x509_certificate(issued.cert_file.read_bytes()).public_bytes(
        serialization.Encoding.DER
    )
    return context, authority.cert_file, hashlib.sha256(der).hexdigest()


OK = _answer("200 OK", b'{"username": "ci", "roles": []}')


def test_a_pinned_certificate_is_accepted(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path, str]
) -> None:
    context, _, pin = tls
    with serving(OK, tls=context) as server:
        result = hyperctl(
            tmp_path, "--server", f"https://127.0.0.1:{server.port}",
            "--pin-sha256", ":".join(pin[i : i + 2] for i in range(0, 64, 2)).upper(),
            "whoami", "-o", "json",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["username"] == "ci"
    assert f"x-api-key: {API_KEY}".encode() in server.received[0].lower()


def test_another_certificate_fails_the_handshake_before_any_credential_is_sent(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path, str]
) -> None:
    context, _, _ = tls
    with serving(OK, tls=context) as server:
        result = hyperctl(
            tmp_path, "--server", f"https://127.0.0.1:{server.port}",
            "--pin-sha256", "00" * 32, "whoami",
        )  # fmt: skip
        time.sleep(0.3)
    assert result.returncode == 1
    line = _one_clean_line(result)
    assert line.startswith("error: tls_failed:")
    assert "is not the pinned one" in line
    assert all(request == b"" for request in server.received)  # not one byte of the request


def test_a_ca_bundle_verifies_the_server_and_the_system_cas_do_not(
    tmp_path: Path, tls: tuple[ssl.SSLContext, Path, str]
) -> None:
    context, ca_file, _ = tls
    with serving(OK, tls=context) as server:
        url = f"https://localhost:{server.port}"
        trusted = hyperctl(tmp_path, "--server", url, "--ca-bundle", str(ca_file), "whoami")
        untrusted = hyperctl(tmp_path, "--server", url, "whoami")
    assert trusted.returncode == 0, trusted.stderr
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in _one_clean_line(untrusted)
    assert sum(1 for request in server.received if request) == 1  # the trusted call only
