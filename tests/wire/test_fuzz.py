"""
Hypothesis fuzzing of the decoders that read client bytes: whatever the
input, they answer with L{ProtocolError} (or L{LimitExceeded}, its
subclass), never another exception.
"""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from gateway.errors import ProtocolError
from gateway.wire.http1 import parseRequestHead, parseResponseHead
from gateway.wire.protocol import MAX_JSON_DEPTH, decodeMessage, loadJSON, packetFromJSON

FUZZ = settings(max_examples=300, deadline=None)

#: JSON-ish values, including the awkward ones: huge and negative numbers,
#: NaN and infinities, lone surrogates, wrong types.
_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True), st.text(), st.just("\ud800"),
    st.sampled_from(["m", "ack", "hello", "welcome", "close", "probe", "failover"]),
)
_values = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(["t", "s", "d", "b", "n", "v", "sid", "secret", "recv", "probe", "code",
                     "reason", "from", "to", "resumed", "heartbeat", "grace"]) | st.text(max_size=3),
    inner, max_size=6), max_leaves=20)
_packets = st.dictionaries(st.sampled_from(["t", "s", "d", "b", "n", "v", "sid", "secret", "recv",
                                            "code", "reason"]), _values, max_size=6)


def _encode(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_decodeMessageArbitraryBytes(payload, isBinary):
    """
    Any WebSocket message decodes to a packet or raises ProtocolError.
    """
    try:
        decodeMessage(payload, isBinary)
    except ProtocolError:
        pass


@FUZZ
@given(st.one_of(_values, _packets))
def test_decodeMessageArbitraryJSON(value):
    """
    Any JSON text as a WebSocket control message (a text message starting
    with C{{}}) decodes to a packet or raises ProtocolError.
    """
    try:
        decodeMessage(b"{" + _encode(value), False)
        decodeMessage(_encode({"t": "x", "x": value}), False)
        if isinstance(value, dict):
            decodeMessage(_encode(value), False)
    except ProtocolError:
        pass


@FUZZ
@given(st.one_of(_values, _packets))
def test_packetFromJSONArbitraryValues(value):
    """
    Any parsed value, as a long-polling packet, is a packet or raises
    ProtocolError; a decoded packet's text is valid Unicode.
    """
    try:
        packet = packetFromJSON(value)
    except ProtocolError:
        return
    for text in (getattr(packet, name, None) for name in ("sid", "secret", "reason")):
        if isinstance(text, str):
            text.encode("utf-8")


@FUZZ
@given(st.binary(max_size=300))
def test_loadJSONArbitraryBytes(data):
    """
    Any bytes parse or raise ProtocolError.
    """
    try:
        loadJSON(data)
    except ProtocolError:
        pass


@FUZZ
@given(st.integers(min_value=0, max_value=3 * MAX_JSON_DEPTH), st.sampled_from("[{"),
       st.text(alphabet='[]{}"\\ ,:a1', max_size=8))
def test_loadJSONDepth(depth, opener, noise):
    """
    Nesting up to L{MAX_JSON_DEPTH} parses; deeper raises ProtocolError;
    brackets inside strings do not count.
    """
    inner = json.dumps(noise)
    text = ("[" * depth + inner + "]" * depth) if opener == "[" else (
        '{"k":' * depth + inner + "}" * depth)
    if depth <= MAX_JSON_DEPTH:
        assert loadJSON(text.encode()) == json.loads(text)
    else:
        try:
            loadJSON(text.encode())
        except ProtocolError as e:
            assert f"nest deeper than {MAX_JSON_DEPTH} levels" in str(e)
        else:
            raise AssertionError("too deep, yet parsed")


def test_loadJSONRefusesWhatJSONWouldNot():
    """
    NaN, infinities, floats too large, integers over 4300 digits, invalid
    UTF-8 and a body nested 100,000 deep are ProtocolErrors.
    """
    for data in [b"NaN", b"[-Infinity]", b"1e999", b"1" * 5000, b"\xff", b'"\xed\xa0\x80"',
                 b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000]:
        try:
            loadJSON(data)
        except ProtocolError:
            continue
        raise AssertionError(data[:20])


_headLines = st.lists(st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"GET / HTTP/1.1", b"HTTP/1.1 101 Switching Protocols", b"Host: x",
                     b"Content-Length: 99999999999999999999", b"Transfer-Encoding: chunked",
                     b"Upgrade: websocket", b" folded", b":", b"\xff\xfe: \x00"]),
), max_size=8)


@FUZZ
@given(st.one_of(st.binary(max_size=400), _headLines.map(lambda lines: b"\r\n".join(lines) + b"\r\n\r\n")))
def test_headParsersArbitraryBytes(head):
    """
    Any bytes given to the request-head and response-head parsers parse or
    raise ProtocolError.
    """
    for parse in (parseRequestHead, parseResponseHead):
        try:
            parse(head)
        except ProtocolError:
            pass
