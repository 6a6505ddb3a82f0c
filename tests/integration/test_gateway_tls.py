"""HTTPS on a real gateway process: TLS 1.2 floor, HSTS, and mutual TLS.

Each scenario starts ``python -m hypersdk_gateway`` with the session stack's environment (its
RabbitMQ vhost) plus TLS settings and a port of its own, with certificates made in tmp_path by
tests/pki.py, and stops it afterwards.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.pki import Authority, Issued, make_authority

from .conftest import Stack, free_port


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("gateway-pki")
    ca = make_authority(directory, "hypersdk")
    other = make_authority(directory, "other")
    return Pki(
        ca=ca,
        other_ca=other,
        server=ca.issue("gateway", server=True),
        client=ca.issue("provider-daemon", server=False),
        stranger=other.issue("provider-daemon", server=False),
    )


@dataclass(frozen=True)
class Gateway:
    port: int
    log: Path


Start = Callable[..., Gateway]


@pytest.fixture(scope="module")
def start_gateway(
    stack: Stack, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Start]:
    processes: list[subprocess.Popen[bytes]] = []
    log_dir = tmp_path_factory.mktemp("gateway-tls-logs")

    def start(**settings: str) -> Gateway:
        port = free_port()
        env = stack.config.service_env()
        env.update(
            {
                "HYPERSDK_GATEWAY_PORT": str(port),
                "HYPERSDK_GATEWAY_TLS_CERT_FILE": str(pki.server.cert_file),
                "HYPERSDK_GATEWAY_TLS_KEY_FILE": str(pki.server.key_file),
                **{f"HYPERSDK_GATEWAY_{k.upper()}": v for k, v in settings.items()},
            }
        )
        log = log_dir / f"gateway-{port}.log"
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        process = subprocess.Popen(
            [sys.executable, "-m", "hypersdk_gateway"],
            env=env,
            stdout=fd,
            stderr=fd,
            stdin=subprocess.DEVNULL,
        )
        os.close(fd)
        processes.append(process)
        gateway = Gateway(port=port, log=log)
        _wait_listening(gateway, process)
        return gateway

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(gateway: Gateway, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the gateway exited: {gateway.log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", gateway.port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"the gateway did not listen: {gateway.log.read_text()}")


def client_context(
    pki: Pki,
    *,
    minimum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
    certificate: Issued | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca.cert_file)
    context.minimum_version = minimum
    context.maximum_version = maximum
    if certificate is not None:
        context.load_cert_chain(certificate.cert_file, certificate.key_file)
    return context


@dataclass(frozen=True)
class Answer:
    version: str | None
    status: int
    headers: dict[str, str]


def https_get(gateway: Gateway, context: ssl.SSLContext, path: str = "/healthz") -> Answer:
    """One GET over a fresh TLS connection; raises if the handshake or the exchange fails."""
    connection = http.client.HTTPSConnection("localhost", gateway.port, context=context, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        assert connection.sock is not None
        version = connection.sock.version()  # type: ignore[attr-defined]
        headers = {k.lower(): v for k, v in response.getheaders()}
        return Answer(version=version, status=response.status, headers=headers)
    finally:
        connection.close()


# The ways a refused TLS client sees its refusal: a failed handshake (SSLError), or, under TLS
# 1.3, where the server checks the client certificate after the client's handshake is done, an
# alert or a closed connection on the first read.
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
REFUSED = (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected)


# ---- TLS versions and HSTS --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_gateway(start_gateway: Start) -> Gateway:
    return start_gateway()


@pytest.mark.parametrize(
    ("version", "name"),
    [(ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")],
    ids=["tls1.2", "tls1.3"],
)
def test_tls_1_2_and_1_3_clients_connect(
    tls_gateway: Gateway, pki: Pki, version: ssl.TLSVersion, name: str
) -> None:
    answer = https_get(tls_gateway, client_context(pki, minimum=version, maximum=version))

    assert answer.status == 200
    assert answer.version == name


def test_a_tls_1_2_client_gets_a_modern_cipher(tls_gateway: Gateway, pki: Pki) -> None:
    context = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
    with (
        socket.create_connection(("127.0.0.1", tls_gateway.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        cipher = sock.cipher()

    assert cipher is not None
    name, protocol, _bits = cipher
    assert protocol == "TLSv1.2"
    assert name.startswith(("ECDHE-", "DHE-"))  # forward secrecy
    assert "GCM" in name or "CHACHA20" in name  # AEAD


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_a_tls_1_1_client_is_refused(tls_gateway: Gateway, pki: Pki) -> None:
    def legacy_client(maximum: ssl.TLSVersion) -> ssl.SSLContext:
        context = client_context(pki, minimum=ssl.TLSVersion.TLSv1, maximum=maximum)
        # OpenSSL 3 will not even offer TLS 1.0/1.1 at its default security level; level 0
        # lets this client offer TLS 1.1, so that the refusal comes from the gateway's floor.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context

    with pytest.raises(ssl.SSLError) as refused:
        https_get(tls_gateway, legacy_client(ssl.TLSVersion.TLSv1_1))
    control = https_get(tls_gateway, legacy_client(ssl.TLSVersion.TLSv1_2))

    # The gateway refuses the TLS 1.1 hello: a protocol_version alert, or (asyncio's TLS
    # transport drops a failed handshake without flushing the alert) the connection closed
    # mid-handshake. Had this machine's OpenSSL been unable to offer TLS 1.1 at all, the
    # client would fail first with NO_PROTOCOLS_AVAILABLE: the handshake still fails.
    assert refused.value.reason in {
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNEXPECTED_EOF_WHILE_READING",
        "NO_PROTOCOLS_AVAILABLE",
    }, refused.value
    # The same client allowed TLS 1.2 gets through: the version alone made the difference.
    assert control.status == 200
    assert control.version == "TLSv1.2"


def test_hsts_over_https(tls_gateway: Gateway, pki: Pki) -> None:
    answer = https_get(tls_gateway, client_context(pki), "/api/v1/openapi.json")

    assert answer.status == 200
    assert answer.headers["strict-transport-security"].startswith("max-age=")
    assert int(answer.headers["strict-transport-security"].split("=")[1].split(";")[0]) >= 31536000
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_plain_http_to_the_https_port_gets_no_answer(tls_gateway: Gateway) -> None:
    def plain_get() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", tls_gateway.port, timeout=10)
        try:
            connection.request("GET", "/healthz")
            return connection.getresponse().status
        finally:
            connection.close()

    with pytest.raises((http.client.HTTPException, ConnectionError)):
        plain_get()


# ---- mutual TLS ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_gateway(start_gateway: Start, pki: Pki) -> Gateway:
    return start_gateway(tls_client_ca_file=str(pki.ca.cert_file))


@pytest.fixture(scope="module")
def optional_mtls_gateway(start_gateway: Start, pki: Pki) -> Gateway:
    return start_gateway(tls_client_ca_file=str(pki.ca.cert_file), tls_client_cert_required="false")


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
def test_mtls_accepts_a_client_certificate_from_the_ca(
    mtls_gateway: Gateway, pki: Pki, version: ssl.TLSVersion
) -> None:
    context = client_context(pki, minimum=version, maximum=version, certificate=pki.client)

    answer = https_get(mtls_gateway, context)

    assert answer.status == 200


@pytest.mark.parametrize("version", VERSIONS, ids=["tls1.2", "tls1.3"])
@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate"])
def test_mtls_refuses_a_client_without_a_certificate_from_the_ca(
    mtls_gateway: Gateway, pki: Pki, version: ssl.TLSVersion, who: str
) -> None:
    certificate = None if who == "no certificate" else pki.stranger
    context = client_context(pki, minimum=version, maximum=version, certificate=certificate)

    with pytest.raises(REFUSED):
        https_get(mtls_gateway, context)


def test_optional_mtls_admits_no_certificate_but_refuses_a_bad_one(
    optional_mtls_gateway: Gateway, pki: Pki
) -> None:
    without = https_get(optional_mtls_gateway, client_context(pki))
    good = https_get(optional_mtls_gateway, client_context(pki, certificate=pki.client))

    assert without.status == 200
    assert good.status == 200
    with pytest.raises(REFUSED):
        https_get(optional_mtls_gateway, client_context(pki, certificate=pki.stranger))
