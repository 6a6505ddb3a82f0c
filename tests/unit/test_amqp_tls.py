"""amqps for the services' RabbitMQ connections, with client certificates.

The local RabbitMQ has no TLS listener (and is not reconfigured for tests), so a TLS server in
the test stands in for it: it requires a client certificate from the test CA, records what it
saw of the client and the first bytes the client sends (the AMQP protocol header), and closes.
The broker under test is the real one from ``build_broker``.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from hypersdk_kit.bus import build_broker
from hypersdk_kit.settings import AmqpTls, ServiceSettings
from tests.pki import Authority, Issued, make_authority

AMQP_HEADER = b"AMQP\x00\x00\x09\x01"


@dataclass
class Pki:
    ca: Authority
    other_ca: Authority
    server: Issued
    client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_authority(directory, "bus")
    return Pki(
        ca=ca,
        other_ca=make_authority(directory, "other"),
        server=ca.issue("rabbitmq", server=True),
        client=ca.issue("hypersdk-gateway", server=False),
    )


@dataclass
class FakeTlsBroker:
    """A TLS listener requiring client certificates; what each client showed and sent."""

    host: str
    port: int = 0
    peers: list[dict[str, Any]] = field(default_factory=list)
    first_bytes: list[bytes] = field(default_factory=list)

    def url(self, host: str = "localhost") -> str:
        return f"amqps://svc:not-a-real-password@{host}:{self.port}/hypersdk"


StartFake = Callable[..., Awaitable[FakeTlsBroker]]


@pytest.fixture
async def start_fake(pki: Pki) -> AsyncIterator[StartFake]:
    servers: list[asyncio.Server] = []

    async def start(*, host: str = "127.0.0.1") -> FakeTlsBroker:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca.cert_file)
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_cert_chain(pki.server.cert_file, pki.server.key_file)
        fake = FakeTlsBroker(host=host)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            fake.peers.append(writer.get_extra_info("peercert"))
            try:
                fake.first_bytes.append(await asyncio.wait_for(reader.readexactly(8), 5))
            finally:
                writer.close()

        server = await asyncio.start_server(handle, host, 0, ssl=context)
        servers.append(server)
        fake.port = server.sockets[0].getsockname()[1]
        return fake

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def fake_broker(start_fake: StartFake) -> FakeTlsBroker:
    return await start_fake()


def client_tls(pki: Pki, *, ca: Authority | None = None) -> AmqpTls:
    return AmqpTls(
        ca_file=(ca or pki.ca).cert_file,
        cert_file=pki.client.cert_file,
        key_file=pki.client.key_file,
    )


async def connect(url: str, tls: AmqpTls | None) -> BaseException | None:
    """Start a real broker from build_broker against ``url``; the error it ended with."""
    broker = build_broker(url, service="gateway", tls=tls)
    try:
        await asyncio.wait_for(broker.start(), 10)
    except Exception as exc:  # the fake closes after the protocol header: always an error
        return exc
    finally:
        await broker.stop()
    return None


def chain_text(error: BaseException | None) -> str:
    parts = []
    while error is not None:
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " | ".join(parts)


# ---- the broker's TLS -------------------------------------------------------------------------


async def test_the_broker_speaks_amqp_over_tls_presenting_its_client_certificate(
    pki: Pki, fake_broker: FakeTlsBroker
) -> None:
    await connect(fake_broker.url(), client_tls(pki))

    (peer,) = fake_broker.peers
    assert dict(item[0] for item in peer["subject"])["commonName"] == "hypersdk-gateway"
    assert dict(item[0] for item in peer["issuer"])["commonName"] == "bus test CA"
    assert fake_broker.first_bytes == [AMQP_HEADER]


async def test_the_broker_refuses_a_server_certificate_from_another_ca(
    pki: Pki, fake_broker: FakeTlsBroker
) -> None:
    error = await connect(fake_broker.url(), client_tls(pki, ca=pki.other_ca))

    assert "CERTIFICATE_VERIFY_FAILED" in chain_text(error)
    assert fake_broker.first_bytes == []  # nothing was sent over an unverified channel


async def test_the_broker_checks_the_host_name(pki: Pki, start_fake: StartFake) -> None:
    # The server certificate names localhost and 127.0.0.1; 127.0.0.2 is loopback too.
    fake = await start_fake(host="127.0.0.2")

    error = await connect(fake.url(host="127.0.0.2"), client_tls(pki))

    assert "CERTIFICATE_VERIFY_FAILED" in chain_text(error)
    assert "127.0.0.2" in chain_text(error)
    assert fake.first_bytes == []


async def test_without_a_client_certificate_the_server_refuses(
    pki: Pki, fake_broker: FakeTlsBroker
) -> None:
    error = await connect(fake_broker.url(), AmqpTls(ca_file=pki.ca.cert_file))

    assert error is not None
    assert fake_broker.first_bytes == []


def test_the_context_verifies_the_ca_and_holds_tls_1_2_or_newer(pki: Pki) -> None:
    context = client_tls(pki).ssl_context()

    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "bus test CA"),),)]


def test_a_key_file_others_may_read_is_refused(pki: Pki, tmp_path: Path) -> None:
    loose = tmp_path / "client.key"
    loose.write_bytes(pki.client.key_file.read_bytes())
    loose.chmod(0o644)

    with pytest.raises(PermissionError, match="0600 or 0440"):
        AmqpTls(
            ca_file=pki.ca.cert_file, cert_file=pki.client.cert_file, key_file=loose
        ).ssl_context()


# ---- the settings -------------------------------------------------------------------------------


def test_settings_read_the_tls_files_from_the_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYPERSDK_TEST_AMQP_URL", "amqps://svc:pw@rabbitmq.example:5671/hypersdk")
    monkeypatch.setenv("HYPERSDK_TEST_AMQP_CA_FILE", str(pki.ca.cert_file))
    monkeypatch.setenv("HYPERSDK_TEST_AMQP_CERT_FILE", str(pki.client.cert_file))
    monkeypatch.setenv("HYPERSDK_TEST_AMQP_KEY_FILE", str(pki.client.key_file))

    class TestSettings(ServiceSettings):
        model_config = ServiceSettings.model_config | {"env_prefix": "HYPERSDK_TEST_"}

    assert TestSettings().amqp_tls == client_tls(pki)


def test_without_tls_files_there_is_no_client_tls() -> None:
    assert ServiceSettings(amqp_url="amqp://guest:guest@127.0.0.1/").amqp_tls is None


@pytest.mark.parametrize(
    ("url", "files"),
    [
        ("amqp://svc:pw@rabbitmq.example/", {"amqp_ca_file": "ca.crt"}),  # TLS files, plain URL
        ("amqps://svc:pw@rabbitmq.example/", {"amqp_cert_file": "c.crt"}),  # no key
        ("amqps://svc:pw@rabbitmq.example/", {"amqp_key_file": "c.key"}),  # no certificate
    ],
)
def test_inconsistent_tls_settings_are_refused(url: str, files: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ServiceSettings(amqp_url=url, **files)
