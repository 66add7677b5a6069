"""
Fakes of an Engine.IO session's transport and upstream, shared by the
engine's and the relay's tests.
"""

from __future__ import annotations

from zope.interface import implementer

from gateway.engineio.packets import Packet
from gateway.interfaces import IEngineTransport, IEngineUpstream


@implementer(IEngineTransport)
class FakeTransport:
    """
    Records what the session delivers.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.delivered: list[list[Packet]] = []
        self.closed = False

    def deliver(self, packets):
        self.delivered.append(list(packets))

    def closeTransport(self, code=None):
        self.closed = True
        self.closeCode = code


@implementer(IEngineUpstream)
class FakeUpstream:
    """
    Records what the session hands the server side.
    """

    def __init__(self) -> None:
        self.messages: list = []
        self.closed: str | None = None
        self.paused = False

    def messageFromClient(self, data):
        self.messages.append(data)

    def closeUpstream(self, reason):
        self.closed = reason

    def pauseReading(self):
        self.paused = True

    def resumeReading(self):
        self.paused = False

    def registerFlow(self, producer):
        pass
