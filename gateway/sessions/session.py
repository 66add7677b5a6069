"""
The session layer: one logical client session that outlives its client
connections (docs/protocol.md).

A L{Session} owns the replay buffer (an L{Outbox}), the count of client
messages accepted (an L{Inbox}), its state (L{SessionState}) and its
timers; its backend side (the link, confirmations, failover, moves, flow
control) is its L{Upstream} component, C{session.upstream}, and what other
gateway nodes must know of it is its mirror strategy (L{ISessionMirror}).
Transports attach to it and detach from it through L{ISessionTransport}; the
session never imports a transport.  The node's set of sessions is the
L{gateway.sessions.registry.SessionRegistry}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import LimitExceeded, ProtocolError
from ..interfaces import IBackendLink, ISessionMirror, ISessionTransport, ISessionView
from ..wire.protocol import (
    CLOSE_BUFFER_FULL,
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_SUPERSEDED,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    Ack,
    Close,
    Data,
    Inbox,
    Outbox,
    Welcome,
    shortId,
)
from .states import SessionState
from .upstream import Upstream

if TYPE_CHECKING:
    from ..backends.pool import Backend, Pool

__all__ = ["PacketDispatch", "Session", "shortId"]


class PacketDispatch:
    """
    The one way a client's packets reach a session, wherever it is held
    (a L{Session} here, or a L{gateway.cluster.relay.RelaySession} for another
    node): data, acks and the close packet, each to its method.
    """

    __slots__ = ()

    def packetReceived(self, packet) -> None:
        """
        A packet from the client, whatever carried it.

        @raise ProtocolError: for a packet a client may not send once the
            session is open, or one that breaks the sequence.
        """
        if isinstance(packet, Data):
            self.dataReceived(packet)
        elif isinstance(packet, Ack):
            self.ackReceived(packet)
        elif isinstance(packet, Close):
            self.closeReceived(packet)
        else:
            raise ProtocolError(f"unexpected {type(packet).__name__.lower()} packet")


@implementer(ISessionView)
class Session(PacketDispatch):
    """
    One session: its buffers, its state, its current transport and its
    backend side (L{upstream}).

    The backend link it is bound to hands it the backend's messages
    (L{messageFromBackend}), its close (L{backendClosed}) and its receipts
    (L{backendReceipt}); the last two are the upstream's business.

    @ivar registry: the node's L{gateway.sessions.registry.SessionRegistry}
        (its config, clock, opener, null mirror, and the records).
    @ivar mirror: the L{ISessionMirror}: the cluster's C{Mirror} when
        several nodes share sessions, the registry's null mirror otherwise
        (and once the session is no longer written to Redis).
    """

    __slots__ = ("registry", "sid", "secret", "pool", "inbox", "outbox", "transport", "state", "closing",
                 "_graceTimer", "lastReceived", "lastSent", "created", "mirror", "suspended", "traffic",
                 "_ackWaiting", "upstream", "transportKind", "lastBackend", "bytesFromClient",
                 "bytesToClient", "closeCode")

    log = Logger()

    def __init__(
        self,
        registry: Any,
        sid: str,
        secret: str,
        pool: Pool,
        link: IBackendLink | None,
    ) -> None:
        config = registry.config
        self.registry = registry
        self.sid = sid
        self.secret = secret
        self.pool = pool
        self.inbox = Inbox()
        self.outbox = Outbox(config.maxBufferMessages, config.maxBufferBytes)
        self.transport: ISessionTransport | None = None
        self.state = SessionState.DETACHED
        self.closing: Close | None = None
        self._graceTimer = None
        self.lastReceived = 0.0
        self.lastSent = 0.0
        self.created = registry.clock.seconds()
        self.mirror: ISessionMirror = registry.noMirror
        #: Whether this node stopped pumping the session (L{suspend}).
        self.suspended = False
        #: The node's message counts (L{gateway.metrics.Traffic}), added to per message.
        self.traffic = registry.metrics.traffic
        self._ackWaiting = False
        self.upstream = Upstream(self, config, registry.clock, registry.opener, link)
        #: For the access log: the kind of the last transport that carried
        #: the session (C{"ws"}, C{"poll"}), the payload bytes accepted from
        #: the client and sent towards it, the close code it ended with, and
        #: its backend when it last had one.
        self.transportKind: str | None = None
        self.lastBackend: Backend | None = None
        self.bytesFromClient = 0
        self.bytesToClient = 0
        self.closeCode: int | None = None

    @property
    def link(self) -> IBackendLink | None:
        """
        The backend link carrying the session now (the upstream's).
        """
        return self.upstream.link

    @link.setter
    def link(self, link: IBackendLink | None) -> None:
        self.upstream.link = link

    @property
    def backend(self) -> Backend | None:
        """
        The backend this session is connected to.
        """
        link = self.upstream.link
        return link.backend if link is not None else None

    # ISessionView: what the admin API and the mover read.
    @property
    def switching(self) -> str | None:
        """
        C{"failover"} or C{"move"} while between backends, else L{None}.
        """
        return self.upstream.switching

    @property
    def paused(self) -> bool:
        """
        Whether flow control holds either side of the session now.
        """
        return self.upstream.paused

    @property
    def failovers(self) -> int:
        """
        How many times the backend connection failed over.
        """
        return self.upstream.failovers

    @property
    def moves(self) -> int:
        """
        How many times the session was moved to another backend on purpose.
        """
        return self.upstream.moves

    @property
    def inflight(self) -> tuple[int, int]:
        """
        The client messages (and their bytes) handed to the backend and not
        yet confirmed.
        """
        upstream = self.upstream
        return len(upstream.unconfirmed), upstream.unconfirmedBytes

    def __repr__(self) -> str:
        return f"<Session {shortId(self.sid)} {self.state.value}>"

    @property
    def ackCount(self) -> int:
        """
        How many client messages may be acknowledged: those accepted, and
        (when sessions are shared) recorded in Redis.
        """
        return self.mirror.ackable(self.inbox.accepted)

    def settled(self) -> Deferred:
        """
        @return: L{Deferred} firing once every message accepted so far may
            be acknowledged (see L{ackCount}).
        """
        return self.mirror.settled()

    # Transports.
    def attach(self, transport: ISessionTransport, resumed: bool) -> None:
        """
        C{transport} now carries the session: send it L{Welcome}, then
        everything not yet acknowledged (and the closing packet, when the
        backend has closed).
        """
        old, self.transport = self.transport, transport
        self.transportKind = transport.kind
        upstream = self.upstream
        if old is not None and old is not transport:
            upstream.transportDetached(old)
            old.closeTransport(CLOSE_SUPERSEDED, "replaced by a newer connection")
        self._cancelGrace()
        upstream.transportAttached(transport)
        if self.state.live:
            self.state = self.state.to(SessionState.ATTACHED)
        config = self.registry.config
        now = self.registry.clock.seconds()
        self.lastReceived = self.lastSent = now
        self.mirror.attachedTo(None)
        transport.pushControl(
            Welcome(self.sid, self.secret, self.ackCount, resumed, config.heartbeat, config.grace)
        )
        for message in self.outbox.unacknowledged():
            transport.pushData(message)
        for notice in upstream.takeNotices():
            transport.pushControl(notice)
        if self.closing is not None:
            transport.pushControl(self.closing)
        self.registry.recordState(self)

    def adoptTransport(self, transport: ISessionTransport, delivered: int) -> None:
        """
        A client connection that this node served for another owner now
        carries this session, taken over here: no welcome (the client's
        counts carry on), only the messages after C{delivered}.
        """
        self._cancelGrace()
        self.transport = transport
        self.transportKind = transport.kind
        self.upstream.transportAttached(transport)
        if self.state.live:
            self.state = self.state.to(SessionState.ATTACHED)
        self.lastReceived = self.lastSent = self.registry.clock.seconds()
        for message in self.outbox.unacknowledged():
            if message.seq > delivered:
                transport.pushData(message)
        if self.closing is not None:
            transport.pushControl(self.closing)
        self._scheduleAck()

    def attachedElsewhere(self, node: str) -> None:
        """
        The client attached to another node, which relays it: let go of a
        local connection and stop waiting for a resume.
        """
        if self.state is SessionState.ENDED:
            return
        self.mirror.attachedTo(node)
        self._cancelGrace()
        transport, self.transport = self.transport, None
        if transport is not None:
            self.upstream.transportDetached(transport)
            transport.letGo()
        if self.state.live:
            self.state = self.state.to(SessionState.ATTACHED)

    def detachedElsewhere(self, node: str) -> None:
        """
        The client left the node that relayed it (or that node died): wait
        up to the grace period for a resume.
        """
        if self.mirror.remote != node:
            return
        self.mirror.attachedTo(None)  # nobody holds it now
        if self.transport is None and self.state is not SessionState.ENDED and self._graceTimer is None:
            if self.state is SessionState.ATTACHED:
                self.state = self.state.to(SessionState.DETACHED)
            self.startGrace()

    def detach(self, transport: ISessionTransport, reason: str) -> None:
        """
        C{transport} is gone; wait up to the grace period for a resume.
        """
        if transport is not self.transport:
            return
        self.transport = None
        self.upstream.transportDetached(transport)
        if self.state is SessionState.ENDED:
            return
        if self.state is SessionState.ATTACHED:
            self.state = self.state.to(SessionState.DETACHED)
        self.log.debug("session {sid} detached: {reason}", sid=shortId(self.sid), reason=reason)
        self.startGrace()
        self.registry.recordState(self)
        self.mirror.detached()

    def abandon(self) -> None:
        """
        A resume took the session for a client connection that left before
        it was attached: let other nodes know nobody holds it here.
        """
        if self.transport is None:
            self.mirror.detached()

    def orphaned(self) -> None:
        """
        A new session whose client left before it was welcomed: nobody can
        resume it (the client never learnt its id), so it ends at once.
        """
        self.end(1000, "client left before the session opened", CLOSE_UNKNOWN_SESSION, clientCode=None)

    def startGrace(self) -> None:
        """
        Wait up to the grace period for a resume; then the session expires.
        """
        self._cancelGrace()
        self._graceTimer = self.registry.clock.callLater(self.registry.config.grace, self._expire)

    def awaitFirstPoll(self) -> None:
        """
        A session just opened by a long-polling C{open}: unless its client
        polls (L{polled}) or resumes within C{attachTimeout}, it ends as an
        expired one does, with 1001 "client never polled" to the backend.
        """
        self._cancelGrace()
        self._graceTimer = self.registry.clock.callLater(
            self.registry.config.attachTimeout, self._expire, "client never polled")

    def polled(self) -> None:
        """
        A poll or send for this attached session arrived: the deadline of
        L{awaitFirstPoll}, if it runs, is over.
        """
        if self.transport is not None:
            self._cancelGrace()

    def _cancelGrace(self) -> None:
        if self._graceTimer is not None:
            if self._graceTimer.active():
                self._graceTimer.cancel()
            self._graceTimer = None

    def _expire(self, reason: str = "client did not resume") -> None:
        self._graceTimer = None
        self.end(1001, reason, CLOSE_EXPIRED)

    # Packets from the client (L{PacketDispatch.packetReceived}).
    def dataReceived(self, message: Data) -> None:
        """
        A data packet from the client: hand it to the backend unless it is
        a duplicate, and acknowledge.

        Messages before it may have been accepted through another node and
        be on their way, or this node may have just woken from a pause and
        must learn whether it still owns the session: then the mirror holds
        it (L{ISessionMirror.holds}).

        @raise ProtocolError: for a gap in the sequence.
        @raise LimitExceeded: for a payload over C{max_message_bytes} (the
            transport closes its connection with 1009; nothing is accepted).
        """
        limit = self.registry.config.maxMessageBytes
        if len(message.payload) > limit:
            raise LimitExceeded(f"a message of {len(message.payload)} bytes is over the limit of {limit}")
        if self.mirror.holds(message):
            return
        if self.inbox.receive(message):
            upstream = self.upstream
            if upstream.link is None and upstream.switching is None:
                # The backend is gone: the session is ending and can take
                # nothing more; the client learns from the close packet.
                return
            self.inbox.accept()
            traffic = self.traffic
            traffic.sessionUpMessages += 1
            traffic.sessionUpBytes += len(message.payload)
            self.bytesFromClient += len(message.payload)
            upstream.handOn(message)
        self._scheduleAck()

    def forward(self, message: Data) -> None:
        """
        Hand the backend a client message that another node accepted (the
        next in sequence), and record it.
        """
        self.inbox.accepted = message.seq
        traffic = self.traffic
        traffic.sessionUpMessages += 1
        traffic.sessionUpBytes += len(message.payload)
        upstream = self.upstream
        if upstream.link is not None or upstream.switching is not None:
            upstream.handOn(message)
        self.mirror.forwarded()

    def ackReceived(self, ack: Ack) -> None:
        """
        The client has received C{ack.count} messages.

        @raise ProtocolError: for more than was sent.
        """
        self.outbox.ack(ack.count)
        self.upstream.outboxDrained()
        self.mirror.acked(self.outbox.acked)
        if self.state is SessionState.ENDING and self.outbox.acked == self.outbox.sent:
            self._finish(CLOSE_ENDED, self.closing.reason if self.closing else "session ended")

    def remoteAcked(self, count: int) -> None:
        """
        The client, attached to another node, received C{count} messages.
        """
        if count > self.outbox.acked:
            self.outbox.ack(min(count, self.outbox.sent))
            self.upstream.outboxDrained()
        if self.state is SessionState.ENDING and self.outbox.acked == self.outbox.sent:
            self._finish(CLOSE_ENDED, self.closing.reason if self.closing else "session ended")

    def closeReceived(self, close: Close | None) -> None:
        """
        The client ends the session.
        """
        self.end(1000, "client closed the session", CLOSE_UNKNOWN_SESSION, clientCode=CLOSE_ENDED)

    def _scheduleAck(self) -> None:
        # Acknowledge only what the mirror has recorded (with Redis: so
        # that a resume on any node hears of every message the client was
        # told of), once per turn of the reactor at most.
        if not self._ackWaiting and self.transport is not None:
            self._ackWaiting = True
            self.mirror.whenRecorded().addCallback(self._recorded)

    def _recorded(self, _) -> None:
        self._ackWaiting = False
        self._sendAck()
        if self.inbox.accepted > self.ackCount:
            self._scheduleAck()

    def _sendAck(self) -> None:
        if self.transport is not None:
            self.transport.pushControl(Ack(self.ackCount))
            self.lastSent = self.registry.clock.seconds()

    # The backend.
    def messageFromBackend(self, payload: bytes, isBinary: bool) -> None:
        """
        A message from the backend: number it, keep it until acknowledged,
        send it if a client is attached.  Past the replay buffer's bounds
        the session ends.
        """
        try:
            message = self.outbox.add(payload, isBinary)
        except LimitExceeded:
            attached = self.transport is not None
            self.log.warn(
                "session {sid}: replay buffer limit exceeded ({n} messages, {b} bytes): ending it",
                sid=shortId(self.sid), n=len(self.outbox), b=self.outbox.pendingBytes,
            )
            self.end(1008, "replay buffer limit exceeded", CLOSE_EXPIRED,
                     clientCode=CLOSE_BUFFER_FULL if attached else None)
            return
        traffic = self.traffic
        traffic.sessionDownMessages += 1
        traffic.sessionDownBytes += len(payload)
        self.mirror.down(message)
        self.bytesToClient += len(payload)
        if self.transport is not None:
            self.transport.pushData(message)
            self.lastSent = self.registry.clock.seconds()
        self.upstream.outboxFilled()

    def backendClosed(self, code: int | None, reason: str | None, link: IBackendLink | None = None,
                      clean: bool = False) -> None:
        """
        The backend WebSocket C{link} closed (L{Upstream.backendClosed}: a
        failover, the next link of a move, or L{backendEnded}).
        """
        self.upstream.backendClosed(code, reason, link, clean)

    def backendReceipt(self, link: IBackendLink, seq: int) -> None:
        """
        C{link}'s backend has read every client message up to C{seq}
        (L{Upstream.backendReceipt}).
        """
        self.upstream.backendReceipt(link, seq)

    def linkBound(self, link: IBackendLink) -> None:
        """
        C{link} now carries the session (L{Upstream.linkBound}).
        """
        self.upstream.linkBound(link)

    def move(self, target: Backend | None = None) -> bool:
        """
        Move the session to C{target}, or where the balancer says
        (L{Upstream.move}).

        @return: whether a move started.
        """
        return self.upstream.move(target)

    def backendEnded(self, code: int | None, reason: str | None) -> None:
        """
        The backend ended the session (or it could not go on with another):
        deliver what it sent, then the closing packet; the session ends once
        the client has acknowledged it all.
        """
        self.lastBackend = self.backend or self.lastBackend
        self.upstream.link = None
        if self.state is SessionState.ENDED:
            return
        self.closing = Close(code or 1000, reason or "")
        self.state = self.state.to(SessionState.ENDING)
        self.mirror.closing(self.closing.code, self.closing.reason)
        if self.outbox.acked == self.outbox.sent and self.transport is not None:
            self.transport.pushControl(self.closing)
            self._finish(CLOSE_ENDED, self.closing.reason)
        elif self.transport is not None:
            self.transport.pushControl(self.closing)
        # Detached: the grace timer keeps running; a resume delivers the rest.

    # Ending.
    def end(self, backendCode: int, reason: str, resumeCode: int, clientCode: int | None = CLOSE_ENDED) -> None:
        """
        End the session: close the backend link with C{backendCode}, the
        client connection (if any) with C{clientCode}, and remember that a
        later resume gets C{resumeCode}.
        """
        if self.state is SessionState.ENDED:
            return
        self.state = self.state.to(SessionState.ENDED)
        self._cancelGrace()
        self.lastBackend = self.backend or self.lastBackend
        link = self.upstream.stop()
        if link is not None:
            link.closeLink(backendCode, reason)
        transport, self.transport = self.transport, None
        if transport is not None and clientCode is not None:
            transport.closeTransport(clientCode, reason)
        self.closeCode = clientCode if clientCode is not None else resumeCode
        answer = self.registry.answerOf(resumeCode, reason)
        self.mirror.end(self.closeCode, reason, answer)
        self.registry.ended(self, reason, answer)

    def handOff(self) -> None:
        """
        This node is shutting down: leave the session in Redis for another
        node to take over, and tell the client to resume.
        """
        if self.state is SessionState.ENDED:
            return
        self.mirror = self.registry.noMirror  # nothing more is written: the record stays
        self.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1012)

    def suspend(self) -> None:
        """
        This node may no longer own the session (it lost touch with the
        other nodes, and another may take the session over): stop pumping
        it.  The client is closed with 4503, so that it resumes where the
        session is served; reading from the backend pauses; client
        messages wait (the mirror holds them).  L{unsuspend} undoes it.
        """
        if self.state is SessionState.ENDED or self.suspended:
            return
        self.suspended = True
        self.upstream.backendValve.close("suspended")
        transport = self.transport
        if transport is not None:
            reason = "this gateway node lost touch with the session store; resume"
            transport.closeTransport(CLOSE_UNAVAILABLE, reason)
            self.detach(transport, reason)

    def unsuspend(self) -> None:
        """
        This node is sure again that it owns the session: pump it again.
        """
        if self.suspended:
            self.suspended = False
            self.upstream.backendValve.open("suspended")

    def fenced(self, taken: bool) -> None:
        """
        Redis refused this node's write: another node took the session over
        (C{taken}) or it is gone.  End it here without touching Redis; the
        backend link closes with 1001 and a local client is told to resume.
        """
        if self.state is SessionState.ENDED:
            return
        self.mirror = self.registry.noMirror
        self.log.info("session {sid}: {why}; letting go of it here", sid=shortId(self.sid),
                      why="taken over by another node" if taken else "gone from Redis")
        self.end(1001, "session moved to another gateway node", CLOSE_UNKNOWN_SESSION,
                 clientCode=CLOSE_SUPERSEDED if taken else CLOSE_EXPIRED)

    def _finish(self, clientCode: int, reason: str) -> None:
        self.end(1000, reason, CLOSE_UNKNOWN_SESSION, clientCode=clientCode)

    # Liveness.
    def sweep(self, now: float) -> None:
        """
        Heartbeat: send an ack after C{heartbeat} seconds of sending nothing;
        drop a client connection silent for C{heartbeatTimeout}.
        """
        transport = self.transport
        if transport is None:
            return
        config = self.registry.config
        if self.upstream.clientValve.closed:
            # Not reading from the client (a slow backend): its heartbeats
            # wait unread; silence is no sign of death.
            self.lastReceived = now
        if now - self.lastReceived >= config.heartbeatTimeout:
            self.log.info("session {sid}: client silent for {s:.1f}s: detaching",
                          sid=shortId(self.sid), s=now - self.lastReceived)
            transport.abortTransport()
            return
        if now - self.lastSent >= config.heartbeat:
            self._sendAck()
