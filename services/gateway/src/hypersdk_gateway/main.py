"""Run the gateway: uvicorn serving the chain, HTTPS with TLS 1.2 or newer when configured."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import uvicorn

from hypersdk_gateway.adapters.inbound.connections import ConnectionLimits, limited_h11
from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.inject import prepare_gateway

# TLS 1.2 suites with forward secrecy and AEAD only; TLS 1.3 suites are all of that kind.
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


def server_tls_context(settings: GatewaySettings) -> ssl.SSLContext:
    """The gateway's TLS context: TLS 1.2 or newer, modern ciphers, optional mutual TLS.

    With ``tls_client_ca_file`` client certificates are verified against that CA; they are
    required unless ``tls_client_cert_required`` is false (then a certificate that is sent must
    still verify).
    """
    assert settings.tls_cert_file is not None, "TLS is configured only with a certificate"
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(MODERN_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        context.load_verify_locations(cafile=settings.tls_client_ca_file)
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.tls_client_cert_required else ssl.CERT_OPTIONAL
        )
    return context


def _tls_factory(
    settings: GatewaySettings,
) -> Callable[[uvicorn.Config, Callable[[], ssl.SSLContext]], ssl.SSLContext] | None:
    if settings.tls_cert_file is None:
        return None
    return lambda _config, _default: server_tls_context(settings)


async def serve(settings: GatewaySettings) -> None:
    """Serve HTTP(S) until SIGTERM."""
    async with prepare_gateway(settings) as (app, _):
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ssl_context_factory=_tls_factory(settings),
            # Headers due within a deadline, connections capped per client address.
            http=limited_h11(
                ConnectionLimits(
                    header_timeout_seconds=settings.header_timeout_seconds,
                    per_address=settings.max_connections_per_address,
                    trusted_proxies=settings.trusted_proxies,
                )
            ),
        )
        await uvicorn.Server(config).serve()
