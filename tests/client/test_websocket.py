"""
Tests for the client's WebSocket adapter (L{gateway.client._websocket}):
TLS, refused and foreign handshakes, Autobahn's timers.
"""

from __future__ import annotations

import pytest
import txaio
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory

from gateway.client import ClientState, SessionClient, SessionClosed
from gateway.wire.protocol import SUBPROTOCOL
from tests.client.fakes import Harness, failure, result


def test_wssConnectsThroughTLS() -> None:
    """
    A wss:// URL connects to port 443 with TLS (HostnameEndpoint wrapped
    by wrapClientTLS).
    """
    reactor = MemoryReactorClock()
    client = SessionClient("wss://gateway.example/chat", reactor=reactor)
    connected = client.connect()
    host, port, factory, timeout, bindAddress = reactor.tcpClients[0]
    assert (host, port, timeout) == ("127.0.0.1", 443, 10.0)  # (resolved by the fake resolver)
    assert isinstance(factory._wrappedFactory, TLSMemoryBIOFactory)
    client.abort()
    assert failure(connected).check(SessionClosed)



def test_httpRefusalBeforeFirstSessionIsFatal(h: Harness) -> None:
    """
    An HTTP 4xx answer to the opening handshake of the first session
    cannot be fixed by retrying: connect() fails and the client is closed,
    saying why.
    """
    d = h.client.connect()
    h.accept(deny=404)
    error = failure(d).value
    assert isinstance(error, SessionClosed)
    assert h.client.state is ClientState.closed
    assert "HTTP 404" in error.detail.error
    assert h.attempts == 1



def test_subprotocolNotSelectedIsFatal(h: Harness) -> None:
    """
    A server that does not select txgateway.v1 (transparent proxying) gets
    no packet, and the first session fails at once.
    """
    d = h.client.connect()
    gateway = h.accept(select=False)
    assert failure(d).check(SessionClosed)
    assert gateway.packets == []
    assert h.client.state is ClientState.closed
    assert SUBPROTOCOL in h.states[-1][1].error



def test_noAutobahnTimerOnTheGlobalLoop(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    Autobahn's own timers (which would run on txaio's global loop, not the
    client's reactor) are all off: a session's life schedules none.
    """
    loop = Clock()
    monkeypatch.setattr(txaio.config, "loop", loop)
    gateway = h.open()
    h.client.send("x")
    h.drop(gateway)
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    closing = h.client.close()
    again.ack(1)
    h.flush()
    h.closeWith(again, 4000)
    assert result(closing).code == 4000
    assert loop.getDelayedCalls() == []

