"""
Tests for the session engine's decisions (L{gateway.client._engine}):
receiving and acknowledging, what each close code means, the send buffer's
bounds, the end of a session, and which transport the next attempt uses;
driven through a SessionClient against the fake gateway.
"""

from __future__ import annotations


import pytest
from twisted.internet.testing import MemoryReactorClock

from gateway.client import (
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClient,
    SessionClosed,
    SessionLost,
    StateDetail,
)
from gateway.client._engine import CloseStep, Finish, Retry
from gateway.wire.protocol import Ack, Data, Hello, controlToJSON
from tests.client.fakes import (
    NEW_SID,
    SECRET,
    SID,
    URL,
    Harness,
    engine,
    failure,
    result,
    welcomed,
)


def test_receiveInOrderDuplicatesDroppedAndAcked(h: Harness) -> None:
    """
    Data packets reach onMessage once each, in order (text as str, binary
    as bytes); a duplicate is dropped but still acknowledged.
    """
    gateway = h.open()
    gateway.dataPacket(1, b"one")
    gateway.dataPacket(2, b"\x02", isBinary=True)
    h.flush()
    assert h.messages == [("one", False), (b"\x02", True)]
    assert gateway.of(Ack) == [Ack(2)]
    gateway.dataPacket(2, b"\x02", isBinary=True)
    h.flush()
    assert h.messages == [("one", False), (b"\x02", True)]
    assert gateway.of(Ack) == [Ack(2), Ack(2)]



def test_gapIsProtocolError(h: Harness) -> None:
    """
    A data packet beyond the next one is a protocol error: the client
    closes the connection with 4400, delivers nothing, and resumes.
    """
    gateway = h.open()
    gateway.dataPacket(2, b"two")
    h.flush()
    assert h.messages == []
    assert gateway.closeCode == 4400
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "protocol error" in detail.error
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]



def test_ackBeyondSentIsProtocolError(h: Harness) -> None:
    """
    An ack for more messages than were sent is a protocol error (4400).
    """
    gateway = h.open()
    h.client.send("one")
    gateway.ack(2)
    h.flush()
    assert gateway.closeCode == 4400
    assert h.client.state is ClientState.reconnecting



def test_4503Retries(h: Harness) -> None:
    """
    4503 (no backend for a new session) is retried with backoff: the next
    attempt asks for a new session again.
    """
    h.client.connect()
    gateway = h.accept()
    h.closeWith(gateway, 4503, "no backend")
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert detail.code == 4503
    again = h.reconnect()
    assert again.packets == [Hello()]



def test_otherCloseCodesResume(h: Harness) -> None:
    """
    Any other close code (here 1001, a gateway going away) resumes.
    """
    gateway = h.open()
    h.closeWith(gateway, 1001, "going away")
    assert h.states[-1][0] is ClientState.reconnecting
    assert h.states[-1][1].code == 1001
    assert h.reconnect().packets == [Hello(SID, SECRET, 0)]



@pytest.mark.parametrize("code", [4400, 4403, 4404, 4409, 4410, 4413])
def test_restartCodesStartANewSession(h: Harness, code: int) -> None:
    """
    When the gateway refuses the resume (4400, 4403, 4404, 4409, 4410,
    4413) the client drops what the old session did not acknowledge,
    tells the application (reconnecting, then open, with reset and the
    number dropped), fails whenAcknowledged with SessionLost, and starts a
    new session whose numbering starts at 1.
    """
    gateway = h.open()
    h.client.send("lost 1")
    h.client.send("lost 2")
    acked = h.client.whenAcknowledged()
    h.drop(gateway)
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]
    h.closeWith(again, code, "cannot resume")
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.reset, detail.dropped, detail.code) == (True, 2, code)
    lost = failure(acked).value
    assert isinstance(lost, SessionLost) and lost.dropped == 2
    assert h.client.sessionId is None
    assert h.client.bufferedAmount == 0
    h.client.send("fresh")
    fresh = h.reconnect()
    assert fresh.packets == [Hello()]
    fresh.welcome(sid=NEW_SID)
    h.flush()
    assert h.states[-1] == (
        ClientState.open,
        StateDetail(reset=True, dropped=2, code=code, reason="cannot resume", transport="websocket"),
    )
    assert h.client.sessionId == NEW_SID
    assert fresh.of(Data) == [Data(1, b"fresh", False)]



def test_restartWhileClosingEndsTheClient(h: Harness) -> None:
    """
    A session lost while close() waits for acknowledgements is not
    replaced: the client is closed, and the detail counts what was lost.
    """
    gateway = h.open()
    h.client.send("pending")
    closing = h.client.close()
    h.drop(gateway)
    h.closeWith(h.reconnect(), 4410, "expired")
    detail = result(closing)
    assert h.client.state is ClientState.closed
    assert (detail.code, detail.dropped) == (4410, 1)
    assert h.attempts == 2



def test_sendBufferMessageBound() -> None:
    """
    send() refuses, with SendBufferFull, a message beyond
    maxBufferMessages unacknowledged ones; an ack makes room.
    """
    h = Harness(maxBufferMessages=2)
    gateway = h.open()
    h.client.send("1")
    h.client.send("2")
    with pytest.raises(SendBufferFull):
        h.client.send("3")
    h.flush()
    assert len(gateway.of(Data)) == 2
    gateway.ack(1)
    h.flush()
    h.client.send("3")
    h.flush()
    assert gateway.of(Data)[-1] == Data(3, b"3", False)



def test_sendBufferByteBound() -> None:
    """
    send() accepts messages up to exactly maxBufferBytes unacknowledged
    payload bytes, and refuses one byte more (here before any connection:
    the bound holds whatever the state).
    """
    h = Harness(maxBufferBytes=10)
    h.client.send(b"123456")
    with pytest.raises(SendBufferFull):
        h.client.send(b"12345")
    h.client.send(b"1234")
    assert h.client.bufferedAmount == 10
    with pytest.raises(SendBufferFull):
        h.client.send("x")



def test_messageSizeBound() -> None:
    """
    send() refuses a message whose data packet (sequence number, colon,
    payload) would exceed maxMessageBytes, and accepts one at the limit.
    """
    h = Harness(maxMessageBytes=30)
    h.client.send(b"x" * 28)  # "1:" and 28 bytes: 30
    with pytest.raises(MessageTooLarge):
        h.client.send(b"x" * 29)  # "2:" and 29 bytes: 31
    for _ in range(8):
        h.client.send(b"")
    with pytest.raises(MessageTooLarge):
        h.client.send(b"x" * 28)  # "10:" and 28 bytes: 31
    h.client.send(b"x" * 27)



def test_1009Closes(h: Harness) -> None:
    """
    1009 (message too big) closes the client with an error: resending
    would fail again.
    """
    gateway = h.open()
    h.client.send("big")
    h.closeWith(gateway, 1009, "too big")
    state, detail = h.states[-1]
    assert state is ClientState.closed
    assert detail.code == 1009 and "1009" in detail.error
    assert detail.dropped == 1
    assert h.attempts == 1



def test_gatewayCloseEndsTheSession(h: Harness) -> None:
    """
    The gateway's close packet (after the backend closed): the client
    delivers what came before it, acknowledges everything, closes the
    WebSocket, and is closed with the backend's code and reason.
    """
    gateway = h.open()
    closed = h.client.nextState(ClientState.closed)
    gateway.dataPacket(1, b"last words")
    gateway.closePacket(1000, "bye")
    h.flush()
    assert h.messages == [("last words", False)]
    assert gateway.of(Ack)[-1] == Ack(1)
    assert gateway.closeCode == 1000
    state, detail = result(closed)
    assert state is ClientState.closed
    assert (detail.code, detail.reason, detail.error) == (1000, "bye", None)
    with pytest.raises(SessionClosed):
        h.client.send("too late")



def test_gatewayClosePacketThen4000(h: Harness) -> None:
    """
    A close packet followed by the gateway's own 4000 close: closed, and
    the detail carries the backend's code and reason, not 4000.
    """
    gateway = h.open()
    gateway.closePacket(4100, "backend says so")
    gateway.sendClose(4000, "session ended")
    h.flush()
    assert h.client.state is ClientState.closed
    detail = h.states[-1][1]
    assert (detail.code, detail.reason) == (4100, "backend says so")



def test_4000EndsTheSession(h: Harness) -> None:
    """
    4000 without a close packet also ends the session.
    """
    gateway = h.open()
    h.closeWith(gateway, 4000, "ended")
    assert h.client.state is ClientState.closed
    assert h.states[-1][1].code == 4000
    assert h.attempts == 1



def test_4003Closes(h: Harness) -> None:
    """
    4003 (this page's origin may not use the route) ends the client: the
    same page would get the same answer.
    """
    gateway = h.open()
    h.closeWith(gateway, 4003, "pages from this origin may not connect to this path")
    assert h.client.state is ClientState.closed
    detail = h.states[-1][1]
    assert detail.code == 4003 and detail.error == "pages from this origin may not connect to this path"
    assert h.attempts == 1



def test_4001Closes(h: Harness) -> None:
    """
    4001 on the client's connection means another connection took the
    session over: the client stops (resuming would take it back).
    """
    gateway = h.open()
    h.closeWith(gateway, 4001, "replaced")
    assert h.client.state is ClientState.closed
    assert "4001" in h.states[-1][1].error
    assert h.attempts == 1



def test_autoIsTheDefault() -> None:
    """
    Without a transport keyword the client is in auto mode and tries a
    WebSocket first.
    """
    reactor = MemoryReactorClock()
    client = SessionClient(URL, reactor=reactor)
    connected = client.connect()
    assert client._engine.mode == "auto" and client.transport == "websocket"
    assert len(reactor.tcpClients) == 1
    client.abort()
    assert failure(connected).check(SessionClosed)



def test_autoFallsBackWhenTheWebSocketFails(a: Harness) -> None:
    """
    A WebSocket that cannot connect makes the next attempt use
    long-polling: the reconnecting state says so, and so does the client's
    C{transport} from then on (never the transport just given up).
    """
    a.client.connect()
    assert a.client.transport == "websocket"  # (the first attempt's)
    a.refuse()
    state, detail = a.states[-1]
    assert state is ClientState.reconnecting and detail.transport == "polling"
    assert a.client.transport == "polling"
    a.reactor.advance(detail.delay)
    assert a.attempts == 1
    a.http.one("open").answer(welcomed())
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(transport="polling"))



@pytest.mark.parametrize("how", ["timeout", "http400"])
def test_autoFallsBackWithoutWelcome(a: Harness, how: str) -> None:
    """
    A WebSocket with no welcome within connectTimeout, or refused with an
    HTTP 4xx (a proxy that will not upgrade), falls back to long-polling
    (in auto mode a 4xx is not final).
    """
    a.client.connect()
    if how == "timeout":
        a.accept()
        a.advance(10)
    else:
        a.accept(deny=400)
    state, detail = a.states[-1]
    assert state is ClientState.reconnecting
    a.reactor.advance(detail.delay)
    assert a.http.one("open").body == {"t": "hello", "v": 1}



def test_autoWebSocketBreakFallsBack(a: Harness) -> None:
    """
    A WebSocket that breaks is resumed over long-polling (docs/protocol.md,
    "Falling back"); nothing in flight is lost.
    """
    gateway = a.open()
    a.client.send("m1")
    a.flush()
    a.drop(gateway)
    a.reactor.advance(a.states[-1][1].delay)
    opening = a.http.one("open")
    assert opening.body == controlToJSON(Hello(SID, SECRET, 0))
    opening.answer(welcomed(resumed=True))
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="polling"))
    assert a.http.one("send").packets == [Data(1, b"m1", False)]



def test_autoPollingThatNeverWorkedTriesWebSocketAgain(a: Harness) -> None:
    """
    While long-polling has never opened a session (a gateway without it,
    or no network), a failed long-polling attempt is followed by a
    WebSocket one.
    """
    gateway = a.open()
    a.drop(gateway)
    a.reactor.advance(a.states[-1][1].delay)
    a.http.one("open").refuse(405, body=b"")
    assert a.client.state is ClientState.reconnecting
    again = a.reconnect()
    assert again.packets == [Hello(SID, SECRET, 0)]



# ----------------------------------------------------------------------
# The engine alone: no reactor, no connection.


def test_engineDecidesWhatALostConnectionMeans() -> None:
    """
    Without a reactor or a connection, the engine answers a lost
    connection with a decision: retry (a dropped connection, 4503), start a
    new session (a restart code: the messages are dropped, counted), or
    finish (4000, 1009, 4001, the backend's close).
    """
    e = engine()
    e.welcome(welcomed(), False, polling=False)
    e.message("unacknowledged")
    e.detached()
    assert e.lost(1006, None, "connection lost") == Retry(
        StateDetail(code=1006, error="connection lost"))
    assert isinstance(e.lost(4503, "busy", None), Retry)
    lost = e.lost(4404, "unknown", None)
    assert isinstance(lost, Retry) and lost.dropped == 1
    assert (lost.detail.reset, lost.detail.dropped, e.sid, len(e.outbox)) == (True, 1, None, 0)
    for code in (4000, 1009, 4001):
        assert isinstance(e.lost(code, None, None), Finish)
    e.enter(ClientState.closed, StateDetail())
    assert e.lost(1006, None, None) is None


def test_engineSaysWhatToSend() -> None:
    """
    The engine's hello asks for a new session, then resumes (or probes)
    the one it has; its close step sends the close packet once everything
    is acknowledged, or finishes at once without a session.
    """
    e = engine()
    assert e.hello() == Hello()
    e.closing = True
    assert e.closeStep() == CloseStep.FINISH
    e = engine()
    e.welcome(welcomed(), False, polling=False)
    assert e.hello() == Hello(SID, SECRET, 0)
    assert e.hello(probe=True) == Hello(SID, SECRET, 0, True)
    e.message(b"x")
    e.closing = True
    assert e.closeStep() == CloseStep.WAIT
    e.ackReceived(Ack(1))
    assert e.closeStep() == CloseStep.SEND
    assert e.closeStep() == CloseStep.WAIT
