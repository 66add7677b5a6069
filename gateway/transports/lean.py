"""
Autobahn's server protocol cut to what the gateway uses: the one module
that reaches into Autobahn's internals, for the WebSockets that face
clients (a session's, L{gateway.transports.websocket}, and an Engine.IO
one's, L{gateway.engineio.websocket}).

L{DirectMessages} is the message fast path; L{sendCloseCode} sends the
close codes Autobahn's C{sendClose} refuses.
"""

from __future__ import annotations

from ..wire.frames import encodeFrame

__all__ = ["DirectMessages", "sendCloseCode"]


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
    Autobahn's per-message work cut to what the session protocol uses.

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

    @ivar transportGone: whether the connection has been lost (its
        transport takes no producer any more).
    """

    transportGone = False

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
        try:
            transport.registerProducer(producer, True)
        except RuntimeError:
            transport.unregisterProducer()
            transport.registerProducer(producer, True)
