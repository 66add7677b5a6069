"""
The backends of bench/stalled_memory.py (Twisted and Autobahn): a WebSocket
server on a free port of 127.0.0.1 that prints "listening on PORT".

    python bench/stall_backend.py flood [--count 20000] [--size 1024]
    python bench/stall_backend.py stall

flood: once the line "go" arrives on standard input (at once, for a
connection opened after it), each connection sends COUNT binary messages of
SIZE bytes, as fast as its TCP connection takes them: a streaming producer
registered with the transport stops the sending while Twisted's write
buffer is full, and starts it again when it has drained.  What it receives
is read and dropped.

stall: each connection accepts the handshake, then stops reading
(C{transport.pauseProducing()}) for good.

The line "report" on standard input prints one line of JSON:
C{{"report": {"connections": ..., "sent": ..., "sentMin": ..., "sentMax": ...,
"paused": ..., "done": ...}}} (messages sent in all, and by the connections
that sent the fewest and the most; connections whose sending is paused by
TCP, and connections that have sent all COUNT).  It exits when its standard
input closes.
"""

from __future__ import annotations

import argparse
import json
import struct

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import defer, endpoints, error, stdio, task
from twisted.internet.interfaces import IPushProducer
from twisted.protocols.basic import LineReceiver
from zope.interface import implementer


def binaryFrame(payload: bytes) -> bytes:
    """
    One unmasked, final, binary WebSocket frame (a server's) carrying
    C{payload}.
    """
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x82, 126, n) + payload
    return struct.pack("!BBQ", 0x82, 127, n) + payload


@implementer(IPushProducer)
class Flood:
    """
    Sends C{count} copies of one frame on C{protocol}'s transport, a batch
    per turn of the reactor, while the transport's write buffer has room.
    """

    #: Frames written per turn of the reactor.
    batch = 64

    def __init__(self, reactor, protocol, frame: bytes, count: int) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self.frame = frame
        self.count = count
        self.sent = 0
        self.paused = False
        self.stopped = False
        self._call = None

    def start(self) -> None:
        self.protocol.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and not self.stopped and self.sent < self.count:
            self._call = self.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._call = None
        write = self.protocol.transport.write
        end = min(self.count, self.sent + self.batch)
        while self.sent < end and not self.paused and not self.stopped:
            self.sent += 1
            write(self.frame)  # may call pauseProducing at once
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class BackendProtocol(WebSocketServerProtocol):
    def onOpen(self) -> None:
        factory = self.factory
        factory.connections.append(self)
        self.flood = None
        if factory.mode == "stall":
            self.transport.pauseProducing()  # never reads again
        elif factory.going:
            self.startFlood()

    def startFlood(self) -> None:
        if self.flood is None and self.state == self.STATE_OPEN:
            factory = self.factory
            self.flood = Flood(factory.reactor, self, factory.frame, factory.count)
            self.flood.start()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass


class Control(LineReceiver):
    """
    Lines on standard input: "go" and "report".
    """

    delimiter = b"\n"

    def __init__(self, factory) -> None:
        self.factory = factory

    def lineReceived(self, line: bytes) -> None:
        factory = self.factory
        command = line.strip()
        if command == b"go":
            factory.going = True
            for protocol in factory.connections:
                protocol.startFlood()
        elif command == b"report":
            floods = [p.flood for p in factory.connections if p.flood is not None]
            report = {
                "connections": len(factory.connections),
                "sent": sum(f.sent for f in floods),
                "sentMin": min((f.sent for f in floods), default=0),
                "sentMax": max((f.sent for f in floods), default=0),
                "paused": sum(f.paused and f.sent < f.count for f in floods),
                "done": sum(f.sent >= f.count for f in floods),
            }
            print(json.dumps({"report": report}), flush=True)

    def connectionLost(self, reason) -> None:
        # Standard input closed: whoever started it is gone.
        try:
            self.factory.reactor.stop()
        except error.ReactorNotRunning:
            pass


async def main(reactor, options) -> None:
    factory = WebSocketServerFactory("ws://127.0.0.1")
    factory.protocol = BackendProtocol
    factory.noisy = False
    factory.setProtocolOptions(autoPingInterval=0, maxMessagePayloadSize=64 * 1024 * 1024,
                               maxFramePayloadSize=64 * 1024 * 1024)
    factory.reactor = reactor
    factory.mode = options.mode
    factory.count = options.count
    factory.frame = binaryFrame(b"x" * options.size)
    factory.connections = []
    factory.going = False
    stdio.StandardIO(Control(factory), reactor=reactor)
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    print(f"listening on {port.getHost().port}", flush=True)
    await defer.Deferred()  # until killed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("mode", choices=["flood", "stall"])
    parser.add_argument("--count", type=int, default=20000, help="messages per connection (flood)")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message (flood)")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
