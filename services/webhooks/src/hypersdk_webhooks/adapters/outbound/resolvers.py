"""Resolvers: the system's (getaddrinfo) and dnspython's, pointed at chosen name servers.

Both return every A and AAAA answer, deduplicated in the order received, and raise
TargetRefusedError ``unresolvable`` when there is none; the caller checks every answer.
Neither caches: each delivery attempt asks afresh and connects to what it checked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable, Sequence
from ipaddress import ip_address

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype

from hypersdk_webhooks.core.ssrf import UNRESOLVABLE, IPAddress, TargetRefusedError
from hypersdk_webhooks.ports.outbound import Resolver

_NO_ANSWER = "The host name has no A or AAAA answer."


def _unique(texts: Iterable[str]) -> list[IPAddress]:
    found: list[IPAddress] = []
    for text in texts:
        # getaddrinfo writes link-local IPv6 answers with their zone ("fe80::1%eth0").
        address = ip_address(text.split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


class SystemResolver(Resolver):
    """The operating system's resolver (``getaddrinfo``): /etc/hosts, nsswitch, its DNS."""

    async def resolve(self, host: str) -> list[IPAddress]:
        """Every IPv4 and IPv6 address of ``host``."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as error:
            raise TargetRefusedError(UNRESOLVABLE, _NO_ANSWER) from error
        found = _unique(
            str(sockaddr[0])
            for family, _type, _proto, _name, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        )
        if not found:
            raise TargetRefusedError(UNRESOLVABLE, _NO_ANSWER)
        return found


class DnsResolver(Resolver):
    """dnspython's stub resolver, asking only the given name servers (address, port).

    No search domains, no cache, no /etc/resolv.conf: the name is asked as given (absolute).
    A and AAAA are asked together; ``lifetime_seconds`` bounds each of the two lookups.
    """

    def __init__(
        self, nameservers: Sequence[tuple[str, int]], *, lifetime_seconds: float = 2.0
    ) -> None:
        if not nameservers:
            raise ValueError("DnsResolver needs at least one name server.")
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [
            dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers
        ]
        self._resolver.lifetime = lifetime_seconds
        self._resolver.timeout = lifetime_seconds
        self._resolver.cache = None

    async def _ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> list[str]:
        answer = await self._resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        if answer.rrset is None:
            return []
        return [rdata.to_text() for rdata in answer.rrset]

    async def resolve(self, host: str) -> list[IPAddress]:
        """Every A and AAAA answer of ``host``."""
        try:
            name = dns.name.from_text(host)
            answers = await asyncio.gather(
                self._ask(name, dns.rdatatype.A), self._ask(name, dns.rdatatype.AAAA)
            )
        except dns.exception.DNSException as error:
            raise TargetRefusedError(UNRESOLVABLE, _NO_ANSWER) from error
        found = _unique(text for texts in answers for text in texts)
        if not found:
            raise TargetRefusedError(UNRESOLVABLE, _NO_ANSWER)
        return found
