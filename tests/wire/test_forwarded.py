"""
Tests for L{gateway.wire.forwarded}: which peers are trusted, who the client
is, and the forwarding headers sent to a backend.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire import forwarded
from gateway.errors import ConfigError, GatewayError
from gateway.wire.forwarded import (
    FORWARDING_HEADERS,
    OWNED_HEADERS,
    SESSION_HEADERS,
    TrustedProxies,
    clientAddress,
    clientHeaders,
    forwardedHeaders,
    headerKey,
    isOwned,
)
from gateway.wire.http1 import RequestHead

#: No example database: a test run leaves nothing behind in the checkout.
SETTINGS = settings(max_examples=200, deadline=None, database=None)

PROXIES = TrustedProxies(["10.0.0.0/8", "192.168.1.1", "2001:db8::/32", "::1/128"])
NOBODY = TrustedProxies()


def head(*headers: tuple[bytes, bytes]) -> RequestHead:
    """
    @return: a GET L{RequestHead} with C{headers}.
    """
    return RequestHead(b"GET", b"/chat", b"HTTP/1.1", list(headers))


def asDict(headers) -> dict[bytes, bytes]:
    """
    @return: the headers as a dict, after checking no name is repeated.
    """
    names = [k for k, _ in headers]
    assert len(names) == len(set(names))
    return dict(headers)


_PAIR = re.compile(
    r'\s*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)=(?:([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)|"((?:[^"\\]|\\.)*)")\s*'
)


def parseForwarded(value: bytes) -> list[dict[str, str]]:
    """
    A small RFC 7239 section 4 parser: elements separated by commas, pairs
    by semicolons, values tokens or quoted strings (unescaped here).

    @raise AssertionError: when C{value} is not well-formed.
    """
    text = value.decode("latin-1")
    elements: list[dict[str, str]] = []
    pos = 0
    element: dict[str, str] = {}
    while True:
        match = _PAIR.match(text, pos)
        assert match is not None, f"bad Forwarded at {pos}: {text!r}"
        name, token, quoted = match.groups()
        element[name.lower()] = token if token is not None else re.sub(r"\\(.)", r"\1", quoted)
        pos = match.end()
        if pos == len(text):
            elements.append(element)
            return elements
        if text[pos] == ";":
            pos += 1
        elif text[pos] == ",":
            elements.append(element)
            element = {}
            pos += 1
        else:
            raise AssertionError(f"bad Forwarded at {pos}: {text!r}")


# -- TrustedProxies ------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["10.0.0.1", "10.255.255.255", "192.168.1.1", "2001:db8::1", "2001:db8:ffff::", "::1"],
)
def test_trusted(host):
    """
    Addresses inside a configured IPv4 or IPv6 network are trusted; a bare
    address is a one-address network.
    """
    assert host in PROXIES


@pytest.mark.parametrize(
    "host",
    ["11.0.0.1", "9.255.255.255", "192.168.1.2", "2001:db9::1", "::2", "127.0.0.1", "0.0.0.0"],
)
def test_notTrusted(host):
    """
    Addresses outside every network are not trusted.
    """
    assert host not in PROXIES


@pytest.mark.parametrize(
    "host",
    [
        "unknown",
        "",
        "example.com",
        "localhost",
        "[::1]",
        "10.0.0.1:80",
        " 10.0.0.1",
        "10.0.0.1/32",
        "10.0.0",
        "_hidden",
    ],
)
def test_nonAddressNeverTrusted(host):
    """
    A host that is not an IP address (a name, a UNIX socket's C{unknown},
    an address with a port or brackets) is never trusted, even when every
    address is.
    """
    everyone = TrustedProxies(["0.0.0.0/0", "::/0"])
    assert host not in everyone


def test_familiesKeptApart():
    """
    An IPv4 network never holds an IPv6 address and the other way round.
    """
    v4 = TrustedProxies(["0.0.0.0/0"])
    v6 = TrustedProxies(["::/0"])
    assert "::1" not in v4
    assert "1.2.3.4" not in v6
    assert "1.2.3.4" in v4
    assert "::1" in v6


def test_emptyTrustsNobody():
    """
    With no networks configured, no address is trusted.
    """
    assert "127.0.0.1" not in NOBODY
    assert "::1" not in NOBODY
    assert "127.0.0.1" not in TrustedProxies([])


def test_hostBitsAllowed():
    """
    A network written with host bits set (C{10.1.2.3/8}) means the network
    that holds it.
    """
    proxies = TrustedProxies(["10.1.2.3/8"])
    assert "10.200.0.1" in proxies
    assert "11.0.0.1" not in proxies


def test_anyIterable():
    """
    The networks may come from any iterable, such as a generator.
    """
    proxies = TrustedProxies(n for n in ["10.0.0.0/8"])
    assert "10.1.1.1" in proxies


@pytest.mark.parametrize(
    "network",
    ["10.0.0.0/33", "not-a-network", "", "10.0.0.0/8/8", "2001:db8::/129", "10.0.0.256", "example.com"],
)
def test_invalidNetwork(network):
    """
    A string that is not a network is a L{ConfigError} (a L{GatewayError})
    naming the setting and the string, on one line.
    """
    with pytest.raises(ConfigError) as e:
        TrustedProxies(["10.0.0.0/8", network])
    message = str(e.value)
    assert isinstance(e.value, GatewayError)
    assert message.startswith("trusted_proxies: ")
    assert repr(network) in message
    assert "\n" not in message


# -- clientAddress -------------------------------------------------------


def test_untrustedPeer():
    """
    When the peer is not a trusted proxy, it is the client, whatever
    X-Forwarded-For it sends.
    """
    request = head((b"X-Forwarded-For", b"1.1.1.1, 10.0.0.5"))
    assert clientAddress(request, "203.0.113.9", PROXIES) == "203.0.113.9"
    assert clientAddress(request, "203.0.113.9", NOBODY) == "203.0.113.9"


def test_trustedPeerNoHeader():
    """
    A trusted proxy that sends no X-Forwarded-For is the client itself.
    """
    assert clientAddress(head(), "10.0.0.1", PROXIES) == "10.0.0.1"


def test_trustedPeerRightmostUntrusted():
    """
    Behind a trusted proxy, the client is the rightmost X-Forwarded-For
    entry that is not itself a trusted proxy: entries to its left could
    have been forged by the client.
    """
    request = head((b"X-Forwarded-For", b"6.6.6.6, 203.0.113.9, 10.0.0.7, 192.168.1.1"))
    assert clientAddress(request, "10.0.0.1", PROXIES) == "203.0.113.9"


def test_trustedPeerSeveralHeaders():
    """
    Several X-Forwarded-For headers are read as one list, in order.
    """
    request = head(
        (b"X-Forwarded-For", b"6.6.6.6, 203.0.113.9"),
        (b"Host", b"x"),
        (b"x-forwarded-for", b"10.0.0.7"),
    )
    assert clientAddress(request, "10.0.0.1", PROXIES) == "203.0.113.9"


def test_trustedPeerIPv6():
    """
    IPv6 proxies and clients are handled alike.
    """
    request = head((b"X-Forwarded-For", b"2001:db9::5, 2001:db8::2"))
    assert clientAddress(request, "::1", PROXIES) == "2001:db9::5"


def test_allTrusted():
    """
    When every X-Forwarded-For entry is a trusted proxy, the peer is the
    answer.
    """
    request = head((b"X-Forwarded-For", b"10.0.0.2, 192.168.1.1, ::1"))
    assert clientAddress(request, "10.0.0.1", PROXIES) == "10.0.0.1"


def test_emptyEntriesIgnored():
    """
    Blank entries and the spaces around entries are ignored.
    """
    request = head((b"X-Forwarded-For", b" 203.0.113.9 ,, ,10.0.0.3,  "), (b"X-Forwarded-For", b""))
    assert clientAddress(request, "10.0.0.1", PROXIES) == "203.0.113.9"


def test_garbageEntryIsClient():
    """
    An entry that is not an address is not a trusted proxy, so it is
    returned as the client when it is the rightmost such entry (it was
    written by the first trusted proxy's own peer).
    """
    request = head((b"X-Forwarded-For", b"1.1.1.1, unknown, 10.0.0.3"))
    assert clientAddress(request, "10.0.0.1", PROXIES) == "unknown"


@SETTINGS
@given(
    st.lists(st.sampled_from(["1.1.1.1", "203.0.113.9", "10.0.0.3", "::1", "2001:db9::1", "192.168.1.1"]), max_size=8),
    st.sampled_from(["10.0.0.1", "203.0.113.1", "::1", "2001:db9::9"]),
)
def test_clientAddressProperty(entries, peer):
    """
    The client is the peer when the peer is untrusted; otherwise the
    rightmost untrusted entry, or the peer when there is none.
    """
    request = head((b"X-Forwarded-For", ", ".join(entries).encode("ascii")))
    got = clientAddress(request, peer, PROXIES)
    if peer not in PROXIES:
        assert got == peer
    else:
        untrusted = [e for e in entries if e not in PROXIES]
        assert got == (untrusted[-1] if untrusted else peer)


# -- forwardedHeaders ------------------------------------------------------


FORGED = (
    (b"Host", b"example.com"),
    (b"X-Forwarded-For", b"6.6.6.6"),
    (b"X-Forwarded-Proto", b"https"),
    (b"X-Forwarded-Host", b"evil.example"),
    (b"Forwarded", b"for=6.6.6.6;proto=https;host=evil.example"),
)


def test_untrustedReplaces():
    """
    From an untrusted peer, the client's own forwarding headers are
    ignored: the gateway writes fresh ones describing only this hop, in a
    fixed order.
    """
    headers = forwardedHeaders(head(*FORGED), "203.0.113.9", False, PROXIES)
    assert headers == [
        (b"X-Forwarded-For", b"203.0.113.9"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"example.com"),
        (b"Forwarded", b"for=203.0.113.9;proto=http;host=example.com"),
    ]


def test_noProxiesConfigured():
    """
    With no trusted proxies at all, even a loopback peer's headers are
    replaced.
    """
    headers = asDict(forwardedHeaders(head(*FORGED), "127.0.0.1", True, NOBODY))
    assert headers[b"X-Forwarded-For"] == b"127.0.0.1"
    assert headers[b"X-Forwarded-Proto"] == b"https"
    assert headers[b"X-Forwarded-Host"] == b"example.com"
    assert headers[b"Forwarded"] == b"for=127.0.0.1;proto=https;host=example.com"


def test_trustedKeeps():
    """
    From a trusted proxy, X-Forwarded-For and Forwarded are appended to,
    and the original X-Forwarded-Proto and X-Forwarded-Host are kept.
    """
    headers = forwardedHeaders(head(*FORGED), "10.0.0.1", False, PROXIES)
    assert headers == [
        (b"X-Forwarded-For", b"6.6.6.6, 10.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"evil.example"),
        (
            b"Forwarded",
            b"for=6.6.6.6;proto=https;host=evil.example, for=10.0.0.1;proto=http;host=example.com",
        ),
    ]


def test_trustedSeveralHeaders():
    """
    From a trusted proxy, repeated X-Forwarded-For and Forwarded headers
    are joined in order before this hop is appended; the first
    X-Forwarded-Proto and X-Forwarded-Host win.
    """
    request = head(
        (b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"),
        (b"Forwarded", b"for=1.1.1.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-For", b"3.3.3.3"),
        (b"Forwarded", b"for=2.2.2.2, for=3.3.3.3"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"first.example"),
        (b"X-Forwarded-Host", b"second.example"),
    )
    headers = asDict(forwardedHeaders(request, "10.0.0.1", True, PROXIES))
    assert headers[b"X-Forwarded-For"] == b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"
    assert headers[b"X-Forwarded-Proto"] == b"https"
    assert headers[b"X-Forwarded-Host"] == b"first.example"
    assert [e["for"] for e in parseForwarded(headers[b"Forwarded"])] == [
        "1.1.1.1",
        "2.2.2.2",
        "3.3.3.3",
        "10.0.0.1",
    ]


def test_trustedWithoutHeaders():
    """
    A trusted proxy that sends no forwarding headers gets the same headers
    as an untrusted peer would.
    """
    request = head((b"Host", b"example.com"))
    assert forwardedHeaders(request, "10.0.0.1", True, PROXIES) == [
        (b"X-Forwarded-For", b"10.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"example.com"),
        (b"Forwarded", b"for=10.0.0.1;proto=https;host=example.com"),
    ]


def test_trustedHostFromHostHeader():
    """
    From a trusted proxy that sends no X-Forwarded-Host, the Host header
    is used.
    """
    request = head((b"Host", b"example.com"), (b"X-Forwarded-Proto", b"https"))
    headers = asDict(forwardedHeaders(request, "10.0.0.1", False, PROXIES))
    assert headers[b"X-Forwarded-Host"] == b"example.com"
    assert headers[b"X-Forwarded-Proto"] == b"https"


@pytest.mark.parametrize("secure,proto", [(True, b"https"), (False, b"http")])
def test_proto(secure, proto):
    """
    The protocol is C{https} when the client's connection is TLS, C{http}
    otherwise, in both X-Forwarded-Proto and Forwarded.
    """
    headers = asDict(forwardedHeaders(head(), "203.0.113.9", secure, PROXIES))
    assert headers[b"X-Forwarded-Proto"] == proto
    assert parseForwarded(headers[b"Forwarded"]) == [
        {"for": "203.0.113.9", "proto": proto.decode()}
    ]


def test_noHost():
    """
    Without a Host header there is no X-Forwarded-Host and no C{host=}
    parameter.
    """
    headers = forwardedHeaders(head(), "203.0.113.9", False, PROXIES)
    assert [k for k, _ in headers] == [b"X-Forwarded-For", b"X-Forwarded-Proto", b"Forwarded"]
    assert asDict(headers)[b"Forwarded"] == b"for=203.0.113.9;proto=http"


@pytest.mark.parametrize(
    "peer,node",
    [
        ("::1", b'for="[::1]"'),
        ("2001:db8::7", b'for="[2001:db8::7]"'),
        ("::ffff:203.0.113.9", b'for="[::ffff:203.0.113.9]"'),
    ],
)
def test_ipv6PeerQuoted(peer, node):
    """
    An IPv6 peer is bracketed and quoted in Forwarded (RFC 7239 6), and
    written bare in X-Forwarded-For.
    """
    headers = asDict(forwardedHeaders(head(), peer, False, NOBODY))
    assert headers[b"X-Forwarded-For"] == peer.encode("ascii")
    assert headers[b"Forwarded"].startswith(node + b";")
    assert parseForwarded(headers[b"Forwarded"])[0]["for"] == f"[{peer}]"


def test_unknownPeer():
    """
    A peer with no IP address (a UNIX socket) is written as the token
    C{unknown}.
    """
    headers = asDict(forwardedHeaders(head(), "unknown", False, PROXIES))
    assert headers[b"X-Forwarded-For"] == b"unknown"
    assert headers[b"Forwarded"] == b"for=unknown;proto=http"


@pytest.mark.parametrize(
    "host,param",
    [
        (b"example.com", b"host=example.com"),
        (b"example.com:8080", b'host="example.com:8080"'),
        (b"[::1]:8443", b'host="[::1]:8443"'),
        (b'ev"il', b'host="ev\\"il"'),
        (b"a\\b", b'host="a\\\\b"'),
        (b"a b", b'host="a b"'),
    ],
)
def test_hostQuoted(host, param):
    """
    A Host that is not a token (one with a port, brackets, spaces, quotes
    or backslashes) is a quoted string in Forwarded, escaped so that it
    reads back the same; X-Forwarded-Host carries it as it came.
    """
    headers = asDict(forwardedHeaders(head((b"Host", host)), "203.0.113.9", False, NOBODY))
    assert headers[b"Forwarded"].endswith(b";" + param)
    assert parseForwarded(headers[b"Forwarded"])[0]["host"] == host.decode("latin-1")
    assert headers[b"X-Forwarded-Host"] == host


_hosts = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=40
).filter(lambda h: h.strip(" ") == h)


@SETTINGS
@given(
    _hosts,
    st.sampled_from(["203.0.113.9", "10.0.0.1", "::1", "2001:db9::1"]),
    st.booleans(),
)
def test_forwardedParses(host, peer, secure):
    """
    For any printable Host, the Forwarded element the gateway writes is
    well-formed and reads back as the peer, the protocol and that host.
    """
    headers = asDict(forwardedHeaders(head((b"Host", host.encode("ascii"))), peer, secure, PROXIES))
    element = parseForwarded(headers[b"Forwarded"])[-1]
    assert element == {
        "for": f"[{peer}]" if ":" in peer else peer,
        "proto": "https" if secure else "http",
        "host": host,
    }


_headerValues = st.binary(max_size=40).filter(lambda v: b"\r" not in v and b"\n" not in v)


@SETTINGS
@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(FORWARDING_HEADERS)), _headerValues),
        max_size=6,
    ),
    st.sampled_from(["203.0.113.9", "2001:db9::1", "unknown"]),
    st.booleans(),
)
def test_untrustedIgnoresClientHeaders(forged, peer, secure):
    """
    From an untrusted peer, nothing the client puts in forwarding headers
    changes what the gateway writes.
    """
    host = (b"Host", b"example.com")
    clean = forwardedHeaders(head(host), peer, secure, PROXIES)
    assert forwardedHeaders(head(host, *forged), peer, secure, PROXIES) == clean


def test_forwardingHeaderNames():
    """
    The headers the gateway writes itself, whose client copies are
    dropped, are named in lower case and include X-Real-IP.
    """
    assert FORWARDING_HEADERS == {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"forwarded",
        b"x-real-ip",
    }
    written = forwardedHeaders(head((b"Host", b"x")), "203.0.113.9", False, NOBODY)
    assert {k.lower() for k, _ in written} <= FORWARDING_HEADERS


def test_exports():
    """
    The module's public names are pinned.
    """
    assert sorted(forwarded.__all__) == sorted(
        ["TrustedProxies", "clientAddress", "clientHeaders", "forwardedHeaders", "headerKey",
         "isOwned", "FORWARDING_HEADERS", "SESSION_HEADERS", "OWNED_HEADERS"]
    )


def test_ipv4MappedPeerTrusted() -> None:
    """
    On a dual-stack IPv6 listener an IPv4 proxy appears as an IPv4-mapped
    address; it is trusted by the IPv4 network that contains it.
    """
    assert "::ffff:10.0.0.1" in TrustedProxies(["10.0.0.0/8"])
    assert "::ffff:11.0.0.1" not in TrustedProxies(["10.0.0.0/8"])


def test_ownedHeadersListed() -> None:
    """
    The one list of gateway-owned headers holds the forwarding headers and
    every session header of the resume contract.
    """
    assert SESSION_HEADERS == {
        b"x-session-id", b"x-session-resumed", b"x-session-received", b"x-session-delivered",
        b"x-session-epoch",
    }
    assert OWNED_HEADERS == FORWARDING_HEADERS | SESSION_HEADERS


@pytest.mark.parametrize("name", [
    b"X-Session-Id", b"x-session-epoch", b"X_Session_Epoch", b"X-SESSION-RESUMED",
    b"x_session-received", b"X-Session-Delivered", b"X_Forwarded_For", b"x-forwarded-proto",
    b"X_FORWARDED_HOST", b"Forwarded", b"X-Real-IP", b"x_real_ip",
])
def test_ownedUnderAnySpelling(name: bytes) -> None:
    """
    A gateway-owned header is recognised whatever its case, with C{_} for C{-}.
    """
    assert isOwned(name)
    assert headerKey(name) == name.lower().replace(b"_", b"-")


@pytest.mark.parametrize("name", [b"Cookie", b"X-Session", b"X-Sessions-Id", b"X-Forwarded-Port",
                                  b"Authorization", b"X-Custom_Header"])
def test_notOwned(name: bytes) -> None:
    """
    Other headers, near names included, are not owned.
    """
    assert not isOwned(name)


def test_clientHeadersDropsOwnedHopByHopAndNamed() -> None:
    """
    What a client may pass on: not the owned headers (any spelling), not the
    hop-by-hop ones, not those named in Connection (case-insensitive, C{_}
    for C{-}), but Host and the WebSocket key and version even when named;
    the rest in order.
    """
    h = head(
        (b"Host", b"gw.example"),
        (b"Connection", b"Upgrade, X-Secret, host, Sec-WebSocket-Key"),
        (b"Connection", b"x_other"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"X-Session-Id", b"stolen"),
        (b"x_session_epoch", b"999"),
        (b"X_Forwarded_For", b"6.6.6.6"),
        (b"X-Real-Ip", b"6.6.6.6"),
        (b"x-secret", b"1"),
        (b"X-Other", b"2"),
        (b"Cookie", b"a=1"),
        (b"Content-Length", b"0"),
    )
    assert clientHeaders(h, drop=frozenset({b"content-length"})) == [
        (b"Host", b"gw.example"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Cookie", b"a=1"),
    ]


@given(st.lists(st.tuples(st.sampled_from(sorted(OWNED_HEADERS)),
                          st.lists(st.booleans(), min_size=20, max_size=20),
                          st.booleans()), max_size=8))
@SETTINGS
def test_clientHeadersNeverOwned(spellings) -> None:
    """
    No spelling of an owned header (any case, any C{-} written C{_}) survives.
    """
    headers = [(b"Host", b"x")]
    for name, upper, under in spellings:
        spelt = bytes(c - 32 if u and 97 <= c <= 122 else c for c, u in zip(name, upper + [False] * 40))
        if under:
            spelt = spelt.replace(b"-", b"_")
        headers.append((spelt, b"v"))
    assert clientHeaders(head(*headers)) == [(b"Host", b"x")]
