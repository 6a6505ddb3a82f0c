"""SSRF defences of webhook targets: the bypass corpus, every blocked range, the connect check.

parse_target runs when an endpoint is registered; AddressPolicy.check runs when a delivery
connects. The last part drives HttpDelivery's connect step with scripted resolvers and
httpcore's mock network backend, so no socket is opened here.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address
from typing import Any

import httpcore
import pytest

from hypersdk_webhooks.adapters.outbound.http_delivery import HttpDelivery
from hypersdk_webhooks.adapters.outbound.memory import InMemoryDelivery, InMemoryResolver
from hypersdk_webhooks.adapters.outbound.resolvers import DnsResolver, SystemResolver
from hypersdk_webhooks.core.models import Attempt, Outcome
from hypersdk_webhooks.core.ssrf import (
    AddressPolicy,
    IPAddress,
    Target,
    TargetRefusedError,
    blocked_reason,
    parse_target,
)

DEFAULT = AddressPolicy()
PUBLIC = IPv4Address("93.184.216.34")
PUBLIC_2 = IPv4Address("93.184.216.35")
LOOPBACK = IPv4Address("127.0.0.1")


def refused(url: str, policy: AddressPolicy = DEFAULT) -> TargetRefusedError:
    with pytest.raises(TargetRefusedError) as caught:
        parse_target(url, policy)
    return caught.value


# --- the bypass corpus against parse_target -----------------------------------------------

BYPASSES = [
    # numeric host forms that inet_aton, curl or browsers read as 127.0.0.1
    ("decimal", "http://2130706433/", "invalid_url"),
    ("octal", "http://0177.0.0.1/", "invalid_url"),
    ("octal-all", "http://0177.0000.0000.0001/", "invalid_url"),
    ("hex-short", "http://0x7f.1/", "invalid_url"),
    ("hex-whole", "http://0x7f000001/", "invalid_url"),
    ("hex-dotted", "http://0x7f.0x0.0x0.0x1/", "invalid_url"),
    ("short-2", "http://127.1/", "invalid_url"),
    ("short-3", "http://127.0.1/", "invalid_url"),
    ("zero", "http://0/", "invalid_url"),
    ("five-parts", "http://127.0.0.0.1/", "invalid_url"),
    ("octet-over-255", "http://127.0.0.256/", "invalid_url"),
    ("numeric-last-label", "http://example.0x10/", "invalid_url"),
    # canonical literals of blocked ranges
    ("loopback-v4", "http://127.0.0.1/", "blocked_address"),
    ("loopback-v4-trailing-dot", "http://127.0.0.1./", "blocked_address"),
    ("loopback-v4-port", "http://127.0.0.1:8080/", "blocked_address"),
    ("metadata", "http://169.254.169.254/latest/meta-data/", "blocked_address"),
    ("unspecified-v4", "http://0.0.0.0/", "blocked_address"),
    ("private-10", "http://10.0.0.1/", "blocked_address"),
    ("cgnat", "http://100.64.0.1/", "blocked_address"),
    ("loopback-v6", "http://[::1]/", "blocked_address"),
    ("unspecified-v6", "http://[::]/", "blocked_address"),
    ("mapped-dotted", "http://[::ffff:127.0.0.1]/", "blocked_address"),
    ("mapped-hex", "http://[::ffff:7f00:1]/", "blocked_address"),
    ("mapped-upper", "http://[::FFFF:A9FE:A9FE]/", "blocked_address"),
    ("compatible", "http://[::127.0.0.1]/", "blocked_address"),
    ("nat64", "http://[64:ff9b::7f00:1]/", "blocked_address"),
    ("6to4-loopback", "http://[2002:7f00:1::1]/", "blocked_address"),
    ("ula", "http://[fd00::1]/", "blocked_address"),
    ("link-local-v6", "http://[fe80::1]/", "blocked_address"),
    ("zone-id-encoded", "http://[fe80::1%25eth0]/", "invalid_url"),
    ("zone-id-raw", "http://[fe80::1%eth0]/", "invalid_url"),
    ("v4-in-brackets", "http://[127.0.0.1]/", "invalid_url"),
    ("ipvfuture", "http://[v1.x]/", "invalid_url"),
    ("unclosed-bracket", "http://[::1/", "invalid_url"),
    ("junk-after-bracket", "http://[::1]x/", "invalid_url"),
    ("unbracketed-v6", "http://::1/", "invalid_url"),
    # names that are loopback by definition
    ("localhost", "http://localhost/", "blocked_address"),
    ("localhost-trailing-dot", "http://localhost./", "blocked_address"),
    ("localhost-upper", "http://LOCALHOST:8080/", "blocked_address"),
    ("localhost-subdomain", "http://api.localhost/", "blocked_address"),
    # userinfo tricks: refused outright, whatever the host
    ("userinfo", "http://a@127.0.0.1/", "credentials_in_url"),
    ("userinfo-public", "http://user:pass@example.com/", "credentials_in_url"),
    ("userinfo-looks-like-host", "http://example.com@127.0.0.1/", "credentials_in_url"),
    ("userinfo-empty", "http://@example.com/", "credentials_in_url"),
    ("userinfo-double", "http://a@b@example.com/", "credentials_in_url"),
    ("fragment-at", "http://127.0.0.1#@example.com", "blocked_address"),
    ("fragment-at-path", "http://127.0.0.1/#@example.com/", "blocked_address"),
    ("query-at", "http://127.0.0.1?@example.com", "blocked_address"),
    # backslashes (WHATWG parsers read them as slashes)
    ("backslash-userinfo", "http://example.com\\@127.0.0.1/", "invalid_url"),
    ("backslash-authority", "http:\\\\127.0.0.1/", "invalid_url"),
    ("backslash-path", "http://example.com\\path", "invalid_url"),
    ("backslash-mixed", "http:/\\127.0.0.1/", "invalid_url"),
    # percent-encoded hosts
    ("percent-host", "http://%31%32%37.0.0.1/", "invalid_url"),
    ("percent-octet", "http://127.0.0.%31/", "invalid_url"),
    ("percent-name", "http://ex%61mple.com/", "invalid_url"),
    ("percent-dot", "http://127%2e0%2e0%2e1/", "invalid_url"),
    # IDNA: compatibility forms map onto ASCII, then are judged like ASCII
    ("idna-fullwidth-digits", "http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", "blocked_address"),
    ("idna-ideographic-dots", "http://127\u30020\u30020\u30021/", "blocked_address"),
    (
        "idna-fullwidth-localhost",
        "http://\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54/",
        "blocked_address",
    ),
    ("idna-fullwidth-hex", "http://\uff10\uff58\uff17\uff46.1/", "invalid_url"),
    (
        "idna-circled",
        "http://\u24db\u24de\u24d2\u24d0\u24db\u24d7\u24de\u24e2\u24e3/",
        "blocked_address",
    ),
    ("idna-fullwidth-at", "http://example.com\uff20127.0.0.1/", "invalid_url"),
    ("idna-fullwidth-colon", "http://example.com\uff1a80/", "invalid_url"),
    ("idna-fullwidth-percent", "http://ex\uff0561mple.com/", "invalid_url"),
    ("idna-too-long-label", "http://" + "\u00e9" * 70 + ".com/", "invalid_url"),
    ("zero-width-space", "http://exa\u200bmple.com/", "invalid_url"),
    ("soft-hyphen", "http://loc\u00adalhost/", "invalid_url"),
    ("bidi-override", "http://\u202eexample.com/", "invalid_url"),
    # whitespace and control characters anywhere
    ("leading-space", " http://example.com/", "invalid_url"),
    ("trailing-space", "http://example.com/ ", "invalid_url"),
    ("space-in-host", "http://exa mple.com/", "invalid_url"),
    ("tab-in-host", "http://127.0.0.1\t.example.com/", "invalid_url"),
    ("newline-in-host", "http://example.com\n.127.0.0.1/", "invalid_url"),
    ("crlf-in-path", "http://example.com/\r\nHost: 127.0.0.1", "invalid_url"),
    ("nul", "http://example.com\x00.127.0.0.1/", "invalid_url"),
    ("del", "http://example.com\x7f/", "invalid_url"),
    ("nbsp", "http://example.com\u00a0/", "invalid_url"),
    ("line-separator", "http://example.com\u2028/", "invalid_url"),
    # empty or malformed hosts
    ("empty-host", "http:///", "invalid_url"),
    ("empty-host-no-path", "http://", "invalid_url"),
    ("empty-host-port", "http://:80/", "invalid_url"),
    ("double-dot", "http://example..com/", "invalid_url"),
    ("leading-dot", "http://.example.com/", "invalid_url"),
    ("two-trailing-dots", "http://example.com../", "invalid_url"),
    ("underscore", "http://exa_mple.com/", "invalid_url"),
    ("leading-hyphen", "http://-example.com/", "invalid_url"),
    ("label-too-long", "http://" + "a" * 64 + ".com/", "invalid_url"),
    ("name-too-long", "http://" + ".".join(["a" * 60] * 5) + "/", "invalid_url"),
    ("url-too-long", "http://example.com/" + "a" * 3000, "invalid_url"),
    # ports
    ("port-zero", "http://example.com:0/", "invalid_url"),
    ("port-65536", "http://example.com:65536/", "invalid_url"),
    ("port-huge", "http://example.com:4294967376/", "invalid_url"),
    ("port-negative", "http://example.com:-1/", "invalid_url"),
    ("port-plus", "http://example.com:+80/", "invalid_url"),
    ("port-letters", "http://example.com:80a/", "invalid_url"),
    ("port-empty", "http://example.com:/", "invalid_url"),
    ("port-two", "http://example.com:80:81/", "invalid_url"),
    ("port-v6-empty", "http://[2606:4700::1]:/", "invalid_url"),
    # schemes
    ("file", "file:///etc/passwd", "scheme_not_allowed"),
    ("file-host", "file://127.0.0.1/etc/passwd", "scheme_not_allowed"),
    ("gopher", "gopher://127.0.0.1:6379/_INFO", "scheme_not_allowed"),
    ("ftp", "ftp://example.com/", "scheme_not_allowed"),
    ("dict", "dict://127.0.0.1:11211/stats", "scheme_not_allowed"),
    ("ws", "ws://example.com/", "scheme_not_allowed"),
    ("javascript", "javascript:alert(1)", "scheme_not_allowed"),
    ("data", "data:text/plain,x", "scheme_not_allowed"),
    ("no-scheme", "//example.com/", "invalid_url"),
    ("bare-host", "example.com", "invalid_url"),
    ("empty", "", "invalid_url"),
    ("bad-scheme-syntax", "1http://example.com/", "invalid_url"),
    ("no-authority", "http:example.com/", "invalid_url"),
    ("one-slash", "http:/example.com/", "invalid_url"),
    # paths
    ("non-ascii-path", "http://example.com/\u00fc", "invalid_url"),
    ("bad-percent-path", "http://example.com/%zz", "invalid_url"),
    ("truncated-percent-path", "http://example.com/a%4", "invalid_url"),
]


@pytest.mark.parametrize(("url", "code"), [c[1:] for c in BYPASSES], ids=[c[0] for c in BYPASSES])
def test_bypass_forms_are_refused_at_registration(url: str, code: str) -> None:
    assert refused(url).code == code


def test_the_corpus_has_unique_names() -> None:
    names = [case[0] for case in BYPASSES]
    assert len(names) == len(set(names))


ACCEPTED = [
    (
        "normalized",
        "HTTP://Example.COM./a/b?c=1&d=%41#fragment",
        ("http://example.com/a/b?c=1&d=%41", "http", "example.com", 80, "/a/b?c=1&d=%41"),
    ),
    (
        "https-default",
        "https://example.com",
        ("https://example.com/", "https", "example.com", 443, "/"),
    ),
    (
        "explicit-default-port",
        "http://example.com:80/x",
        ("http://example.com/x", "http", "example.com", 80, "/x"),
    ),
    (
        "other-port",
        "https://hooks.example.com:8443/in",
        ("https://hooks.example.com:8443/in", "https", "hooks.example.com", 8443, "/in"),
    ),
    (
        "query-only",
        "http://example.com?x=1",
        ("http://example.com/?x=1", "http", "example.com", 80, "/?x=1"),
    ),
    (
        "idna",
        "https://B\u00fccher.example/",
        ("https://xn--bcher-kva.example/", "https", "xn--bcher-kva.example", 443, "/"),
    ),
    (
        "public-v4",
        "http://93.184.216.34:8080/",
        ("http://93.184.216.34:8080/", "http", "93.184.216.34", 8080, "/"),
    ),
    (
        "public-v6",
        "http://[2606:2800:0220:0001:0000:0000:0000:0001]:8080/h",
        ("http://[2606:2800:220:1::1]:8080/h", "http", "2606:2800:220:1::1", 8080, "/h"),
    ),
    (
        "at-in-path",
        "http://example.com/@127.0.0.1",
        ("http://example.com/@127.0.0.1", "http", "example.com", 80, "/@127.0.0.1"),
    ),
    (
        "digit-leading-name",
        "http://1e100.net/",
        ("http://1e100.net/", "http", "1e100.net", 80, "/"),
    ),
]


@pytest.mark.parametrize(
    ("url", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_well_formed_urls_are_normalized(
    url: str, expected: tuple[str, str, str, int, str]
) -> None:
    target = parse_target(url, DEFAULT)
    assert (target.url, target.scheme, target.host, target.port, target.path) == expected


def test_an_ip_literal_is_kept_as_an_address() -> None:
    assert parse_target("http://93.184.216.34/", DEFAULT).literal == PUBLIC
    v6 = parse_target("http://[2606:4700::1111]/", DEFAULT)
    assert v6.literal == IPv6Address("2606:4700::1111")
    assert v6.host_header == "[2606:4700::1111]"
    assert parse_target("http://example.com/", DEFAULT).literal is None


def test_a_refusal_never_repeats_the_userinfo() -> None:
    error = refused("https://alice:s3cr3t-token@hooks.example.com/")
    assert error.code == "credentials_in_url"
    for text in (error.message, str(error), repr(error)):
        assert "s3cr3t" not in text
        assert "alice" not in text


def test_a_refusal_names_the_range() -> None:
    error = refused("http://169.254.169.254/")
    assert error.reason == "link_local"
    assert "link_local" in error.message


# --- every blocked range, inside and just outside ------------------------------------------

RANGES_V4 = [
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "this_network"),
    ("1.0.0.0", None),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("9.255.255.255", None),
    ("11.0.0.0", None),
    ("100.64.0.0", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("100.63.255.255", None),
    ("100.128.0.0", None),
    ("127.0.0.1", "loopback"),
    ("127.255.255.255", "loopback"),
    ("126.255.255.255", None),
    ("128.0.0.0", None),
    ("169.254.169.254", "link_local"),
    ("169.254.0.0", "link_local"),
    ("169.253.255.255", None),
    ("169.255.0.0", None),
    ("172.16.0.0", "private"),
    ("172.31.255.255", "private"),
    ("172.15.255.255", None),
    ("172.32.0.0", None),
    ("192.0.0.0", "ietf_protocol"),
    ("192.0.0.255", "ietf_protocol"),
    ("191.255.255.255", None),
    ("192.0.1.0", None),
    ("192.0.2.1", "documentation"),
    ("192.0.3.0", None),
    ("192.88.99.1", "6to4_relay"),
    ("192.168.0.0", "private"),
    ("192.168.255.255", "private"),
    ("192.167.255.255", None),
    ("192.169.0.0", None),
    ("198.18.0.0", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("198.17.255.255", None),
    ("198.20.0.0", None),
    ("198.51.100.1", "documentation"),
    ("198.51.99.255", None),
    ("198.51.101.0", None),
    ("203.0.113.1", "documentation"),
    ("203.0.112.255", None),
    ("203.0.114.0", None),
    ("224.0.0.1", "multicast"),
    ("239.255.255.255", "multicast"),
    ("223.255.255.255", None),
    ("240.0.0.0", "reserved"),
    ("255.255.255.254", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("93.184.216.34", None),
    ("8.8.8.8", None),
]


def teredo(server: str, client: str) -> IPv6Address:
    """A Teredo address (RFC 4380): server IPv4 in clear, client IPv4 and port inverted."""
    value = (
        (0x20010000 << 96)
        | (int(IPv4Address(server)) << 64)
        | ((0xFFFF ^ 0x1234) << 32)
        | (int(IPv4Address(client)) ^ 0xFFFFFFFF)
    )
    return IPv6Address(value)


RANGES_V6 = [
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::2", "ipv4_compatible"),
    ("::7f00:1", "ipv4_compatible"),  # ::127.0.0.1
    ("::5db8:d822", "ipv4_compatible"),  # ::93.184.216.34: deprecated form, refused anyway
    ("::1:0:0:0", "reserved"),  # just past ::/96 and ::ffff:0:0/96, still outside 2000::/3
    ("::ffff:127.0.0.1", "ipv4_mapped:loopback"),
    ("::ffff:10.1.2.3", "ipv4_mapped:private"),
    ("::ffff:169.254.169.254", "ipv4_mapped:link_local"),
    ("::ffff:100.64.0.1", "ipv4_mapped:cgnat"),
    ("::ffff:0.0.0.0", "ipv4_mapped:unspecified"),
    ("::ffff:93.184.216.34", None),  # the same wire destination as 93.184.216.34
    ("64:ff9b::7f00:1", "nat64"),
    ("64:ff9b::a9fe:a9fe", "nat64"),
    ("64:ff9b::5db8:d822", "nat64"),
    ("64:ff9b:1::1", "nat64"),
    ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "nat64"),
    ("2002:7f00:1::", "6to4:loopback"),
    ("2002:a9fe:a9fe::1", "6to4:link_local"),
    ("2002:c0a8:101::", "6to4:private"),
    ("2002:0a00:0001:ffff::1", "6to4:private"),
    ("2002:5db8:d822::1", None),
    (str(teredo("65.54.227.120", "127.0.0.1")), "teredo:loopback"),
    (str(teredo("10.0.0.1", "93.184.216.34")), "teredo:private"),
    (str(teredo("65.54.227.120", "169.254.169.254")), "teredo:link_local"),
    (str(teredo("65.54.227.120", "93.184.216.34")), None),
    ("2001:2::1", "ietf_protocol"),
    ("2001:10::1", "ietf_protocol"),
    ("2001:1ff:ffff::1", "ietf_protocol"),
    ("2001:200::1", None),
    ("2001:db8::1", "documentation"),
    ("2001:db8:ffff::1", "documentation"),
    ("2001:db7:ffff::1", None),
    ("2001:db9::1", None),
    ("3fff::1", "documentation"),
    ("3fff:1000::1", None),
    ("100::1", "discard"),
    ("fc00::1", "unique_local"),
    ("fd12:3456::1", "unique_local"),
    ("fbff:ffff::1", "reserved"),
    ("fe80::1", "link_local"),
    ("febf:ffff::1", "link_local"),
    ("fec0::1", "site_local"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("1fff:ffff::1", "reserved"),
    ("4000::1", "reserved"),
    ("2000::1", None),
    ("2606:4700::1111", None),
    ("2a00:1450:4001::200e", None),
]


@pytest.mark.parametrize(
    ("text", "reason"), RANGES_V4 + RANGES_V6, ids=[c[0] for c in RANGES_V4 + RANGES_V6]
)
def test_blocked_ranges_inside_and_just_outside(text: str, reason: str | None) -> None:
    assert blocked_reason(ip_address(text)) == reason
    assert DEFAULT.refuses(ip_address(text), "hooks.example.com") == reason


def test_the_teredo_helper_builds_what_ipaddress_reads() -> None:
    assert teredo("65.54.227.120", "192.0.2.45").teredo == (
        IPv4Address("65.54.227.120"),
        IPv4Address("192.0.2.45"),
    )


# --- the allow-list --------------------------------------------------------------------------


def test_a_cidr_entry_allows_those_addresses_for_any_name() -> None:
    policy = AddressPolicy.from_strings(networks=["127.0.0.1/32", "10.20.0.0/16"])
    assert policy.refuses(LOOPBACK, "anything.example") is None
    assert policy.refuses(IPv4Address("10.20.30.40"), "other.example") is None
    assert policy.refuses(IPv6Address("::ffff:127.0.0.1"), "anything.example") is None
    assert policy.refuses(IPv4Address("127.0.0.2"), "anything.example") == "loopback"
    assert policy.refuses(IPv4Address("10.21.0.1"), "anything.example") == "private"
    assert policy.refuses(IPv6Address("::1"), "anything.example") == "loopback"
    assert parse_target("http://127.0.0.1:8080/in", policy).literal == LOOPBACK
    assert refused("http://127.0.0.2:8080/in", policy).code == "blocked_address"
    assert refused("http://[::1]:8080/in", policy).code == "blocked_address"


def test_a_host_entry_allows_only_that_exact_name() -> None:
    policy = AddressPolicy.from_strings(hosts=["Receiver.Internal.Example.", "localhost"])
    assert policy.allowed_hosts == frozenset({"receiver.internal.example", "localhost"})
    assert policy.refuses(IPv4Address("10.0.0.5"), "receiver.internal.example") is None
    assert policy.refuses(IPv4Address("10.0.0.5"), "other.internal.example") == "private"
    assert policy.refuses(IPv4Address("10.0.0.5"), "x.receiver.internal.example") == "private"
    assert policy.check("receiver.internal.example", [IPv4Address("10.0.0.5")]) == IPv4Address(
        "10.0.0.5"
    )
    assert parse_target("http://localhost:8080/", policy).host == "localhost"
    assert parse_target("http://LOCALHOST./", policy).host == "localhost"
    assert refused("http://api.localhost/", policy).code == "blocked_address"
    # a host entry is a name: a literal is not its address
    assert refused("http://10.0.0.5/", policy).code == "blocked_address"


@pytest.mark.parametrize(
    ("networks", "hosts"),
    [
        (["10.0.0.1/8"], []),  # host bits set: a typo, not a network
        (["not-a-network"], []),
        ([], ["::1"]),
        ([], ["bad_name"]),
        ([], [""]),
    ],
    ids=["cidr-host-bits", "cidr-garbage", "host-is-v6", "host-underscore", "host-empty"],
)
def test_a_bad_allow_list_entry_is_a_configuration_error(
    networks: list[str], hosts: list[str]
) -> None:
    with pytest.raises(ValueError, match=r"."):
        AddressPolicy.from_strings(networks=networks, hosts=hosts)


def test_the_allow_list_is_empty_by_default() -> None:
    assert AddressPolicy().allowed_networks == ()
    assert AddressPolicy().allowed_hosts == frozenset()
    assert (
        AddressPolicy(allowed_networks=(IPv4Network("127.0.0.0/8"),)).refuses(LOOPBACK, "x.example")
        is None
    )


# --- every answer is checked -------------------------------------------------------------------


@pytest.mark.parametrize(
    "answers",
    [
        [PUBLIC, LOOPBACK],
        [LOOPBACK, PUBLIC],
        [PUBLIC, PUBLIC_2, IPv6Address("::1")],
        [IPv6Address("2606:4700::1111"), IPv4Address("169.254.169.254")],
        [PUBLIC, IPv6Address("::ffff:10.0.0.1")],
    ],
    ids=["public-then-loopback", "loopback-then-public", "v6-loopback-last", "metadata", "mapped"],
)
def test_a_name_with_one_blocked_answer_is_refused_entirely(answers: list[IPAddress]) -> None:
    with pytest.raises(TargetRefusedError) as caught:
        DEFAULT.check("mixed.example.com", answers)
    assert caught.value.code == "blocked_address"


def test_check_returns_the_first_answer_when_all_are_allowed() -> None:
    assert DEFAULT.check("ok.example.com", [PUBLIC_2, PUBLIC]) == PUBLIC_2


def test_no_answer_is_unresolvable() -> None:
    with pytest.raises(TargetRefusedError) as caught:
        DEFAULT.check("none.example.com", [])
    assert caught.value.code == "unresolvable"


# --- the connect step of HttpDelivery, without a network ----------------------------------------


class RecordingStream(httpcore.AsyncMockStream):
    """httpcore's mock stream, keeping what was written and the TLS server name."""

    def __init__(self, buffer: list[bytes], backend: RecordingBackend) -> None:
        super().__init__(buffer)
        self._recorder = backend

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109
        self._recorder.written += buffer

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
    ) -> httpcore.AsyncNetworkStream:
        self._recorder.server_names.append(server_hostname)
        return self


class RecordingBackend(httpcore.AsyncMockBackend):
    """What finally connects, in these tests: records the address and serves a canned answer."""

    def __init__(self, answer: list[bytes]) -> None:
        super().__init__(answer)
        self.connects: list[tuple[str, int]] = []
        self.server_names: list[str | None] = []
        self.written = b""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connects.append((host, port))
        return RecordingStream(list(self._buffer), self)


NO_CONTENT = [b"HTTP/1.1 204 No Content\r\n\r\n"]
SECRET = "t=1700000000,v1=5f2b0c9e-super-secret-signature"


def delivery(
    resolver: InMemoryResolver, answer: list[bytes] = NO_CONTENT, **kwargs: Any
) -> tuple[HttpDelivery, RecordingBackend]:
    backend = RecordingBackend(answer)
    policy = kwargs.pop("policy", DEFAULT)
    return HttpDelivery(
        resolver=resolver, policy=policy, network_backend=backend, **kwargs
    ), backend


async def post(target: Target, sender: HttpDelivery) -> Attempt:
    return await sender.post(
        target,
        headers={"Content-Type": "application/json", "X-Hypersdk-Signature": SECRET},
        body=b'{"event":"vm.exported"}',
        timeout_seconds=2.0,
    )


async def test_a_rebinding_name_is_looked_up_once_per_attempt_and_connected_as_checked() -> None:
    resolver = InMemoryResolver(rounds={"hooks.example.com": [[PUBLIC], [LOOPBACK]]})
    sender, backend = delivery(resolver)
    target = parse_target("http://hooks.example.com:8080/in", DEFAULT)

    first = await post(target, sender)
    assert first.outcome is Outcome.DELIVERED
    assert first.address == str(PUBLIC)
    assert resolver.lookups == ["hooks.example.com"]
    assert backend.connects == [(str(PUBLIC), 8080)]

    second = await post(target, sender)
    assert second.outcome is Outcome.BLOCKED_ADDRESS
    assert second.address is None
    assert resolver.lookups == ["hooks.example.com", "hooks.example.com"]
    assert backend.connects == [(str(PUBLIC), 8080)]


async def test_mixed_answers_are_refused_at_connect_time_without_connecting() -> None:
    resolver = InMemoryResolver({"mixed.example.com": [PUBLIC, LOOPBACK]})
    sender, backend = delivery(resolver)
    attempt = await post(parse_target("https://mixed.example.com/", DEFAULT), sender)
    assert attempt.outcome is Outcome.BLOCKED_ADDRESS
    assert backend.connects == []


async def test_an_unresolvable_name_is_its_own_outcome() -> None:
    sender, backend = delivery(InMemoryResolver())
    attempt = await post(parse_target("https://gone.example.com/", DEFAULT), sender)
    assert attempt.outcome is Outcome.UNRESOLVABLE
    assert backend.connects == []


async def test_the_connect_check_decides_even_for_a_target_that_skipped_registration() -> None:
    resolver = InMemoryResolver({"localhost": [LOOPBACK]})
    sender, backend = delivery(resolver)
    literal = Target(
        url="http://127.0.0.1/",
        scheme="http",
        host="127.0.0.1",
        port=80,
        path="/",
        literal=LOOPBACK,
    )
    assert (await post(literal, sender)).outcome is Outcome.BLOCKED_ADDRESS
    name = Target(url="http://localhost/", scheme="http", host="localhost", port=80, path="/")
    assert (await post(name, sender)).outcome is Outcome.BLOCKED_ADDRESS
    # registered while 127.0.0.1 was allowed; the delivery's policy no longer allows it
    registered = parse_target(
        "http://127.0.0.1:9000/", AddressPolicy.from_strings(networks=["127.0.0.1/32"])
    )
    assert (await post(registered, sender)).outcome is Outcome.BLOCKED_ADDRESS
    assert backend.connects == []
    assert resolver.lookups == []  # neither a literal nor localhost is looked up


async def test_an_allow_listed_name_reaches_its_internal_address() -> None:
    resolver = InMemoryResolver({"receiver.internal": [IPv4Address("10.0.0.7")]})
    policy = AddressPolicy.from_strings(hosts=["receiver.internal"])
    sender, backend = delivery(resolver, policy=policy)
    attempt = await post(parse_target("http://receiver.internal:8080/", policy), sender)
    assert attempt.outcome is Outcome.DELIVERED
    assert backend.connects == [("10.0.0.7", 8080)]


async def test_tls_verifies_the_name_while_connecting_to_the_checked_address() -> None:
    resolver = InMemoryResolver({"hooks.example.com": [PUBLIC]})
    sender, backend = delivery(resolver, answer=[b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    attempt = await post(parse_target("https://hooks.example.com/in", DEFAULT), sender)
    assert attempt.outcome is Outcome.DELIVERED
    assert backend.connects == [(str(PUBLIC), 443)]
    assert backend.server_names == ["hooks.example.com"]
    assert b"\r\nHost: hooks.example.com\r\n" in backend.written


async def test_the_request_carries_the_name_the_headers_and_the_body() -> None:
    resolver = InMemoryResolver({"hooks.example.com": [PUBLIC]})
    sender, backend = delivery(resolver)
    target = parse_target("http://hooks.example.com:8080/in?tenant=7", DEFAULT)
    attempt = await sender.post(
        target,
        headers={"X-Hypersdk-Signature": SECRET, "Host": "127.0.0.1", "Content-Length": "1"},
        body=b"\x00binary\xffbody",
        timeout_seconds=2.0,
    )
    assert attempt.outcome is Outcome.DELIVERED
    head, _, body = backend.written.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /in?tenant=7 HTTP/1.1"
    assert b"Host: hooks.example.com:8080" in lines
    assert b"Content-Length: 12" in lines  # the body's length, not the caller's "1"
    assert f"X-Hypersdk-Signature: {SECRET}".encode() in lines
    assert b"127.0.0.1" not in head  # the caller's Host header was dropped
    assert body == b"\x00binary\xffbody"


@pytest.mark.parametrize(
    ("answer", "outcome", "status"),
    [
        (
            [b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1/\r\nContent-Length: 0\r\n\r\n"],
            Outcome.HTTP_ERROR,
            302,
        ),
        ([b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"], Outcome.HTTP_ERROR, 500),
        ([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], Outcome.DELIVERED, 200),
        ([b"SSH-2.0-OpenSSH_9.2\r\n\r\n"], Outcome.INVALID_RESPONSE, None),
        ([], Outcome.CONNECT_FAILED, None),
        (
            [b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n"] + [b"x" * 65536] * 4,
            Outcome.INVALID_RESPONSE,
            200,
        ),
    ],
    ids=["redirect", "server-error", "ok", "not-http", "closed-silently", "oversized"],
)
async def test_answers_map_to_outcomes_and_no_detail_holds_a_secret(
    answer: list[bytes], outcome: Outcome, status: int | None
) -> None:
    resolver = InMemoryResolver({"hooks.example.com": [PUBLIC]})
    sender, backend = delivery(resolver, answer=answer)
    attempt = await post(parse_target("http://hooks.example.com/", DEFAULT), sender)
    assert (attempt.outcome, attempt.status) == (outcome, status)
    assert len(backend.connects) == 1  # a redirect is never followed
    assert "secret" not in attempt.detail
    assert "secret" not in repr(attempt)
    assert "vm.exported" not in attempt.detail
    assert attempt.latency_ms >= 0.0


async def test_a_header_that_cannot_be_sent_is_refused_without_echoing_its_value() -> None:
    sender, backend = delivery(InMemoryResolver({"hooks.example.com": [PUBLIC]}))
    target = parse_target("http://hooks.example.com/", DEFAULT)
    with pytest.raises(ValueError, match="X-Bad") as caught:
        await sender.post(
            target, headers={"X-Bad": "secret\r\nInjected: 1"}, body=b"", timeout_seconds=1.0
        )
    assert "secret" not in str(caught.value)
    with pytest.raises(ValueError, match="token"):
        await sender.post(target, headers={"X Bad": "v"}, body=b"", timeout_seconds=1.0)
    assert backend.connects == []


# --- the resolvers and the fakes -----------------------------------------------------------


async def test_the_system_resolver_answers_each_address_once() -> None:
    assert await SystemResolver().resolve("127.0.0.1") == [LOOPBACK]
    assert await SystemResolver().resolve("::1") == [IPv6Address("::1")]
    local = await SystemResolver().resolve("localhost")  # /etc/hosts: no network involved
    assert LOOPBACK in local
    assert len(local) == len(set(local))


def test_the_dns_resolver_needs_a_name_server() -> None:
    with pytest.raises(ValueError, match="name server"):
        DnsResolver([])


async def test_the_in_memory_resolver_repeats_its_last_round() -> None:
    resolver = InMemoryResolver(
        {"fixed.example": [PUBLIC]}, rounds={"flip.example": [[PUBLIC], [LOOPBACK]]}
    )
    assert [await resolver.resolve("flip.example") for _ in range(3)] == [
        [PUBLIC],
        [LOOPBACK],
        [LOOPBACK],
    ]
    assert await resolver.resolve("fixed.example") == [PUBLIC]
    with pytest.raises(TargetRefusedError) as caught:
        await resolver.resolve("missing.example")
    assert caught.value.code == "unresolvable"


async def test_the_in_memory_delivery_records_posts_and_replays_its_script() -> None:
    failed = Attempt(outcome=Outcome.TIMEOUT, latency_ms=1.0)
    fake = InMemoryDelivery(
        [failed, Attempt(outcome=Outcome.DELIVERED, latency_ms=1.0, status=200)]
    )
    target = parse_target("https://hooks.example.com/", DEFAULT)
    outcomes = [
        (await fake.post(target, headers={"A": "b"}, body=b"x", timeout_seconds=1.0)).outcome
        for _ in range(3)
    ]
    assert outcomes == [Outcome.TIMEOUT, Outcome.DELIVERED, Outcome.DELIVERED]
    assert [post.body for post in fake.posts] == [b"x"] * 3
    assert fake.posts[0].headers == {"A": "b"}
    assert (
        await InMemoryDelivery().post(target, headers={}, body=b"", timeout_seconds=1)
    ).delivered
