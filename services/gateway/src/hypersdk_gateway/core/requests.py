"""Rules about incoming requests that do not depend on HTTP machinery."""

from __future__ import annotations

import ipaddress
import re
import uuid

from hypersdk_contracts.envelope import TRACEPARENT_PATTERN, child_traceparent

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,128}$")


def accept_request_id(inbound: str | None) -> str:
    """Keep a well-formed inbound request ID; otherwise generate one."""
    if inbound and _REQUEST_ID.fullmatch(inbound):
        return inbound
    return uuid.uuid4().hex


def accept_traceparent(inbound: str | None) -> str:
    """Continue a well-formed inbound W3C trace (a new span of it), or start a new trace."""
    if inbound:
        candidate = inbound.strip().lower()
        if re.fullmatch(TRACEPARENT_PATTERN, candidate):
            trace_id, parent_id = candidate.split("-")[1:3]
            if trace_id != "0" * 32 and parent_id != "0" * 16:
                return child_traceparent(candidate)
    return child_traceparent(None)


def client_address(peer: str | None, forwarded_for: str | None, trusted: list[str]) -> str:
    """The client's address: the socket peer, or X-Forwarded-For if the peer is a trusted proxy.

    With a chain of proxies, the right-most address that is not itself trusted is the client.
    """
    if not peer:
        return "unknown"
    if not forwarded_for or not _is_trusted(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _is_trusted(address: str, trusted: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in trusted)
