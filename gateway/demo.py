"""
Echo backends: the demo's (C{twistd gateway --demo}) and the test fixtures'.

An L{EchoServerFactory} is an Autobahn WebSocket server that sends every
message back (prefixed with its name in the demo), records the handshakes it
saw, and closes with a chosen code when asked to by a text message
C{"close:CODE:REASON"}.

Its connections use Autobahn's own logger (txaio's), which drops debug
events where they are emitted: Autobahn logs several debug lines per frame
and per handshake, and a plain L{Logger} there would write each of them to
the demo's terminal.  A factory made with C{logConnections} (the demo's)
logs one line when a connection opens and one when it ends instead.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
import txaio
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import Logger

from .wire.protocol import shortId

__all__ = ["EchoServerFactory", "EchoServerProtocol", "listenEcho"]


def _acceptDeflate(offers):
    for offer in offers:
        if isinstance(offer, PerMessageDeflateOffer):
            return PerMessageDeflateOfferAccept(offer)
    return None


class EchoServerProtocol(WebSocketServerProtocol):
    """
    Sends each message back as it came (text stays text, binary stays
    binary), with the factory's prefix when it has one.
    """

    #: Autobahn's logger (see the module docstring); this module's own lines
    #: go through the factory's C{log}.
    log = txaio.make_logger()

    #: What a resumed session's backend sends again when it opens: the
    #: messages sent after what the client says it received.
    _replay: tuple | list = ()

    def onConnect(self, request):
        """
        Record the raw handshake; choose the first offered subprotocol the
        factory supports.
        """
        factory = self.factory
        factory.handshakes.append(self.http_request_data)
        self._skip = 0
        self._log = None
        self._received = 0
        sid = request.headers.get("x-session-id")
        client = request.headers.get("x-forwarded-for") or request.peer
        self._who = f"session {shortId(sid)}" if sid else f"a connection from {client}"
        self._epoch = _count(request.headers.get("x-session-epoch")) or 0
        if sid:
            self._log = log = factory.sessionLog(sid)
            log.epoch = max(log.epoch, self._epoch)
            if request.headers.get("x-session-resumed"):
                # The resume contract (docs/architecture.md): skip what we
                # already had, and send again what the gateway never got.
                delivered = _count(request.headers.get("x-session-delivered"))
                received = _count(request.headers.get("x-session-received"))
                if delivered is not None:
                    self._skip = max(0, log.received - delivered)
                if received is not None:
                    self._replay = log.sentAfter(received)
        for proto in request.protocols:
            if proto in factory.subprotocols:
                return proto
        return None

    def onOpen(self) -> None:
        """
        Count the connection.
        """
        factory = self.factory
        factory.connections.add(self)
        factory.opened += 1
        if factory.logConnections:
            factory.log.info("{name}: {who} opened", name=factory.name, who=self._who)
        for payload, isBinary in self._replay:
            self.sendMessage(payload, isBinary)
        self._replay = ()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        Echo, or close when asked to with C{close:CODE:REASON}.
        """
        if not isBinary and payload.startswith(b"close:"):
            _, code, reason = payload.decode("utf-8").split(":", 2)
            self.sendClose(int(code), reason)
            return
        if self._log is not None and self._epoch < self._log.epoch:
            self.factory.fenced += 1  # from a gateway node that has since lost the session
            return
        if self._skip:
            self._skip -= 1  # received already, before the gateway's takeover
            return
        self.factory.messages += 1
        self._received += 1
        if self.factory.received is not None:
            self.factory.received.append(payload)
        echo = self.factory.prefix + payload
        if self._log is not None:
            self._log.received += 1
            self._log.sent(echo, isBinary)
        self.sendMessage(echo, isBinary)

    def onPing(self, payload: bytes) -> None:
        """
        Count pings (and answer them).
        """
        self.factory.pings += 1
        super().onPing(payload)

    def onClose(self, wasClean: bool, code, reason) -> None:
        """
        Record how the connection ended.
        """
        factory = self.factory
        if factory.logConnections and self in factory.connections:
            factory.log.info("{name}: {who} ended ({code}), {n} messages echoed", name=factory.name,
                             who=self._who, code=code if code is not None else "dropped",
                             n=self._received)
        self.factory.connections.discard(self)
        self.factory.closes.append((wasClean, code, reason))
        waiters, self.factory.closeWaiters = self.factory.closeWaiters, []
        for d in waiters:
            d.callback((wasClean, code, reason))


def _count(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class SessionLog:
    """
    What an echo server received and sent for one gateway session (keyed
    by C{X-Session-Id}), kept so that it can honour the gateway's resume
    headers: the last L{SessionLog.KEEP} messages sent, and the newest
    C{X-Session-Epoch} seen (messages on a connection of an older epoch are
    dropped: that gateway node has lost the session).
    """

    KEEP = 10_000

    def __init__(self) -> None:
        self.received = 0
        self.count = 0
        self.epoch = 0
        self._sent: deque[tuple[bytes, bool]] = deque(maxlen=self.KEEP)

    def sent(self, payload: bytes, isBinary: bool) -> None:
        self.count += 1
        self._sent.append((payload, isBinary))

    def sentAfter(self, n: int) -> list[tuple[bytes, bool]]:
        """
        @return: the messages sent after the first C{n} (those still kept).
        """
        missing = self.count - n
        if missing <= 0:
            return []
        return list(self._sent)[-missing:]


class EchoServerFactory(WebSocketServerFactory):
    """
    An echo server's shared state.

    @ivar handshakes: the raw request head of every handshake received.
    @ivar connections: open connections.
    @ivar opened: connections opened in all.
    @ivar received: with C{record}, every message received, in order.
    @ivar pings: pings received.
    @ivar closes: C{(wasClean, code, reason)} of every connection closed.
    @ivar logConnections: log a line when a connection opens and ends (the
        demo's backends do; the tests' fixtures, which open thousands, do
        not).
    """

    protocol = EchoServerProtocol
    log = Logger()
    #: No "Starting factory <...>" lines: the demo logs its own.
    noisy = False

    def __init__(self, name: str = "echo", prefix: bytes = b"", subprotocols=("chat", "superchat"),
                 record: bool = False, logConnections: bool = False):
        super().__init__()
        self.name = name
        self.logConnections = logConnections
        self.prefix = prefix
        self.subprotocols = tuple(subprotocols)
        self.handshakes: list[bytes] = []
        self.connections: set[EchoServerProtocol] = set()
        self.opened = 0
        self.messages = 0
        self.fenced = 0
        self.received: list[bytes] | None = [] if record else None
        self.pings = 0
        self.closes: list[tuple] = []
        self.closeWaiters: list[Deferred] = []
        self._sessions: OrderedDict[str, SessionLog] = OrderedDict()
        self.setProtocolOptions(
            maxMessagePayloadSize=64 * 1024 * 1024,
            maxFramePayloadSize=64 * 1024 * 1024,
            perMessageCompressionAccept=_acceptDeflate,
            autoPingInterval=0,
            failByDrop=False,
        )

    def sessionLog(self, sid: str) -> SessionLog:
        """
        @return: the log of gateway session C{sid} (the 1,000 most recent
            sessions are kept).
        """
        log = self._sessions.pop(sid, None) or SessionLog()
        self._sessions[sid] = log
        while len(self._sessions) > 1000:
            self._sessions.popitem(last=False)
        return log

    def nextClose(self) -> Deferred:
        """
        @return: L{Deferred} firing with C{(wasClean, code, reason)} of the
            next connection to close.
        """
        d: Deferred = Deferred()
        self.closeWaiters.append(d)
        return d


async def listenEcho(reactor, factory: EchoServerFactory, interface: str = "127.0.0.1", port: int = 0):
    """
    Listen with C{factory} on C{interface}:C{port} (0 for any free port).

    @return: the L{IListeningPort}.
    """
    return await TCP4ServerEndpoint(reactor, port, interface=interface).listen(factory)
