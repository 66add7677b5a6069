"""
Tests for L{gateway.wire.http1}: parsing and writing HTTP/1.x message heads.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.wire import http1
from gateway.errors import GatewayError, LimitExceeded, ProtocolError
from gateway.wire.http1 import (
    HOP_BY_HOP,
    REASONS,
    RequestHead,
    ResponseHead,
    errorResponse,
    findHeadEnd,
    parseRequestHead,
    parseResponseHead,
    serializeRequestHead,
    serializeResponseHead,
)

#: No example database: a test run leaves nothing behind in the checkout.
SETTINGS = settings(max_examples=200, deadline=None, database=None)

HANDSHAKE = (
    b"GET /chat?room=1&user=ann HTTP/1.1\r\n"
    b"Host: example.com:8080\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Cookie: sid=abc; theme=dark\r\n"
    b"Cookie: lang=en\r\n"
    b"\r\n"
)


def request(*headers: bytes, line: bytes = b"GET / HTTP/1.1") -> bytes:
    """
    @return: a request head with C{line} and the given header lines.
    """
    return b"".join([line + b"\r\n", *(h + b"\r\n" for h in headers), b"\r\n"])


def response(*headers: bytes, line: bytes = b"HTTP/1.1 101 Switching Protocols") -> bytes:
    """
    @return: a response head with C{line} and the given header lines.
    """
    return request(*headers, line=line)


def head(*headers: tuple[bytes, bytes], method: bytes = b"GET", target: bytes = b"/") -> RequestHead:
    """
    @return: a L{RequestHead} built directly, without parsing.
    """
    return RequestHead(method, target, b"HTTP/1.1", list(headers))


# -- parseRequestHead ------------------------------------------------------


def test_parseRequest():
    """
    A WebSocket handshake parses into its method, target, version and
    headers, names in the case they arrived in, in order.
    """
    parsed = parseRequestHead(HANDSHAKE)
    assert parsed.method == b"GET"
    assert parsed.target == b"/chat?room=1&user=ann"
    assert parsed.version == b"HTTP/1.1"
    assert parsed.path == b"/chat"
    assert parsed.query == b"room=1&user=ann"
    assert parsed.headers == [
        (b"Host", b"example.com:8080"),
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="),
        (b"Sec-WebSocket-Version", b"13"),
        (b"Cookie", b"sid=abc; theme=dark"),
        (b"Cookie", b"lang=en"),
    ]
    assert parsed.isWebSocketUpgrade() is True


def test_parseRequestHTTP10():
    """
    HTTP/1.0 is accepted and reported as such.
    """
    assert parseRequestHead(request(line=b"GET /x HTTP/1.0")).version == b"HTTP/1.0"


@pytest.mark.parametrize("method", [b"GET", b"POST", b"OPTIONS", b"PROPFIND"])
def test_parseRequestMethods(method):
    """
    Any upper-case method is parsed as it is.
    """
    assert parseRequestHead(request(line=method + b" / HTTP/1.1")).method == method


def test_parseRequestLineOnly():
    """
    A head with no headers, even without its final blank line, has an
    empty header list.
    """
    assert parseRequestHead(b"GET / HTTP/1.1\r\n\r\n").headers == []
    assert parseRequestHead(b"GET / HTTP/1.1").headers == []


def test_repeatedHeadersSeparate():
    """
    Repeated headers stay separate entries, in the order they came and in
    their own case, interleaved with other headers as they were.
    """
    parsed = parseRequestHead(
        request(b"cookie: a=1", b"X-Other: x", b"COOKIE: b=2", b"Cookie: c=3, d=4")
    )
    assert parsed.headers == [
        (b"cookie", b"a=1"),
        (b"X-Other", b"x"),
        (b"COOKIE", b"b=2"),
        (b"Cookie", b"c=3, d=4"),
    ]
    assert parsed.getAll(b"cookie") == [b"a=1", b"b=2", b"c=3, d=4"]
    assert parsed.get(b"cookie") == b"a=1"


def test_getMissing():
    """
    C{get} of an absent header is L{None}, C{getAll} and C{tokens} are
    empty.
    """
    parsed = parseRequestHead(request(b"Host: x"))
    assert parsed.get(b"upgrade") is None
    assert parsed.getAll(b"upgrade") == []
    assert parsed.tokens(b"upgrade") == []


@pytest.mark.parametrize(
    "line,value",
    [
        (b"X-A: v", b"v"),
        (b"X-A:v", b"v"),
        (b"X-A:   v   ", b"v"),
        (b"X-A:\tv\t", b"v"),
        (b"X-A: a  b\tc", b"a  b\tc"),
        (b"X-A:", b""),
        (b"X-A:    ", b""),
        (b"X-A: a:b:c", b"a:b:c"),
        (b"X-A: caf\xc3\xa9 \xff", b"caf\xc3\xa9 \xff"),
    ],
)
def test_headerValues(line, value):
    """
    A value loses the spaces and tabs around it, keeps those inside it,
    may be empty, may hold colons, and may hold bytes past 0x7F
    (obs-text).
    """
    assert parseRequestHead(request(line)).headers == [(b"X-A", value)]


def test_headerNameCharacters():
    """
    Every token character (RFC 9110 5.6.2) may appear in a header name.
    """
    name = b"!#$%&'*+-.^_`|~09AZaz"
    assert parseRequestHead(request(name + b": v")).headers == [(name, b"v")]


def test_tokens():
    """
    C{tokens} splits every value of a header on commas, strips and
    lower-cases the pieces, and drops empty ones.
    """
    parsed = parseRequestHead(
        request(b"Connection: keep-alive, Upgrade", b"connection: ,, TE ,", b"Upgrade: WebSocket")
    )
    assert parsed.tokens(b"connection") == [b"keep-alive", b"upgrade", b"te"]
    assert parsed.tokens(b"upgrade") == [b"websocket"]


def test_pathAndQuery():
    """
    The path is the target up to the first C{?}; the query is the rest,
    C{b""} when there is no C{?}, and may itself hold C{?}.
    """
    assert (head(target=b"/a/b").path, head(target=b"/a/b").query) == (b"/a/b", b"")
    assert (head(target=b"/a?").path, head(target=b"/a?").query) == (b"/a", b"")
    assert (head(target=b"/a?x=1?y").path, head(target=b"/a?x=1?y").query) == (b"/a", b"x=1?y")


@pytest.mark.parametrize(
    "target,name,value",
    [
        (b"/?sid=abc", b"sid", b"abc"),
        (b"/?a=1&sid=abc&sid=def", b"sid", b"abc"),
        (b"/?sid=", b"sid", b""),
        (b"/?sid", b"sid", b""),
        (b"/?sid=a%20b", b"sid", b"a b"),
        (b"/?sid=a+b", b"sid", b"a b"),
        (b"/?s%69d=x", b"sid", b"x"),
        (b"/?xsid=1", b"sid", None),
        (b"/?SID=1", b"sid", None),
        (b"/", b"sid", None),
        (b"/sid=1", b"sid", None),
    ],
)
def test_queryValue(target, name, value):
    """
    C{queryValue} returns the first value of a parameter, percent- and
    plus-decoded, C{b""} for a parameter with no value, and L{None} when
    the exact (case-sensitive) name is absent.
    """
    assert head(target=target).queryValue(name) == value


@pytest.mark.parametrize(
    "cookies,name,value",
    [
        ([b"sid=abc"], b"sid", b"abc"),
        ([b"a=1; sid=abc; b=2"], b"sid", b"abc"),
        ([b"a=1;sid=abc"], b"sid", b"abc"),
        ([b"a=1", b"sid=abc"], b"sid", b"abc"),
        ([b"sid=first", b"sid=second"], b"sid", b"first"),
        ([b'sid="quoted"'], b"sid", b"quoted"),
        ([b"sid="], b"sid", b""),
        ([b"sid=a=b"], b"sid", b"a=b"),
        ([b"xsid=1; sidx=2"], b"sid", None),
        ([b"sid; other=1"], b"sid", None),
        ([b"SID=1"], b"sid", None),
        ([], b"sid", None),
    ],
)
def test_cookie(cookies, name, value):
    """
    C{cookie} finds the first cookie with exactly that name across every
    C{Cookie} header, unquotes its value, and ignores pairs without C{=}
    and names that merely contain it.
    """
    parsed = head(*[(b"Cookie", c) for c in cookies], (b"X-Cookie", b"sid=wrong"))
    assert parsed.cookie(name) == value


@pytest.mark.parametrize(
    "upgrade,connection",
    [
        ([b"websocket"], [b"Upgrade"]),
        ([b"WebSocket"], [b"upgrade"]),
        ([b"WEBSOCKET"], [b"UPGRADE"]),
        ([b"websocket"], [b"keep-alive, Upgrade"]),
        ([b"websocket"], [b"Upgrade, keep-alive"]),
        ([b"websocket"], [b"keep-alive,upgrade"]),
        ([b"websocket"], [b"keep-alive", b"Upgrade"]),
        ([b"h2c, websocket"], [b"Upgrade"]),
        ([b"h2c", b"websocket"], [b"Upgrade"]),
    ],
)
def test_isWebSocketUpgrade(upgrade, connection):
    """
    A GET with C{websocket} among the C{Upgrade} tokens and C{upgrade}
    among the C{Connection} tokens is a WebSocket handshake, whatever the
    case, the order of tokens, and however they are spread over headers.
    """
    parsed = head(
        *[(b"Upgrade", u) for u in upgrade], *[(b"Connection", c) for c in connection]
    )
    assert parsed.isWebSocketUpgrade() is True


@pytest.mark.parametrize(
    "method,upgrade,connection",
    [
        (b"POST", [b"websocket"], [b"Upgrade"]),
        (b"get", [b"websocket"], [b"Upgrade"]),
        (b"GET", [], [b"Upgrade"]),
        (b"GET", [b"websocket"], []),
        (b"GET", [], []),
        (b"GET", [b"h2c"], [b"Upgrade"]),
        (b"GET", [b"websocket"], [b"keep-alive"]),
        (b"GET", [b"websocket"], [b"close"]),
        (b"GET", [b"websocket2"], [b"Upgrade"]),
        (b"GET", [b"web socket"], [b"Upgrade"]),
        (b"GET", [b"websocket"], [b"upgraded"]),
        (b"GET", [b"websocket"], [b"keep-alive upgrade"]),
    ],
)
def test_notWebSocketUpgrade(method, upgrade, connection):
    """
    Anything but a GET with both tokens whole is not a WebSocket handshake.
    """
    parsed = head(
        *[(b"Upgrade", u) for u in upgrade],
        *[(b"Connection", c) for c in connection],
        method=method,
    )
    assert parsed.isWebSocketUpgrade() is False


def test_upgradeTokensInOtherHeaders():
    """
    The tokens count only in headers named Upgrade and Connection.
    """
    parsed = head((b"X-Upgrade", b"websocket"), (b"Connection", b"Upgrade"))
    assert parsed.isWebSocketUpgrade() is False


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"GET",
        b"GET /",
        b"GET / ",
        b"GET /  HTTP/1.1",
        b"GET  / HTTP/1.1",
        b" GET / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET / HTTP/1.1 extra",
        b"GET /a b HTTP/1.1",
        b"GET\t/\tHTTP/1.1",
        b"get / HTTP/1.1",
        b"G-T / HTTP/1.1",
        b"GET / http/1.1",
        b"GET / HTTP/1",
        b"GET / HTTP/1.2",
        b"GET / HTTP/0.9",
        b"GET / HTTP/2.0",
        b"GET / HTTP/2",
        b"GET / HTTP/3",
        b"GET / HTTP/1.10",
        b"PRI * HTTP/2.0",
    ],
)
def test_malformedRequestLine(line):
    """
    A request line that is not C{METHOD SP target SP HTTP/1.0|1.1} (an
    upper-case method, single spaces, no extra parts) is a
    L{ProtocolError} naming the request line; HTTP/2.0 and other versions
    are refused.
    """
    with pytest.raises(ProtocolError, match="malformed request line"):
        parseRequestHead(request(b"Host: x", line=line))


@pytest.mark.parametrize(
    "target",
    [b"http://example.com/", b"*", b"example.com:443", b"chat", b"?x=1", b"%2Fx"],
)
def test_targetNotAbsolutePath(target):
    """
    A request target that is not an absolute path (absolute-form,
    asterisk-form, authority-form, relative) is a L{ProtocolError}.
    """
    with pytest.raises(ProtocolError, match="absolute path"):
        parseRequestHead(request(line=b"GET " + target + b" HTTP/1.1"))


@pytest.mark.parametrize("fold", [b" folded", b"\tfolded", b"  X-B: y"])
def test_obsFold(fold):
    """
    A header line starting with a space or tab (obsolete line folding,
    refused by RFC 9112 5.2) is a L{ProtocolError}.
    """
    with pytest.raises(ProtocolError, match="folding"):
        parseRequestHead(request(b"X-A: v", fold))


def test_obsFoldFirstLine():
    """
    Whitespace before the first header line is refused too.
    """
    with pytest.raises(ProtocolError):
        parseRequestHead(request(b" Host: x"))


@pytest.mark.parametrize(
    "line",
    [
        b"NoColon",
        b"Host example.com",
        b"Host : example.com",
        b"Host\t: example.com",
        b": value",
        b"X(y): z",
        b"X y: z",
        b"X\"y: z",
        b"X/y: z",
        b"X\x00: z",
        b"X\x7f: z",
        b"X\r: z",
        b"X\xc3\xa9: z",
    ],
)
def test_malformedHeaderLine(line):
    """
    A header line without a colon, with whitespace before the colon
    (RFC 9112 5.1 requires refusing it), with an empty name, or with a name
    that is not a token is a L{ProtocolError}.
    """
    with pytest.raises(ProtocolError, match="malformed header line"):
        parseRequestHead(request(b"Host: x", line))


@pytest.mark.parametrize(
    "value",
    [b"a\x00b", b"a\x01b", b"\x08", b"a\x0bb", b"a\x0cb", b"a\rb", b"a\nb", b"a\x1bb", b"a\x1f", b"a\x7fb"],
)
def test_controlCharacterInValue(value):
    """
    A control character (other than horizontal tab) in a value, including
    a bare CR or LF that could smuggle a header, is a L{ProtocolError}
    naming the header.
    """
    with pytest.raises(ProtocolError, match="control character in header X-A"):
        parseRequestHead(request(b"X-A: " + value))


def test_protocolErrorIsGatewayError():
    """
    Parse errors are L{GatewayError}s, and not L{LimitExceeded}: they get a
    400, not a 431.
    """
    with pytest.raises(ProtocolError) as e:
        parseRequestHead(b"nonsense\r\n\r\n")
    assert isinstance(e.value, GatewayError)
    assert not isinstance(e.value, LimitExceeded)


# -- parseResponseHead ---------------------------------------------------


def test_parseResponse():
    """
    A status line and headers parse into version, status, reason and
    headers, repeated ones kept separate and in their own case.
    """
    parsed = parseResponseHead(
        response(
            b"Upgrade: websocket",
            b"Connection: Upgrade",
            b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
            b"Set-Cookie: a=1",
            b"set-cookie: b=2",
        )
    )
    assert isinstance(parsed, ResponseHead)
    assert (parsed.version, parsed.status, parsed.reason) == (
        b"HTTP/1.1",
        101,
        b"Switching Protocols",
    )
    assert parsed.getAll(b"set-cookie") == [b"a=1", b"b=2"]
    assert parsed.headers[4] == (b"set-cookie", b"b=2")
    assert parsed.tokens(b"upgrade") == [b"websocket"]


@pytest.mark.parametrize(
    "line,status,reason",
    [
        (b"HTTP/1.1 200 OK", 200, b"OK"),
        (b"HTTP/1.0 404 Not Found", 404, b"Not Found"),
        (b"HTTP/1.1 200", 200, b""),
        (b"HTTP/1.1 200 ", 200, b""),
        (b"HTTP/1.1 503 Service  Unavailable now", 503, b"Service  Unavailable now"),
        (b"HTTP/1.1 999 Odd", 999, b"Odd"),
    ],
)
def test_statusLines(line, status, reason):
    """
    The reason phrase is optional, may be empty and may hold spaces; the
    status is any three digits.
    """
    parsed = parseResponseHead(response(line=line))
    assert (parsed.status, parsed.reason) == (status, reason)


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"HTTP/1.1",
        b"HTTP/1.1 20 OK",
        b"HTTP/1.1 2000 OK",
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1\t200 OK",
        b"HTTP/2.0 200 OK",
        b"HTTP/2 200 OK",
        b"HTTP/1.2 200 OK",
        b"http/1.1 200 OK",
        b"ICY 200 OK",
        b" HTTP/1.1 200 OK",
    ],
)
def test_malformedStatusLine(line):
    """
    A status line that is not C{HTTP/1.0|1.1 SP 3DIGIT [SP reason]} is a
    L{ProtocolError}.
    """
    with pytest.raises(ProtocolError, match="malformed status line"):
        parseResponseHead(response(line=line))


@pytest.mark.parametrize(
    "line", [b" folded", b"NoColon", b"X-A : v", b"X-A: a\x00b", b"X-A: a\rb"]
)
def test_responseHeaderRules(line):
    """
    Response headers are held to the same rules as request headers.
    """
    with pytest.raises(ProtocolError):
        parseResponseHead(response(b"Upgrade: websocket", line))


# -- findHeadEnd -----------------------------------------------------------


@pytest.mark.parametrize(
    "buffer",
    [
        b"",
        b"G",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r",
        b"GET / HTTP/1.1\n\n",
        b"GET / HTTP/1.1\r\n\n",
        b"GET / HTTP/1.1\n\r\n",
        b"GET / HTTP/1.1\r\r\n\n",
    ],
)
def test_findHeadEndIncomplete(buffer):
    """
    Until a CRLF CRLF has arrived, more bytes are needed: -1.  Bare LFs do
    not end a head.
    """
    assert findHeadEnd(buffer, 1024) == -1


def test_findHeadEnd():
    """
    The index returned is just past the first blank line, whatever
    follows it (a body, early WebSocket frames, another head).
    """
    assert findHeadEnd(HANDSHAKE, 1024) == len(HANDSHAKE)
    assert findHeadEnd(HANDSHAKE + b"\x81\x00", 1024) == len(HANDSHAKE)
    assert findHeadEnd(HANDSHAKE + HANDSHAKE, 1024) == len(HANDSHAKE)
    assert findHeadEnd(b"\r\n\r\nrest", 1024) == 4


def _headOfLength(n: int) -> bytes:
    """
    @return: a request head of exactly C{n} bytes (n >= 27).
    """
    prefix = b"GET / HTTP/1.1\r\nX-Pad: "
    pad = n - len(prefix) - 4
    assert pad >= 0
    data = prefix + b"p" * pad + b"\r\n\r\n"
    assert len(data) == n
    return data


@pytest.mark.parametrize("limit", [64, 100, 1024])
def test_findHeadEndAtLimit(limit):
    """
    A head of exactly C{limit} bytes is found, whole or with more bytes
    behind it.
    """
    data = _headOfLength(limit)
    assert findHeadEnd(data, limit) == limit
    assert findHeadEnd(data + b"x" * 100, limit) == limit


@pytest.mark.parametrize("limit", [64, 100, 1024])
def test_findHeadEndIncompleteAtLimit(limit):
    """
    Fewer than C{limit} bytes with no head end yet wait for more (-1);
    C{limit} bytes with no head end can never make a head within the limit.
    """
    data = _headOfLength(limit + 10)
    assert findHeadEnd(data[: limit - 1], limit) == -1
    with pytest.raises(LimitExceeded):
        findHeadEnd(data[:limit], limit)


@pytest.mark.parametrize("limit", [64, 100, 1024])
@pytest.mark.parametrize("extra", [1, 2, 100])
def test_findHeadEndPastLimit(limit, extra):
    """
    More than C{limit} bytes with no head end is L{LimitExceeded} (a
    L{ProtocolError}) naming the limit.
    """
    data = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * (limit + extra)
    data = data[: limit + extra]
    with pytest.raises(LimitExceeded, match=f"larger than {limit} bytes") as e:
        findHeadEnd(data, limit)
    assert isinstance(e.value, ProtocolError)


def test_findHeadEndPastLimitEndLater():
    """
    A head end that arrives well past the limit does not rescue the
    buffer: it is still L{LimitExceeded}.
    """
    data = _headOfLength(200)
    with pytest.raises(LimitExceeded):
        findHeadEnd(data, 64)


@SETTINGS
@given(st.integers(27, 300), st.integers(0, 50), st.data())
def test_findHeadEndIncremental(size, slack, data):
    """
    A head no larger than the limit, arriving in any pieces, gives -1 for
    every prefix short of its end and its length once it is all there.
    """
    limit = size + slack
    whole = _headOfLength(size)
    cuts = sorted(set(data.draw(st.lists(st.integers(1, size - 1), max_size=10))))
    for cut in cuts:
        assert findHeadEnd(whole[:cut], limit) == -1
    assert findHeadEnd(whole, limit) == size


@SETTINGS
@given(st.binary(max_size=200).filter(lambda b: b"\r\n\r\n" not in b), st.integers(0, 200))
def test_findHeadEndNoTerminator(buffer, limit):
    """
    A buffer with no head end waits (-1) below the limit and is refused
    from it on.
    """
    if len(buffer) >= limit:
        with pytest.raises(LimitExceeded):
            findHeadEnd(buffer, limit)
    else:
        assert findHeadEnd(buffer, limit) == -1


# -- serialize -------------------------------------------------------------


def test_serializeRequestHead():
    """
    A request head is the request line, one C{name: value} line per header
    in order, and a blank line, always HTTP/1.1.
    """
    assert (
        serializeRequestHead(b"GET", b"/chat?x=1", [(b"Host", b"a"), (b"Cookie", b"x=1"), (b"Cookie", b"y=2")])
        == b"GET /chat?x=1 HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\nCookie: y=2\r\n\r\n"
    )
    assert serializeRequestHead(b"GET", b"/", []) == b"GET / HTTP/1.1\r\n\r\n"


def test_serializeResponseHead():
    """
    A response head is the status line, the headers in order and a blank
    line, always HTTP/1.1.
    """
    assert (
        serializeResponseHead(101, b"Switching Protocols", iter([(b"Upgrade", b"websocket")]))
        == b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    )


def test_roundTripHandshake():
    """
    Parsing a head and writing it back gives the same bytes.
    """
    parsed = parseRequestHead(HANDSHAKE)
    assert serializeRequestHead(parsed.method, parsed.target, parsed.headers) == HANDSHAKE


_tchar = st.sampled_from(list(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
_tokens = st.lists(_tchar, min_size=1, max_size=20).map(bytes)
_vchar = st.integers(0x21, 0x7E) | st.integers(0x80, 0xFF)
_values = st.one_of(
    st.just(b""),
    st.builds(
        lambda first, middle, last: bytes([first]) + bytes(middle) + bytes([last]),
        _vchar,
        st.lists(_vchar | st.sampled_from([0x20, 0x09]), max_size=30),
        _vchar,
    ),
    _vchar.map(lambda c: bytes([c])),
)
_headers = st.lists(st.tuples(_tokens, _values), max_size=12)
_targets = st.lists(st.integers(0x21, 0x7E), max_size=40).map(lambda t: b"/" + bytes(t))


@SETTINGS
@given(st.lists(st.integers(ord("A"), ord("Z")), min_size=1, max_size=10).map(bytes), _targets, _headers)
def test_requestRoundTrip(method, target, headers):
    """
    Any well-formed request written by L{serializeRequestHead} parses back
    to the same method, target and headers (order, case and repeats
    kept), and L{findHeadEnd} finds its end exactly.
    """
    data = serializeRequestHead(method, target, headers)
    assert findHeadEnd(data, len(data)) == len(data)
    parsed = parseRequestHead(data)
    assert (parsed.method, parsed.target, parsed.version, parsed.headers) == (
        method,
        target,
        b"HTTP/1.1",
        headers,
    )


@SETTINGS
@given(
    st.integers(100, 999),
    st.lists(st.integers(0x20, 0x7E) | st.just(0x09), max_size=30).map(bytes),
    _headers,
)
def test_responseRoundTrip(status, reason, headers):
    """
    Any well-formed response written by L{serializeResponseHead} parses
    back to the same status, reason and headers.
    """
    data = serializeResponseHead(status, reason, headers)
    assert findHeadEnd(data, len(data)) == len(data)
    parsed = parseResponseHead(data)
    assert (parsed.version, parsed.status, parsed.reason, parsed.headers) == (
        b"HTTP/1.1",
        status,
        reason,
        headers,
    )


# -- errorResponse -------------------------------------------------------


def splitResponse(data: bytes) -> tuple[ResponseHead, bytes]:
    """
    @return: the parsed head of a whole response and its body.
    """
    end = findHeadEnd(data, len(data))
    assert end != -1
    return parseResponseHead(data[:end]), data[end:]


@pytest.mark.parametrize("status", sorted(REASONS))
def test_errorResponse(status):
    """
    An error response has the status and its reason, a JSON body naming
    the reason, the status and the message, a Content-Length equal to the
    body's length, and closes the connection without being cached.
    """
    parsed, body = splitResponse(errorResponse(status, "no route for /x"))
    assert (parsed.version, parsed.status, parsed.reason) == (b"HTTP/1.1", status, REASONS[status])
    assert parsed.get(b"content-type") == b"application/json"
    assert int(parsed.get(b"content-length")) == len(body)
    assert parsed.get(b"connection") == b"close"
    assert parsed.get(b"cache-control") == b"no-store"
    assert json.loads(body) == {
        "error": REASONS[status].decode("ascii"),
        "status": status,
        "message": "no route for /x",
    }


def test_errorResponseUnknownStatus():
    """
    A status with no known reason is sent with the reason C{Error}.
    """
    parsed, body = splitResponse(errorResponse(418, "teapot"))
    assert (parsed.status, parsed.reason) == (418, b"Error")
    assert json.loads(body)["error"] == "Error"


@pytest.mark.parametrize(
    "message",
    ["caf\u00e9 \u2603 \U0001f600", 'quote " and \\ backslash', "line\r\nX-Injected: yes", ""],
)
def test_errorResponseMessageEscaped(message):
    """
    Any message, non-ASCII or holding CR LF, stays inside the JSON body:
    Content-Length counts its encoded bytes and no header is injected.
    """
    parsed, body = splitResponse(errorResponse(400, message))
    assert int(parsed.get(b"content-length")) == len(body)
    assert json.loads(body.decode("utf-8"))["message"] == message
    assert parsed.get(b"x-injected") is None
    assert [k for k, _ in parsed.headers] == [
        b"Content-Type",
        b"Content-Length",
        b"Cache-Control",
        b"Connection",
    ]


def test_errorResponseExtraHeaders():
    """
    Extra headers come after the standard ones, in the order given.
    """
    parsed, _ = splitResponse(
        errorResponse(503, "busy", [(b"Retry-After", b"5"), (b"X-Gateway", b"a")])
    )
    assert parsed.headers[-2:] == [(b"Retry-After", b"5"), (b"X-Gateway", b"a")]
    assert parsed.get(b"connection") == b"close"


# -- constants -------------------------------------------------------------


def test_hopByHop():
    """
    The hop-by-hop set holds RFC 9110 7.6.1's connection headers, in lower
    case, and not the end-to-end WebSocket headers.
    """
    assert {b"connection", b"upgrade", b"keep-alive", b"transfer-encoding", b"te"} <= HOP_BY_HOP
    assert all(name == name.lower() for name in HOP_BY_HOP)
    assert not HOP_BY_HOP & {b"sec-websocket-key", b"sec-websocket-protocol", b"cookie", b"host"}


def test_reasons():
    """
    The reasons the gateway uses are the standard phrases.
    """
    assert REASONS[400] == b"Bad Request"
    assert REASONS[431] == b"Request Header Fields Too Large"
    assert REASONS[502] == b"Bad Gateway"
    assert REASONS[503] == b"Service Unavailable"


def test_exports():
    """
    The module's public names are pinned.
    """
    assert sorted(http1.__all__) == sorted(
        [
            "RequestHead",
            "ResponseHead",
            "Headers",
            "findHeadEnd",
            "parseRequestHead",
            "parseResponseHead",
            "serializeRequestHead",
            "serializeResponseHead",
            "errorPayload",
            "errorResponse",
            "HOP_BY_HOP",
            "REASONS",
            "corsHeaders",
            "plainBodyLength",
            "plainKeepAlive",
            "serializeResponse",
        ]
    )
    assert all(hasattr(http1, name) for name in http1.__all__)


def test_findHeadEndSameAnswerHoweverSplit() -> None:
    """
    A head a few bytes over the limit is refused whether it arrives whole or
    in pieces (the terminating blank line counts towards the limit).
    """
    head = b"GET / HTTP/1.1\r\nA: " + b"x" * 11 + b"\r\n\r\n"
    assert len(head) == 34
    with pytest.raises(LimitExceeded):
        findHeadEnd(head, 32)
    with pytest.raises(LimitExceeded):
        findHeadEnd(head[:33], 32)
    assert findHeadEnd(head, 34) == 34


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nX-Forwarded-For\n: 6.6.6.6\r\n\r\n",
        b"GET / HTTP/1.1\n\r\n\r\n",
        b"GET /\x00\x01\x7f HTTP/1.1\r\n\r\n",
    ],
)
def test_bareLineFeedsAndControlCharactersRefused(head: bytes) -> None:
    """
    A bare line feed at the end of a header name or request line, and
    control characters in the request target, are malformed (they would be
    forwarded to the backend as they came).
    """
    with pytest.raises(ProtocolError):
        parseRequestHead(head)


def test_statusLineWithBareLineFeedRefused() -> None:
    """
    A status line ending in a bare line feed is malformed.
    """
    with pytest.raises(ProtocolError):
        parseResponseHead(b"HTTP/1.1 101 Switching\n\r\n\r\n")


@pytest.mark.parametrize(
    "lines, message",
    [
        (b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "together with Transfer-Encoding"),
        (b"Transfer-Encoding: chunked\r\nContent-Length: 4\r\n", "together with Transfer-Encoding"),
        (b"Content-Length: 4\r\nContent-Length: 5\r\n", "conflicting"),
        (b"Content-Length: 4, 5\r\n", "conflicting"),
        (b"Content-Length: -1\r\n", "malformed Content-Length"),
        (b"Content-Length: 0x10\r\n", "malformed Content-Length"),
        (b"Content-Length:\r\n", "malformed Content-Length"),
        (b"Host: other\r\n", "more than one Host"),
    ],
)
def test_parseRequestHead_refuses_ambiguous_framing(lines: bytes, message: str) -> None:
    """
    A request that two parsers could frame two ways is refused: a length
    and a transfer coding, lengths that disagree or are not numbers, and a
    second C{Host}.
    """
    with pytest.raises(ProtocolError, match=message):
        parseRequestHead(b"POST /x HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n")


def test_parseRequestHead_accepts_repeated_equal_lengths() -> None:
    """
    The same length given twice is one length (RFC 9112 6.3).
    """
    head = parseRequestHead(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\n")
    assert head.hasBody()


@pytest.mark.parametrize(
    "lines, body",
    [
        (b"", False),
        (b"Content-Length: 0\r\n", False),
        (b"Content-Length: 00\r\n", False),
        (b"Content-Length: 1\r\n", True),
        (b"Transfer-Encoding: chunked\r\n", True),
    ],
)
def test_hasBody(lines: bytes, body: bool) -> None:
    """
    A head has a body with a transfer coding or a non-zero length.
    """
    assert parseRequestHead(b"GET /x HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n").hasBody() is body
