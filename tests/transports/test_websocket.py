"""
Tests for L{gateway.transports.websocket}: what the session protocol's
WebSocket costs per frame, and the transport contract it provides.
"""

from __future__ import annotations

from twisted.logger import globalLogPublisher
from zope.interface.verify import verifyObject

from gateway.interfaces import ISessionTransport
from gateway.transports.websocket import SessionWebSocket
from gateway.wire.protocol import CLOSE_UNAVAILABLE


def test_debugEventsDropped():
    """
    A session WebSocket logs through Autobahn's own (txaio) logger: the
    debug events Autobahn emits for every frame are dropped where they are
    emitted, never formatted; warnings still reach the log.
    """
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        protocol = SessionWebSocket()
        protocol.log.debug("{n} bytes", n=1)
        protocol.log.warn("a warning")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert [e["log_format"] for e in events] == ["a warning"]


def test_providesTheSessionTransport():
    """
    A session WebSocket is an L{ISessionTransport} of kind C{"ws"}: letting
    go of a session (it was attached through another node) closes it with
    4503, and it holds no poll to release.
    """
    protocol = SessionWebSocket()
    verifyObject(ISessionTransport, protocol)
    assert protocol.kind == "ws"
    closed = []
    protocol.closeTransport = lambda code, reason: closed.append((code, reason))
    protocol.release()
    protocol.letGo()
    assert closed == [(CLOSE_UNAVAILABLE, "the session moved to another gateway node")]
