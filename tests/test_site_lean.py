"""
Tests for the lean path of the session protocol's long-polling requests
(L{gateway.web.StrictChannel} reading them, L{gateway.edge.exchange.LeanRequest}
answering them): the same answers as twisted.web gives, byte for byte but
the date, for generated requests (a property test against the same gateway
with the lean path off), and the bounds, deadlines, keep-alive and
pipelining of the requests it reads.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from zope.interface.verify import verifyObject

from gateway.config import (
    BackendConfig,
    GatewayConfig,
    Limits,
    PoolConfig,
    RouteConfig,
    SessionConfig,
    Timeouts,
)
from gateway.edge.exchange import LeanRequest
from gateway.interfaces import IPollRequest
from gateway.service import GatewayService
from gateway.wire.http1 import parseRequestHead, plainBodyLength, plainKeepAlive
from gateway.wire.protocol import CLOSE_TOO_BIG


def makeFactory(**kwargs):
    """
    @return: the front door factory of a gateway (not started) routing
        C{/chat} (sessions) and C{/raw} (transparent), and its reactor.
    """
    backend = BackendConfig(name="b1", url="ws://127.0.0.1:9001", host="127.0.0.1", port=9001,
                            secure=False)
    values = {
        "pools": (PoolConfig(name="chat", backends=(backend,)),),
        "routes": (RouteConfig(prefix="/chat", pool="chat"),
                   RouteConfig(prefix="/raw", pool="chat", protocol="transparent")),
        "session": SessionConfig(corsOrigins=("http://app.example",), maxBodyBytes=2048),
    }
    values.update(kwargs)
    reactor = MemoryReactorClock()
    return GatewayService(GatewayConfig(**values), reactor).factory, reactor


class _Transport(StringTransport):
    """
    A L{StringTransport} that, as a TCP transport, lets a producer be
    unregistered twice (twisted.web's channel does when it refuses a
    request after the front door handed the connection over).
    """

    def unregisterProducer(self):
        self.producer = None
        self.streaming = None


def connect(factory):
    """
    @return: a front door connected to a L{StringTransport}, and that
        transport.
    """
    door = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 50000))
    transport = _Transport(peerAddress=IPv4Address("TCP", "192.0.2.7", 50000))
    transport.protocol = door
    door.makeConnection(transport)
    return door, transport


def lose(door) -> None:
    """
    End the connection, as the reactor would.
    """
    door.connectionLost(Failure(ConnectionDone()))


def responses(data: bytes) -> list[tuple[bytes, list[tuple[bytes, bytes]], bytes]]:
    """
    @return: every response in C{data} (each with a C{Content-Length}):
        status line, headers in order (C{Date}'s value blanked), body.
    """
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = []
        length = 0
        for line in lines:
            name, _, value = line.partition(b": ")
            if name.lower() == b"content-length":
                length = int(value)
            headers.append((name, b"-" if name.lower() == b"date" else value))
        out.append((status, headers, rest[:length]))
        data = rest[length:]
    return out


def exchange(chunks: list[bytes], lean: bool, **kwargs):
    """
    Send C{chunks} on one connection to a new gateway, the lean path on or
    off (off: twisted.web reads every request, and every head line by
    line), and let every timer due in the next second run.

    @return: what was answered (L{responses}), whether the connection was
        closed, and the gateway's count of client errors.
    """
    factory, reactor = makeFactory(**kwargs)
    if not lean:
        # twisted.web reads every request, every head line by line.
        factory.web.leanAnswer = lambda head: None
        make = factory.web.protocol

        def lineByLine():
            channel = make()
            channel.wholeHead = lambda data: None
            return channel

        factory.web.protocol = lineByLine
    door, transport = connect(factory)
    for chunk in chunks:
        if transport.disconnecting:
            break  # a TCP transport reads nothing more once it is closing
        door.dataReceived(chunk)
    reactor.advance(0)
    reactor.advance(1)
    result = (responses(transport.value()), transport.disconnecting, factory.clientErrors)
    lose(door)
    return result


def request(target: bytes, body: bytes = b"", headers: list[bytes] = (), version: bytes = b"HTTP/1.1",
            length: bytes | None = None, method: bytes = b"POST") -> bytes:
    """
    @return: a C{POST} (or C{method}) to C{target} with C{body} (its
        C{Content-Length} given, unless C{length} says otherwise: C{b""}
        for none).
    """
    lines = [b"%s %s %s" % (method, target, version), b"Host: gw.example", *headers]
    if length is None:
        length = b"%d" % len(body)
    if length:
        lines.append(b"Content-Length: " + length)
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


_BODIES = st.sampled_from([
    b"", b"{}", b"[]", b"null", b"{", b"\xff\xfe", b'{"sid": 1}', b'{"sid":"a","secret":"b","ack":0}',
    b'{"sid":"a","secret":"b","ack":-1}', b'{"sid":"a","secret":"b","packets":[]}',
    b'{"sid":"a","secret":"b","packets":[{"t":"data","seq":1,"d":"x"}]}', b'{"packets":3}',
    b'{"t":"hello","probe":true}', b'{"t":"nothello"}', b'[' * 40 + b']' * 40, b"x" * 3000,
])
_TARGETS = st.sampled_from([
    b"/chat?txgw=poll", b"/chat?txgw=send", b"/chat/room?txgw=open", b"/chat?txgw=", b"/chat?txgw=what",
    b"/chat?a=1&txgw=send", b"/chat?tx%67w=poll", b"/chat", b"/raw?txgw=poll", b"/elsewhere?txgw=poll",
    b"/_gateway/health?txgw=poll",
])
_HEADERS = st.lists(st.sampled_from([
    b"Origin: http://app.example", b"Origin: http://evil.example", b"Origin: null", b"Connection: close",
    b"Connection: keep-alive", b"Connection: keep-alive, close", b"Content-Type: application/json",
    b"Expect: 100-continue", b"Cookie: a=1", b"X-Forwarded-For: 203.0.113.9", b"Upgrade: websocket",
    b"Transfer-Encoding: chunked",
]), max_size=4, unique=True)


@st.composite
def _requests(draw) -> bytes:
    body = draw(_BODIES)
    length = draw(st.sampled_from([None, None, None, b"", b"0", b"5", b"007", b"99999", b"abc", b"5, 5",
                                   b"-1", b"5\r\nContent-Length: 6"]))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
    method = draw(st.sampled_from([b"POST"] * 6 + [b"GET", b"OPTIONS", b"PUT"]))
    return draw(st.sampled_from([b"", b"\r\n"])) + request(draw(_TARGETS), body, draw(_HEADERS), version,
                                                          length, method)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)]) if data[a:b]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_requests(), min_size=1, max_size=3), st.lists(st.integers(0, 10_000), max_size=4),
       st.booleans())
def test_sameAnswersAsTwistedWeb(sent: list[bytes], cuts: list[int], pipelined: bool) -> None:
    """
    For any sequence of long-polling-like requests on one connection (some
    malformed, oversized, refused or not for the lean path at all),
    pipelined or not, cut anywhere: the same answers (status, headers in
    order, body; the date aside), the same connection state and the same
    count of client errors with the lean path as through twisted.web.
    """
    data = b"".join(sent)
    chunks = _split(data, cuts) if pipelined else sent
    assert exchange(chunks, lean=True) == exchange(chunks, lean=False)


def test_pollIsLean() -> None:
    """
    A session long-polling request never reaches twisted.web: no
    C{Request} is made for it (and its answer is a JSON error for an
    unknown session).
    """
    factory, _ = makeFactory()
    made = []
    original = factory.web.requestFactory
    factory.web.requestFactory = lambda *a, **k: made.append(1) or original(*a, **k)
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b'{"sid":"a","secret":"b","ack":0}') * 2)
    answers = responses(transport.value())
    assert [a[0] for a in answers] == [b"HTTP/1.1 404 Not Found"] * 2
    assert json.loads(answers[0][2])["code"] == 4404
    assert made == [] and not transport.disconnecting
    lose(door)


class _HeldPolls:
    """
    A long-polling front end that holds every request until told.
    """

    def __init__(self) -> None:
        self.held: list = []

    def render(self, request, kind):
        self.held.append((request, kind))
        request.notifyFinish().addErrback(lambda f: self.held.append(("lost", f)))
        return NOT_DONE_YET


def _answer(request, text: bytes) -> None:
    request.setResponseCode(200)
    request.setHeader(b"content-type", b"application/json")
    request.write(text)
    request.finish()


def test_pipelinedBehindAHeldPoll() -> None:
    """
    Requests pipelined behind a held poll are read only once it is
    answered, and answered in order; the connection stays open.
    """
    factory, _ = makeFactory()
    polling = factory.polling = _HeldPolls()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b"{}") + request(b"/chat?txgw=send", b"[1]")
                      + b"GET /_gateway/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert len(polling.held) == 1 and transport.value() == b""
    first, kind = polling.held[0]
    assert kind == b"poll" and first.content.read() == b"{}"
    _answer(first, b"1")
    assert len(polling.held) == 2 and polling.held[1][1] == b"send"
    assert polling.held[1][0].content.read() == b"[1]"
    _answer(polling.held[1][0], b"2")
    answers = responses(transport.value())
    assert [a[2] for a in answers[:2]] == [b"1", b"2"]
    assert answers[2][0] == b"HTTP/1.1 200 OK" and b"ok" in answers[2][2]
    assert not transport.disconnecting
    lose(door)


def test_connectionCloseEndsAfterTheAnswer() -> None:
    """
    C{Connection: close}: the answer says so and the connection is closed
    after it; nothing sent after it is read.
    """
    factory, _ = makeFactory()
    polling = factory.polling = _HeldPolls()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b"{}", [b"Connection: close"])
                      + request(b"/chat?txgw=poll", b"{}"))
    _answer(polling.held[0][0], b"1")
    [(_, headers, _)] = responses(transport.value())
    assert (b"Connection", b"close") in headers and transport.disconnecting
    assert len(polling.held) == 1
    lose(door)


def test_lostWhileHeld() -> None:
    """
    A connection lost while its poll is held: the request's finish
    notification fails, it counts as lost, and answering it is refused as
    twisted.web's is.
    """
    factory, _ = makeFactory()
    polling = factory.polling = _HeldPolls()
    door, _ = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b"{}"))
    held = polling.held[0][0]
    lose(door)
    assert polling.held[-1][0] == "lost" and held._disconnected
    held.write(b"x")
    try:
        held.finish()
    except RuntimeError:
        pass
    else:
        raise AssertionError("finish after the connection was lost")


def test_bodyInPiecesAndItsDeadline() -> None:
    """
    A lean request's body may come in pieces; one that is too slow gets
    the body deadline's 408, as a twisted.web request's does.
    """
    factory, reactor = makeFactory(timeouts=Timeouts(handshake=2.0, requestBody=5.0),
                                   limits=Limits(minBodyRate=100))
    polling = factory.polling = _HeldPolls()
    door, transport = connect(factory)
    data = request(b"/chat?txgw=send", b'{"packets":[]}')
    for i in range(len(data)):
        door.dataReceived(data[i:i + 1])
    assert polling.held[0][0].content.read() == b'{"packets":[]}'
    lose(door)
    polling = factory.polling = _HeldPolls()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=send", b"x" * 1000)[:-900])
    reactor.advance(2.5)
    assert polling.held == [] and transport.value() == b""
    reactor.advance(1.1)
    [(status, _, body)] = responses(transport.value())
    assert status == b"HTTP/1.1 408 Request Timeout" and b"request body not received in time" in body
    assert transport.disconnecting
    lose(door)


def test_idleTimerOffWhileHeld() -> None:
    """
    The keep-alive idle timer does not close a connection whose poll is
    held, and runs again once it is answered.
    """
    factory, reactor = makeFactory()
    polling = factory.polling = _HeldPolls()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b"{}"))
    reactor.advance(120)
    assert not transport.disconnecting
    _answer(polling.held[0][0], b"1")
    reactor.advance(61)
    assert transport.disconnecting
    lose(door)


def test_oversizedBodyGoesToTwistedWeb() -> None:
    """
    A body declared over C{max_body_bytes} is not read on the lean path:
    the 413 is the bounded twisted.web request's, before the body is read,
    and the connection is closed.
    """
    factory, _ = makeFactory()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=send", length=b"4096"))
    [(status, _, body)] = responses(transport.value())
    assert status.startswith(b"HTTP/1.1 413") and json.loads(body)["code"] == CLOSE_TOO_BIG
    assert transport.disconnecting
    lose(door)


def test_failureIsAJSONAnswer() -> None:
    """
    Should the long-polling front end raise, the failure is logged and the
    client gets a JSON 503, not twisted.web's HTML 500.
    """
    factory, _ = makeFactory()

    class Broken:
        def render(self, request, kind):
            raise ZeroDivisionError()

    factory.polling = Broken()
    logged = []
    factory.web.logger = type("L", (), {"failure": lambda self, *a, **k: logged.append(a)})()
    door, transport = connect(factory)
    door.dataReceived(request(b"/chat?txgw=poll", b"{}"))
    [(status, _, body)] = responses(transport.value())
    assert status == b"HTTP/1.1 503 Service Unavailable"
    assert json.loads(body)["status"] == 503 and logged
    lose(door)


def test_leanRequestProvides() -> None:
    """
    A lean request has what the long-polling front end uses of a request.
    """
    head = parseRequestHead(b"POST /chat?txgw=poll HTTP/1.1\r\nHost: gw\r\n\r\n")
    verifyObject(IPollRequest, LeanRequest(head, b"", StringTransport(), False, True, lambda r: None))


def test_plainFraming() -> None:
    """
    The lean path reads only the framing every parser agrees on.
    """
    def head(*lines: bytes, version=b"HTTP/1.1"):
        return parseRequestHead(b"POST / " + version + b"\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n")

    assert plainBodyLength(head()) == 0
    assert plainBodyLength(head(b"Content-Length: 012")) == 12
    assert plainBodyLength(head(b"Content-Length: 5, 5")) is None
    assert plainBodyLength(head(b"Content-Length: 5", b"Content-Length: 5")) is None
    assert plainBodyLength(head(b"Transfer-Encoding: chunked")) is None
    assert plainBodyLength(head(b"Expect: 100-continue")) is None
    assert plainKeepAlive(head()) is True
    assert plainKeepAlive(head(b"Connection: Keep-Alive")) is True
    assert plainKeepAlive(head(b"Connection: close")) is False
    assert plainKeepAlive(head(b"Connection: keep-alive, close")) is None
    assert plainKeepAlive(head(b"Connection: a", b"Connection: b")) is None
    assert plainKeepAlive(head(version=b"HTTP/1.0")) is None
