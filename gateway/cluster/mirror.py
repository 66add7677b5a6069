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
from .expiry import Expiry
from .relay import GAP_PATIENCE, GAP_RETRY

if TYPE_CHECKING:
    from ..sessions.session import Session

__all__ = ["BATCH_BYTES", "BATCH_MESSAGES", "DELIVERED_DELAY", "Mirror"]

#: The most backend messages written in one script call: a reactor turn's
#: messages beyond it go in further calls, at once.
BATCH_MESSAGES = 64

#: The most payload bytes written in one script call (past it, as above;
#: a single larger message goes alone).
BATCH_BYTES = 256 * 1024

#: Seconds the count of client messages the backend confirmed may wait for
#: a write to ride on (a batch of backend messages), when those messages
#: were accepted by another node and are in Redis already.
DELIVERED_DELAY = 0.05


def _chunks(messages: list[Data]):
    """
    @return: C{messages} in runs of at most L{BATCH_MESSAGES} messages and
        L{BATCH_BYTES} bytes (one message at least), in order.
    """
    chunk: list[Data] = []
    size = 0
    for message in messages:
        if chunk and (len(chunk) >= BATCH_MESSAGES or size + len(message.payload) > BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += len(message.payload)
    if chunk:
        yield chunk


@implementer(ISessionMirror)
class Mirror:
    """
    The owner's writes of one session's state to Redis.

    Backend messages are written as they come (the client gets them at
    once, without waiting), those of one reactor turn in one script call
    (in runs of L{BATCH_MESSAGES}), with the client's acknowledgement of
    that turn folded in.  Every other write first writes what the turn has
    gathered, so that Redis sees the session's writes in the order they
    happened.  The count of client messages accepted is
    written before they are acknowledged, one write at a time, so that a
    resume on any node never hears of fewer messages than the client was
    told; with it goes the count the backend has confirmed, and the
    payloads of the messages accepted here that it has not (those written
    to a backend connection whose receipt has not come back yet, and those
    accepted while the session is between backends), which stay in the up
    mailbox until confirmed: if this node dies, the node that takes the
    session over hands them to the backend.  Acknowledgements from the client that no backend
    message carries are written one at a time, the newest winning.  Client
    messages accepted by another node are in Redis already: the count the
    backend confirmed of them rides on the next backend messages' write,
    or is written within L{DELIVERED_DELAY}.

    A write refused because another node took the session over (its epoch
    is newer) ends the session here at once, quietly: the other node pumps
    it now.

    The writes refresh the expiry of the session's keys only when it is
    due (L{expiry}), and the heartbeat refreshes an idle session's
    (L{touch}).

    @ivar epoch: the session's epoch when this node took it.
    @ivar remote: the node the client is attached to, when not this one.
    @ivar expiry: this node's last refresh of the session's keys.
    """

    def __init__(self, cluster: Any, session: Session, epoch: int, refreshed: float | None = None) -> None:
        """
        @param cluster: this node's L{gateway.cluster.node.Cluster}.
        @param refreshed: when the write that took the session over (and
            refreshed its keys) was sent, if it was.
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
        #: The client's acknowledgement last sent to Redis.
        self._ackSent = session.outbox.acked
        #: The backend messages of this reactor turn, and its timer.
        self._downQueue: list[Data] = []
        self._turn: Any = None
        #: The timer of a confirmed count waiting for a write (L{forwarded}).
        self._deliveredCall: Any = None
        self.expiry = Expiry(cluster.clock, self.shared.sessionTtl, refreshed)
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
        if reply is None or isinstance(reply, list):
            return reply
        if int(reply) == FENCED:
            self.session.fenced(True)
        elif int(reply) == GONE:
            # Redis lost the record (restarted empty, or it expired while
            # Redis was away): this node has all of it; write it again.
            self.expiry.doubt()
            Deferred.fromCoroutine(self.resync()).addErrback(self.cluster.writeFailed)
        return reply

    def _failed(self, failure) -> None:
        """
        A write failed: whatever Redis made of it, its refresh of the
        keys' expiry is in doubt, and the next write refreshes.
        """
        self.expiry.doubt()
        self.cluster.writeFailed(failure)

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
        # Writes meanwhile refresh the keys' expiry, until the record is
        # written (which refreshes it: L{Cluster.register}); the messages
        # written again below refresh it too.
        self.expiry.doubt()
        try:
            if session.state is SessionState.ENDED:
                return
            self.cluster.log.info("session {sid}: {why}; writing it again",
                                  sid=shortId(self.sid), why=why)
            self._downQueue = []  # written below with the others
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
                for chunk in _chunks(pending):
                    await self.shared.appendDown(self.sid, self.epoch, *chunk)
                    written = chunk[-1].seq
            # The client messages the backend has not confirmed, into the
            # up mailbox again (acknowledged once written).
            if (self._upWrite is None and session.state is not SessionState.ENDED
                    and session.inbox.accepted > self.inRedis):
                self._writeUp()
        finally:
            self._resyncing = False

    def _write(self, d: Deferred) -> Deferred:
        return d.addCallback(self._check).addErrback(self._failed)

    def down(self, message: Data) -> None:
        """
        A backend message was numbered: into the down mailbox with the
        others of this reactor turn (L{_flush}), unless the session is
        being written again, which writes it in turn.
        """
        if self._resyncing:
            return
        self._downQueue.append(message)
        self._schedule()

    def _schedule(self) -> None:
        if self._turn is None:
            self._turn = self.cluster.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        """
        Write what this reactor turn gathered: its backend messages (the
        client's acknowledgement folded into the last call), or the
        acknowledgement alone (L{_writeAck}).
        """
        turn, self._turn = self._turn, None
        if turn is not None and turn.active():
            turn.cancel()
        batch, self._downQueue = self._downQueue, []
        if self.session.mirror is not self:
            return  # fenced or ended: written no more
        ack = self._acked if self._acked > self._ackSent else None
        if not batch:
            if ack is not None:
                self._writeAck()
            return
        delivered = self.delivered()
        fold = delivered if delivered > self.deliveredWritten and self._upWrite is None else None
        chunks = list(_chunks(batch))
        for chunk in chunks[:-1]:
            self._write(self.shared.appendDown(self.sid, self.epoch, *chunk, refresh=self.expiry.due()))
        d = self.shared.appendDown(self.sid, self.epoch, *chunks[-1], acked=ack, delivered=fold,
                                   refresh=self.expiry.due())
        if fold is not None:
            d.addCallback(self._deliveredWritten, fold)
        self._write(d)
        if ack is not None:
            self._ackSent = ack

    def _deliveredWritten(self, reply: Any, delivered: int) -> Any:
        if reply is not None and not isinstance(reply, list) and int(reply) == 1:
            self.deliveredWritten = max(self.deliveredWritten, delivered)
        return reply

    def _deliveredDue(self) -> None:
        """
        L{DELIVERED_DELAY} after a message accepted elsewhere was handed
        on: write the confirmed count if no batch carried it, and look
        again while some are unconfirmed.
        """
        self._deliveredCall = None
        if self.session.mirror is not self or self.session.state is SessionState.ENDED:
            return
        delivered = self.delivered()
        if self._upWrite is None and delivered > self.deliveredWritten:
            self._writeUp()
        if delivered < self.session.inbox.accepted:
            # Some are not confirmed yet: look again (at most every
            # DELIVERED_DELAY while they are not).
            self._deliveredCall = self.cluster.clock.callLater(DELIVERED_DELAY, self._deliveredDue)

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
        accepted = self.session.inbox.accepted
        if self.upWritten < accepted <= self.inRedis:
            # Accepted by another node: its count is in Redis already; only
            # what the backend confirms remains to be written.
            self.upWritten = accepted
            if self._deliveredCall is None:
                self._deliveredCall = self.cluster.clock.callLater(DELIVERED_DELAY, self._deliveredDue)
        if self.upWritten >= accepted:
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
        self._flush()
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

        d = self.shared.forwarded(self.sid, self.epoch, count, delivered, messages,
                                  refresh=self.expiry.due())
        self._upWrite = d
        self._write(d).addCallback(done)

    def detached(self) -> None:
        """
        The client left this node.
        """
        self._flush()
        self._write(self.shared.detach(self.sid))

    def acked(self, count: int) -> None:
        """
        The client received C{count} messages: written with this turn's
        backend messages, or alone (L{_flush}).
        """
        self._acked = max(self._acked, count)
        self._schedule()

    def _writeAck(self) -> None:
        """
        Write the client's acknowledgement alone, one write at a time, the
        newest winning.
        """
        if self._ackWrite is not None:
            return  # what came meanwhile is written once it is done
        written = self._acked
        self._ackSent = max(self._ackSent, written)
        d = self.shared.acked(self.sid, written, refresh=self.expiry.due())
        self._ackWrite = d

        def done(result):
            self._ackWrite = None
            if self._acked > self._ackSent:
                self._schedule()
            return result

        self._write(d).addBoth(done)

    def relinked(self, backend: str) -> None:
        """
        The session went on with backend C{backend} (a failover or a move):
        a takeover reconnects there.
        """
        self._flush()
        self._write(self.shared.relinked(self.sid, self.epoch, backend))

    def closing(self, code: int, reason: str) -> None:
        """
        The backend closed.
        """
        self._flush()
        self._write(self.shared.closing(self.sid, self.epoch, code, reason))

    def end(self, code: int, reason: str, answer: tuple[int, str] | None) -> None:
        """
        The session ended: delete it, leaving C{answer} for a later resume
        through any node; its client, if on another node, is closed with
        C{code}.
        """
        self._flush()
        d = self.shared.end(self.sid, self.epoch, code, reason, answer)
        d.addErrback(self.cluster.writeFailed)

    def touch(self, now: float) -> None:
        """
        With the heartbeat: write the confirmations that came since the
        last write (the up mailbox is trimmed to them), or refresh the
        expiry of the session's keys when it is due (no write refreshed it
        lately, or it is in doubt: L{expiry}).
        """
        if self._upWrite is None and (self._upWaiters or self.delivered() > self.deliveredWritten):
            self._writeUp()
            return
        if self.expiry.due(now):
            self._write(self.shared.touch(self.sid))

    def expiryInDoubt(self) -> None:
        """
        Redis may have lost or rolled back this node's refreshes of the
        session's keys (it came back, or changed master, or this node was
        paused): the next write, or heartbeat, refreshes them.
        """
        self.expiry.doubt()

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
