"""
Tests for L{gateway.wire.wsclient}: the sans-IO WebSocket client a
session's backend link speaks.

The server side of most exchanges is the C{websockets} library's own
sans-IO server (C{websockets.server.ServerProtocol}), an independent
implementation of RFC 6455: it checks the client's handshake and masking,
and its frames (fragmented or not, split at any byte) are what the client
must read.  Frames a conforming server never sends are built by hand.
"""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Opcode
from websockets.server import ServerProtocol

from gateway.wire import frames
from gateway.wire.wsclient import (
    Accepted,
    ClientState,
    CloseReceived,
    Failed,
    MessageReceived,
    PongReceived,
    Refused,
    WebSocketClient,
    acceptKey,
    validCloseCode,
)

SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def frame(first: int, payload: bytes = b"", length: bytes | None = None) -> bytes:
    """
    @return: an unmasked frame with first byte C{first}, the payload's
        length in its shortest form (or C{length}, the raw length bytes).
    """
    n = len(payload)
    if length is None:
        length = bytes((n,)) if n < 126 else (b"\x7e" + struct.pack("!H", n) if n < 65536
                                               else b"\x7f" + struct.pack("!Q", n))
    return bytes((first,)) + length + payload


def opened(maxMessageBytes: int = 1 << 20) -> tuple[WebSocketClient, ServerProtocol]:
    """
    @return: a client whose handshake the C{websockets} server accepted,
        and that server.
    """
    client = WebSocketClient(maxMessageBytes)
    server = ServerProtocol(max_size=None)
    server.receive_data(client.handshake(b"backend:8080", b"/chat?room=1", [(b"X-Session-Id", b"s1")]))
    [request] = server.events_received()
    server.send_response(server.accept(request))
    assert client.receiveData(b"".join(server.data_to_send())) == [Accepted()]
    assert client.state is ClientState.OPEN
    return client, server


def serverFrames(server: ServerProtocol, data: bytes) -> list:
    """
    @return: the frames the server read from C{data} (which it checks
        are masked, as a client's must be).
    """
    server.receive_data(data)
    return server.events_received()


def sent(server: ServerProtocol) -> bytes:
    """
    @return: what the server has to send.
    """
    return b"".join(server.data_to_send())


def feed(client: WebSocketClient, data: bytes, cuts: list[int] = ()) -> list:
    """
    @return: the events of C{data} fed to C{client} in pieces cut at
        C{cuts}.
    """
    events = []
    at = 0
    for cut in sorted({c for c in cuts if 0 < c < len(data)}) + [len(data)]:
        events += client.receiveData(data[at:cut])
        at = cut
    return events


# -- the opening handshake


def test_handshakeAccepted():
    """
    The request is one the C{websockets} server accepts, with the target,
    C{Host} and the extra headers; its answer opens the client.
    """
    client = WebSocketClient(1000)
    server = ServerProtocol()
    server.receive_data(client.handshake(b"backend:8080", b"/chat?room=1", [(b"X-Session-Id", b"s1")]))
    [request] = server.events_received()
    assert request.path == "/chat?room=1"
    assert (request.headers["Host"], request.headers["X-Session-Id"]) == ("backend:8080", "s1")
    server.send_response(server.accept(request))
    assert client.receiveData(sent(server)) == [Accepted()]
    assert client.state is ClientState.OPEN


def test_handshakeKey():
    """
    Each handshake has a new key of 16 random bytes, unless one is given;
    the accept value is RFC 6455's (its example in section 1.3).
    """
    keys = set()
    for _ in range(3):
        request = WebSocketClient(1).handshake(b"h", b"/")
        [key] = [line[19:] for line in request.split(b"\r\n") if line.startswith(b"Sec-WebSocket-Key: ")]
        assert len(base64.b64decode(key)) == 16
        keys.add(key)
    assert len(keys) == 3
    assert acceptKey(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("target, headers", [
    (b"chat", []),
    (b"/a b", []),
    (b"/a\r\nX: y", []),
    (b"/", [(b"X-Bad", b"a\r\nInjected: 1")]),
    (b"/", [(b"Bad Name", b"1")]),
    (b"/", [(b"Host", b"other")]),
    (b"/", [(b"Sec-WebSocket-Protocol", b"chat")]),
    (b"/", [(b"Connection", b"close")]),
])
def test_handshakeRefusesWhatWouldBreakIt(target, headers):
    """
    A target or header that would break the request, or one the handshake
    sets itself, is refused before anything is sent.
    """
    with pytest.raises(ValueError):
        WebSocketClient(1).handshake(b"h", target, headers)


def accepting(client: WebSocketClient, request: bytes, *extra: bytes) -> bytes:
    """
    @return: a 101 answer to C{request} with the right accept value, and
        C{extra} header lines.
    """
    [key] = [line[19:] for line in request.split(b"\r\n") if line.startswith(b"Sec-WebSocket-Key: ")]
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + acceptKey(key) + b"\r\n" + b"".join(e + b"\r\n" for e in extra)
            + b"\r\n")


@pytest.mark.parametrize("cut", [1, 10, 40, 90])
def test_handshakeAnswerInPieces(cut):
    """
    The answer may arrive in pieces, and frames may follow it in the same
    read; header tokens are compared without regard to case.
    """
    client = WebSocketClient(100)
    answer = accepting(client, client.handshake(b"h", b"/")) + frame(0x81, b"hi")
    events = feed(client, answer, [cut, cut + 7])
    assert events == [Accepted(), MessageReceived(b"hi", False)]


@pytest.mark.parametrize("answer, status, reason", [
    (b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", 403, "Forbidden"),
    (b"HTTP/1.1 503 \r\n\r\n", 503, ""),
    (b"HTTP/1.1 404 Not \xffFound\r\n\r\n", 404, ""),
    (b"HTTP/1.1 401 " + b"x" * 80 + b"\r\n\r\n", 401, "x" * 60),
])
def test_refused(answer, status, reason):
    """
    A well-formed HTTP/1.1 status other than 101 is a refusal, with its
    phrase when printable ASCII (cut to 60); the connection is then closed.
    """
    client = WebSocketClient(100)
    client.handshake(b"h", b"/")
    [event] = client.receiveData(answer + frame(0x81, b"ignored"))
    assert (type(event), event.status, event.reason) == (Refused, status, reason)
    assert client.state is ClientState.CLOSED
    assert client.receiveData(frame(0x81, b"more")) == []


@pytest.mark.parametrize("extra, why", [
    ([b"Sec-WebSocket-Extensions: permessage-deflate"], "extension"),
    ([b"Sec-WebSocket-Protocol: chat"], "subprotocol"),
    ([b"Sec-WebSocket-Accept: AAAA"], "Sec-WebSocket-Accept"),
])
def test_badAccept(extra, why):
    """
    A 101 with an extension or a subprotocol that was not offered, or a
    second accept value, fails the connection (nothing to send: it never
    opened).
    """
    client = WebSocketClient(100)
    [event] = client.receiveData(accepting(client, client.handshake(b"h", b"/"), *extra))
    assert type(event) is Failed and event.code is None and why in event.reason
    assert client.dataToSend() == b""


@pytest.mark.parametrize("answer, why", [
    ((b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"), "Sec-WebSocket-Accept"),
    (b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\n\r\n", "Upgrade"),
    (b"HTTP/1.0 404 Not Found\r\n\r\n", "HTTP/1.0 404"),
    (b"HTTP/1.0 101 Switching\r\n\r\n", "HTTP/1.0"),
    (b"SSH-2.0-OpenSSH\r\n\r\n", "not HTTP/1.1"),
    (b"HTTP/1.1 101 OK\r\nBad Header\r\n\r\n", "not HTTP/1.1"),
])
def test_notAWebSocket(answer, why):
    """
    An answer that is not a WebSocket server's fails the connection.
    """
    client = WebSocketClient(100)
    client.handshake(b"h", b"/")
    [event] = client.receiveData(answer)
    assert type(event) is Failed and event.code is None and why in event.reason
    assert client.state is ClientState.CLOSED


def test_answerTooLarge():
    """
    An answer larger than C{maxHeadBytes} fails the connection, however
    it was split.
    """
    client = WebSocketClient(100, maxHeadBytes=1024)
    client.handshake(b"h", b"/")
    events = []
    for _ in range(11):
        events += client.receiveData(b"X-Filler: " + b"x" * 90)
    [event] = events
    assert type(event) is Failed and "larger than 1024" in event.reason


# -- frames from the server


@SETTINGS
@given(
    messages=st.lists(st.tuples(st.booleans(), st.binary(max_size=3000), st.integers(1, 4)), max_size=6),
    pings=st.lists(st.binary(max_size=125), max_size=3),
    cuts=st.lists(st.integers(0, 20000), max_size=12),
)
def test_messagesWhateverTheSplit(messages, pings, cuts):
    """
    Messages the server sends, whole or fragmented, text or binary, with
    pings between them, arrive whole and in order however the stream is
    split; each ping is answered with a masked pong of the same payload.
    """
    client, server = opened()
    expected = []
    for i, (isBinary, payload, parts) in enumerate(messages):
        if not isBinary:
            payload = payload.decode("latin-1").encode("utf-8")
        size = -(-len(payload) // parts) or 1
        pieces = [payload[j:j + size] for j in range(0, len(payload), size)] or [b""]
        for j, piece in enumerate(pieces):
            fin = j == len(pieces) - 1
            if j == 0:
                (server.send_binary if isBinary else server.send_text)(piece, fin=fin)
            else:
                server.send_continuation(piece, fin=fin)
        if i < len(pings):
            server.send_ping(pings[i])
        expected.append(MessageReceived(payload, isBinary))
    events = feed(client, sent(server), cuts)
    assert events == expected
    pongs = serverFrames(server, client.dataToSend())
    assert [(f.opcode, f.data) for f in pongs] == [(Opcode.PONG, p) for p in pings[:len(messages)]]


def test_longFrameJoinedOnce():
    """
    A long frame that arrives in many reads is kept as a list of its
    chunks and joined once complete.
    """
    client, server = opened()
    payload = bytes(range(256)) * 400
    server.send_binary(payload)
    data = sent(server)
    events = []
    for i in range(0, len(data), 1000):
        events += client.receiveData(data[i:i + 1000])
        if i + 1000 < len(data):
            assert client._chunks is not None and client._buffer == b""
    assert [(e.payload, e.isBinary) for e in events] == [(payload, True)]
    assert client._chunks is None


def test_textAcrossFragments():
    """
    Text is checked as a whole message: a character split between two
    fragments is fine.
    """
    client, _ = opened()
    text = "héllo".encode()
    events = client.receiveData(frame(0x01, text[:2]) + frame(0x80, text[2:]))
    assert [(e.payload, e.isBinary) for e in events] == [(text, False)]


def test_pong():
    """
    A pong is an event, in its place among the messages.
    """
    client, server = opened()
    server.send_text(b"a")
    server.send_pong(b"7")
    server.send_text(b"b")
    events = client.receiveData(sent(server))
    assert [type(e) for e in events] == [MessageReceived, PongReceived, MessageReceived]
    assert events[1].payload == b"7"


@pytest.mark.parametrize("data, code, why", [
    (b"\x81\x82abcdxy", 1002, "masked"),
    (frame(0xC1, b"x"), 1002, "reserved bit"),
    (frame(0x91, b"x"), 1002, "reserved bit"),
    (frame(0x83, b"x"), 1002, "reserved opcode 3"),
    (frame(0x8B, b"x"), 1002, "reserved opcode 11"),
    (frame(0x09, b"x"), 1002, "fragmented control"),
    (frame(0x89, b"x" * 126), 1002, "longer than 125"),
    (frame(0x80, b"x"), 1002, "continuation frame outside"),
    (frame(0x01, b"x") + frame(0x81, b"y"), 1002, "new message inside"),
    (frame(0x01, b"x") + frame(0x02, b"y"), 1002, "new message inside"),
    (frame(0x82, length=b"\x7f" + struct.pack("!Q", 1 << 63)), 1002, "most significant bit"),
    (frame(0x81, b"\xff"), 1007, "not UTF-8"),
    (frame(0x81, b"\xed\xa0\x80"), 1007, "not UTF-8"),
    (frame(0x01, b"\xc3") + frame(0x80, b"("), 1007, "not UTF-8"),
    (frame(0x88, b"\x03"), 1002, "one byte"),
    (frame(0x88, struct.pack("!H", 1005)), 1002, "code 1005"),
    (frame(0x88, struct.pack("!H", 999)), 1002, "code 999"),
    (frame(0x88, struct.pack("!H", 1000) + b"\xff"), 1007, "reason"),
])
def test_brokenFrames(data, code, why):
    """
    A frame that breaks RFC 6455 fails the connection with the RFC's code:
    a masked close frame with it is to be sent, and nothing after it is
    read.
    """
    client, server = opened()
    events = client.receiveData(data + frame(0x81, b"after"))
    assert [type(e) for e in events] == [Failed]
    assert events[0].code == code and why in events[0].reason
    [close] = serverFrames(server, client.dataToSend())
    assert (close.opcode, struct.unpack("!H", close.data[:2])[0]) == (Opcode.CLOSE, code)
    assert client.state is ClientState.CLOSED
    assert client.receiveData(frame(0x81, b"more")) == []
    assert client.sendMessage(b"x", False) == b""


def test_tooLargeBeforeThePayload():
    """
    A frame longer than C{maxMessageBytes} fails the connection (1009) as
    soon as its header is read, before its payload arrives; so does a
    fragment that takes its message past the bound.
    """
    client, _ = opened(maxMessageBytes=1000)
    [event] = client.receiveData(b"\x82\x7e" + struct.pack("!H", 1001))
    assert (type(event), event.code) == (Failed, 1009)
    client, _ = opened(maxMessageBytes=1000)
    events = client.receiveData(frame(0x02, b"x" * 600) + b"\x80\x7e" + struct.pack("!H", 401))
    assert (type(events[-1]), events[-1].code) == (Failed, 1009)
    client, _ = opened(maxMessageBytes=1000)
    events = client.receiveData(frame(0x02, b"x" * 600) + frame(0x80, b"x" * 400))
    assert [(e.payload, e.isBinary) for e in events] == [(b"x" * 1000, True)]


# -- closing


def test_serverCloses():
    """
    The server's close frame is answered with the same code and ends the
    connection, cleanly; what follows it is not read.
    """
    client, server = opened()
    server.send_close(1001, "going away")
    events = client.receiveData(sent(server) + frame(0x81, b"late"))
    assert [(type(e), e.code, e.reason) for e in events] == [(CloseReceived, 1001, "going away")]
    [answer] = serverFrames(server, client.dataToSend())
    assert (answer.opcode, answer.data) == (Opcode.CLOSE, struct.pack("!H", 1001))
    assert (client.state, client.clean) == (ClientState.CLOSED, True)


def test_serverClosesWithoutCode():
    """
    A close frame without a code is answered with one without a code.
    """
    client, server = opened()
    [event] = client.receiveData(frame(0x88))
    assert (event.code, event.reason) == (None, "")
    [answer] = serverFrames(server, client.dataToSend())
    assert (answer.opcode, answer.data) == (Opcode.CLOSE, b"")


def test_clientCloses():
    """
    After the client's close, what the server still sends is received
    until its own close frame, which is not answered again; nothing more
    is sent meanwhile (no message, ping, nor pong).
    """
    client, server = opened()
    [close] = serverFrames(server, client.close(1001, "moved"))
    assert (close.opcode, close.data) == (Opcode.CLOSE, struct.pack("!H", 1001) + b"moved")
    assert client.state is ClientState.CLOSING
    assert (client.sendMessage(b"x", True), client.ping(b"1"), client.close(1000)) == (b"", b"", b"")
    events = client.receiveData(frame(0x81, b"last") + frame(0x89, b"p") + frame(0x88, struct.pack("!H", 1001)))
    assert [type(e) for e in events] == [MessageReceived, CloseReceived]
    assert client.dataToSend() == b""
    assert (client.state, client.clean) == (ClientState.CLOSED, True)


def test_failWhileClosing():
    """
    A broken frame after the client's close fails the connection without
    a second close frame.
    """
    client, _ = opened()
    client.close(1000)
    [event] = client.receiveData(frame(0x83))
    assert (type(event), event.code) == (Failed, 1002)
    assert client.dataToSend() == b""
    assert client.clean is False


@pytest.mark.parametrize("code, valid", [
    (999, False), (1000, True), (1003, True), (1004, False), (1005, False), (1006, False), (1007, True),
    (1014, True), (1015, False), (2999, False), (3000, True), (4999, True), (5000, False),
])
def test_validCloseCode(code, valid):
    """
    The codes an endpoint may send, which the client checks in close
    frames and refuses to send.
    """
    assert validCloseCode(code) is valid
    if not valid:
        with pytest.raises(ValueError):
            opened()[0].close(code)


# -- sending


@SETTINGS
@given(payload=st.binary(max_size=70000), isBinary=st.booleans())
def test_sentMessagesMasked(payload, isBinary):
    """
    A message is one final frame, masked, which the server reads back.
    """
    client, server = opened()
    data = client.sendMessage(payload, isBinary)
    assert data[1] & 0x80
    [got] = serverFrames(server, data)
    assert (got.opcode, got.data, got.fin) == (Opcode.BINARY if isBinary else Opcode.TEXT, payload, True)


def test_maskFromUrandom(monkeypatch):
    """
    Every frame's masking key comes from C{os.urandom} (not from a
    pseudo-random generator the application could predict): three frames
    take three fresh keys of one batch read from it.
    """
    calls = []
    real = frames.os.urandom

    def urandom(n):
        calls.append(n)
        return real(n)

    monkeypatch.setattr(frames.os, "urandom", urandom)
    client, _ = opened()
    monkeypatch.setattr(frames, "_keys", b"")
    calls.clear()
    client.sendMessage(b"a", False)
    client.ping(b"1")
    client.close(1000)
    assert calls == [frames.KEY_BATCH] and frames._keyAt == 12


def test_nothingSentBeforeOpen():
    """
    Before the handshake is done nothing can be sent.
    """
    client = WebSocketClient(10)
    client.handshake(b"h", b"/")
    assert (client.sendMessage(b"x", False), client.ping(b""), client.close(1000)) == (b"", b"", b"")
    with pytest.raises(ValueError):
        opened()[0].ping(b"x" * 126)
