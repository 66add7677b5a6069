"""
Autobahn's server protocol cut to what the gateway uses: the one module
that reaches into Autobahn's internals, for the WebSockets that face
clients (a session's, L{gateway.transports.websocket}, and an Engine.IO
one's, L{gateway.engineio.websocket}).

L{DirectMessages} is the message fast path, both ways, and keeps each
connection small; L{withOptions} gives a factory's protocol its options as class
attributes; L{sendCloseCode} sends the close codes Autobahn's C{sendClose}
refuses.

What a connection costs matters: a gateway holds one for every attached
session.  Autobahn copies its thirty options onto every connection, keeps
the whole opening handshake (request, parsed headers, response) for the
connection's life, and makes a send queue (a deque: 760 bytes) that only
synchronous or chopped sends use.  None of it is needed once the
connection is open.
"""

from __future__ import annotations

from ..tcp import replaceProducer
from ..wire.frames import encodeFrame, readClientMessage

__all__ = ["DirectMessages", "sendCloseCode", "withOptions"]

#: What Autobahn keeps of the opening handshake (its server side), which
#: nothing reads once the connection is open.
_HANDSHAKE = ("http_request_data", "http_status_line", "http_headers", "http_request_uri",
              "http_request_path", "http_request_params", "http_request_host", "websocket_protocols",
              "websocket_extensions", "websocket_origin", "_wskey", "http_response_data")


def withOptions(factory) -> None:
    """
    Make C{factory.protocol} a subclass of itself with the factory's
    options as class attributes, after the factory's C{setProtocolOptions}.

    Autobahn copies each option (C{CONFIG_ATTRS}) from the factory onto
    every connection that does not have it already (its
    C{_connectionMade}: "allow to set configuration individually"); with
    class attributes, every connection has them, and its C{__dict__} stays
    thirty entries smaller (1.7 KiB: from 102 entries to 72, under the 85
    at which a dict's table doubles).  An option a connection sets still
    goes to the connection alone.  Call it again if the options change.
    """
    protocol = factory.protocol
    base = getattr(protocol, "_optionsOf", protocol)
    options = {name: _asAttribute(getattr(factory, name)) for name in base.CONFIG_ATTRS}
    factory.protocol = type(base.__name__, (base,), {
        "__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__,
        "_optionsOf": base, **options})


def _asAttribute(value):
    """
    @return: C{value} as a class attribute that reads as C{value} on an
        instance (a function, such as C{perMessageCompressionAccept}, would
        otherwise become a method).
    """
    return staticmethod(value) if hasattr(type(value), "__get__") else value


def _payloadBound(frameBound: int, messageBound: int) -> int:
    """
    @return: the largest payload a frame read on the fast path may carry:
        the smaller of Autobahn's two bounds that are set (0: unbounded;
        the fast path reads at most 65535 bytes in any case).
    """
    bounds = [b for b in (frameBound, messageBound) if b > 0]
    return min(bounds) if bounds else 0xFFFF


class _SendQueue(list):
    """
    Autobahn's send queue, as a list: empty, it is a list's 56 bytes, not
    a deque's first block.  Autobahn only appends to it, takes its length
    and pops from its left (the rare synchronous or chopped sends).
    """

    __slots__ = ()

    def popleft(self):
        """
        @return: the oldest entry, removed.
        """
        return self.pop(0)


def sendCloseCode(protocol, code: int, reason: str) -> None:
    """
    Start an Autobahn protocol's closing handshake with any code RFC 6455
    lets an endpoint send (Autobahn's C{sendClose} refuses 1001-1015, which
    the gateway sends on behalf of peers that went away).
    """
    raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    protocol.sendCloseFrame(code=code, reasonUtf8=raw, isReply=False)


class DirectMessages:
    """
    Autobahn's per-message work cut to what the session protocol uses, and
    its per-connection state to what an open connection needs.

    A whole message is written as one frame straight to the transport
    (masked, were it a client's, with a key from C{os.urandom}), without
    Autobahn's per-frame
    masker objects, traffic counters and debug-log arguments, whenever
    nothing else is in play (no compression, fragmentation, queued or
    synchronous sends, frame logging or timing); otherwise Autobahn sends
    it.  A message received is handed to C{onMessage} without firing
    Autobahn's "message" observers (a Deferred per message; the gateway
    never observes them).  The connection also takes the session's flow
    control (L{pauseReading}, L{resumeReading}, L{registerFlow}).

    Reading is cut the same way.  Autobahn parses every frame through a
    frame-header object, a masker object made for it, four callbacks
    (frame begin, data and end, message end), an incremental UTF-8
    validator and its traffic counters: in a profile of session traffic,
    three quarters of the gateway's time spent reading a client's
    WebSocket.  Nearly every frame a client sends is a whole message in
    one frame, so while the connection is open and between messages (no
    frame or fragmented message begun, nothing buffered, no compression,
    no frame logging or timing), each such frame is read by
    L{gateway.wire.frames.readClientMessage} and handed to C{onMessage}
    at once.  The first frame that is anything else (a ping, a close, a
    fragment, a frame cut by the read, one over the size bound, text that
    is not UTF-8, an unmasked frame) goes, with everything after it, to
    Autobahn's parser, which reads it, answers it or fails the connection
    exactly as without the fast path.  Autobahn's traffic counters
    (C{trafficStats}, which the gateway never reads) do not count the
    frames read on the fast path.

    @ivar transportGone: whether the connection has been lost (its
        transport takes no producer any more).
    """

    transportGone = False

    def connectionMade(self) -> None:
        """
        Autobahn's, then its send queue replaced by a lighter one.
        """
        super().connectionMade()
        self.send_queue = _SendQueue(self.send_queue)

    def forgetHandshake(self) -> None:
        """
        Let go of what Autobahn kept of the opening handshake (request,
        parsed headers, response): call it once the connection is open.
        """
        for name in _HANDSHAKE:
            setattr(self, name, None)

    def sendMessage(self, payload: bytes, isBinary: bool = False, fragmentSize=None,
                    sync: bool = False, doNotCompress: bool = False) -> None:
        """
        Send one message (see L{DirectMessages}).
        """
        if (
            self.state == self.STATE_OPEN
            and fragmentSize is None
            and not sync
            and self._perMessageCompress is None
            and not self.autoFragmentSize
            and not self.send_queue
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
            and not 0 < self.maxMessagePayloadSize < len(payload)
        ):
            opcode = 2 if isBinary else 1
            mask = self.maskServerFrames if self.factory.isServer else self.maskClientFrames
            self.transport.write(encodeFrame(opcode, payload, mask))  # a key from os.urandom
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    def connectionLost(self, reason) -> None:
        """
        The connection is gone: no flow control registers on it any more.
        """
        self.transportGone = True
        super().connectionLost(reason)

    def dataReceived(self, data: bytes) -> None:
        """
        Read the whole messages at the front of C{data} on the fast path
        (see L{DirectMessages}), and give the rest to Autobahn.
        """
        if (
            self.state != self.STATE_OPEN
            or self.data
            or self.current_frame is not None
            or self.inside_message
            or self._perMessageCompress is not None
            or self.logOctets
            or self.logFrames
            or self.trackedTimings
        ):
            self._dataReceived(data)
            return
        limit = _payloadBound(self.maxFramePayloadSize, self.maxMessagePayloadSize)
        pos = 0
        while True:
            frame = readClientMessage(data, pos, limit)
            if frame is None:
                break
            isBinary, payload, pos = frame
            self._onMessage(payload, isBinary)
            if self.state != self.STATE_OPEN:
                break
        if pos < len(data):
            self._dataReceived(data[pos:] if pos else data)

    def onMessageEnd(self) -> None:
        """
        A whole message has arrived: to C{onMessage}.
        """
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    # Flow control: a session pauses reading from one of its two
    # connections while the other cannot keep up (gateway/sessions/upstream.py).
    def pauseReading(self) -> None:
        """
        Stop reading from the peer.
        """
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read from the peer again.
        """
        if self.transport is not None and self.state != self.STATE_CLOSED:
            self.transport.resumeProducing()

    def registerFlow(self, producer) -> None:
        """
        Have C{producer} (pausing the session's other side) paused while
        this connection's write buffer is full, replacing any earlier one.
        """
        transport = self.transport
        if transport is None or self.transportGone:
            return
        replaceProducer(transport, producer)
