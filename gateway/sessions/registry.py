"""
The node's set of sessions (L{SessionRegistry}): their bounds, opening new
ones, finding the one a resume names wherever it is, and the memory of
ended ones.

Whether other nodes share the sessions is the registry's cluster strategy
(L{ISessionCluster}: L{gateway.sessions.local.SingleNode}, or the
cluster's C{Cluster}); what opens backend connections is its opener
(L{ISessionOpener}).  Both are given to it by the composition root.
"""

from __future__ import annotations

import hmac
import math
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import GatewayError, ProtocolError, ResumeRefused, SessionLimit
from ..edge.accesslog import NoAccessLog
from ..interfaces import IAccessLog, IBackendLink, IMetrics, ISessionCluster, ISessionOpener
from ..metrics import NoMetrics
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_RESUME_FAILED,
    CLOSE_UNKNOWN_SESSION,
    Close,
    Data,
    Hello,
)
from .local import NoMirror, SingleNode
from .session import Session
from .states import SessionState

if TYPE_CHECKING:
    from ..backends.pool import Pool
    from ..config import SessionConfig

__all__ = ["SessionRegistry", "FULL_RETRY_AFTER"]

#: A session transport's C{kind}, as metrics name it.
_TRANSPORTS = {"ws": "websocket", "poll": "longpoll"}

#: The Retry-After (seconds) of a refusal at C{max_sessions} or at
#: C{max_sessions_per_ip}: sessions end at their own pace, so a short wait
#: (and the client's own backoff on top) is all that can be said.
FULL_RETRY_AFTER = 2


class _OpenRates:
    """
    A token bucket per client address: C{rate} new sessions a second, with
    a burst of C{burst}.  An address whose bucket has refilled holds no
    entry; the table never holds more than C{bound} entries (the oldest
    used go first, which can only give an address a full bucket early).
    """

    def __init__(self, rate: int, burst: int, bound: int) -> None:
        self.rate = rate
        self.burst = burst
        self.bound = bound
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait(self, address: str, now: float) -> float:
        """
        @return: 0 when C{address} may open a session now (one token is
            taken), else the seconds until it may.
        """
        tokens, then = self.buckets.pop(address, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self.buckets[address] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self.buckets[address] = (tokens - 1.0, now)
        if len(self.buckets) > self.bound:
            self.sweep(now)
            while len(self.buckets) > self.bound:
                self.buckets.popitem(last=False)
        return 0.0

    def sweep(self, now: float) -> None:
        """
        Forget the addresses whose bucket has refilled.
        """
        full = [address for address, (tokens, then) in self.buckets.items()
                if tokens + (now - then) * self.rate >= self.burst]
        for address in full:
            del self.buckets[address]


class SessionRegistry:
    """
    The sessions of one gateway node, their bounds, and the memory of ended
    ones (so that resuming one gets "expired", not "unknown").

    @ivar cluster: the L{ISessionCluster} strategy, made by the C{cluster}
        factory given (called with the registry).
    @ivar opener: the L{ISessionOpener}, or L{None}: then no session can be
        opened here, and sessions end when their backend connection drops.
    @ivar noMirror: the null L{gateway.interfaces.ISessionMirror} of
        sessions no other node knows of.
    @ivar metrics: the L{IMetrics} the sessions record to.
    """

    log = Logger()

    def __init__(self, config: SessionConfig, clock, sessionMap, node: str = "local", *,
                 opener: ISessionOpener | None = None,
                 cluster: Callable[[SessionRegistry], ISessionCluster] = SingleNode,
                 accessLog: IAccessLog | None = None,
                 metrics: IMetrics | None = None) -> None:
        self.config = config
        self.metrics: IMetrics = metrics if metrics is not None else NoMetrics()
        self.clock = clock
        self.sessionMap = sessionMap
        self.node = node
        self.sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.opening = 0
        #: Sessions held or being opened per client address, and the
        #: address of each session held (L{reserve}, L{ended}): an address
        #: holding none has no entry.
        self.held: dict[str, int] = {}
        self._addressOf: dict[str, str] = {}
        #: The request path each session held here was opened on.
        self._pathOf: dict[str, str] = {}
        #: Where each session's end is reported.
        self.accessLog: IAccessLog = accessLog if accessLog is not None else NoAccessLog()
        self.opens = _OpenRates(config.maxOpensPerIp, config.openBurstPerIp, config.maxSessions)
        self.opener = opener
        self.noMirror = NoMirror(clock)
        self.cluster: ISessionCluster = cluster(self)

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def sharesSessions(self) -> bool:
        """
        Whether other nodes share these sessions (through Redis).
        """
        return self.cluster.sharesSessions

    def reserve(self, address: str | None = None) -> None:
        """
        Count a session being opened against C{maxSessions} and, for a
        client C{address}, against C{maxSessionsPerIp} and the address's
        allowance of new sessions a second (C{maxOpensPerIp}, with a burst
        of C{openBurstPerIp}).

        @raise LimitExceeded: at a bound, with its C{retryAfter}.
        """
        config = self.config
        if len(self.sessions) + self.opening >= config.maxSessions:
            raise SessionLimit(f"the gateway holds its maximum of {config.maxSessions} sessions",
                           FULL_RETRY_AFTER)
        if address is not None:
            if self.held.get(address, 0) >= config.maxSessionsPerIp:
                raise SessionLimit(f"this address holds its maximum of {config.maxSessionsPerIp} sessions",
                               FULL_RETRY_AFTER)
            wait = self.opens.wait(address, self.clock.seconds())
            if wait:
                raise SessionLimit(f"this address opens more than {config.maxOpensPerIp} sessions a second",
                               max(1, math.ceil(wait)))
            self.held[address] = self.held.get(address, 0) + 1
        self.opening += 1

    def _release(self, address: str | None) -> None:
        if address is None:
            return
        count = self.held.get(address, 0) - 1
        if count > 0:
            self.held[address] = count
        else:
            self.held.pop(address, None)

    @staticmethod
    def newId() -> str:
        """
        @return: a new session id: 144 random bits, URL-safe.
        """
        return secrets.token_urlsafe(18)

    async def open(self, route, address: str | None = None) -> Session:
        """
        Open a new session for C{route} (a L{gateway.site.Route}): a backend
        WebSocket (with the session id in C{X-Session-Id}), then the
        session, made known to the other nodes.

        @param address: the client's address (C{route.peer}, or the one
            trusted proxies forwarded), counted against the per-address
            bounds (L{reserve}); L{None} counts it against none.
        @raise gateway.errors.NoBackendAvailable: when no backend can be had.
        @raise LimitExceeded: at C{session.maxSessions} or a per-address bound.
        """
        self.reserve(address)
        try:
            sid = self.newId()
            backend, link, origin = await self.opener.open(route, self.cluster.newSessionHeaders(sid))
        except BaseException:
            self.unreserve(address)
            raise
        session = self.create(sid, route.pool, link)
        if address is not None:
            self._addressOf[sid] = address
        self._pathOf[sid] = route.head.path.decode("ascii", "replace")
        session.upstream.origin = origin
        link.bind(session, backend)
        await self.cluster.register(session, *origin)
        self.metrics.sessionEvent("opened", route.pool.name)
        return session

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
        session = Session(self, sid, secret, pool, link)
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
        session.startGrace()
        self.metrics.sessionEvent("takeover", pool.name)
        return session

    async def resume(self, hello: Hello, kind: str) -> Any:
        """
        The session a resume names, wherever it is: held here (L{find}), or
        with several nodes, relayed from its owner or taken over.

        @param kind: C{"ws"} or C{"poll"}, the transport resuming.
        @return: a L{Session} or a L{gateway.cluster.relay.RelaySession}, ready to
            C{attach}.
        @raise ResumeRefused: see L{find}.
        @raise gateway.errors.Elsewhere: a poll for a session on a
            WebSocket of another node.
        """
        if hello.sid in self.sessions:
            session = self.find(hello)
            await self.cluster.attachHere(session, kind)
        else:
            session = await self.cluster.resume(hello, kind)
        self.metrics.resumed(_TRANSPORTS.get(kind, kind))
        return session

    def here(self, sid: str | None) -> Any:
        """
        The session C{sid} if this node serves its client now (it is held
        here and not attached elsewhere, or relayed here and attached), or
        L{None} when a request for it must go through L{resume} or
        L{sendTarget}.  Without several nodes, every session is here.
        """
        session = self.sessions.get(sid) if sid else None
        if session is not None:
            return session if session.mirror.remote is None else None
        return self.cluster.relayHere(sid)

    def mustResume(self, sid: str) -> bool:
        """
        Whether a poll for C{sid} must resume the session on this node
        first (with several nodes: it is held or attached elsewhere), rather
        than be answered from what is here (L{local}).
        """
        return self.cluster.sharesSessions and self.here(sid) is None

    def local(self, sid: str, secret: str) -> Any:
        """
        The session a poll or send names, from what this node has: held
        here, or relayed here with its client attached here.

        @raise ResumeRefused: unknown, ended, or wrong secret.
        """
        if sid not in self.sessions:
            relay = self.cluster.relayHere(sid)
            if relay is not None:
                if not hmac.compare_digest(relay.secret.encode(), secret.encode()):
                    raise ResumeRefused(CLOSE_BAD_SECRET, "wrong session secret")
                return relay
        return self.authenticate(sid, secret)

    async def sendTarget(self, sid: str, secret: str) -> Any:
        """
        The session a long-polling C{send} (or an upgrade's probe) is for,
        without taking its client's attachment: held here, or relayed (with
        several nodes).

        @raise ResumeRefused: unknown, ended, or wrong secret.
        """
        if sid in self.sessions:
            return self.authenticate(sid, secret)
        return await self.cluster.lookup(sid, secret)

    async def probed(self, hello: Hello) -> Any:
        """
        The session an upgrade's probe names, not moved: held here (and
        resumable from C{hello.received}), or relayed (with several nodes).

        @raise ResumeRefused: see L{find} and L{sendTarget}.
        """
        if hello.sid in self.sessions:
            return self.find(hello)
        return await self.cluster.lookup(hello.sid, hello.secret or "")

    def releasePoll(self, session) -> None:
        """
        An upgrade's probe succeeded: answer the session's held poll now (the
        client waits for it to end before it switches), here or on the node
        that holds it.
        """
        transport = session.transport
        if transport is not None and transport.kind == "poll":
            transport.release()
        else:
            self.cluster.probe(session.sid)

    def unreserve(self, address: str | None = None) -> None:
        """
        A session reserved with L{reserve} (for C{address}) could not be
        opened.
        """
        self.opening -= 1
        self._release(address)

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
        session.upstream.outboxDrained()
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
        address = self._addressOf.pop(session.sid, None)
        self._release(address)
        self.accessLog.connectionEnded(self._accessRecord(session, address, reason))
        if self.config.maxEnded:
            self._ended[session.sid] = (resumeCode, f"session ended: {reason}")
            while len(self._ended) > self.config.maxEnded:
                self._ended.popitem(last=False)
        self.cluster.forget(session)

    def _accessRecord(self, session: Session, address: str | None, reason: str) -> dict:
        """
        @return: the access log's record of C{session}, which has ended
            (docs/operations.md, "Access log").
        """
        backend = session.backend or session.lastBackend
        return {
            "event": "session",
            "client": address,
            "path": self._pathOf.pop(session.sid, None),
            "pool": session.pool.name,
            "backend": backend.name if backend is not None else None,
            "mode": "session",
            "transport": {"ws": "websocket", "poll": "longpoll"}.get(session.transportKind or "", None),
            "duration": round(self.clock.seconds() - session.created, 3),
            "bytes_from_client": session.bytesFromClient,
            "bytes_to_client": session.bytesToClient,
            "messages_from_client": session.inbox.accepted,
            "messages_to_client": session.outbox.sent,
            "close_code": session.closeCode,
            "reason": reason,
        }

    def recordState(self, session: Session) -> None:
        """
        The session's state changed: record it (in the session map on a
        single node; with several nodes its mirror keeps the shared record).
        """
        self.cluster.recordState(session)

    def write(self, d: Deferred) -> None:
        """
        Let a session map write go on its own: its outages are the map's to
        log; anything else is logged here.
        """
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
        self.opens.sweep(now)
        for session in list(self.sessions.values()):
            session.sweep(now)
        self.cluster.sweep(now)

    def shutDown(self) -> None:
        """
        End every session: backends closed with 1001, clients with 1001.

        With several nodes, the sessions live on: each client is told to
        resume (1012, "service restart"), which it does through another
        node, and that node takes the session over; the backend links close
        with 1001.
        """
        self.cluster.shutDown()
