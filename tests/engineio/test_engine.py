"""
The Engine.IO v4 session's rules (gateway.engineio.engine), one test per
rule of the protocol document, on a Clock with fake transports.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.engineio.edge import EngineIOEdge
from gateway.engineio.engine import (
    UNAVAILABLE_RETRY_AFTER,
    EngineRefusal,
    EngineSession,
    EngineSettings,
    EngineState,
    openRefusal,
)
from gateway.engineio.packets import BAD_REQUEST, UNKNOWN_SID, Packet, PacketType
from gateway.engineio.polling import PollingTransport
from gateway.engineio.upstream import SocketIOUpstream, backendTarget
from gateway.errors import BackendRefused, BackendUnreachable, NoBackendAvailable, SessionLimit
from gateway.interfaces import IEngineTransport, IEngineUpstream

from .fakes import FakeTransport, FakeUpstream

PING = Packet(PacketType.PING)
PONG = Packet(PacketType.PONG)
NOOP = Packet(PacketType.NOOP)
CLOSE = Packet(PacketType.CLOSE)


def message(data) -> Packet:
    """
    @return: a message packet.
    """
    return Packet(PacketType.MESSAGE, data)


def makeSession(kind: str = "polling", **settings):
    """
    @return: a started session on a fake transport of C{kind}, its clock,
        transport, upstream and the list its end is recorded in.
    """
    clock = Clock()
    transport = FakeTransport(kind)
    ended: list[EngineSession] = []
    engine = EngineSession("sid", EngineSettings(pingInterval=25.0, pingTimeout=20.0, **settings),
                           clock, transport, ended.append)
    upstream = FakeUpstream()
    engine.start(upstream)
    return engine, clock, transport, upstream, ended


def test_interfaces() -> None:
    """
    The real transports and upstream provide their interfaces.
    """
    assert verifyObject(IEngineTransport, PollingTransport())
    engine, *_ = makeSession()
    assert verifyObject(IEngineUpstream, SocketIOUpstream(engine, object()))


def test_heldPollAnsweredByMessage() -> None:
    """
    A GET with nothing to send is held, and answered with the next message.
    """
    engine, _, transport, _, _ = makeSession()
    assert engine.poll() is None
    engine.send("2[\"hi\"]")
    assert transport.delivered == [[message("2[\"hi\"]")]]


def test_pollTakesEverythingWaiting() -> None:
    """
    A GET takes every packet waiting, in order, at once.
    """
    engine, *_ = makeSession()
    engine.send("a")
    engine.send(b"\x01")
    assert engine.poll() == [message("a"), message(b"\x01")]


def test_serverPingsEveryInterval() -> None:
    """
    The server pings after C{pingInterval}; the pong schedules the next.
    """
    engine, clock, transport, _, _ = makeSession()
    clock.advance(24.9)
    assert engine.poll() is None
    clock.advance(0.1)
    assert transport.delivered == [[PING]]
    engine.post([PONG])
    clock.advance(25)
    assert engine.poll() == [PING]


def test_pingTimeoutCloses() -> None:
    """
    A client that has not answered C{pingTimeout} after a ping is gone: the
    session closes and the server side with it.
    """
    engine, clock, transport, upstream, ended = makeSession()
    clock.advance(25)
    assert engine.poll() == [PING]
    clock.advance(19.9)
    assert engine.state is EngineState.OPEN
    assert engine.poll() is None
    clock.advance(0.1)
    assert engine.state is EngineState.CLOSED and ended == [engine]
    assert upstream.closed == "ping timeout"
    assert transport.delivered[-1] == [CLOSE]  # the held GET
    with pytest.raises(EngineRefusal) as e:
        engine.poll()
    assert e.value.code == UNKNOWN_SID and e.value.status == 400


def test_pongInTimeKeepsSession() -> None:
    """
    Answered pings keep the session open indefinitely.
    """
    engine, clock, *_ = makeSession()
    for _ in range(10):
        clock.advance(25)
        assert engine.poll() == [PING]
        clock.advance(10)
        engine.post([PONG])
    assert engine.state is EngineState.OPEN


def test_duplicatePollCloses() -> None:
    """
    A second GET while one is held closes the session: the held one is
    answered with a close packet, the second refused with 400.
    """
    engine, _, transport, upstream, ended = makeSession()
    assert engine.poll() is None
    with pytest.raises(EngineRefusal) as e:
        engine.poll()
    assert e.value.status == 400 and e.value.code == BAD_REQUEST
    assert transport.delivered == [[CLOSE]]
    assert ended == [engine] and upstream.closed is not None


def test_postedMessagesInOrder() -> None:
    """
    A POST's messages reach the server side in order, text and binary.
    """
    engine, _, _, upstream, _ = makeSession()
    engine.post([message("451-[\"x\",{\"_placeholder\":true,\"num\":0}]"), message(b"\x01\x02")])
    assert upstream.messages == ["451-[\"x\",{\"_placeholder\":true,\"num\":0}]", b"\x01\x02"]


def test_clientClose() -> None:
    """
    The client's close packet ends the session; a held GET gets a noop.
    """
    engine, _, transport, upstream, ended = makeSession()
    assert engine.poll() is None
    engine.post([CLOSE])
    assert transport.delivered == [[NOOP]]
    assert ended == [engine] and upstream.closed == "client closed the session"


def test_clientPingRefused() -> None:
    """
    In v4 the heartbeat goes from the server: a client's ping closes the
    session.
    """
    engine, _, _, _, ended = makeSession()
    engine.post([PING])
    assert ended == [engine]


def test_serverCloseOverPolling() -> None:
    """
    When the server side ends, the client's next GET gets what waited
    (the server's Socket.IO DISCONNECT), and the close packet comes alone
    on the GET after, as the reference server sends it: in one payload,
    socket.io-client would see the transport close before the DISCONNECT
    and reconnect.  The session ends once the close is taken.
    """
    engine, _, _, upstream, ended = makeSession()
    engine.send("1")
    engine.close("the Socket.IO server connection closed")
    assert engine.state is EngineState.CLOSING and ended == []
    assert engine.poll() == [message("1")]
    assert engine.state is EngineState.CLOSING and ended == [] and engine.waiting == CLOSE.size
    assert engine.poll() == [CLOSE]
    assert ended == [engine] and upstream.closed is not None


def test_serverCloseWithPollHeld() -> None:
    """
    The same with a GET held when the server side's last message and its
    end arrive: the held GET carries the message, the next one the close.
    """
    engine, _, transport, _, ended = makeSession()
    assert engine.poll() is None
    engine.send("1")
    engine.close("the Socket.IO server connection closed")
    assert transport.delivered == [[message("1")]]
    assert engine.poll() == [CLOSE] and ended == [engine]


def test_clientCloseWhileClosing() -> None:
    """
    A client that closes while its session's close waits for a GET (it
    took the server's DISCONNECT and left) ends the session at once, not
    after C{pingTimeout}.
    """
    engine, _, _, _, ended = makeSession()
    engine.send("1")
    engine.close("the Socket.IO server connection closed")
    assert engine.poll() == [message("1")]
    engine.post([CLOSE])
    assert ended == [engine] and engine.state is EngineState.CLOSED


def test_serverCloseWithoutPollExpires() -> None:
    """
    A close nobody polls for ends the session after C{pingTimeout}.
    """
    engine, clock, _, _, ended = makeSession()
    engine.close("gone")
    clock.advance(20)
    assert ended == [engine]


def test_serverCloseOverWebSocket() -> None:
    """
    Over WebSocket the server side's end closes the WebSocket, after what
    waited.
    """
    engine, _, transport, _, ended = makeSession("websocket")
    engine.send("x")
    engine.close("gone")
    assert transport.delivered == [[message("x")]] and transport.closed and ended == [engine]


def test_upgrade() -> None:
    """
    The upgrade: C{2probe} is answered C{3probe} on the WebSocket and the
    held GET with a noop; C{5} moves the session, and what waits goes over
    the WebSocket.
    """
    engine, _, polling, _, _ = makeSession()
    assert engine.poll() is None
    ws = FakeTransport("websocket")
    engine.upgradeStarted(ws)
    engine.upgradePacket(ws, Packet(PacketType.PING, "probe"))
    assert ws.delivered == [[Packet(PacketType.PONG, "probe")]]
    assert polling.delivered == [[NOOP]]
    assert engine.poll() == [NOOP]  # the client's last poll ends at once
    engine.send("queued")
    engine.upgradePacket(ws, Packet(PacketType.UPGRADE))
    assert engine.transport is ws and engine.kind == "websocket"
    assert ws.delivered[-1] == [message("queued")]
    engine.send("next")
    assert ws.delivered[-1] == [message("next")]


def test_pollAfterUpgradeRefused() -> None:
    """
    Once upgraded, a GET with the session's id gets 400; the session lives
    on.
    """
    engine, *_ = makeSession()
    ws = FakeTransport("websocket")
    engine.upgradeStarted(ws)
    engine.upgradePacket(ws, Packet(PacketType.PING, "probe"))
    engine.upgradePacket(ws, Packet(PacketType.UPGRADE))
    with pytest.raises(EngineRefusal) as e:
        engine.poll()
    assert e.value.status == 400
    assert engine.state is EngineState.OPEN


def test_oneWebSocketPerSession() -> None:
    """
    A second WebSocket for a session being upgraded, or already upgraded,
    is refused.
    """
    engine, *_ = makeSession()
    ws = FakeTransport("websocket")
    engine.upgradeStarted(ws)
    with pytest.raises(EngineRefusal):
        engine.upgradeStarted(FakeTransport("websocket"))
    engine.upgradePacket(ws, Packet(PacketType.PING, "probe"))
    engine.upgradePacket(ws, Packet(PacketType.UPGRADE))
    with pytest.raises(EngineRefusal):
        engine.upgradeStarted(FakeTransport("websocket"))


def test_upgradeWithoutProbeFails() -> None:
    """
    C{5} before the probe fails the upgrade: that WebSocket is closed, the
    session goes on polling.
    """
    engine, *_ = makeSession()
    ws = FakeTransport("websocket")
    engine.upgradeStarted(ws)
    engine.upgradePacket(ws, Packet(PacketType.UPGRADE))
    assert ws.closed and engine.kind == "polling" and not engine.upgrading


def test_upgradingWebSocketLost() -> None:
    """
    An upgrading WebSocket that closes leaves the session polling.
    """
    engine, *_ = makeSession()
    ws = FakeTransport("websocket")
    engine.upgradeStarted(ws)
    engine.transportClosed(ws)
    assert engine.state is EngineState.OPEN and not engine.upgrading
    assert engine.poll() is None


def test_webSocketLostEndsSession() -> None:
    """
    The WebSocket that carries a session closing ends the session.
    """
    engine, _, transport, upstream, ended = makeSession("websocket")
    engine.transportClosed(transport)
    assert ended == [engine] and upstream.closed == "transport close"


def test_slowClientPausesServer() -> None:
    """
    Past C{maxPayload} waiting for the client, the server side is paused,
    and resumed when the client takes it.
    """
    engine, _, _, upstream, _ = makeSession(maxPayload=10, maxBufferBytes=100)
    engine.send("x" * 20)
    assert upstream.paused
    engine.poll()
    assert not upstream.paused


def test_bufferBoundCloses() -> None:
    """
    A message that would take what waits past C{maxBufferBytes} closes the
    session (the client gets only the close).
    """
    engine, _, _, upstream, _ = makeSession(maxPayload=10, maxBufferBytes=100)
    engine.send("x" * 60)
    engine.send("y" * 60)
    assert engine.state is EngineState.CLOSING and upstream.closed
    assert engine.poll() == [CLOSE]


def test_backendTarget() -> None:
    """
    The server connection asks the route's path with the client's own query
    and C{EIO=4&transport=websocket}, the edge's parameters left out.
    """
    assert backendTarget("/socket.io/", b"EIO=4&transport=polling&t=abc&room=1&sid=x") == (
        b"/socket.io/?room=1&EIO=4&transport=websocket")


class FakeLink:
    """
    Records what the upstream sends its server.
    """

    def __init__(self) -> None:
        self.sent: list = []
        self.closed = None

    def sendMessage(self, payload, isBinary):
        self.sent.append((payload, isBinary))

    def closeLink(self, code, reason):
        self.closed = code


def test_upstreamPassesThrough() -> None:
    """
    The server's open packet is dropped, its pings answered; messages pass
    unchanged (a BINARY_EVENT header then its attachment), both ways.
    """
    engine, _, transport, _, _ = makeSession("websocket")
    link = FakeLink()
    upstream = SocketIOUpstream(engine, link)
    upstream.messageFromBackend(b'0{"sid":"s","upgrades":[],"pingInterval":25000}', False)
    upstream.messageFromBackend(b"2", False)
    assert link.sent == [(b"3", False)] and transport.delivered == []
    upstream.messageFromBackend(b'451-["b",{"_placeholder":true,"num":0}]', False)
    upstream.messageFromBackend(b"\x00\x01", True)
    assert transport.delivered == [[message('51-["b",{"_placeholder":true,"num":0}]')], [message(b"\x00\x01")]]
    upstream.messageFromClient('0{"token":1}')
    upstream.messageFromClient(b"\x02")
    assert link.sent[1:] == [(b'40{"token":1}', False), (b"\x02", True)]


def test_upstreamServerClose() -> None:
    """
    The server's close packet, or its connection ending, closes the
    client's session.
    """
    engine, _, transport, _, ended = makeSession("websocket")
    upstream = SocketIOUpstream(engine, FakeLink())
    engine.upstream = upstream
    upstream.backendClosed(1006, "", None, False)
    assert ended == [engine] and transport.closed


@given(st.binary(max_size=200), st.booleans())
def test_checkQueryNeverFails(query: bytes, websocket: bool) -> None:
    """
    Any query string is either accepted or refused with an Engine.IO
    error, never another exception.
    """
    try:
        sid = EngineIOEdge.checkQuery(query, websocket)
    except EngineRefusal as e:
        assert e.code in (0, 3, 5)
    else:
        assert sid is None or isinstance(sid, str)


@pytest.mark.parametrize("query, code", [
    (b"transport=polling", 5),
    (b"EIO=3&transport=polling", 5),
    (b"EIO=4", 0),
    (b"EIO=4&transport=flash", 0),
    (b"EIO=4&transport=websocket", 3),
])
def test_checkQueryRefusals(query: bytes, code: int) -> None:
    """
    C{EIO} other than 4, a missing or unknown transport, and a transport
    that is not the request's are refused with the reference codes.
    """
    with pytest.raises(EngineRefusal) as e:
        EngineIOEdge.checkQuery(query, websocket=False)
    assert e.value.code == code


def test_checkQuerySid() -> None:
    """
    The sid is read from the query, percent-decoded; a handshake has none.
    """
    assert EngineIOEdge.checkQuery(b"EIO=4&transport=polling&sid=a%2Db", False) == "a-b"
    assert EngineIOEdge.checkQuery(b"EIO=4&transport=websocket", True) is None


def test_openRefusals() -> None:
    """
    A handshake whose session cannot be opened is answered the same over
    either transport: 503 with the bound's C{Retry-After} at a session
    bound, 502 when the server refused, 503 with
    L{UNAVAILABLE_RETRY_AFTER} when no server could be had; the reference
    server's code 3 each time, and the reason the refusals are counted
    under.
    """
    cases = [
        (SessionLimit("too many sessions from 10.0.0.1", 7), 503, [(b"Retry-After", b"7")], "session_limit"),
        (BackendRefused(404, "Not Found"), 502, [], "backend_refused"),
        (NoBackendAvailable("every backend of pool 'app' is draining"), 503,
         [(b"Retry-After", b"%d" % UNAVAILABLE_RETRY_AFTER)], "no_backend"),
        (BackendUnreachable("connection refused"), 503,
         [(b"Retry-After", b"%d" % UNAVAILABLE_RETRY_AFTER)], "no_backend"),
    ]
    for error, status, headers, reason in cases:
        refusal = openRefusal(error)
        assert (refusal.code, refusal.status, refusal.headers, refusal.reason) == (
            BAD_REQUEST, status, headers, reason)
        assert str(refusal) == str(error)
    assert EngineRefusal(UNKNOWN_SID, "Session ID unknown").headers == []
