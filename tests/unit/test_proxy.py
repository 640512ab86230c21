"""ForwardedPolicy: whom to trust, and what their Forwarded / X-Forwarded-* say."""

from __future__ import annotations

import re

import pytest

from app_server.framework.datastructures import Headers
from app_server.framework.proxy import ForwardedPolicy

PROXY = "10.0.0.1"  # a trusted load balancer
CLIENT = "203.0.113.7"


def headers(*pairs: tuple[str, str]) -> Headers:
    return Headers.from_items(list(pairs))


# -- trust --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("allow", "peer", "trusted"),
    [
        ([], "127.0.0.1", False),
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False),
        (["10.0.0.0/8"], "10.255.1.2", True),
        (["10.0.0.0/8"], "11.0.0.1", False),
        (["10.0.0.1/8"], "10.9.9.9", True),  # host bits tolerated
        (["192.168.1.0/24", "172.16.0.0/12"], "172.20.0.1", True),
        (["127.0.0.1, 10.0.0.0/8"], "10.1.1.1", True),  # comma-separated, as on the CLI
        (["  127.0.0.1  ", ""], "127.0.0.1", True),
        (["::1"], "::1", True),
        (["::1"], "0:0:0:0:0:0:0:1", True),
        (["2001:db8::/32"], "2001:db8:abcd::1", True),
        (["2001:db8::/32"], "2001:db9::1", False),
        (["2001:DB8::1"], "2001:db8::1", True),
        (["fe80::/10"], "fe80::1%eth0", True),
        (["127.0.0.1"], "::ffff:127.0.0.1", True),  # dual-stack socket, IPv4 peer
        (["10.0.0.0/8"], "::ffff:10.1.2.3", True),
        (["::/0"], "10.0.0.1", False),  # an IPv6 network never holds an IPv4 peer
        (["0.0.0.0/0"], "8.8.8.8", True),
        (["*"], "8.8.8.8", True),
        (["*"], "2001:db8::1", True),
        (["*"], "", True),  # Unix socket peer
        (["127.0.0.1"], "", False),
        (["0.0.0.0/0", "::/0"], "", False),  # only "*" trusts a Unix socket
        (["127.0.0.1"], "not-an-ip", False),
        (["127.0.0.1"], "127.0.0.1:80", False),
    ],
)
def test_trusts(allow: list[str], peer: str, trusted: bool) -> None:
    policy = ForwardedPolicy(allow)
    assert policy.trusts(peer) is trusted
    assert policy.trusts(peer) is trusted  # cached answer agrees


@pytest.mark.parametrize("entry", ["localhost", "10.0.0.0/33", "1.2.3", "**", "10.0.0.1-10.0.0.9"])
def test_invalid_entry_is_rejected_at_construction(entry: str) -> None:
    expected = re.escape(f"invalid forwarded-allow-ips entry {entry!r}")
    with pytest.raises(ValueError, match=expected):
        ForwardedPolicy(["127.0.0.1", entry])


@pytest.mark.parametrize(
    ("allow", "anyone"), [([], False), ([""], False), (["*"], True), (["::1"], True)]
)
def test_trusts_anyone(allow: list[str], anyone: bool) -> None:
    assert ForwardedPolicy(allow).trusts_anyone is anyone


def test_cache_stays_bounded_and_answers_stay_right() -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"], cache_size=8)
    for i in range(100):
        assert policy.trusts(f"10.0.0.{i}")
        assert not policy.trusts(f"11.0.0.{i}")
    assert len(policy._cache) <= 8
    assert policy.trusts("10.0.0.1")


# -- untrusted peers --------------------------------------------------------------


@pytest.mark.parametrize(
    "request_headers",
    [
        headers(),
        headers(("X-Forwarded-For", "1.2.3.4"), ("X-Forwarded-Proto", "https")),
        headers(("Forwarded", "for=1.2.3.4;proto=https")),
    ],
)
def test_untrusted_peer_is_taken_as_is(request_headers: Headers) -> None:
    policy = ForwardedPolicy(["127.0.0.1"])
    assert policy.resolve(CLIENT, "http", request_headers) == (CLIENT, "http")


def test_nobody_trusted_by_default() -> None:
    spoof = headers(("X-Forwarded-For", "1.2.3.4"))
    assert ForwardedPolicy([]).resolve("127.0.0.1", "http", spoof) == ("127.0.0.1", "http")


# -- X-Forwarded-For / X-Forwarded-Proto ------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], (PROXY, "http")),
        ([("X-Forwarded-For", CLIENT)], (CLIENT, "http")),
        ([("X-Forwarded-For", f" {CLIENT} ")], (CLIENT, "http")),
        ([("X-Forwarded-For", f"{CLIENT}:51234")], (CLIENT, "http")),
        ([("X-Forwarded-For", "[2001:db8::7]:443")], ("2001:db8::7", "http")),
        ([("X-Forwarded-For", "2001:DB8::7")], ("2001:db8::7", "http")),
        ([("X-Forwarded-Proto", "https")], (PROXY, "https")),
        ([("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "HTTPS")], (CLIENT, "https")),
        ([("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "wss")], (CLIENT, "wss")),
        ([("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "ftp")], (CLIENT, "http")),
        ([("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "")], (CLIENT, "http")),
        ([("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "javascript:")], (CLIENT, "http")),
    ],
)
def test_x_forwarded_single_hop(pairs: list[tuple[str, str]], expected: tuple[str, str]) -> None:
    policy = ForwardedPolicy([PROXY])
    assert policy.resolve(PROXY, "http", headers(*pairs)) == expected


@pytest.mark.parametrize(
    ("xff", "expected_ip"),
    [
        # the client wrote the left part; our proxies appended the rest
        ("1.1.1.1, 203.0.113.7", CLIENT),
        ("1.1.1.1, 203.0.113.7, 10.0.0.2", CLIENT),
        ("1.1.1.1, 203.0.113.7, 10.0.0.2, 10.0.0.3", CLIENT),
        ("10.0.0.5, 1.1.1.1, 203.0.113.7, 10.0.0.2", CLIENT),  # trusted-looking spoof
        ("203.0.113.7,10.0.0.2", CLIENT),
        ("10.0.0.9, 10.0.0.2", "10.0.0.9"),  # all trusted: the leftmost
        ("garbage, 203.0.113.7", CLIENT),
        ("1.1.1.1, garbage, 10.0.0.2", "10.0.0.2"),  # an unusable hop ends the walk
        ("1.1.1.1, unknown", PROXY),
        ("garbage", PROXY),
        (", ,", PROXY),
        ("", PROXY),
    ],
)
def test_x_forwarded_for_chain(xff: str, expected_ip: str) -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"])
    resolved = policy.resolve(PROXY, "http", headers(("X-Forwarded-For", xff)))
    assert resolved == (expected_ip, "http")


def test_repeated_x_forwarded_for_headers_join_in_order() -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"])
    request = headers(("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", f"{CLIENT}, 10.0.0.2"))
    assert policy.resolve(PROXY, "http", request) == (CLIENT, "http")


@pytest.mark.parametrize(
    ("xfp", "expected_scheme"),
    [
        ("https", "https"),  # one value: the hop our peer received
        ("https, http", "https"),  # aligned from the right: client hop was https
        ("http, https", "http"),
        ("wss, https, http", "https"),  # a spoofed extra value on the left is ignored
        ("https, bogus", "https"),  # bogus value on the trusted hop: keep walking
    ],
)
def test_x_forwarded_proto_aligns_with_the_chain(xfp: str, expected_scheme: str) -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"])
    request = headers(("X-Forwarded-For", f"{CLIENT}, 10.0.0.2"), ("X-Forwarded-Proto", xfp))
    assert policy.resolve(PROXY, "http", request) == (CLIENT, expected_scheme)


def test_x_forwarded_proto_of_spoofed_hops_is_ignored() -> None:
    policy = ForwardedPolicy([PROXY])
    request = headers(("X-Forwarded-For", f"1.1.1.1, {CLIENT}"), ("X-Forwarded-Proto", "wss, http"))
    assert policy.resolve(PROXY, "https", request) == (CLIENT, "http")


# -- Forwarded (RFC 7239) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("forwarded", "expected"),
    [
        (f"for={CLIENT}", (CLIENT, "http")),
        (f"for={CLIENT};proto=https", (CLIENT, "https")),
        (f"For={CLIENT}; Proto=HTTPS; by=10.0.0.1; host=example.com", (CLIENT, "https")),
        (f'for="{CLIENT}:4711"', (CLIENT, "http")),
        ('for="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", "http")),
        ('for="[2001:db8:cafe::17]"', ("2001:db8:cafe::17", "http")),
        ("for=2001:db8:cafe::17", ("2001:db8:cafe::17", "http")),  # unquoted, tolerated
        ('for="[2001:db8:cafe::17"', (PROXY, "http")),  # unclosed bracket
        ("for=unknown;proto=https", (PROXY, "https")),
        ("for=_hidden", (PROXY, "http")),
        ('for="_gazonk"', (PROXY, "http")),
        ("proto=https", (PROXY, "https")),
        ("proto=gopher", (PROXY, "http")),
        (f"for={CLIENT};proto=https;proto=http", (CLIENT, "https")),  # first wins
        (f"for=1.1.1.1, for={CLIENT}", (CLIENT, "http")),
        (f"for=1.1.1.1;proto=wss, for={CLIENT};proto=https", (CLIENT, "https")),
        (f"for={CLIENT};proto=https, for=10.0.0.2;proto=http", (CLIENT, "https")),
        (f"for={CLIENT}, for=10.0.0.2;proto=https", (CLIENT, "https")),
        (f"for=_hidden, for={CLIENT}", (CLIENT, "http")),
        ("for=10.0.0.3, for=10.0.0.2", ("10.0.0.3", "http")),
        ("for=1.1.1.1, for=unknown, for=10.0.0.2", ("10.0.0.2", "http")),
        (f'for="{CLIENT}";proto="https"', (CLIENT, "https")),
        (f'for="a,b;c", for={CLIENT}', (CLIENT, "http")),  # separators inside quotes
    ],
)
def test_forwarded(forwarded: str, expected: tuple[str, str]) -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"])
    assert policy.resolve(PROXY, "http", headers(("Forwarded", forwarded))) == expected


def test_repeated_forwarded_headers_join_in_order() -> None:
    policy = ForwardedPolicy(["10.0.0.0/8"])
    request = headers(("Forwarded", "for=1.1.1.1"), ("Forwarded", f"for={CLIENT}, for=10.0.0.2"))
    assert policy.resolve(PROXY, "http", request) == (CLIENT, "http")


def test_forwarded_wins_over_x_forwarded() -> None:
    policy = ForwardedPolicy([PROXY])
    request = headers(
        ("X-Forwarded-For", "1.1.1.1"),
        ("X-Forwarded-Proto", "http"),
        ("Forwarded", f"for={CLIENT};proto=https"),
    )
    assert policy.resolve(PROXY, "http", request) == (CLIENT, "https")


@pytest.mark.parametrize("garbage", ["", ";;;", ",,,", "nonsense", '"', "=", "for", "==;=,=\\"])
def test_unparseable_forwarded_falls_back_to_x_forwarded(garbage: str) -> None:
    policy = ForwardedPolicy([PROXY])
    request = headers(("Forwarded", garbage), ("X-Forwarded-For", CLIENT))
    assert policy.resolve(PROXY, "http", request) == (CLIENT, "http")


@pytest.mark.parametrize(
    "value",
    [
        "\x00\x01\x02",
        "for=" + "9" * 5000,
        'for="' + "\\" * 3000,
        "for=[" * 500,
        "for=1.2.3.4%",
        "for=::ffff:zzzz",
        "\u00ff\u00fe for=\u00e9",
    ],
)
def test_garbage_never_raises(value: str) -> None:
    policy = ForwardedPolicy(["*"])
    for name in ("Forwarded", "X-Forwarded-For", "X-Forwarded-Proto"):
        ip, scheme = policy.resolve(PROXY, "https", headers((name, value)))
        assert scheme == "https"
        assert ip == PROXY


def test_trust_all_takes_the_leftmost_address() -> None:
    policy = ForwardedPolicy(["*"])
    request = headers(("X-Forwarded-For", f"{CLIENT}, 10.0.0.2"))
    assert policy.resolve("", "http", request) == (CLIENT, "http")


def test_unix_socket_peer_needs_trust_all() -> None:
    request = headers(("X-Forwarded-For", CLIENT), ("X-Forwarded-Proto", "https"))
    assert ForwardedPolicy(["127.0.0.1"]).resolve("", "http", request) == ("", "http")
    assert ForwardedPolicy(["*"]).resolve("", "http", request) == (CLIENT, "https")
