"""
Tests for L{gateway.transports.lean}: the client-facing WebSockets' direct
sending of whole messages, and what is left to Autobahn.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from twisted.internet.testing import StringTransport

from gateway.transports.lean import DirectMessages
from tests.helpers import unframe


class Recorded:
    """
    Stands for Autobahn's protocol under L{DirectMessages}: records the
    messages it is asked to send itself.
    """

    STATE_OPEN = 3

    def __init__(self, isServer: bool) -> None:
        self.factory = SimpleNamespace(isServer=isServer)
        self.state = self.STATE_OPEN
        self._perMessageCompress = None
        self.autoFragmentSize = 0
        self.send_queue: list = []
        self.logFrames = self.logOctets = False
        self.trackedTimings = None
        self.maxMessagePayloadSize = 0
        self.maskServerFrames, self.maskClientFrames = False, True
        self.transport = StringTransport()
        self.autobahn: list = []
        self.received: list = []

    def sendMessage(self, payload, isBinary=False, fragmentSize=None, sync=False, doNotCompress=False):
        self.autobahn.append((payload, isBinary, fragmentSize, sync))

    def _onMessage(self, payload, isBinary):
        self.received.append((payload, isBinary))


class Direct(DirectMessages, Recorded):
    """
    L{DirectMessages} over the recorder.
    """


@pytest.mark.parametrize("isServer, masked", [(True, False), (False, True)])
def test_directMessage(isServer, masked):
    """
    A message is written as one frame, masked by a client and not by a
    server, without Autobahn's sending code.
    """
    protocol = Direct(isServer)
    protocol.sendMessage(b"7:hello", False)
    protocol.sendMessage(b"\x00\x01", True)
    written = protocol.transport.value()
    head = 2 + (4 if masked else 0)
    first, _, key, text = unframe(written[: head + 7])
    assert (first, text, key is not None) == (0x81, b"7:hello", masked)
    second, _, key, data = unframe(written[head + 7:])
    assert (second, data, key is not None) == (0x82, b"\x00\x01", masked)
    assert protocol.autobahn == []


@pytest.mark.parametrize(
    "setting",
    [
        {"_perMessageCompress": object()},
        {"autoFragmentSize": 10},
        {"send_queue": [(b"x", False)]},
        {"logFrames": True},
        {"maxMessagePayloadSize": 3},
        {"state": 2},
    ],
)
def test_autobahnSendsOtherwise(setting):
    """
    With compression, fragmentation, a send queue, frame logging, a message
    over the size limit, or a WebSocket not open, Autobahn sends the message
    itself (and does what it does in those cases).
    """
    protocol = Direct(False)
    vars(protocol).update(setting)
    protocol.sendMessage(b"hello", False)
    assert protocol.autobahn == [(b"hello", False, None, False)]
    assert protocol.transport.value() == b""


def test_autobahnSendsFragmentedOrSync():
    """
    A fragmented or synchronous send is Autobahn's.
    """
    protocol = Direct(True)
    protocol.sendMessage(b"hello", True, fragmentSize=2)
    protocol.sendMessage(b"hello", True, sync=True)
    assert protocol.autobahn == [(b"hello", True, 2, False), (b"hello", True, None, True)]


def test_messageEnd():
    """
    A whole message goes to C{onMessage} (through Autobahn's C{_onMessage}),
    its fragments joined, unless the protocol failed the connection itself.
    """
    protocol = Direct(True)
    protocol.failedByMe = False
    protocol.message_data, protocol.message_is_binary = [b"he", b"llo"], False
    protocol.onMessageEnd()
    protocol.failedByMe = True
    protocol.message_data = [b"late"]
    protocol.onMessageEnd()
    assert protocol.received == [(b"hello", False)]
    assert protocol.message_data is None
