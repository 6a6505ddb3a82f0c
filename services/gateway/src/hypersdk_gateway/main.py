"""Run the gateway: uvicorn serving the chain, HTTPS with TLS 1.2 or newer when configured."""

from __future__ import annotations

import ssl

import uvicorn

from hypersdk_gateway.config import GatewaySettings
from hypersdk_gateway.inject import prepare_gateway

MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"


class _Config(uvicorn.Config):
    """uvicorn's config with a TLS floor of 1.2."""

    def load(self) -> None:
        super().load()
        if self.ssl is not None:
            self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2


async def serve(settings: GatewaySettings) -> None:
    """Serve HTTP(S) until SIGTERM."""
    async with prepare_gateway(settings) as (app, _):
        tls = settings.tls_cert_file is not None
        config = _Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=False,
            proxy_headers=False,
            server_header=False,
            ssl_certfile=str(settings.tls_cert_file) if tls else None,
            ssl_keyfile=str(settings.tls_key_file) if tls else None,
            ssl_ciphers=MODERN_CIPHERS,
        )
        await uvicorn.Server(config).serve()
