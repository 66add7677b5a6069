"""
Tests for C{python -m gateway.client} (L{gateway.client._cli}).
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport

from gateway.client import ClientState, SendBufferFull, StateDetail
from gateway.client._cli import LineSender, formatMessage, formatState, formatUpgrade, parseArguments
from tests.client.fakes import SID, URL, result


class FakeClient:
    """
    Just enough of a SessionClient for L{LineSender}: a send buffer of
    C{room} messages.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[str] = []
        self.waiting: list[Deferred] = []

    def send(self, text: str) -> None:
        if len(self.sent) >= self.room:
            raise SendBufferFull("full")
        self.sent.append(text)

    def whenAcknowledged(self) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        return d

    def acknowledge(self) -> None:
        self.room += len(self.sent)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)



def test_cliSendsLinesWithBackpressure() -> None:
    """
    Each input line is sent as a text message; when the send buffer is
    full, reading pauses until acknowledgements make room, and the end of
    input is reported only once every line is in the buffer.
    """
    client = FakeClient(room=2)
    reports: list[str] = []
    sender = LineSender(client, 1000, reports.append)
    transport = StringTransport()
    sender.makeConnection(transport)
    sender.dataReceived(b"one\r\ntwo\nthree\nfour\nfive")
    assert client.sent == ["one", "two"]
    assert transport.producerState == "paused"
    sender.readConnectionLost()
    assert not sender.ended.called
    client.acknowledge()
    assert client.sent == ["one", "two", "three", "four"]
    assert transport.producerState == "paused"
    client.acknowledge()
    assert client.sent == ["one", "two", "three", "four", "five"]
    assert result(sender.ended) is None
    assert reports == []



def test_cliStopsOnOverlongLine() -> None:
    """
    A line longer than the largest message ends the input with a one-line
    error; received messages are written to standard output.
    """
    client = FakeClient(room=10)
    sender = LineSender(client, 8, [].append)
    transport = StringTransport()
    sender.makeConnection(transport)
    sender.dataReceived(b"short\n" + b"x" * 20 + b"\n")
    assert client.sent == ["short"]
    assert "longer than 8 bytes" in result(sender.ended)
    sender.messageReceived(b"\x01", True)
    sender.messageReceived("text", False)
    assert transport.value() == b"[binary, hex] 01\ntext\n"



def test_cliOutput() -> None:
    """
    Received text is printed as it is, binary as hex (and says so); state
    lines show the truncated session id only; on long-polling, a line says
    why the WebSocket is unavailable and when it is tried next.
    """
    assert formatMessage("hé", False) == "hé\n".encode()
    assert formatMessage(b"\x00\xff", True) == b"[binary, hex] 00ff\n"
    line = formatState(ClientState.open, StateDetail(reset=True, dropped=3, code=4404), SID)
    assert SID not in line and SID[:8] in line and "3 unacknowledged" in line
    line = formatState(ClientState.reconnecting, StateDetail(error="connection lost", delay=1.5), SID)
    assert "connection lost" in line and "1.50 s" in line
    line = formatState(ClientState.open, StateDetail(resumed=True, transport="polling"), SID)
    assert line.endswith(" resumed over polling\n")
    line = formatUpgrade(4.2, "the gateway answered HTTP 403")
    assert line.endswith(": on long-polling: WebSocket unavailable (the gateway answered HTTP 403);"
                         " next try in 4.2 s\n")
    assert parseArguments([URL, "--max-delay", "3"]).max_delay == 3.0
    with pytest.raises(SystemExit):
        parseArguments([URL, "--max-delay", "0"])



def test_cliTransport(capsys: pytest.CaptureFixture) -> None:
    """
    --transport chooses auto (the default), websocket or polling; anything
    else is a usage error.
    """
    assert parseArguments([URL]).transport == "auto"
    for choice in ("auto", "websocket", "polling"):
        assert parseArguments([URL, "--transport", choice]).transport == choice
    with pytest.raises(SystemExit):
        parseArguments([URL, "--transport", "smoke-signals"])
    assert "--transport" in capsys.readouterr().err

