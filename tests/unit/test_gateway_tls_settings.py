"""The gateway's TLS context as built from its settings (the live handshakes are in
tests/integration/test_gateway_tls.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.main import server_tls_context
from tests.pki import Issued, make_authority
from tests.unit.fake_backend import UNUSED_KEY


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Issued]:
    ca = make_authority(tmp_path_factory.mktemp("pki"), "gateway")
    return ca.cert_file, ca.issue("gateway", server=True)


def settings(server: tuple[Path, Issued], **overrides: object) -> GatewaySettings:
    _, issued = server
    return GatewaySettings(
        amqp_url="amqp://unused",
        signing_key_file=UNUSED_KEY,
        tls_cert_file=issued.cert_file,
        tls_key_file=issued.key_file,
        **overrides,
    )


def test_tls_1_2_is_the_floor_and_only_forward_secret_aead_suites_are_offered(
    server: tuple[Path, Issued],
) -> None:
    context = server_tls_context(settings(server))

    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.verify_mode is ssl.CERT_NONE  # no mutual TLS unless configured
    for cipher in context.get_ciphers():
        if cipher["protocol"] == "TLSv1.3":
            continue  # every TLS 1.3 suite is AEAD with ephemeral key exchange
        assert cipher["kea"] in {"kx-ecdhe", "kx-dhe"}, cipher["name"]
        assert cipher["aead"], cipher["name"]


def test_a_client_ca_turns_on_required_or_optional_client_certificates(
    server: tuple[Path, Issued],
) -> None:
    ca_file, _ = server

    required = server_tls_context(settings(server, tls_client_ca_file=ca_file))
    optional = server_tls_context(
        settings(server, tls_client_ca_file=ca_file, tls_client_cert_required=False)
    )

    assert required.verify_mode is ssl.CERT_REQUIRED
    assert optional.verify_mode is ssl.CERT_OPTIONAL
    assert [c["subject"] for c in required.get_ca_certs()] == [
        ((("commonName", "gateway test CA"),),)
    ]


def test_a_client_ca_without_a_server_certificate_is_refused(
    server: tuple[Path, Issued],
) -> None:
    ca_file, _ = server

    with pytest.raises(ValidationError, match="mutual TLS"):
        GatewaySettings(
            amqp_url="amqp://unused", signing_key_file=UNUSED_KEY, tls_client_ca_file=ca_file
        )
