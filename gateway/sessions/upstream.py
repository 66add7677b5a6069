"""
A session's backend side (docs/operations.md, "Backend failover"; docs/
protocol.md, "Flow control").

An L{Upstream} is the component of a L{gateway.sessions.session.Session}
that faces its backend:

  - It keeps the client messages handed to the backend until the backend
    confirms them.  A WebSocket server answers a ping only after it has read
    every frame before it (RFC 6455 puts a pong after the frames it
    follows), so a pong to a ping sent after message N confirms messages up
    to N; a clean close does the same for all of them.
  - When the backend connection drops (the server crashed, restarted, or
    went away), it re-routes the session, with the client staying
    connected: to the same backend first while it comes back within the
    pool's C{failover_window}, else to another healthy one, with
    C{X-Session-Resumed: 1} and the counts of the resume contract; then,
    under the pool's C{failover} policy, it sends again what the old one did
    not confirm (C{replay}), or tells the client what may be lost
    (C{notify}), or ends the session (C{close}).
  - It moves the session to another backend on purpose (a drain or a
    rebalance): it closes the old connection (whose closing handshake
    confirms everything), then connects the new one the same way.
  - It applies flow control on both hops, with two
    L{gateway.sessions.flow.Valve}s: reading from the backend pauses while
    the client connection's write buffer is full or the replay buffer is
    past its high-water mark; reading from the client pauses while the
    backend connection's write buffer is full or too many of its messages
    are unconfirmed.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Mapping

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from ..errors import GatewayError
from ..interfaces import IBackendLink, ISessionOpener, ISessionTransport
from ..wire.protocol import CLOSE_SLOW, Data, Failover, shortId
from .flow import Valve
from .states import SessionState

if TYPE_CHECKING:
    from ..backends.pool import Backend
    from ..config import SessionConfig

__all__ = ["Upstream", "FAILOVER_CODES", "RECEIPT_DELAY", "RETRY_DELAY"]

#: Backend close codes after which a session fails over rather than ends: no
#: close frame at all (the server or its host died: L{None}, 1006), going
#: away (1001), service restart (1012), try again later (1013) and bad
#: gateway (1014).  Any other code is the backend ending the session.
FAILOVER_CODES = frozenset({None, 1001, 1006, 1012, 1013, 1014})

#: Seconds after a client message is handed to the backend before a ping
#: asks the backend to confirm it (sooner once half the bound is in flight).
RECEIPT_DELAY = 0.05

#: Seconds between attempts to reconnect a session's backend.
RETRY_DELAY = 0.25

#: The origin of a session until its first backend connection's is known.
_NO_ORIGIN: tuple[bytes, Mapping[str, str], str | None] = (b"/", MappingProxyType({}), None)

class Upstream:
    """
    The backend side of one L{gateway.sessions.session.Session}, which owns
    it (C{session.upstream}).

    It owns the session's backend link, the client messages not yet
    confirmed, the switch between backends and both flow-control valves.
    Of its session it reads C{sid}, C{pool}, C{state}, C{inbox},
    C{outbox}, C{transport} and C{mirror}; it calls the session's C{end}
    (a slow peer under C{slow = "close"}) and C{backendEnded} (the backend
    is gone for good), and binds new links to the session, which hands
    their messages and closes back here.

    @ivar link: the L{IBackendLink} carrying the session now, or L{None}
        (between backends, or gone).
    @ivar unconfirmed: client messages accepted and not yet confirmed by the
        backend, oldest first (sent again by a C{replay} failover): a deque,
        or an empty tuple when there are none.
    @ivar written: the last client message written to the current backend
        connection.
    @ivar lost: client messages reported to the client as possibly lost
        (policy C{notify}).
    @ivar switching: C{"failover"} or C{"move"} while the session is
        between backend connections (client messages wait, accepted), else
        L{None}.
    @ivar origin: the request target, backend headers and origin of the
        session's first backend connection, for the next ones.
    """

    __slots__ = ("session", "config", "clock", "opener", "link", "_unconfirmed", "unconfirmedBytes",
                 "written", "confirmed", "switching", "failovers", "moves", "lost", "origin", "_notices",
                 "_moveTarget", "_previous", "_droppedAt", "_dropCode", "_dropReason", "_receiptCall",
                 "_receiptFor", "_switchTask", "backendValve", "clientValve")

    log = Logger()

    def __init__(self, session: Any, config: SessionConfig, clock,
                 opener: ISessionOpener | None, link: IBackendLink | None) -> None:
        self.session = session
        self.config = config
        self.clock = clock
        #: What opens the next backend connection; L{None}: the session
        #: ends when its backend connection drops.
        self.opener = opener
        self.link = link
        #: L{unconfirmed}'s deque, L{None} while it would be empty (an empty
        #: deque costs its first block, 760 bytes, and most sessions are
        #: idle most of the time).
        self._unconfirmed: deque[Data] | None = None
        self.unconfirmedBytes = 0
        self.written = 0
        self.confirmed = 0
        self.switching: str | None = None
        self.failovers = 0
        self.moves = 0
        self.lost = 0
        self.origin: tuple[bytes, Mapping[str, str], str | None] = _NO_ORIGIN
        #: L{pendingNotices}' list, L{None} while empty.
        self._notices: list[Failover] | None = None
        self._moveTarget: Backend | None = None
        self._previous: Backend | None = None
        self._droppedAt = 0.0
        self._dropCode: int | None = None
        self._dropReason = ""
        self._receiptCall = None
        self._receiptFor = 0
        self._switchTask: Deferred | None = None
        #: Reading from the backend (paused for a slow client).
        self.backendValve = Valve(self._pauseBackend, self._resumeBackend)
        #: Reading from the client (paused for a slow backend).
        self.clientValve = Valve(self._pauseClient, self._resumeClient)

    def _pauseBackend(self) -> None:
        if self.link is not None:
            self.link.pauseReading()

    def _resumeBackend(self) -> None:
        if self.link is not None:
            self.link.resumeReading()

    def _pauseClient(self) -> None:
        transport = self.session.transport
        if transport is not None:
            transport.pauseReading()

    def _resumeClient(self) -> None:
        transport = self.session.transport
        if transport is not None:
            transport.resumeReading()

    @property
    def unconfirmed(self) -> deque[Data] | tuple[()]:
        """
        See the class's docstring.
        """
        return self._unconfirmed or ()

    @property
    def pendingNotices(self) -> list[Failover]:
        """
        C{Failover} packets for a client that is not attached now, sent by
        its next attach.
        """
        return self._notices or []

    @property
    def paused(self) -> bool:
        """
        Whether flow control holds either side of the session now.
        """
        return self.clientValve.closed or self.backendValve.closed

    # Client messages to the backend.
    def handOn(self, message: Data) -> None:
        """
        An accepted client message: to the backend now, or after the switch
        when the session is between backends; kept until confirmed.
        """
        unconfirmed = self._unconfirmed
        if unconfirmed is None:
            unconfirmed = self._unconfirmed = deque()
        unconfirmed.append(message)
        self.unconfirmedBytes += len(message.payload)
        link = self.link
        if link is not None and self.switching is None:
            link.sendMessage(message.payload, message.isBinary)
            self.written = message.seq
            if not link.confirmsReceipts:
                self._confirm(message.seq)  # a link that cannot confirm: nothing to replay
            else:
                self._wantReceipt()
        self._checkInflight()

    def _inflightFull(self, share: float = 1.0) -> bool:
        config = self.config
        return (len(self.unconfirmed) >= config.maxInflightMessages * share
                or self.unconfirmedBytes >= config.maxInflightBytes * share)

    def _checkInflight(self) -> None:
        if not self._inflightFull():
            return
        if self.config.slow == "close" and self.switching is None:
            self.log.info("session {sid}: the backend confirmed none of {n} messages: ending it",
                          sid=shortId(self.session.sid), n=len(self.unconfirmed))
            self.session.end(1008, "backend too slow", CLOSE_SLOW, clientCode=CLOSE_SLOW)
            return
        self.clientValve.close("inflight")

    def _wantReceipt(self) -> None:
        if self._receiptFor:
            return
        if self._inflightFull(0.5):
            self._requestReceipt()
        elif self._receiptCall is None:
            self._receiptCall = self.clock.callLater(RECEIPT_DELAY, self._requestReceipt)

    def _requestReceipt(self) -> None:
        self._cancelReceipt()
        link = self.link
        if link is None or self.switching is not None or self.written <= self.confirmed:
            return
        self._receiptFor = self.written
        link.requestReceipt(self.written)

    def _cancelReceipt(self) -> None:
        call, self._receiptCall = self._receiptCall, None
        if call is not None and call.active():
            call.cancel()

    def backendReceipt(self, link: IBackendLink, seq: int) -> None:
        """
        C{link}'s backend has read every client message up to C{seq}.
        """
        if link is not self.link or seq != self._receiptFor:
            return
        self._receiptFor = 0
        self._confirm(seq)
        if self.written > self.confirmed:
            self._wantReceipt()

    def _confirm(self, seq: int) -> None:
        unconfirmed = self._unconfirmed
        if unconfirmed is not None:
            while unconfirmed and unconfirmed[0].seq <= seq:
                self.unconfirmedBytes -= len(unconfirmed.popleft().payload)
            if not unconfirmed:
                self._unconfirmed = None
        if seq > self.confirmed:
            self.confirmed = seq
        config = self.config
        if ("inflight" in self.clientValve.reasons
                and len(self.unconfirmed) <= config.maxInflightMessages * 0.5
                and self.unconfirmedBytes <= config.maxInflightBytes * 0.5):
            self.clientValve.open("inflight")

    # Flow control.
    def outboxFilled(self) -> bool:
        """
        A backend message was kept for the client: past the high-water mark
        (three quarters of the replay buffer's bounds), pause reading from
        the backend, or under C{slow = "close"} end the session.

        @return: whether the session ended.
        """
        config = self.config
        session = self.session
        outbox = session.outbox
        if (len(outbox) < config.maxBufferMessages * 0.75
                and outbox.pendingBytes < config.maxBufferBytes * 0.75):
            return False
        if config.slow == "close":
            self.log.info("session {sid}: the client acknowledged none of {n} messages: ending it",
                          sid=shortId(session.sid), n=len(outbox))
            attached = session.transport is not None
            session.end(1008, "client too slow", CLOSE_SLOW, clientCode=CLOSE_SLOW if attached else None)
            return True
        self.backendValve.close("outbox")
        return False

    def outboxDrained(self) -> None:
        """
        The client acknowledged messages: below half the bounds, read from
        the backend again.
        """
        if "outbox" not in self.backendValve.reasons:
            return
        config = self.config
        outbox = self.session.outbox
        if (len(outbox) <= config.maxBufferMessages * 0.5
                and outbox.pendingBytes <= config.maxBufferBytes * 0.5):
            self.backendValve.open("outbox")

    def linkBound(self, link: IBackendLink) -> None:
        """
        C{link} now carries the session: watch its write buffer, and pause it
        at once when reading from the backend is paused.
        """
        link.registerFlow(self.clientValve.producerFor("backend-buffer"))
        if self.backendValve.closed:
            link.pauseReading()

    def transportAttached(self, transport: ISessionTransport) -> None:
        """
        C{transport} now carries the session: watch its write buffer, and
        pause it at once when reading from the client is paused.
        """
        transport.registerFlow(self.backendValve.producerFor("client-buffer"))
        if self.clientValve.closed:
            transport.pauseReading()

    def transportDetached(self, transport: ISessionTransport) -> None:
        """
        C{transport} no longer carries the session.
        """
        self.backendValve.open("client-buffer")
        if self.clientValve.closed:
            transport.resumeReading()

    def takeNotices(self) -> list[Failover]:
        """
        @return: the notices kept for the client while it was away (and
            forget them: an attach sends them).
        """
        notices, self._notices = self._notices, None
        return notices or []

    # Backend connections ending, and the next one.
    def backendClosed(self, code: int | None, reason: str | None, link: IBackendLink | None = None,
                      clean: bool = False) -> None:
        """
        The backend WebSocket closed: after a move, connect the next one;
        after a drop (L{FAILOVER_CODES}), fail over under the pool's policy;
        else the session's C{backendEnded}.
        """
        if link is not None and link is not self.link:
            return
        if code is None and link is not None:
            # No code: a closing handshake without one (1005), or none at
            # all, the connection lost (1006).
            code = 1005 if clean else 1006
        previous = self.link.backend if self.link is not None else None
        self.link = None
        self._cancelReceipt()
        self._receiptFor = 0
        self.clientValve.open("backend-buffer")
        session = self.session
        if session.state is SessionState.ENDED:
            return
        if self.switching == "move":
            if clean:
                self._confirm(self.written)  # read before its closing handshake
            self._startSwitch()
            return
        pool = session.pool
        if (self.switching is None and session.state is not SessionState.ENDING and pool.failover != "close"
                and code in FAILOVER_CODES and self.opener is not None):
            self.switching = "failover"
            self.failovers += 1
            session.registry.metrics.sessionEvent("failover", pool.name)
            self._previous = previous
            self._droppedAt = self.clock.seconds()
            self._dropCode, self._dropReason = code, reason or ""
            self.log.info(
                "session {sid}: backend {backend} dropped ({code}): failing over ({policy})",
                sid=shortId(session.sid), backend=previous.name if previous else "?",
                code=code if code is not None else "no close frame", policy=pool.failover,
            )
            self._startSwitch()
            return
        session.backendEnded(code, reason)

    def move(self, target: Backend | None = None) -> bool:
        """
        Move the session to C{target} (or where the balancer says, another
        backend than its own): close the backend connection, then open the
        next one.  The client sees nothing but a short wait.

        @return: whether a move started (not while ending, or already
            between backends).
        """
        link = self.link
        if link is None or self.switching is not None or not self.session.state.live:
            return False
        self.switching = "move"
        self.moves += 1
        session = self.session
        session.registry.metrics.sessionEvent("move", session.pool.name if session.pool else None)
        self._moveTarget = target
        self._previous = link.backend
        self._droppedAt = self.clock.seconds()
        self._dropCode, self._dropReason = 1001, "session moved to another backend"
        self._cancelReceipt()
        link.finishLink(1001, "session moved to another backend")
        return True

    def stop(self) -> IBackendLink | None:
        """
        The session ended: no receipt, no switch any more.

        @return: the link, now forgotten (the session closes it).
        """
        self._cancelReceipt()
        self.switching = None
        task, self._switchTask = self._switchTask, None
        if task is not None and not task.called:
            task.cancel()
        link, self.link = self.link, None
        return link

    def _startSwitch(self) -> None:
        self._switchTask = Deferred.fromCoroutine(self._switch())
        self._switchTask.addErrback(self._switchError)

    def _switchError(self, failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("session {sid}: switching backends failed", failure, sid=shortId(self.session.sid))
            self.switching = None
            self.session.backendEnded(1011, "switching backends failed")

    def resumeHeaders(self) -> dict[str, str]:
        """
        @return: the headers of the session's next backend connection: its
            first one's, with C{X-Session-Resumed: 1}, the client messages
            the backend had before those sent again (C{X-Session-Delivered})
            and the backend messages the gateway received
            (C{X-Session-Received}), as for a takeover.
        """
        session = self.session
        headers = dict(self.origin[1])
        headers["X-Session-Resumed"] = "1"
        if session.pool.failover == "notify" and self.switching == "failover":
            delivered = max(self.written, self.confirmed)
        else:
            delivered = self.unconfirmed[0].seq - 1 if self.unconfirmed else session.inbox.accepted
        headers["X-Session-Delivered"] = str(delivered)
        headers["X-Session-Received"] = str(session.outbox.sent)
        session.mirror.stampEpoch(headers)
        return headers

    async def _switch(self) -> None:
        clock = self.clock
        opener = self.opener
        session = self.session
        pool = session.pool
        deadline = self._droppedAt + pool.failoverTimeout
        previous, target = self._previous, self._moveTarget
        while True:
            if session.state is SessionState.ENDED:
                return
            now = clock.seconds()
            if self.switching == "failover" and now - self._droppedAt < pool.failoverWindow:
                prefer, avoid, remaining = previous, None, self._droppedAt + pool.failoverWindow - now
            elif self.switching == "move":
                prefer, avoid, remaining = target, previous, None
            else:
                prefer, avoid, remaining = None, None, None
            try:
                backend, link = await opener.relink(session, prefer, avoid, remaining)
                break
            except (GatewayError, OSError) as e:
                if self.switching == "move" and previous is not None:
                    # Nowhere else to go: back to where it was, draining or not.
                    try:
                        backend, link = await opener.relink(session, previous, None, None, force=True)
                        break
                    except (GatewayError, OSError):
                        pass
                if clock.seconds() >= deadline:
                    self.log.warn("session {sid}: no backend of pool {pool} could take it within"
                                  " {t:g}s ({e}): ending it", sid=shortId(session.sid), pool=pool.name,
                                  t=pool.failoverTimeout, e=str(e))
                    self.switching, self._switchTask = None, None  # done: end() has nothing to cancel
                    session.backendEnded(self._dropCode if self._dropCode not in (None, 1006) else 1011,
                                         self._dropReason or "the backend went away")
                    return
            await deferLater(clock, RETRY_DELAY, lambda: None)
        self._switchTask = None
        if session.state is SessionState.ENDED:
            link.closeLink(1001, "session ended")
            return
        self._relinked(backend, link)

    def _relinked(self, backend: Backend, link: IBackendLink) -> None:
        how = self.switching
        self.switching = None
        self._moveTarget = None
        if how == "failover" and self.session.pool.failover == "notify":
            lost = [m for m in self.unconfirmed if m.seq <= self.written]
            if lost:
                self._confirm(lost[-1].seq)
                self.lost += len(lost)
                self.notifyLost(lost[0].seq, lost[-1].seq)
        self.link = link
        link.bind(self.session, backend)
        if self.link is not link:
            return  # it closed at once: bind reported it
        self.linkBound(link)
        for message in list(self.unconfirmed):
            link.sendMessage(message.payload, message.isBinary)
            self.written = message.seq
        if self.unconfirmed:
            if not link.confirmsReceipts:
                self._confirm(self.written)
            else:
                self._wantReceipt()
        self.session.mirror.relinked(backend.name)
        self.log.info("session {sid}: {how} to backend {backend} done ({n} messages sent again)",
                      sid=shortId(self.session.sid), how=how, backend=backend.name, n=len(self.unconfirmed))

    def notifyLost(self, first: int, last: int) -> None:
        """
        Tell the client (now, or when it attaches) that its messages C{first}
        to C{last} may not have reached the backend.
        """
        packet = Failover(first, last)
        transport = self.session.transport
        if transport is not None:
            transport.pushControl(packet)
        else:
            if self._notices is None:
                self._notices = []
            self._notices.append(packet)  # sent by the next attach
