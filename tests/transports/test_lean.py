"""
Tests for L{gateway.transports.lean}: the client-facing WebSockets' direct
sending of whole messages, what is left to Autobahn, and what a connection
keeps (its options on its class, no handshake once open, a light send
queue), against the project's own WebSocket client.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.testing import StringTransport

from gateway.transports.lean import DirectMessages, withOptions
from gateway.wire.frames import encodeFrame
from gateway.wire.wsclient import Accepted, CloseReceived, MessageReceived, PongReceived, WebSocketClient
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


# -- a connection's own state


class Echo(DirectMessages, WebSocketServerProtocol):
    """
    An Autobahn server on L{DirectMessages} that echoes, and forgets its
    handshake once open as the gateway's WebSockets do.
    """

    def onOpen(self):
        self.forgetHandshake()

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class _Transport(StringTransport):
    """
    A string transport that, as a TCP one, lets a producer be unregistered
    when none is (Autobahn does so when it drops a connection).
    """

    def unregisterProducer(self):
        if self.producer is not None:
            super().unregisterProducer()


class AutobahnReads(Echo):
    """
    L{Echo} with every byte read by Autobahn's own parser: the reference
    the fast path is checked against.
    """

    def dataReceived(self, data):
        self._dataReceived(data)


def leanEcho(protocolClass=None, **options):
    """
    @return: an open L{Echo} over a string transport, its factory given its
        options by L{withOptions}, and a client engine talking to it.
    """
    factory = WebSocketServerFactory()
    factory.protocol = protocolClass or Echo
    factory.setProtocolOptions(failByDrop=False, **options)
    withOptions(factory)
    protocol = factory.buildProtocol(None)
    transport = _Transport()
    protocol.makeConnection(transport)
    client = WebSocketClient(1 << 20)
    protocol.dataReceived(client.handshake(b"localhost", b"/chat", [(b"Origin", b"http://localhost")]))
    assert client.receiveData(transport.value()) == [Accepted()]
    transport.clear()
    return protocol, transport, client


def test_optionsAreClassAttributes():
    """
    With L{withOptions}, a connection reads its factory's options from its
    class: none is copied into its C{__dict__}, which stays under the 85
    entries past which a dict's table doubles; an option that is a function
    is still called as one; a connection may still set its own.
    """
    protocol, transport, client = leanEcho(maxMessagePayloadSize=10, autoPingInterval=0)
    assert isinstance(protocol, Echo) and type(protocol) is not Echo
    own = vars(protocol)
    assert not set(own) & set(Echo.CONFIG_ATTRS)
    assert len(own) <= 85
    assert protocol.maxMessagePayloadSize == 10
    assert protocol.perMessageCompressionAccept([]) is None
    protocol.dataReceived(client.sendMessage(b"x" * 11, True))
    [close] = client.receiveData(transport.value())
    assert close.code == 1009  # the class's bound applies
    other = protocol.factory.buildProtocol(None)
    other.maxMessagePayloadSize = 20
    assert (other.maxMessagePayloadSize, protocol.maxMessagePayloadSize) == (20, 10)


def test_withOptionsAgain():
    """
    L{withOptions} called again (the options changed) subclasses the
    original protocol, not its own subclass.
    """
    factory = WebSocketServerFactory()
    factory.protocol = Echo
    withOptions(factory)
    factory.setProtocolOptions(maxMessagePayloadSize=7)
    withOptions(factory)
    assert factory.protocol.__mro__[1] is Echo
    assert factory.protocol.maxMessagePayloadSize == 7


def test_handshakeForgotten():
    """
    Once open, what Autobahn kept of the opening handshake is gone, and
    the connection works on: a message is echoed.
    """
    protocol, transport, client = leanEcho()
    assert protocol.http_headers is None and protocol.http_request_data is None
    assert protocol.http_response_data is None and protocol.websocket_origin is None
    protocol.dataReceived(client.sendMessage(b"hello", False))
    assert client.receiveData(transport.value()) == [MessageReceived(b"hello", False)]


def test_sendQueueIsAList():
    """
    A connection's send queue is a list (an empty deque costs its first
    block) that does what Autobahn asks of it: append, length, pop from the
    left.
    """
    protocol, _, _ = leanEcho()
    queue = protocol.send_queue
    assert isinstance(queue, list) and len(queue) == 0
    queue.append((b"a", True))
    queue.append((b"b", True))
    assert (queue.popleft(), len(queue)) == ((b"a", True), 1)


# -- reading: the fast path against Autobahn's parser


def _fragmented(payload: bytes, opcode: int, key: bytes) -> bytes:
    """
    A message in two fragments (a first frame, then a final continuation).
    """
    half = len(payload) // 2
    first = bytearray(encodeFrame(opcode, payload[:half], key=key))
    first[0] &= 0x7F  # not final
    return bytes(first) + encodeFrame(0, payload[half:], key=key)


_KEY = b"\x11\x22\x33\x44"

#: What a client may send: whole messages (the fast path's), and every
#: other kind of frame, good or bad, that must reach Autobahn's parser.
_FRAMES = st.one_of(
    st.binary(max_size=200).map(lambda p: encodeFrame(2, p, key=_KEY)),
    st.text(max_size=80).map(lambda t: encodeFrame(1, t.encode(), key=_KEY)),
    st.binary(min_size=126, max_size=70000).map(lambda p: encodeFrame(2, p, key=_KEY)),
    st.binary(max_size=100).map(lambda p: encodeFrame(9, p, key=_KEY)),  # a ping
    st.binary(max_size=20).map(lambda p: encodeFrame(10, p, key=_KEY)),  # a pong
    st.binary(min_size=2, max_size=200).map(lambda p: _fragmented(p, 2, _KEY)),
    st.text(min_size=2, max_size=50).map(lambda t: _fragmented(t.encode(), 1, _KEY)),
    st.sampled_from([
        encodeFrame(1, b"\xff\xfe", key=_KEY),  # text that is not UTF-8
        encodeFrame(2, b"x", mask=False),  # unmasked
        encodeFrame(3, b"x", key=_KEY),  # a reserved opcode
        bytes([0xC2]) + encodeFrame(2, b"x", key=_KEY)[1:],  # RSV1 without compression
        encodeFrame(2, b"y" * 2000, key=_KEY),  # over the bound of 1000
        encodeFrame(8, b"\x03\xe8bye", key=_KEY),  # a close
    ]),
)


def _afterHandshake(protocolClass):
    # No closing-handshake timer: it would outlive the test.
    protocol, transport, client = leanEcho(protocolClass, maxMessagePayloadSize=1000,
                                           maxFramePayloadSize=1000, closeHandshakeTimeout=0)
    return protocol, transport, client


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(_FRAMES, max_size=8), st.lists(st.integers(1, 300), max_size=10))
def test_fastPathReadsAsAutobahn(frames, cuts):
    """
    Whatever a client sends (whole messages, pings, pongs, fragments, a
    close, frames that break the protocol or the size bound), cut into
    reads anywhere, a connection with the fast path answers exactly as
    one whose every byte Autobahn reads: the same echoes, pongs and close,
    in the same order.
    """
    stream = b"".join(frames)
    reads, at = [], 0
    for cut in cuts:
        if at >= len(stream):
            break
        reads.append(stream[at:at + cut])
        at += cut
    reads.append(stream[at:])
    answers = []
    for protocolClass in (Echo, AutobahnReads):
        protocol, transport, client = _afterHandshake(protocolClass)
        for data in reads:
            if data:
                protocol.dataReceived(data)
        answers.append((client.receiveData(transport.value()), protocol.state, protocol.wasClean))
    assert answers[0] == answers[1]


def test_fastPathThenAutobahn():
    """
    Whole messages around a ping and a fragmented message, in one read:
    the messages on the fast path, the ping answered and the fragments
    joined by Autobahn, and the fast path back once Autobahn is done.
    """
    protocol, transport, client = _afterHandshake(Echo)
    stream = (encodeFrame(1, b"one", key=_KEY) + encodeFrame(9, b"hi", key=_KEY)
              + _fragmented(b"fragmented", 2, _KEY) + encodeFrame(2, b"two", key=_KEY))
    protocol.dataReceived(stream)
    protocol.dataReceived(encodeFrame(1, b"three", key=_KEY))
    assert client.receiveData(transport.value()) == [
        MessageReceived(b"one", False), PongReceived(b"hi"), MessageReceived(b"fragmented", True),
        MessageReceived(b"two", True), MessageReceived(b"three", False)]


@pytest.mark.parametrize("frame, code", [
    (encodeFrame(1, b"caf\xc3", key=_KEY), 1007),
    (encodeFrame(2, b"z" * 1001, key=_KEY), 1009),
    (encodeFrame(2, b"z", mask=False), 1002),
])
def test_fastPathLeavesFailuresToAutobahn(frame, code):
    """
    A frame the fast path does not take because it breaks a rule fails
    the connection with Autobahn's code, after the messages before it.
    """
    protocol, transport, client = _afterHandshake(Echo)
    protocol.dataReceived(encodeFrame(1, b"ok", key=_KEY) + frame)
    events = client.receiveData(transport.value())
    assert events[0] == MessageReceived(b"ok", False)
    assert isinstance(events[1], CloseReceived) and events[1].code == code


def test_fastPathStopsWhenClosed():
    """
    A message whose handling closes the connection ends the fast path:
    the frames after it go to Autobahn, which reads them as a closing
    connection does.
    """
    class Closing(Echo):
        def onMessage(self, payload, isBinary):
            self.sendClose(1000)

    protocol, transport, client = _afterHandshake(Closing)
    protocol.dataReceived(encodeFrame(1, b"bye", key=_KEY) + encodeFrame(1, b"late", key=_KEY))
    assert protocol.state == protocol.STATE_CLOSING
    assert client.receiveData(transport.value()) == [CloseReceived(1000, "")]
