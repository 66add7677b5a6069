"""
Tests for L{gateway.transports.websocket}: what the session protocol's
WebSocket costs per frame.
"""

from __future__ import annotations

from twisted.logger import globalLogPublisher

from gateway.transports.websocket import SessionWebSocket


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
