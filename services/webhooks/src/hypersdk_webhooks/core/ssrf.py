"""Which webhook targets may be reached: strict URL parsing and the address policy.

Two checks, one policy. ``parse_target`` runs when an endpoint is registered: it refuses URLs
that parsers disagree on (userinfo, backslashes, numeric host forms, percent-encoded or
control-character hosts) and IP literals the policy blocks. ``AddressPolicy.check`` runs when a
delivery connects: every A and AAAA answer of the name is checked, and the connection goes to
the checked address (see ``adapters/outbound/http_delivery.py``). Pure code, standard library.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_network
from typing import ClassVar

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

# Stable codes of TargetRefusedError.
INVALID_URL = "invalid_url"
SCHEME_NOT_ALLOWED = "scheme_not_allowed"
BLOCKED_ADDRESS = "blocked_address"
UNRESOLVABLE = "unresolvable"
CREDENTIALS_IN_URL = "credentials_in_url"

ALLOWED_SCHEMES = {"http": 80, "https": 443}
MAX_URL_LENGTH = 2048
_MAX_HOST_LENGTH = 253
_MAX_LABEL_LENGTH = 63

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?")
# What inet_aton-style parsers (and the WHATWG URL standard) read as a number: decimal,
# octal with a leading zero, hex with 0x. A host whose last label is one is an IPv4 to them.
_NUMERIC_LABEL = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)")
_CANONICAL_OCTET = re.compile(r"(?:0|[1-9][0-9]{0,2})")
_PORT = re.compile(r"[0-9]{1,5}")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# Printable ASCII without space and backslash: what a path and query may hold.
_PATH_CHARACTERS = re.compile(r"[!-\[\]-~]*")


class TargetRefusedError(Exception):
    """A webhook target the platform will not reach.

    ``code`` is stable (``invalid_url``, ``scheme_not_allowed``, ``blocked_address``,
    ``unresolvable``, ``credentials_in_url``); ``message`` is a sentence that never repeats
    the URL (so never its userinfo). ``reason`` names the blocked range, for blocked addresses.
    """

    def __init__(self, code: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def __repr__(self) -> str:
        return f"TargetRefusedError(code={self.code!r}, message={self.message!r})"


@dataclass(frozen=True)
class Target:
    """A parsed, normalized webhook URL.

    ``url`` has no userinfo and no fragment; ``host`` is lower-case, IDNA-encoded, without a
    trailing dot (an IP literal in canonical form, IPv6 without brackets); ``path`` is the path
    plus the query, at least ``/``; ``literal`` is set when the host is an IP literal.
    """

    url: str
    scheme: str
    host: str
    port: int
    path: str
    literal: IPAddress | None = None

    @property
    def host_header(self) -> str:
        """The Host header: the name (IPv6 in brackets), with the port unless the default."""
        return _authority(self.scheme, self.host, self.port, self.literal)


def _authority(scheme: str, host: str, port: int, literal: IPAddress | None) -> str:
    name = f"[{host}]" if isinstance(literal, IPv6Address) else host
    return name if port == ALLOWED_SCHEMES[scheme] else f"{name}:{port}"


# Order matters only for the reason given: the most specific range first.
_BLOCKED_V4: tuple[tuple[IPv4Network, str], ...] = (
    (IPv4Network("0.0.0.0/32"), "unspecified"),
    (IPv4Network("0.0.0.0/8"), "this_network"),
    (IPv4Network("10.0.0.0/8"), "private"),
    (IPv4Network("100.64.0.0/10"), "cgnat"),
    (IPv4Network("127.0.0.0/8"), "loopback"),
    (IPv4Network("169.254.0.0/16"), "link_local"),  # cloud metadata (169.254.169.254) lives here
    (IPv4Network("172.16.0.0/12"), "private"),
    (IPv4Network("192.0.0.0/24"), "ietf_protocol"),
    (IPv4Network("192.0.2.0/24"), "documentation"),
    (IPv4Network("192.88.99.0/24"), "6to4_relay"),  # deprecated anycast (RFC 7526)
    (IPv4Network("192.168.0.0/16"), "private"),
    (IPv4Network("198.18.0.0/15"), "benchmarking"),
    (IPv4Network("198.51.100.0/24"), "documentation"),
    (IPv4Network("203.0.113.0/24"), "documentation"),
    (IPv4Network("224.0.0.0/4"), "multicast"),
    (IPv4Network("255.255.255.255/32"), "broadcast"),
    (IPv4Network("240.0.0.0/4"), "reserved"),
)

_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
_BLOCKED_V6: tuple[tuple[IPv6Network, str], ...] = (
    (IPv6Network("::/128"), "unspecified"),
    (IPv6Network("::1/128"), "loopback"),
    # Deprecated (RFC 4291) and never a real endpoint: refused whatever it embeds.
    (IPv6Network("::/96"), "ipv4_compatible"),
    # A NAT64 gateway forwards to the embedded IPv4, internal ones included: refused outright.
    (IPv6Network("64:ff9b::/96"), "nat64"),
    (IPv6Network("64:ff9b:1::/48"), "nat64"),
    (IPv6Network("100::/64"), "discard"),
    (IPv6Network("2001:db8::/32"), "documentation"),
    (IPv6Network("3fff::/20"), "documentation"),
    (IPv6Network("fc00::/7"), "unique_local"),
    (IPv6Network("fe80::/10"), "link_local"),
    (IPv6Network("fec0::/10"), "site_local"),
    (IPv6Network("ff00::/8"), "multicast"),
    # IETF protocol assignments (ORCHID, benchmarking, ...); Teredo (2001::/32) inside it is
    # judged by the addresses it embeds, before this table is looked at.
    (IPv6Network("2001::/23"), "ietf_protocol"),
)


def _embedded_ipv4(address: IPv6Address) -> tuple[str, tuple[IPv4Address, ...]] | None:
    """The IPv4 addresses an IPv6 form carries, where the packets actually go."""
    if address.ipv4_mapped is not None:
        return "ipv4_mapped", (address.ipv4_mapped,)
    if address.sixtofour is not None:
        return "6to4", (address.sixtofour,)
    if address.teredo is not None:
        return "teredo", address.teredo  # the server and the client
    return None


def _blocked_v4(address: IPv4Address) -> str | None:
    return next((reason for network, reason in _BLOCKED_V4 if address in network), None)


def _blocked_v6(address: IPv6Address) -> str | None:
    if address.scope_id is not None:
        return "zone_id"
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, carried = embedded
        reasons = [reason for reason in map(_blocked_v4, carried) if reason is not None]
        return f"{kind}:{reasons[0]}" if reasons else None
    for network, reason in _BLOCKED_V6:
        if address in network:
            return reason
    return None if address in _GLOBAL_UNICAST_V6 else "reserved"


def blocked_reason(address: IPAddress) -> str | None:
    """Why ``address`` is blocked by default (a range name such as ``loopback``), or None.

    IPv6 forms that carry an IPv4 (mapped, 6to4, Teredo) are judged by the IPv4 they carry;
    the reason then names both (``ipv4_mapped:loopback``). Outside 2000::/3 (the only global
    unicast space assigned) every IPv6 address is ``reserved``.
    """
    if isinstance(address, IPv4Address):
        return _blocked_v4(address)
    return _blocked_v6(address)


@dataclass(frozen=True)
class AddressPolicy:
    """Which addresses deliveries may connect to: everything global, plus an allow-list.

    ``allowed_networks`` lets any name reach addresses in those CIDRs (internal receivers);
    ``allowed_hosts`` lets exactly those names (normalized: lower-case, IDNA, no trailing dot)
    reach any address, blocked ones included. Both are empty by default.
    """

    allowed_networks: tuple[IPNetwork, ...] = ()
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    _REFUSED_NAMES: ClassVar[frozenset[str]] = frozenset({"localhost"})

    def __post_init__(self) -> None:
        hosts = frozenset(_normalize_allowed_host(host) for host in self.allowed_hosts)
        object.__setattr__(self, "allowed_hosts", hosts)

    @classmethod
    def from_strings(
        cls, *, networks: Iterable[str] = (), hosts: Iterable[str] = ()
    ) -> AddressPolicy:
        """A policy from configuration text: CIDRs (``10.1.2.0/24``) and host names.

        A bad CIDR raises ValueError (configuration is checked at start-up, not per delivery).
        """
        return cls(
            allowed_networks=tuple(ip_network(cidr, strict=True) for cidr in networks),
            allowed_hosts=frozenset(hosts),
        )

    def _allowed_by_network(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(
            candidate.version == network.version and candidate in network
            for candidate in candidates
            for network in self.allowed_networks
        )

    def refuses(self, address: IPAddress, host: str) -> str | None:
        """Why ``host`` may not be reached at ``address`` (a range name), or None if it may."""
        if host in self.allowed_hosts or self._allowed_by_network(address):
            return None
        return blocked_reason(address)

    def refuses_name(self, host: str) -> str | None:
        """Why a name is refused before any lookup (``localhost`` is loopback by definition)."""
        if host in self.allowed_hosts:
            return None
        if host in self._REFUSED_NAMES or host.endswith(".localhost"):
            return "loopback_name"
        return None

    def check(self, host: str, addresses: list[IPAddress]) -> IPAddress:
        """The address to connect to: the first answer, once every answer is allowed.

        A name with one blocked and one public answer is refused entirely: which answer a
        client uses depends on ordering, caches and address-family fallbacks, all of which an
        attacker who controls the zone can steer, and a verdict that holds for every answer
        does not depend on any of them. Raises TargetRefusedError ``blocked_address`` for a
        blocked answer and ``unresolvable`` for no answer.
        """
        if not addresses:
            raise TargetRefusedError(UNRESOLVABLE, "The host name has no A or AAAA answer.")
        for address in addresses:
            reason = self.refuses(address, host)
            if reason is not None:
                raise TargetRefusedError(
                    BLOCKED_ADDRESS,
                    f"The host resolves to an address in a blocked range ({reason}).",
                    reason=reason,
                )
        return addresses[0]


def _refuse(message: str, code: str = INVALID_URL) -> TargetRefusedError:
    return TargetRefusedError(code, message)


def _has_forbidden_character(text: str) -> bool:
    return any(
        character.isspace() or unicodedata.category(character) in {"Cc", "Cf", "Zl", "Zp", "Zs"}
        for character in text
    )


def _normalize_allowed_host(host: str) -> str:
    try:
        return _normalize_name(host)
    except TargetRefusedError as error:
        raise ValueError(f"Not a host name for the allow-list: {error.message}") from error


def _normalize_name(raw: str) -> str:
    """Lower-case, IDNA-encoded, no trailing dot; refuses anything but LDH labels."""
    if not raw:
        raise _refuse("The URL has no host.")
    if "%" in raw:
        raise _refuse("The host may not be percent-encoded.")
    if raw.isascii():
        host = raw.lower()
    else:
        try:
            host = raw.encode("idna").decode("ascii").lower()
        except UnicodeError as error:
            raise _refuse("The host is not a valid internationalized name.") from error
    if host.endswith("."):
        host = host[:-1]
    if not host or len(host) > _MAX_HOST_LENGTH:
        raise _refuse("The host name is empty or too long.")
    labels = host.split(".")
    if any(not label or len(label) > _MAX_LABEL_LENGTH for label in labels):
        raise _refuse("The host name has an empty or overlong label.")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise _refuse("The host name holds characters other than letters, digits and hyphens.")
    return host


def _parse_host(raw: str) -> tuple[str, IPAddress | None]:
    """The normalized host and, for an IP literal, its address."""
    if raw.startswith("["):
        inner = raw[1:-1]
        if "%" in inner:
            raise _refuse("IPv6 zone identifiers are not allowed.")
        try:
            address6 = IPv6Address(inner)
        except ValueError as error:
            raise _refuse("The bracketed host is not an IPv6 address.") from error
        return str(address6), address6
    host = _normalize_name(raw)
    labels = host.split(".")
    # An IDNA name can turn into digits (fullwidth digits map to ASCII ones), so this runs on
    # the encoded form: whatever a resolver or inet_aton would read as an IPv4 must be a
    # canonical dotted quad, so that everyone reads the same address.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        canonical = len(labels) == 4 and all(  # noqa: PLR2004 (four octets)
            _CANONICAL_OCTET.fullmatch(label) and int(label) <= 255  # noqa: PLR2004
            for label in labels
        )
        if not canonical:
            raise _refuse("A numeric host must be a dotted quad of decimal octets.")
        address4 = IPv4Address(host)
        return str(address4), address4
    return host, None


def _split_authority(authority: str) -> tuple[str, str | None]:
    """Host text and port text (None when absent)."""
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise _refuse("The IPv6 literal is not closed.")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise _refuse("Only a port may follow an IPv6 literal.")
        return host, rest[1:]
    if authority.count(":") > 1:
        raise _refuse("An IPv6 literal must be in brackets.")
    host, colon, port = authority.partition(":")
    return host, port if colon else None


def _parse_port(text: str | None, scheme: str) -> int:
    if text is None:
        return ALLOWED_SCHEMES[scheme]
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:  # noqa: PLR2004
        raise _refuse("The port must be a number from 1 to 65535.")
    return int(text)


def _parse_path(text: str) -> str:
    if not text.isascii() or not _PATH_CHARACTERS.fullmatch(text):
        raise _refuse("The path holds characters that must be percent-encoded.")
    if "%" in _PERCENT_ESCAPE.sub("", text):
        raise _refuse("The path holds a malformed percent-escape.")
    if text.startswith("?"):
        return "/" + text
    return text or "/"


def parse_target(url: str, policy: AddressPolicy) -> Target:
    """The normalized target of ``url``, or TargetRefusedError.

    Strict on purpose: what parsers (urllib, browsers, curl, inet_aton) disagree on is refused
    rather than interpreted: userinfo, backslashes, whitespace and control characters, a
    percent-encoded or empty host, numeric hosts other than a canonical dotted quad, IPv6 zone
    identifiers, ports outside 1-65535. Only http and https. IP literals (and ``localhost``)
    are checked against ``policy`` here; names are checked at every connection.
    """
    if len(url) > MAX_URL_LENGTH:
        raise _refuse("The URL is too long.")
    if _has_forbidden_character(url):
        raise _refuse("The URL holds whitespace or control characters.")
    if "\\" in url:
        raise _refuse("The URL holds a backslash.")
    scheme_text, colon, rest = url.partition(":")
    if not colon or not _SCHEME.fullmatch(scheme_text):
        raise _refuse("The URL has no scheme.")
    scheme = scheme_text.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise _refuse("Only http and https URLs are allowed.", SCHEME_NOT_ALLOWED)
    if not rest.startswith("//"):
        raise _refuse("The URL has no authority (scheme://host).")
    rest = rest[2:].split("#", 1)[0]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path_text = rest[:end], rest[end:]
    if "@" in authority:
        raise _refuse("The URL may not hold credentials.", CREDENTIALS_IN_URL)
    host_text, port_text = _split_authority(authority)
    host, literal = _parse_host(host_text)
    port = _parse_port(port_text, scheme)
    path = _parse_path(path_text)

    reason = policy.refuses_name(host) if literal is None else policy.refuses(literal, host)
    if reason is not None:
        raise TargetRefusedError(
            BLOCKED_ADDRESS, f"The host is in a blocked range ({reason}).", reason=reason
        )
    return Target(
        url=f"{scheme}://{_authority(scheme, host, port, literal)}{path}",
        scheme=scheme,
        host=host,
        port=port,
        path=path,
        literal=literal,
    )


__all__ = [
    "BLOCKED_ADDRESS",
    "CREDENTIALS_IN_URL",
    "INVALID_URL",
    "SCHEME_NOT_ALLOWED",
    "UNRESOLVABLE",
    "AddressPolicy",
    "IPAddress",
    "Target",
    "TargetRefusedError",
    "blocked_reason",
    "parse_target",
]
