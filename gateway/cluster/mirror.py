"""
The owner's writes of one session's state to Redis (L{Mirror}), when
several gateway nodes share sessions (docs/architecture.md, "Several
nodes"): the session's L{gateway.interfaces.ISessionMirror} strategy while
this node owns it.  On a single node a session has the null
L{gateway.sessions.local.NoMirror} instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..errors import LimitExceeded
from ..interfaces import ISessionMirror
from ..sessionmap._scripts import FENCED, GONE
from ..sessions.states import SessionState
from ..wire.protocol import CLOSE_UNAVAILABLE, Data, shortId
from .relay import GAP_PATIENCE, GAP_RETRY

if TYPE_CHECKING:
    from ..sessions.session import Session

__all__ = ["Mirror"]


@implementer(ISessionMirror)
class Mirror:
    """
    The owner's writes of one session's state to Redis.

    Backend messages are written as they come (the client gets them at
    once, without waiting).  The count of client messages accepted is
    written before they are acknowledged, one write at a time, so that a
    resume on any node never hears of fewer messages than the client was
    told; with it goes the count the backend has confirmed, and the
    payloads of the messages accepted here that it has not (those written
    to a backend connection whose receipt has not come back yet, and those
    accepted while the session is between backends), which stay in the up
    mailbox until confirmed: if this node dies, the node that takes the
    session over hands them to the backend.  Acknowledgements from the client are written one at
    a time, the newest winning.

    A write refused because another node took the session over (its epoch
    is newer) ends the session here at once, quietly: the other node pumps
    it now.

    @ivar epoch: the session's epoch when this node took it.
    @ivar remote: the node the client is attached to, when not this one.
    """

    def __init__(self, cluster: Any, session: Session, epoch: int) -> None:
        """
        @param cluster: this node's L{gateway.cluster.node.Cluster}.
        """
        self.cluster = cluster
        self.shared = cluster.shared
        self.session = session
        self.sid = session.sid
        self.epoch = epoch
        self.remote: str | None = None
        #: Whether the session's record is in Redis (L{False} for one
        #: opened while Redis was away, until it is written): only then
        #: can another node take it over.
        self.recorded = True
        self.attachSeq = 0
        self.upWritten = session.inbox.accepted
        #: The last client message known to be in Redis (its up mailbox,
        #: or confirmed): later ones accepted here go with the next write.
        self.inRedis = session.inbox.accepted
        #: The count of client messages confirmed by the backend last written.
        self.deliveredWritten = session.inbox.accepted
        self._upWrite: Deferred | None = None
        self._upWaiters: list[Deferred] = []
        self._ackWrite: Deferred | None = None
        self._acked = session.outbox.acked
        #: The client's count last written (L{acked}): a heartbeat ack that
        #: adds nothing costs no Redis call.
        self._ackWritten = session.outbox.acked
        self.lastWrite = cluster.clock.seconds()
        self._catchingUp = False
        self._held: dict[int, Data] = {}
        self._heldSince = 0.0
        self._heldWaiters: list[Deferred] = []
        self._resyncing = False
        #: The session's target, backend headers and origin, for L{resync}.
        self.origin: tuple[bytes, dict[str, str], str | None] = (b"/", {}, None)

    # ISessionMirror: what the session asks.
    def ackable(self, accepted: int) -> int:
        """
        @return: how many of the C{accepted} client messages may be
            acknowledged: those whose count is written to Redis.
        """
        return min(accepted, self.upWritten)

    def whenRecorded(self) -> Deferred:
        """
        @return: L{Deferred} firing once the count of client messages the
            session has accepted is written (L{forwarded}).
        """
        return self.forwarded()

    def settled(self) -> Deferred:
        """
        @return: L{Deferred} firing once no client message is held and
            every one accepted is recorded.
        """
        return self.whenCaughtUp().addCallback(lambda _: self.forwarded(tried=True))

    def holds(self, message: Data) -> bool:
        """
        Keep C{message} when messages before it were accepted through
        another node and are on their way (or in the up mailbox), or when
        this node has just woken from a pause and must learn whether it
        still owns the session before it hands anything on (L{hold}).

        @return: whether it was kept.
        @raise LimitExceeded: see L{hold}.
        """
        if message.seq > self.session.inbox.accepted + 1 or not self._mayPump():
            self.hold(message)
            return True
        return False

    def _mayPump(self) -> bool:
        return self.cluster.mayPump(self.sid) or not self.recorded

    def attachedTo(self, node: str | None) -> None:
        """
        The client attached to C{node} (L{None}: here, or nowhere).
        """
        self.remote = node

    def stampEpoch(self, headers: dict[str, str]) -> None:
        """
        Tell the next backend connection the session's epoch
        (C{X-Session-Epoch}), raised by every takeover.
        """
        headers["X-Session-Epoch"] = str(self.epoch)

    def _check(self, reply: Any) -> Any:
        self.lastWrite = self.cluster.clock.seconds()
        if reply is None or isinstance(reply, list):
            return reply
        if int(reply) == FENCED:
            self.session.fenced(True)
        elif int(reply) == GONE:
            # Redis lost the record (restarted empty, or it expired while
            # Redis was away): this node has all of it; write it again.
            Deferred.fromCoroutine(self.resync()).addErrback(self.cluster.writeFailed)
        return reply

    async def resync(self, why: str = "its record was gone from Redis") -> None:
        """
        Write the whole session again (record and the messages the client
        has not acknowledged), from what this node holds; once at a time.

        @param why: for the log line.
        """
        if self._resyncing:
            return
        self._resyncing = True
        session = self.session
        try:
            if session.state is SessionState.ENDED:
                return
            self.cluster.log.info("session {sid}: {why}; writing it again",
                                  sid=shortId(self.sid), why=why)
            await self.cluster.register(session, *self.origin, epoch=self.epoch)
            # The record is written with the count the backend confirmed,
            # and an empty up mailbox (a count write still on its way went
            # before it): the client messages after that count go with the
            # count write below.
            self.inRedis = self.deliveredWritten = self.delivered()
            # Messages that come meanwhile are not written by down(): write
            # them here, in order, until the mailbox has them all.
            written = 0
            while session.state is not SessionState.ENDED:
                pending = [m for m in session.outbox.unacknowledged() if m.seq > written]
                if not pending:
                    break
                for message in pending:
                    await self.shared.appendDown(self.sid, self.epoch, message)
                    written = message.seq
            # The client messages the backend has not confirmed, into the
            # up mailbox again (acknowledged once written).
            if (self._upWrite is None and session.state is not SessionState.ENDED
                    and session.inbox.accepted > self.inRedis):
                self._writeUp()
        finally:
            self._resyncing = False

    def _write(self, d: Deferred) -> Deferred:
        return d.addCallback(self._check).addErrback(self.cluster.writeFailed)

    def down(self, message: Data) -> None:
        """
        A backend message was numbered: into the down mailbox (unless the
        session is being written again, which writes it in turn).
        """
        if self._resyncing:
            return
        self._write(self.shared.appendDown(self.sid, self.epoch, message))

    def forwarded(self, tried: bool = False) -> Deferred:
        """
        Write how many client messages were accepted (and those the backend
        has not confirmed).

        @param tried: fire once the write was tried, even if Redis could
            not be written (and it is tried again with the next message or
            heartbeat); by default, only once it is written: the client's
            acknowledgement of a message waits until a takeover would find
            it.
        @return: L{Deferred} firing with the count written so far.
        """
        waiter: Deferred = Deferred()
        if self.upWritten >= self.session.inbox.accepted:
            waiter.callback(self.upWritten)
            return waiter
        self._upWaiters.append((waiter, tried))
        if self._upWrite is None:
            self._writeUp()
        return waiter

    def flush(self) -> None:
        """
        Try again a count write that Redis refused or did not answer.
        """
        if self._upWaiters and self._upWrite is None:
            self._writeUp()

    def delivered(self) -> int:
        """
        @return: how many client messages the backend has confirmed (every
            one accepted but those still unconfirmed).
        """
        session = self.session
        unconfirmed = session.upstream.unconfirmed
        return unconfirmed[0].seq - 1 if unconfirmed else session.inbox.accepted

    def _writeUp(self) -> None:
        session = self.session
        count = session.inbox.accepted
        delivered = self.delivered()
        messages = [m for m in session.upstream.unconfirmed if self.inRedis < m.seq <= count]
        waiters, self._upWaiters = self._upWaiters, []

        def done(reply):
            self._upWrite = None
            if reply is None or int(reply) != 1:
                # Redis is unavailable (reply None), or the record is gone
                # (written again by resync) or taken: nothing was written,
                # and the client's ack waits; the session keeps flowing
                # while this node's lease holds.  Tried again with the next
                # message, the next heartbeat (flush) or the resync.
                waiting = waiters + self._upWaiters
                self._upWaiters = [(w, tried) for w, tried in waiting if not tried]
                for waiter, tried in waiting:
                    if tried:
                        waiter.callback(self.upWritten)
                return
            self.inRedis = max(self.inRedis, count)
            self.deliveredWritten = max(self.deliveredWritten, delivered)
            self.upWritten = max(self.upWritten, count)
            for waiter, _ in waiters:
                waiter.callback(self.upWritten)
            if self._upWaiters:
                self._writeUp()

        d = self.shared.forwarded(self.sid, self.epoch, count, delivered, messages)
        self._upWrite = d
        self._write(d).addCallback(done)

    def detached(self) -> None:
        """
        The client left this node.
        """
        self._write(self.shared.detach(self.sid))

    def acked(self, count: int) -> None:
        """
        The client received C{count} messages.
        """
        self._acked = max(self._acked, count)
        if self._ackWrite is not None or self._acked <= self._ackWritten:
            return
        written = self._acked
        d = self.shared.acked(self.sid, written)
        self._ackWrite = d

        def done(result):
            self._ackWrite = None
            if result == 1:
                self._ackWritten = max(self._ackWritten, written)
            if self._acked > written:
                self.acked(self._acked)
            return result

        self._write(d).addBoth(done)

    def relinked(self, backend: str) -> None:
        """
        The session went on with backend C{backend} (a failover or a move):
        a takeover reconnects there.
        """
        self._write(self.shared.relinked(self.sid, self.epoch, backend))

    def closing(self, code: int, reason: str) -> None:
        """
        The backend closed.
        """
        self._write(self.shared.closing(self.sid, self.epoch, code, reason))

    def end(self, code: int, reason: str, answer: tuple[int, str] | None) -> None:
        """
        The session ended: delete it, leaving C{answer} for a later resume
        through any node; its client, if on another node, is closed with
        C{code}.
        """
        d = self.shared.end(self.sid, self.epoch, code, reason, answer)
        d.addErrback(self.cluster.writeFailed)

    def touch(self, now: float) -> None:
        """
        With the heartbeat: write the confirmations that came since the
        last write (the up mailbox is trimmed to them), or keep the
        session's keys alive when nothing was written lately.
        """
        if self._upWrite is None and (self._upWaiters or self.delivered() > self.deliveredWritten):
            self._writeUp()
            return
        if now - self.lastWrite >= self.shared.sessionTtl / 3:
            self.lastWrite = now
            self.shared.touch(self.sid).addErrback(self.cluster.writeFailed)

    def upNotice(self, message: Data) -> None:
        """
        A client message accepted by another node: hand it to the backend
        in order, or read the up mailbox after a gap.
        """
        if not self.cluster.leaseValid(self.sid):
            return  # read from the mailbox once this node is sure it owns it
        accepted = self.session.inbox.accepted
        if message.seq == accepted + 1:
            self.inRedis = max(self.inRedis, message.seq)
            self.session.forward(message)
        elif message.seq > accepted + 1:
            self.catchUp()

    def hold(self, message: Data) -> None:
        """
        A client message, through this node, that is ahead of what the
        backend was given: keep it (up to the replay-buffer bound) until
        the messages before it are read from the up mailbox.

        @raise LimitExceeded: past the bound.
        """
        bound = self.cluster.registry.config.maxBufferMessages
        if len(self._held) >= bound:
            raise LimitExceeded(f"more than {bound} client messages ahead of the backend")
        if not self._held:
            self._heldSince = self.cluster.clock.seconds()
        self._held[message.seq] = message
        self._catchingUp = False
        self.catchUp()

    def _release(self) -> None:
        session = self.session
        while self._held and self._mayPump():
            seq = min(self._held)
            if seq > session.inbox.accepted + 1:
                break
            message = self._held.pop(seq)
            if seq == session.inbox.accepted + 1 and session.state is not SessionState.ENDED:
                session.dataReceived(message)
        if not self._held:
            self._caughtUp()

    def _caughtUp(self) -> None:
        waiters, self._heldWaiters = self._heldWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def whenCaughtUp(self) -> Deferred:
        """
        @return: L{Deferred} firing once no client message is held (handed
            on, or given up after L{GAP_PATIENCE}).
        """
        d: Deferred = Deferred()
        if not self._held:
            d.callback(None)
        else:
            self._heldWaiters.append(d)
        return d

    def catchUp(self, *, owned: bool = False) -> Deferred:
        """
        Hand the backend what the up mailbox holds past what it was given.

        @param owned: this node has just read that it still owns the
            session (before writing it whole again): go ahead even while
            its lease is being confirmed.
        @return: L{Deferred} firing when done.
        """
        if self._catchingUp or not (owned or self.cluster.leaseValid(self.sid)):
            return succeed(None)
        self._catchingUp = True
        d = self.shared.readUp(self.sid, self.session.inbox.accepted)

        def read(messages):
            self._catchingUp = False
            for message in messages:
                if message.seq == self.session.inbox.accepted + 1:
                    self.inRedis = max(self.inRedis, message.seq)
                    self.session.forward(message)
            self._release()
            if not self._held:
                return
            if self.cluster.clock.seconds() - self._heldSince < GAP_PATIENCE:
                self.cluster.clock.callLater(GAP_RETRY, self.catchUp)
                return
            # The messages before them never reached the up mailbox: the
            # client resumes, and sends again from what was accepted.
            self._held.clear()
            self._caughtUp()
            transport = self.session.transport
            if transport is not None:
                transport.closeTransport(CLOSE_UNAVAILABLE, "messages went missing between gateway nodes; resume")

        def failed(failure):
            self._catchingUp = False
            return failure

        return d.addCallbacks(read, failed).addErrback(self.cluster.writeFailed)
