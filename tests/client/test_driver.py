"""
Tests for the session driver (L{gateway.client._driver}): connection
attempts and the connections it has given up.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from gateway.client import ClientState
from gateway.interfaces import IPollingOwner, IWebSocketOwner
from gateway.wire.protocol import Hello
from tests.client.fakes import HEARTBEAT, SECRET, SID, Harness


def test_connectTimeout(h: Harness) -> None:
    """
    A connection attempt that brings no welcome within connectTimeout is
    abandoned and retried after a backoff delay.
    """
    h.client.connect()
    h.reactor.advance(9.5)
    assert h.states == []
    h.reactor.advance(0.5)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "no welcome within 10 s" in detail.error
    assert h.attempts == 1
    h.reactor.advance(detail.delay)
    assert h.attempts == 2
    gateway = h.accept()
    h.advance(10)  # connected, but still no welcome
    assert h.client.state is ClientState.reconnecting
    assert gateway.transport.disconnected



def test_abandonedConnectionIsIgnored(h: Harness) -> None:
    """
    What arrives on a connection the client gave up (here a late data
    packet and a 4001 on the connection it declared dead) is ignored: the
    client resumes on a new connection, and the message comes through it.
    """
    old = h.open()
    old.dataPacket(1, b"late")
    old.sendClose(4001, "replaced")
    h.advance(2 * HEARTBEAT + 1)  # declared dead before the packets arrive
    assert h.messages == []
    assert h.client.state is ClientState.reconnecting
    new = h.reconnect()
    assert new.packets == [Hello(SID, SECRET, 0)]
    new.welcome(resumed=True)
    new.dataPacket(1, b"late")
    h.flush()
    assert h.client.state is ClientState.open
    assert h.messages == [("late", False)]



def test_driverProvidesTheOwnerInterfaces(h: Harness) -> None:
    """
    The session driver is what the WebSocket and long-polling adapters
    report to: it provides IWebSocketOwner and IPollingOwner.
    """
    driver = h.client._driver
    assert verifyObject(IWebSocketOwner, driver)
    assert verifyObject(IPollingOwner, driver)
    assert driver.closeTimeout == 10.0 and driver.clock is h.reactor
