"""TLS to vCenter/ESXi: verified by default, a CA file, a pinned SHA-256 thumbprint, or insecure.

The same context serves the SOAP API (pyvmomi) and the datastore HTTP interface, so both are
held to the same trust. A pinned thumbprint is checked inside the TLS handshake (before a
single request byte, the session cookie included, leaves this host) on every connection;
pyvmomi's own ``thumbprint`` argument is not used because its fallback switches the shared
context to ``CERT_NONE`` after the first mismatch-free connection.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import ssl

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ThumbprintMismatchError(ssl.SSLCertVerificationError):
    """The server's certificate is not the pinned one."""


def normalise_thumbprint(value: str) -> str:
    """``value`` as 64 lowercase hex digits (colons allowed), or ValueError."""
    digits = value.replace(":", "").strip().lower()
    if not _SHA256_HEX.match(digits):
        raise ValueError("a SHA-256 thumbprint is 64 hex digits (colons allowed)")
    return digits


class _PinnedSocket(ssl.SSLSocket):
    """Checks the peer certificate's SHA-256 right after the handshake."""

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        pin: str | None = getattr(self.context, "pin", None)
        der = self.getpeercert(binary_form=True)
        if not pin or der is None:
            raise ThumbprintMismatchError("no certificate to compare with the pinned thumbprint")
        if not hmac.compare_digest(hashlib.sha256(der).hexdigest(), pin):
            raise ThumbprintMismatchError("certificate does not match the pinned thumbprint")


class PinnedContext(ssl.SSLContext):
    """A client context that trusts exactly one certificate, by its SHA-256 thumbprint."""

    pin: str = ""


def pinned_context(thumbprint: str) -> PinnedContext:
    """A context whose sockets accept only the certificate with this thumbprint."""
    context = PinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.pin = normalise_thumbprint(thumbprint)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the chain is replaced by the pin, checked per socket
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _PinnedSocket
    return context


def client_context(
    *, ca_file: str | None, thumbprint: str | None, insecure: bool
) -> ssl.SSLContext:
    """The context for one provider's settings (which :func:`validate` already checked)."""
    if thumbprint is not None:
        return pinned_context(thumbprint)
    if insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
