"""
Tests for SessionClient (L{gateway.client._session}), the public face: what
it exports, its arguments, opening, sending, resuming and closing a session
as the application sees it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from twisted.internet.task import Clock

from gateway.client import (
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClient,
    SessionClosed,
    SessionLost,
    StateDetail,
)
from gateway.errors import GatewayError, LimitExceeded
from gateway.wire.protocol import SUBPROTOCOL, Close, Data, Hello
from tests.client.fakes import SECRET, SID, URL, Harness, failure, hasNotFired, result


def test_exports() -> None:
    """
    C{gateway.client.__all__} names only things the package defines, and
    the errors sit in the gateway's exception tree (SendBufferFull is a
    LimitExceeded).
    """
    import gateway.client

    for name in gateway.client.__all__:
        assert hasattr(gateway.client, name), name
    assert issubclass(SendBufferFull, LimitExceeded)
    assert issubclass(MessageTooLarge, LimitExceeded)
    assert issubclass(SessionClosed, GatewayError)
    assert issubclass(SessionLost, GatewayError)
    assert [s.value for s in ClientState] == ["connecting", "open", "reconnecting", "closed"]



def test_importInstallsNoReactor() -> None:
    """
    Importing the client package and its command line installs no reactor.
    """
    code = (
        "import sys, gateway.client, gateway.client._cli, gateway.client.__main__\n"
        "assert 'twisted.internet.reactor' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)



def test_badArguments() -> None:
    """
    A URL that is not ws://, wss://, http:// or https://, an unknown
    transport, or inconsistent bounds, are refused at construction.
    """
    with pytest.raises(ValueError):
        SessionClient("ftp://example.com/", reactor=Clock())
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), transport="carrier-pigeon")
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), upgradeTimeout=0)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), maxBatchMessages=0)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), initialDelay=5, maxDelay=1)
    with pytest.raises(ValueError):
        SessionClient(URL, reactor=Clock(), maxMessageBytes=10)



def test_newSession(h: Harness) -> None:
    """
    The client offers txgateway.v1, sends a hello without a session as its
    first packet, and on welcome is open: connect() fires, sessionId is the
    gateway's, onState reports open (neither resumed nor reset).
    """
    d = h.client.connect()
    assert h.client.state is ClientState.connecting
    gateway = h.accept()
    assert gateway.request.protocols == [SUBPROTOCOL]
    assert gateway.packets == [Hello()]
    assert hasNotFired(d)
    gateway.welcome()
    h.flush()
    assert result(d) is None
    assert h.client.state is ClientState.open
    assert h.client.sessionId == SID
    assert h.states == [(ClientState.open, StateDetail(transport="websocket"))]
    assert result(h.client.connect()) is None



def test_sendTextAndBinaryBufferedUntilWelcome(h: Harness) -> None:
    """
    Messages sent before the welcome wait in the send buffer and follow
    it, in order: a str as a text data packet, bytes as a binary one.
    """
    h.client.connect()
    gateway = h.accept()
    h.client.send("h\N{LATIN SMALL LETTER E WITH ACUTE}llo")
    h.client.send(b"\x00\xff")
    h.flush()
    assert gateway.packets == [Hello()]
    gateway.welcome()
    h.flush()
    assert gateway.of(Data) == [
        Data(1, "h\N{LATIN SMALL LETTER E WITH ACUTE}llo".encode(), False),
        Data(2, b"\x00\xff", True),
    ]
    h.client.send("again")
    h.flush()
    assert gateway.of(Data)[-1] == Data(3, b"again", False)



def test_resumeResendsExactlyTheUnacknowledged(h: Harness) -> None:
    """
    After a dropped connection the client resumes with its sid, secret and
    received count, drops what the welcome acknowledges, and sends again
    exactly the rest, in order; new messages continue the numbering.
    """
    gateway = h.open()
    for text in ("m1", "m2", "m3"):
        h.client.send(text)
    gateway.ack(1)
    gateway.dataPacket(1, b"from backend")
    h.flush()
    h.drop(gateway)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert detail.error == "connection lost"
    assert not detail.reset
    h.client.send("m4")  # while reconnecting: buffered
    again = h.reconnect()
    assert again.packets == [Hello(SID, SECRET, 1)]
    again.welcome(received=2, resumed=True)
    h.flush()
    assert again.of(Data) == [Data(3, b"m3", False), Data(4, b"m4", False)]
    assert h.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="websocket"))
    again.dataPacket(1, b"from backend")  # the gateway's replay overlaps: dropped
    again.dataPacket(2, b"next")
    h.flush()
    assert h.messages == [("from backend", False), ("next", False)]



def test_clientCloseWaitsForAcknowledgement(h: Harness) -> None:
    """
    close() waits until everything sent is acknowledged, then sends the
    close packet; the gateway's 4000 closes the client and fires close().
    """
    gateway = h.open()
    h.client.send("a")
    acked = h.client.whenAcknowledged()
    closing = h.client.close()
    h.flush()
    assert gateway.of(Close) == []
    with pytest.raises(SessionClosed):
        h.client.send("b")
    gateway.ack(1)
    h.flush()
    assert result(acked) is None
    assert gateway.of(Close) == [Close(1000, "")]
    assert hasNotFired(closing)
    h.closeWith(gateway, 4000, "session ended")
    detail = result(closing)
    assert detail.code == 4000 and detail.error is None
    assert h.client.state is ClientState.closed
    assert result(h.client.close()) == detail



def test_clientCloseAcrossADrop(h: Harness) -> None:
    """
    If the connection drops before the gateway confirms the end, the
    client resumes and sends the close packet again.
    """
    gateway = h.open()
    closing = h.client.close()
    h.flush()
    assert gateway.of(Close) == [Close(1000, "")]
    h.drop(gateway)
    assert h.client.state is ClientState.reconnecting
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    assert again.of(Close) == [Close(1000, "")]
    h.closeWith(again, 4000)
    assert result(closing).code == 4000



def test_closeWithoutSession(h: Harness) -> None:
    """
    close() before any session, with nothing sent, closes at once; so does
    cancelling a close() that waits (abort).
    """
    connected = h.client.connect()
    detail = result(h.client.close())
    assert h.client.state is ClientState.closed and detail.error is None
    assert failure(connected).check(SessionClosed)
    h2 = Harness()
    h2.open()
    h2.client.send("unacknowledged")
    closing = h2.client.close()
    closing.cancel()
    assert h2.client.state is ClientState.closed
    assert h2.states[-1][1].dropped == 1



def test_logsNeverShowSecretOrFullId(h: Harness, logged: list[str]) -> None:
    """
    The log never contains the secret or a full session id, only the
    first 8 characters of the id.
    """
    gateway = h.open()
    h.drop(gateway)
    again = h.reconnect()
    h.closeWith(again, 4404)
    h.client.abort()
    text = "\n".join(logged)
    assert SID[:8] + "\N{HORIZONTAL ELLIPSIS}" in text
    assert SID not in text
    assert SECRET not in text



def test_maxMessageBytesIsPublicAndReadOnly() -> None:
    """
    maxMessageBytes is the bound given (the command line sizes its lines
    by it), and cannot be changed afterwards.
    """
    client = SessionClient(URL, reactor=Clock(), maxMessageBytes=4096)
    assert client.maxMessageBytes == 4096
    assert SessionClient(URL, reactor=Clock()).maxMessageBytes == 1024 * 1024
    with pytest.raises(AttributeError):
        client.maxMessageBytes = 1  # type: ignore[misc]
