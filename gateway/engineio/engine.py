"""
An Engine.IO v4 session at the gateway, sans-IO (L{EngineSession}): the
rules of the protocol in one place, between a client transport
(L{IEngineTransport}: held polls or a WebSocket) and the session's
Socket.IO server side (L{IEngineUpstream}).

It does no I/O: transports feed it what the client sent and it hands them
packets to send; its only dependency is a clock (L{IReactorTime}) for the
heartbeat, so the unit tests run it on a C{Clock}.

The rules (the Engine.IO v4 protocol document):

 - The server pings every C{pingInterval}; a client that has not answered
   C{pingTimeout} later is gone: the session closes.
 - Over long-polling at most one GET is outstanding: a second one closes
   the session (the held one is answered with a close packet, the second
   refused).
 - An upgrade: the client opens a WebSocket with the session id, sends
   C{2probe} (answered C{3probe}), its held GET is ended with a noop, then
   C{5} moves the session to the WebSocket; only one WebSocket may upgrade
   a session, and only a polling one.
 - A client's close packet, or its WebSocket closing, ends the session.
 - A session its server side ends sends the client what waited, then
   its close packet: over long-polling alone, on the poll after the one
   that took the rest (as the reference server does).

Bounds: what waits for the client (the outbox) is bounded by
C{maxBufferBytes}; past C{maxPayload} waiting, the server side is paused
until the client catches up, and a server message that would go past the
bound closes the session.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from twisted.logger import Logger
from zope.interface import implementer

from ..errors import BackendRefused, GatewayError, ProtocolError, SessionLimit
from ..interfaces import IEngineTransport, IEngineUpstream, IEngineView
from .packets import BAD_REQUEST, UNKNOWN_SID, Packet, PacketType

__all__ = ["EngineSession", "EngineSettings", "EngineState", "EngineRefusal", "openRefusal",
           "UNAVAILABLE_RETRY_AFTER"]

#: The C{Retry-After} (seconds) of a handshake refused because no Socket.IO
#: server could be had (every one down, draining or full, or none answered).
UNAVAILABLE_RETRY_AFTER = 1


class EngineRefusal(ProtocolError):
    """
    A request the session refuses: answered with the reference server's
    error C{code} (L{gateway.engineio.packets.ERRORS}) and HTTP C{status}.

    @ivar retryAfter: the answer's C{Retry-After} (seconds), if any.
    @ivar reason: the word C{txgateway_refusals_total} counts it under, when
        not its status's own.
    """

    def __init__(self, code: int, message: str, status: int = 400, *, retryAfter: int | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retryAfter = retryAfter
        self.reason = reason

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """
        The answer's extra headers (C{Retry-After}).
        """
        return [] if self.retryAfter is None else [(b"Retry-After", b"%d" % self.retryAfter)]


def openRefusal(error: GatewayError) -> EngineRefusal:
    """
    The answer to a handshake whose session could not be opened, the same
    over long-polling and WebSocket: 503 with C{Retry-After} at a session
    bound (its own) or when no Socket.IO server could be had
    (L{UNAVAILABLE_RETRY_AFTER}), 502 when the server refused; the body is
    the reference server's C{{"code":3,"message":...}}.

    @param error: why L{gateway.engineio.edge.EngineIOEdge.open} failed.
    """
    if isinstance(error, SessionLimit):
        return EngineRefusal(BAD_REQUEST, str(error), 503, retryAfter=error.retryAfter,
                             reason="session_limit")
    if isinstance(error, BackendRefused):
        return EngineRefusal(BAD_REQUEST, str(error), 502, reason="backend_refused")
    return EngineRefusal(BAD_REQUEST, str(error) or "no Socket.IO server could be had", 503,
                         retryAfter=UNAVAILABLE_RETRY_AFTER, reason="no_backend")


@dataclass(frozen=True)
class EngineSettings:
    """
    A route's Engine.IO settings.

    @ivar pingInterval: seconds between the server's pings.
    @ivar pingTimeout: seconds the client has to answer one.
    @ivar maxPayload: the largest payload (bytes) the client may send in one
        POST or WebSocket message; also the outbox size past which the
        server side is paused.
    @ivar maxBufferBytes: the most the outbox may hold; past it the session
        closes.
    @ivar maxPackets: the most packets one POST may carry.
    """

    pingInterval: float = 25.0
    pingTimeout: float = 20.0
    maxPayload: int = 1_000_000
    maxBufferBytes: int = 8 * 1024 * 1024
    maxPackets: int = 1000


class EngineState(Enum):
    """
    A session's states: C{OPEN} (carried by polls or a WebSocket),
    C{CLOSING} (over long-polling, its last packets wait for the next GET)
    and C{CLOSED}.
    """

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@implementer(IEngineView)
class EngineSession:
    """
    One Engine.IO session (see the module docstring for its rules).

    @ivar transport: the L{IEngineTransport} carrying it now.
    @ivar upstream: its L{IEngineUpstream}, set once the server side is
        connected.
    @ivar closeReason: why it closed, once it has.
    @ivar pool: the name of the pool its Socket.IO server is in.
    @ivar backend: that server (a L{gateway.backends.pool.Backend}); a
        session never changes server, so it is set once.
    @ivar address: the client's address (as the forwarding headers of
        trusted proxies tell it).
    @ivar opened: when it opened (the clock's seconds).
    """

    log = Logger()

    def __init__(self, sid: str, settings: EngineSettings, clock, transport: IEngineTransport,
                 onClosed: Callable[[EngineSession], None], *, pool: str | None = None,
                 backend=None, address: str | None = None) -> None:
        self.sid = sid
        self.settings = settings
        self.clock = clock
        self.transport = transport
        self.pool = pool
        self.backend = backend
        self.address = address
        self.opened = clock.seconds()
        self.upstream: IEngineUpstream | None = None
        self.state = EngineState.OPEN
        self.closeReason: str | None = None
        self._onClosed = onClosed
        self._outbox: deque[Packet] = deque()
        self._outBytes = 0
        self._pollHeld = False
        self._upgrading: IEngineTransport | None = None
        self._probed = False
        self._paused = False
        self._pingTimer = None
        self._pongTimer = None
        self._closeTimer = None

    # Life.
    def start(self, upstream: IEngineUpstream) -> None:
        """
        The server side is connected: start the heartbeat.
        """
        self.upstream = upstream
        self._schedulePing()

    @property
    def kind(self) -> str:
        """
        The kind of the transport carrying the session now.
        """
        return self.transport.kind

    @property
    def upgrading(self) -> bool:
        """
        Whether a WebSocket is upgrading this session.
        """
        return self._upgrading is not None

    @property
    def waiting(self) -> int:
        """
        Bytes (characters) waiting for the client.
        """
        return self._outBytes

    def _schedulePing(self) -> None:
        self._pingTimer = self.clock.callLater(self.settings.pingInterval, self._ping)

    def _ping(self) -> None:
        self._pingTimer = None
        self._queue(Packet(PacketType.PING))
        self._pongTimer = self.clock.callLater(self.settings.pingTimeout, self._pingTimedOut)

    def _pingTimedOut(self) -> None:
        self._pongTimer = None
        self.close("ping timeout", notify=False)

    # From the server side.
    def send(self, data: str | bytes) -> None:
        """
        A message from the server side, for the client.
        """
        if self.state is not EngineState.OPEN:
            return
        if self._outBytes + len(data) + 1 > self.settings.maxBufferBytes:
            self._outbox.clear()
            self._outBytes = 0
            self.close(f"more than {self.settings.maxBufferBytes} bytes waiting for the client")
            return
        self._queue(Packet(PacketType.MESSAGE, data))

    def _queue(self, packet: Packet) -> None:
        self._outbox.append(packet)
        self._outBytes += packet.size
        if not self._paused and self._outBytes > self.settings.maxPayload and self.upstream is not None:
            self._paused = True
            self.upstream.pauseReading()
        self._flush()

    def _take(self) -> list[Packet]:
        packets = list(self._outbox)
        self._outbox.clear()
        self._outBytes = 0
        if self._paused and self.upstream is not None and self.state is EngineState.OPEN:
            self._paused = False
            self.upstream.resumeReading()
        return packets

    def _flush(self) -> None:
        if not self._outbox:
            return
        if self.transport.kind == "websocket":
            self.transport.deliver(self._take())
        elif self._pollHeld:
            self._pollHeld = False
            self.transport.deliver(self._takeForPoll())

    def _takeForPoll(self) -> list[Packet]:
        """
        What one poll's answer carries: everything waiting, except that a
        closing session's close packet never shares a payload with the
        packets before it; it answers the next poll, as the reference
        server sends it.  socket.io-client handles the Socket.IO packets of
        a payload a tick after its Engine.IO ones, so a close packet beside
        the server's DISCONNECT closed the transport first: the client
        reported "transport close" and reconnected, instead of "io server
        disconnect".  The session ends once the close is taken.
        """
        if self.state is EngineState.CLOSING and len(self._outbox) > 1:
            close = self._outbox.pop()  # while closing, the last packet is the close
            packets = self._take()
            self._outbox.append(close)
            self._outBytes = close.size
            return packets
        packets = self._take()
        if self.state is EngineState.CLOSING:
            self._closed()
        return packets

    # From the client: long-polling.
    def poll(self) -> list[Packet] | None:
        """
        A GET arrived.

        @return: the packets to answer it with now, or L{None} when it is
            to be held (the session later L{IEngineTransport.deliver}s its
            answer).
        @raise EngineRefusal: the session is not carried by polls any more
            (upgraded), or a GET is already held: the session closes, the
            held GET is answered with a close packet.
        """
        self._checkLive()
        if self.transport.kind != "polling":
            raise EngineRefusal(BAD_REQUEST, "Bad request")
        if self._pollHeld:
            self._pollHeld = False
            self.transport.deliver([Packet(PacketType.CLOSE)])
            self.close("overlapping polls", notify=False)
            raise EngineRefusal(BAD_REQUEST, "Bad request")
        if self._outbox:
            return self._takeForPoll()
        if self._probed:
            return [Packet(PacketType.NOOP)]  # an upgrade is under way: end polls at once
        self._pollHeld = True
        return None

    def pollGone(self) -> None:
        """
        The held GET's client went away before it was answered.
        """
        self._pollHeld = False

    def post(self, packets: list[Packet]) -> None:
        """
        A POST's packets, in order.

        @raise EngineRefusal: the session is unknown now, or no longer
            polling.
        """
        self._checkLive()
        if self.transport.kind != "polling" and not self.upgrading:
            raise EngineRefusal(BAD_REQUEST, "Bad request")
        for packet in packets:
            if self.state is EngineState.CLOSED:
                break
            self.received(packet)

    def _checkLive(self) -> None:
        if self.state is EngineState.CLOSED:
            raise EngineRefusal(UNKNOWN_SID, "Session ID unknown")

    # From the client: any transport.
    def received(self, packet: Packet) -> None:
        """
        A packet from the client on its current transport.  While the
        session is closing, only the client's own close counts: it ends
        the session at once (its close packet need not wait for a poll
        that will not come).
        """
        if self.state is not EngineState.OPEN:
            if self.state is EngineState.CLOSING and packet.type is PacketType.CLOSE:
                self._closed()
            return
        kind = packet.type
        if kind is PacketType.MESSAGE:
            if self.upstream is not None:
                self.upstream.messageFromClient(packet.data)
        elif kind is PacketType.PONG:
            if self._pongTimer is not None:
                self._pongTimer.cancel()
                self._pongTimer = None
                self._schedulePing()
        elif kind is PacketType.CLOSE:
            self.close("client closed the session", notify=False, answer=Packet(PacketType.NOOP))
        elif kind is PacketType.NOOP:
            pass
        else:
            # A v4 client never pings (the heartbeat goes the other way),
            # opens or upgrades here.
            self.close(f"unexpected {kind.name.lower()} packet from the client", notify=False)

    def fromWebSocket(self, websocket: IEngineTransport, packet: Packet) -> None:
        """
        A packet on a WebSocket: the session's own (L{received}), or one
        upgrading it (L{upgradePacket}).
        """
        if websocket is self.transport:
            self.received(packet)
        else:
            self.upgradePacket(websocket, packet)

    def brokenWebSocket(self, websocket: IEngineTransport) -> None:
        """
        A WebSocket sent what is not Engine.IO: the session ends if it is
        the session's, else that upgrade fails.
        """
        if websocket is self.transport:
            self.close("a packet that is not Engine.IO", notify=False)
        else:
            self.upgradeFailed(websocket)
            websocket.closeTransport()

    # Upgrades.
    def upgradeStarted(self, websocket: IEngineTransport) -> None:
        """
        A WebSocket with this session's id was opened.

        @raise EngineRefusal: the session is not polling, or another
            WebSocket is upgrading it.
        """
        self._checkLive()
        if self.state is not EngineState.OPEN or self.transport.kind != "polling" or self.upgrading:
            raise EngineRefusal(BAD_REQUEST, "Bad request")
        self._upgrading = websocket

    def upgradePacket(self, websocket: IEngineTransport, packet: Packet) -> None:
        """
        A packet on an upgrading WebSocket: C{2probe} is answered
        C{3probe} (and the held GET ended with a noop), C{5} completes the
        upgrade; anything else fails it.
        """
        if websocket is not self._upgrading or self.state is not EngineState.OPEN:
            websocket.closeTransport()
            return
        if packet == Packet(PacketType.PING, "probe") and not self._probed:
            self._probed = True
            websocket.deliver([Packet(PacketType.PONG, "probe")])
            if self._pollHeld:
                self._pollHeld = False
                self.transport.deliver([Packet(PacketType.NOOP)])
        elif packet.type is PacketType.UPGRADE and self._probed:
            if self._pollHeld:
                self._pollHeld = False
                self.transport.deliver([Packet(PacketType.NOOP)])
            self.transport = websocket
            self._upgrading = None
            self._probed = False
            self._flush()
        else:
            self.upgradeFailed(websocket)
            websocket.closeTransport()

    def upgradeFailed(self, websocket: IEngineTransport) -> None:
        """
        An upgrading WebSocket closed (or broke the sequence) before the
        upgrade completed: the session goes on polling.
        """
        if websocket is self._upgrading:
            self._upgrading = None
            self._probed = False

    def transportClosed(self, transport: IEngineTransport) -> None:
        """
        A WebSocket closed: the session ends if it carried it.
        """
        if transport is self.transport:
            self.close("transport close", notify=False)
        else:
            self.upgradeFailed(transport)

    # Ending.
    def close(self, reason: str, *, notify: bool = True,
              answer: Packet = Packet(PacketType.CLOSE)) -> None:
        """
        End the session: the server side is closed; with C{notify} the
        client is sent a close packet after what waits for it (over
        long-polling, on the held or the next GET, for up to
        C{pingTimeout}); without, the session ends at once, a held GET
        answered with C{answer} (a noop when the client itself closed).
        """
        if self.state is not EngineState.OPEN:
            return
        self.closeReason = reason
        self._cancelTimers()
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.closeUpstream(reason)
        upgrading, self._upgrading = self._upgrading, None
        if upgrading is not None:
            upgrading.closeTransport()
        if self.transport.kind == "websocket":
            if notify and self._outbox:
                self.transport.deliver(self._take())
            self._outbox.clear()
            self.state = EngineState.CLOSING
            self.transport.closeTransport()
            self._closed()
            return
        if not notify:
            if self._pollHeld:
                self._pollHeld = False
                self.transport.deliver([answer])
            self._outbox.clear()
            self.state = EngineState.CLOSING
            self._closed()
            return
        self.state = EngineState.CLOSING
        self._outbox.append(Packet(PacketType.CLOSE))
        self._closeTimer = self.clock.callLater(self.settings.pingTimeout, self._closed)
        self._flush()

    def _cancelTimers(self) -> None:
        timers = (self._pingTimer, self._pongTimer, self._closeTimer)
        self._pingTimer = self._pongTimer = self._closeTimer = None
        for timer in timers:
            if timer is not None and timer.active():
                timer.cancel()

    def _closed(self) -> None:
        if self.state is EngineState.CLOSED:
            return
        self._cancelTimers()
        self.state = EngineState.CLOSED
        self._outbox.clear()
        self._outBytes = 0
        onClosed, self._onClosed = self._onClosed, None
        if onClosed is not None:
            onClosed(self)
