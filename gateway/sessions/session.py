"""
The session layer: one logical client session that outlives its client
connections (docs/protocol.md).

A L{Session} owns the replay buffer (an L{Outbox}), the count of client
messages accepted (an L{Inbox}), the backend connection and the timers.
Transports attach to it and detach from it through L{ISessionTransport}; the
session never imports a transport.  The L{SessionRegistry} is the node's set
of sessions, with the bounds and the memory of ended ones.
"""

from __future__ import annotations

import hmac
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..errors import GatewayError, LimitExceeded, ProtocolError, ResumeRefused
from ..interfaces import IBackendLink
from .states import SessionState
from .upstream import BackendSide
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_BUFFER_FULL,
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_RESUME_FAILED,
    CLOSE_SUPERSEDED,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    Ack,
    Close,
    Data,
    Hello,
    Inbox,
    Outbox,
    Welcome,
    shortId,
)

if TYPE_CHECKING:
    from ..config import SessionConfig
    from ..backends.pool import Backend, Pool

__all__ = [
    "PacketDispatch",
    "Session",
    "SessionRegistry",
    "shortId",
]

class PacketDispatch:
    """
    The one way a client's packets reach a session, wherever it is held
    (a L{Session} here, or a L{gateway.cluster.relay.RelaySession} for another
    node): data, acks and the close packet, each to its method.
    """

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


class Session(PacketDispatch, BackendSide):
    """
    One session: its buffers, its backend link and its current transport;
    its backend side (confirmations, failover, moves, flow control) is
    L{BackendSide}'s.

    States: C{attached} (a transport carries it), C{detached} (waiting up to
    the grace period for a resume), C{ending} (the backend closed; what it
    sent is still being delivered), C{ended}.
    """

    log = Logger()

    def __init__(
        self,
        registry: SessionRegistry,
        sid: str,
        secret: str,
        pool: Pool,
        link: IBackendLink,
    ) -> None:
        config = registry.config
        self.registry = registry
        self.sid = sid
        self.secret = secret
        self.pool = pool
        self.link: IBackendLink | None = link
        self.inbox = Inbox()
        self.outbox = Outbox(config.maxBufferMessages, config.maxBufferBytes)
        self.transport: Any = None
        self.state = SessionState.DETACHED
        self.closing: Close | None = None
        self._graceTimer = None
        self._ackCall = None
        self.lastReceived = 0.0
        self.lastSent = 0.0
        self.created = registry.clock.seconds()
        #: The L{gateway.cluster.node.Mirror} writing this session's state to
        #: Redis, when several nodes share sessions.
        self.mirror: Any = None
        self._ackWaiting = False
        self._initBackendSide()

    @property
    def backend(self) -> Backend | None:
        """
        The backend this session is connected to.
        """
        return self.link.backend if self.link is not None else None

    def __repr__(self) -> str:
        return f"<Session {shortId(self.sid)} {self.state.value}>"

    @property
    def ackCount(self) -> int:
        """
        How many client messages may be acknowledged: those accepted, and
        (when sessions are shared) recorded in Redis.
        """
        if self.mirror is not None:
            return min(self.inbox.accepted, self.mirror.upWritten)
        return self.inbox.accepted

    def settled(self) -> Deferred:
        """
        @return: L{Deferred} firing once every message accepted so far may
            be acknowledged (see L{ackCount}).
        """
        mirror = self.mirror
        if mirror is not None:
            return mirror.whenCaughtUp().addCallback(lambda _: mirror.forwarded())
        return succeed(None)

    # Transports.
    def attach(self, transport, resumed: bool) -> None:
        """
        C{transport} now carries the session: send it L{Welcome}, then
        everything not yet acknowledged (and the closing packet, when the
        backend has closed).
        """
        old, self.transport = self.transport, transport
        if old is not None and old is not transport:
            self.transportDetached(old)
            old.closeTransport(CLOSE_SUPERSEDED, "replaced by a newer connection")
        self._cancelGrace()
        self.transportAttached(transport)
        if self.state.live:
            self.state = self.state.to(SessionState.ATTACHED)
        config = self.registry.config
        now = self.registry.clock.seconds()
        self.lastReceived = self.lastSent = now
        if self.mirror is not None:
            self.mirror.remote = None
        transport.pushControl(
            Welcome(self.sid, self.secret, self.ackCount, resumed, config.heartbeat, config.grace)
        )
        for message in self.outbox.unacknowledged():
            transport.pushData(message)
        notices, self.pendingNotices = self.pendingNotices, []
        for notice in notices:
            transport.pushControl(notice)
        if self.closing is not None:
            transport.pushControl(self.closing)
        self.registry.recordState(self)

    def adoptTransport(self, transport, delivered: int) -> None:
        """
        A client connection that this node served for another owner now
        carries this session, taken over here: no welcome (the client's
        counts carry on), only the messages after C{delivered}.
        """
        self._cancelGrace()
        self.transport = transport
        self.transportAttached(transport)
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
        if self.mirror is None or self.state is SessionState.ENDED:
            return
        self.mirror.remote = node
        self._cancelGrace()
        transport, self.transport = self.transport, None
        if transport is not None:
            self.transportDetached(transport)
        letGo = getattr(transport, "letGo", None)
        if letGo is not None:
            letGo()
        elif transport is not None:
            # Not 4001 (which ends a client): with several nodes, a resume
            # through a connection that has since died may come last; the
            # live client resumes again.
            transport.closeTransport(CLOSE_UNAVAILABLE, "the session moved to another gateway node")
        if self.state.live:
            self.state = self.state.to(SessionState.ATTACHED)

    def detachedElsewhere(self, node: str) -> None:
        """
        The client left the node that relayed it (or that node died): wait
        up to the grace period for a resume.
        """
        if self.mirror is None or self.mirror.remote != node:
            return
        self.mirror.remote = None
        if self.transport is None and self.state is not SessionState.ENDED and self._graceTimer is None:
            if self.state is SessionState.ATTACHED:
                self.state = self.state.to(SessionState.DETACHED)
            self._graceTimer = self.registry.clock.callLater(self.registry.config.grace, self._expire)

    def detach(self, transport, reason: str) -> None:
        """
        C{transport} is gone; wait up to the grace period for a resume.
        """
        if transport is not self.transport:
            return
        self.transport = None
        self.transportDetached(transport)
        if self.state is SessionState.ENDED:
            return
        if self.state is SessionState.ATTACHED:
            self.state = self.state.to(SessionState.DETACHED)
        self.log.debug("session {sid} detached: {reason}", sid=shortId(self.sid), reason=reason)
        self._graceTimer = self.registry.clock.callLater(self.registry.config.grace, self._expire)
        self.registry.recordState(self)
        if self.mirror is not None:
            self.mirror.detached()

    def abandon(self) -> None:
        """
        A resume took the session for a client connection that left before
        it was attached: let other nodes know nobody holds it here.
        """
        if self.transport is None and self.mirror is not None:
            self.mirror.detached()

    def orphaned(self) -> None:
        """
        A new session whose client left before it was welcomed: nobody can
        resume it (the client never learnt its id), so it ends at once.
        """
        self.end(1000, "client left before the session opened", CLOSE_UNKNOWN_SESSION, clientCode=None)

    def _cancelGrace(self) -> None:
        if self._graceTimer is not None:
            if self._graceTimer.active():
                self._graceTimer.cancel()
            self._graceTimer = None

    def _expire(self) -> None:
        self._graceTimer = None
        self.end(1001, "client did not resume", CLOSE_EXPIRED)

    # Packets from the client (L{PacketDispatch.packetReceived}).
    def dataReceived(self, message: Data) -> None:
        """
        A data packet from the client: hand it to the backend unless it is
        a duplicate, and acknowledge.

        @raise ProtocolError: for a gap in the sequence.
        @raise LimitExceeded: for a payload over C{max_message_bytes} (the
            transport closes its connection with 1009; nothing is accepted).
        """
        limit = self.registry.config.maxMessageBytes
        if len(message.payload) > limit:
            raise LimitExceeded(f"a message of {len(message.payload)} bytes is over the limit of {limit}")
        mirror = self.mirror
        if mirror is not None and (message.seq > self.inbox.accepted + 1 or not mirror.cluster.mayPump()):
            # Messages before it were accepted through another node and are
            # on their way (or in the up mailbox): read them first.  Or this
            # node has just woken from a pause and must learn whether it
            # still owns the session before it hands anything on.
            mirror.hold(message)
            return
        if self.inbox.receive(message):
            if self.link is None and self.switching is None:
                # The backend is gone: the session is ending and can take
                # nothing more; the client learns from the close packet.
                return
            self.inbox.accept()
            self.handOn(message)
        self._scheduleAck()

    def forward(self, message: Data) -> None:
        """
        Hand the backend a client message that another node accepted (the
        next in sequence), and record it.
        """
        self.inbox.accepted = message.seq
        if self.link is not None or self.switching is not None:
            self.handOn(message)
        if self.mirror is not None:
            self.mirror.forwarded()

    def ackReceived(self, ack: Ack) -> None:
        """
        The client has received C{ack.count} messages.

        @raise ProtocolError: for more than was sent.
        """
        self.outbox.ack(ack.count)
        self.outboxDrained()
        if self.mirror is not None:
            self.mirror.acked(self.outbox.acked)
        if self.state is SessionState.ENDING and self.outbox.acked == self.outbox.sent:
            self._finish(CLOSE_ENDED, self.closing.reason if self.closing else "session ended")

    def remoteAcked(self, count: int) -> None:
        """
        The client, attached to another node, received C{count} messages.
        """
        if count > self.outbox.acked:
            self.outbox.ack(min(count, self.outbox.sent))
            self.outboxDrained()
        if self.state is SessionState.ENDING and self.outbox.acked == self.outbox.sent:
            self._finish(CLOSE_ENDED, self.closing.reason if self.closing else "session ended")

    def closeReceived(self, close: Close) -> None:
        """
        The client ends the session.
        """
        self.end(1000, "client closed the session", CLOSE_UNKNOWN_SESSION, clientCode=CLOSE_ENDED)

    def _scheduleAck(self) -> None:
        if self.mirror is not None:
            # Acknowledge only what Redis has recorded, so that a resume on
            # any node hears of every message the client was told of.
            if not self._ackWaiting and self.transport is not None:
                self._ackWaiting = True
                self.mirror.forwarded().addCallback(self._recorded)
            return
        if self._ackCall is None and self.transport is not None:
            self._ackCall = self.registry.clock.callLater(0, self._sendAck)

    def _recorded(self, _) -> None:
        self._ackWaiting = False
        self._sendAck()
        if self.inbox.accepted > self.ackCount:
            self._scheduleAck()

    def _sendAck(self) -> None:
        self._ackCall = None
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
        if self.mirror is not None:
            self.mirror.down(message)
        if self.transport is not None:
            self.transport.pushData(message)
            self.lastSent = self.registry.clock.seconds()
        self.outboxFilled()

    def backendEnded(self, code: int | None, reason: str | None) -> None:
        """
        The backend ended the session (or it could not go on with another):
        deliver what it sent, then the closing packet; the session ends once
        the client has acknowledged it all.
        """
        self.link = None
        if self.state is SessionState.ENDED:
            return
        self.closing = Close(code or 1000, reason or "")
        self.state = self.state.to(SessionState.ENDING)
        if self.mirror is not None:
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
        self._cancelReceipt()
        self.switching = None
        task, self._switchTask = self._switchTask, None
        if task is not None and not task.called:
            task.cancel()
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None
        link, self.link = self.link, None
        if link is not None:
            link.closeLink(backendCode, reason)
        transport, self.transport = self.transport, None
        if transport is not None and clientCode is not None:
            transport.closeTransport(clientCode, reason)
        if self.mirror is not None:
            self.mirror.end(clientCode if clientCode is not None else resumeCode, reason)
        self.registry.ended(self, resumeCode, reason)

    def handOff(self) -> None:
        """
        This node is shutting down: leave the session in Redis for another
        node to take over, and tell the client to resume.
        """
        if self.state is SessionState.ENDED:
            return
        self.mirror = None  # nothing more is written: the record stays
        self.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1012)

    def fenced(self, taken: bool) -> None:
        """
        Redis refused this node's write: another node took the session over
        (C{taken}) or it is gone.  End it here without touching Redis; the
        backend link closes with 1001 and a local client is told to resume.
        """
        if self.state is SessionState.ENDED:
            return
        self.mirror = None
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
        if self.clientValve.closed:
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


class SessionRegistry:
    """
    The sessions of one gateway node, their bounds, and the memory of ended
    ones (so that resuming one gets "expired", not "unknown").
    """

    log = Logger()

    def __init__(self, config: SessionConfig, clock, sessionMap, node: str = "local") -> None:
        self.config = config
        self.clock = clock
        self.sessionMap = sessionMap
        self.node = node
        self.sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.opening = 0
        #: This node's L{gateway.cluster.node.Cluster} when several nodes share
        #: sessions through Redis, else L{None}.
        self.cluster: Any = None
        #: What opens backend connections for a failover or a move (the
        #: L{gateway.site.GatewayFactory}: C{relink}); L{None}: sessions end
        #: when their backend connection drops.
        self.opener: Any = None

    def __len__(self) -> int:
        return len(self.sessions)

    def reserve(self) -> None:
        """
        Count a session being opened against C{maxSessions}.

        @raise LimitExceeded: at the bound.
        """
        if len(self.sessions) + self.opening >= self.config.maxSessions:
            raise LimitExceeded(f"the gateway holds its maximum of {self.config.maxSessions} sessions")
        self.opening += 1

    @staticmethod
    def newId() -> str:
        """
        @return: a new session id: 144 random bits, URL-safe.
        """
        return secrets.token_urlsafe(18)

    def create(self, sid: str, pool: Pool, link: IBackendLink) -> Session:
        """
        Register a new session whose backend link is open (after
        L{reserve}).
        """
        self.opening -= 1
        session = Session(self, sid, secrets.token_urlsafe(32), pool, link)
        self.sessions[sid] = session
        return session

    def adopt(self, sid: str, secret: str, pool: Pool, link: IBackendLink | None, record,
              down: list[Data], received: int) -> Session:
        """
        Register a session taken over from a dead node, with its state as
        recorded in Redis (C{record}, a L{gateway.sessionmap._shared.SessionRecord})
        and the backend messages still held (C{down}).  C{received} is what
        the resuming client has: a client that holds more than Redis knows
        got them from the dead owner before it could record them.
        """
        session = Session(self, sid, secret, pool, link)  # type: ignore[arg-type]
        session.inbox.accepted = record.upFwd
        outbox = session.outbox
        outbox.sent = outbox.acked = record.downAcked
        for message in down:
            if message.seq == outbox.sent + 1:
                outbox.add(message.payload, message.isBinary)
        if received > outbox.sent:
            outbox.ack(outbox.sent)
            outbox.sent = outbox.acked = received
        elif received > outbox.acked:
            outbox.ack(received)
        if record.closing is not None:
            session.closing = Close(*record.closing)
            session.state = session.state.to(SessionState.ENDING)
        self.sessions[sid] = session
        session._graceTimer = self.clock.callLater(self.config.grace, session._expire)
        return session

    async def resume(self, hello: Hello, kind: str):
        """
        The session a resume names, wherever it is: held here (L{find}), or
        with several nodes, relayed from its owner or taken over.

        @param kind: C{"ws"} or C{"poll"}, the transport resuming.
        @return: a L{Session} or a L{gateway.cluster.relay.RelaySession}, ready to
            C{attach}.
        @raise ResumeRefused: see L{find}.
        @raise gateway.cluster.node.Elsewhere: a poll for a session on a
            WebSocket of another node.
        """
        cluster = self.cluster
        if cluster is None or hello.sid in self.sessions:
            session = self.find(hello)
            if cluster is not None:
                await cluster.attachHere(session, kind)
            return session
        return await cluster.resume(hello, kind)

    def here(self, sid: str | None) -> Any:
        """
        The session C{sid} if this node serves its client now (it is held
        here and not attached elsewhere, or relayed here and attached), or
        L{None} when a request for it must go through L{resume} or
        L{sendTarget}.  Without several nodes, every session is here.
        """
        session = self.sessions.get(sid) if sid else None
        if self.cluster is None:
            return session
        if session is not None:
            return session if session.mirror is None or session.mirror.remote is None else None
        relay = self.cluster.relays.get(sid) if sid else None
        return relay if relay is not None and relay.attached else None

    async def sendTarget(self, sid: str, secret: str) -> Any:
        """
        The session a long-polling C{send} is for, without taking its
        client's attachment: held here, or relayed (with several nodes).

        @raise ResumeRefused: unknown, ended, or wrong secret.
        """
        if self.cluster is None or sid in self.sessions:
            return self.authenticate(sid, secret)
        return await self.cluster.lookup(sid, secret)

    def unreserve(self) -> None:
        """
        A session reserved with L{reserve} could not be opened.
        """
        self.opening -= 1

    def find(self, hello: Hello) -> Session:
        """
        The session a resume names, if it may be resumed.

        @raise ResumeRefused: unknown, expired, wrong secret, or a received
            count that cannot be honoured.
        """
        session = self.authenticate(hello.sid, hello.secret)
        outbox = session.outbox
        if hello.received > outbox.sent or hello.received < outbox.acked:
            raise ResumeRefused(
                CLOSE_RESUME_FAILED,
                f"cannot resume from message {hello.received}: messages {outbox.acked + 1}"
                f" to {outbox.sent} are held",
            )
        try:
            outbox.ack(hello.received)
        except ProtocolError as e:  # pragma: no cover - checked just above
            raise ResumeRefused(CLOSE_RESUME_FAILED, str(e)) from None
        session.outboxDrained()
        return session

    def authenticate(self, sid: str | None, secret: str | None) -> Session:
        """
        The live session C{sid}, if C{secret} is its secret.

        @raise ResumeRefused: unknown (4404), ended (4410 or as recorded) or
            wrong secret (4403).
        """
        session = self.sessions.get(sid) if sid else None
        if session is None:
            ended = self._ended.get(sid) if sid else None
            if ended is not None:
                raise ResumeRefused(*ended)
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, "unknown session")
        if not hmac.compare_digest(session.secret.encode(), (secret or "").encode()):
            raise ResumeRefused(CLOSE_BAD_SECRET, "wrong session secret")
        return session

    def ended(self, session: Session, resumeCode: int, reason: str) -> None:
        """
        C{session} has ended: forget it, remembering (within C{maxEnded})
        what a resume of it should hear.
        """
        if self.sessions.pop(session.sid, None) is None:
            return
        if self.config.maxEnded:
            self._ended[session.sid] = (resumeCode, f"session ended: {reason}")
            while len(self._ended) > self.config.maxEnded:
                self._ended.popitem(last=False)
        if self.cluster is None:
            self._write(self.sessionMap.forgetSession(session.sid))

    def recordState(self, session: Session) -> None:
        """
        Write the session's record (backend, state, node) to the session map.
        """
        if self.cluster is not None:
            return  # the shared record is kept by the session's mirror
        backend = session.backend
        record = {
            "pool": session.pool.name,
            "backend": backend.name if backend is not None else None,
            "state": session.state.value,
            "node": self.node,
            "created": session.created,
            "updated": self.clock.seconds(),
        }
        self._write(self.sessionMap.putSession(session.sid, record, self.config.grace * 2))

    def _write(self, d: Deferred) -> None:
        d.addErrback(self._writeFailed)

    def _writeFailed(self, failure) -> None:
        if failure.check(GatewayError):
            return None  # the map logs its outages, once each
        self.log.failure("session map write failed", failure)
        return None

    def sweep(self) -> None:
        """
        Heartbeats of every attached session.
        """
        now = self.clock.seconds()
        for session in list(self.sessions.values()):
            session.sweep(now)
        if self.cluster is not None:
            for relay in list(self.cluster.relays.values()):
                relay.sweep(now)

    def shutDown(self) -> None:
        """
        End every session: backends closed with 1001, clients with 1001.

        With several nodes, the sessions live on: each client is told to
        resume (1012, "service restart"), which it does through another
        node, and that node takes the session over; the backend links close
        with 1001.
        """
        if self.cluster is not None:
            for relay in list(self.cluster.relays.values()):
                relay.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1012)
            for session in list(self.sessions.values()):
                session.handOff()
            return
        for session in list(self.sessions.values()):
            session.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1001)
