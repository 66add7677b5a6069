"""
A session served on a node that does not own it.

When a client resumes, polls or sends through a gateway node other than the
one that pumps its session (its I{owner}), that node serves it from the
session's mailboxes in Redis (docs/architecture.md, "Several nodes"): what
the client sends is appended to the up mailbox, which the owner reads; what
the backend sent arrives as notifications from the owner and, after a gap,
is read from the down mailbox.  A L{RelaySession} presents the same face
to transports as a L{gateway.sessions.session.Session}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ..errors import GatewayError, LimitExceeded
from ..wire.protocol import (
    CLOSE_BUFFER_FULL,
    CLOSE_ENDED,
    CLOSE_SUPERSEDED,
    CLOSE_UNAVAILABLE,
    Ack,
    Close,
    Data,
    Inbox,
    Outbox,
    Welcome,
    shortId,
)
from ..sessions.session import PacketDispatch
from ..sessions.states import SessionState
from ..sessionmap._scripts import GAP, GONE
from .expiry import Expiry

__all__ = ["RelaySession", "GAP_RETRY", "GAP_PATIENCE"]

#: Seconds between attempts to append client messages that follow a gap.
GAP_RETRY = 0.02

#: Seconds a gap may last before the client is told to resume.
GAP_PATIENCE = 2.0


class RelaySession(PacketDispatch):
    """
    A session owned by another node, served here through its mailboxes.

    @ivar owner: the owning node's id.
    @ivar attached: whether this node holds the client's attachment (a
        relay made for a long-polling C{send} does not take it).
    @ivar expiry: this node's last refresh of the session's keys: its
        writes refresh them when due, as the owner's do (the owner's
        heartbeat keeps an idle session's), so that they outlive an owner
        that dies until this node takes the session over.
    """

    log = Logger()
    backend = None
    link = None

    def __init__(self, cluster, sid: str, secret: str, record) -> None:
        registry = cluster.registry
        config = registry.config
        self.cluster = cluster
        self.registry = registry
        self.sid = sid
        self.secret = secret
        self.owner = record.owner
        self.inbox = Inbox(record.upRecv)
        self.outbox = Outbox(config.maxBufferMessages, config.maxBufferBytes)
        self.outbox.sent = self.outbox.acked = record.downAcked
        self.closing: Close | None = Close(*record.closing) if record.closing else None
        self.transport: Any = None
        self.state = SessionState.DETACHED
        self.attached = False
        self.lastReceived = self.lastSent = registry.clock.seconds()
        self._queue: list[Data] = []
        self._pending: Deferred | None = None
        self._gapSince: float | None = None
        self._ackWrite: Deferred | None = None
        #: The client's acknowledgement last sent to Redis.
        self._ackSent = record.downAcked
        self._ackCall = None
        self._catchingUp = False
        #: The attachment (counted in Redis) this relay made.
        self.attachSeq = 0
        self.expiry = Expiry(registry.clock, cluster.shared.sessionTtl)

    def __repr__(self) -> str:
        return f"<RelaySession {shortId(self.sid)} owner={self.owner}>"

    @property
    def ackCount(self) -> int:
        """
        How many client messages may be acknowledged (all are in Redis).
        """
        return self.inbox.accepted

    async def load(self, received: int) -> None:
        """
        Read the backend messages after C{received} from the down mailbox.
        """
        outbox = self.outbox
        if received > outbox.sent:
            # The client holds messages that the owner pushed to it before
            # their write to Redis was done: they are delivered.
            outbox.sent = outbox.acked = received
        else:
            outbox.ack(received)
        for message in await self.cluster.shared.readDown(self.sid, outbox.sent):
            self._add(message)

    # Transports.
    def attach(self, transport, resumed: bool) -> None:
        """
        Like L{gateway.sessions.session.Session.attach}.
        """
        old, self.transport = self.transport, transport
        if old is not None and old is not transport:
            old.closeTransport(CLOSE_SUPERSEDED, "replaced by a newer connection")
        if self.state is not SessionState.ENDED:
            self.state = self.state.to(SessionState.ATTACHED)
        self.attached = True
        config = self.registry.config
        self.lastReceived = self.lastSent = self.registry.clock.seconds()
        transport.pushControl(
            Welcome(self.sid, self.secret, self.inbox.accepted, resumed, config.heartbeat, config.grace)
        )
        for message in self.outbox.unacknowledged():
            transport.pushData(message)
        if self.closing is not None:
            transport.pushControl(self.closing)

    def detach(self, transport, reason: str) -> None:
        """
        The client left this node: tell the owner, which starts the grace
        period.
        """
        if transport is not self.transport:
            return
        self.transport = None
        self._letGo()

    def abandon(self) -> None:
        """
        Taken (its attachment moved here in Redis) for a client connection
        that left before it was attached: let it go again.
        """
        if self.transport is None:
            self.attached = True
            self._letGo()

    def _letGo(self) -> None:
        if self.state is not SessionState.ENDED:
            self.state = self.state.to(SessionState.DETACHED)
        self.forget()
        if self.attached:
            self.attached = False
            d = self.cluster.shared.detach(self.sid)
            d.addErrback(self.cluster.writeFailed)

    def forget(self) -> None:
        """
        This node no longer relays the session (its client left, or the
        session was taken over here).
        """
        if self.cluster.relays.get(self.sid) is self:
            del self.cluster.relays[self.sid]
        if self._ackCall is not None and self._ackCall.active():
            self._ackCall.cancel()
        self._ackCall = None

    def orphaned(self) -> None:  # pragma: no cover - relays are never new
        self.detach(self.transport, "orphaned")

    # Packets from the client (L{PacketDispatch.packetReceived}).
    def dataReceived(self, message: Data) -> None:
        """
        Queue a client message for the up mailbox; what is queued goes in
        one script call at a time, and is acknowledged once it is there.

        Another node may still be writing the messages just before it (the
        client's previous send went there): a gap is retried every
        L{GAP_RETRY} seconds, and after L{GAP_PATIENCE} the client is told
        to resume (4503), which sets both ends straight.

        @raise LimitExceeded: over C{max_message_bytes}, or more than
            C{max_buffer_messages} waiting.
        """
        config = self.registry.config
        if len(message.payload) > config.maxMessageBytes:
            raise LimitExceeded(
                f"a message of {len(message.payload)} bytes is over the limit of {config.maxMessageBytes}")
        if message.seq <= self.inbox.accepted:
            self._scheduleAck()
            return
        if len(self._queue) >= config.maxBufferMessages:
            raise LimitExceeded(f"more than {config.maxBufferMessages} messages waiting for Redis")
        self._queue.append(message)
        if self._pending is None:
            self._pending = Deferred()
            self.registry.clock.callLater(0, self._append)

    def settled(self) -> Deferred:
        """
        @return: L{Deferred} firing once every message received so far is
            in the up mailbox (or refused).
        """
        d: Deferred = Deferred()
        if self._pending is None:
            d.callback(None)
        else:
            self._pending.addBoth(lambda r: (d.callback(None), r)[1])
        return d

    def _append(self) -> None:
        batch = [m for m in self._queue if m.seq > self.inbox.accepted]
        self._queue = batch
        if not batch:
            self._settle()
            return
        # The client's acknowledgement rides along, unless one is on its way.
        ack = None
        if self._ackWrite is None and self.outbox.acked > self._ackSent:
            ack = self._ackSent = self.outbox.acked
        d = self.cluster.shared.appendUp(self.sid, batch, acked=ack, refresh=self.expiry.due())
        d.addCallbacks(self._appended, self._appendFailed)

    def _settle(self) -> None:
        pending, self._pending = self._pending, None
        self._gapSince = None
        if pending is not None:
            pending.callback(None)
        if self.outbox.acked > self._ackSent and self.transport is not None:
            self.writeAck()  # none of the appends carried it

    def _appended(self, reply: tuple[int, int]) -> None:
        status, accepted = reply
        if status == GONE:
            # Ended, or Redis lost it (the owner writes it again): the
            # client resumes, and learns which.
            self._queue = []
            self._settle()
            self._close(CLOSE_UNAVAILABLE, "the session is not in Redis; resume")
            return
        if accepted > self.inbox.accepted:
            self.inbox.accepted = accepted
            self._scheduleAck()
        self._queue = [m for m in self._queue if m.seq > accepted]
        if status == GAP:
            now = self.registry.clock.seconds()
            if self._gapSince is None:
                self._gapSince = now
            if now - self._gapSince >= GAP_PATIENCE:
                self._queue = []
                self._settle()
                self._close(CLOSE_UNAVAILABLE, "messages went missing between gateway nodes; resume")
                return
            self.registry.clock.callLater(GAP_RETRY, self._append)
            return
        self._gapSince = None
        if self._queue:
            self._append()
        else:
            self._settle()

    def _appendFailed(self, failure) -> None:
        self.expiry.doubt()
        if not failure.check(GatewayError):
            self.log.failure("appending to the up mailbox failed", failure)
        self._queue = []
        self._settle()
        self._close(CLOSE_UNAVAILABLE, "the session store is unavailable; resume later")

    def ackReceived(self, ack: Ack) -> None:
        """
        The client has received C{ack.count} messages: trim the down
        mailbox and tell the owner (one write at a time).
        """
        if ack.count > self.outbox.sent:
            # The owner, or another node, delivered messages this node has
            # not seen yet: they are received, so skip them here.
            self.outbox.ack(self.outbox.sent)
            self.outbox.sent = self.outbox.acked = ack.count
            self.writeAck()
        elif ack.count > self.outbox.acked:
            self.outbox.ack(ack.count)
            self.writeAck()

    def writeAck(self) -> None:
        """
        Write the client's acknowledgements to Redis, one write at a time,
        the newest winning; while client messages are on their way to the
        up mailbox, with them (L{_append}, or after them: L{_settle}).
        """
        if self._ackWrite is not None or self._pending is not None:
            return
        count = self._ackSent = self.outbox.acked
        self._ackWrite = self.cluster.shared.acked(self.sid, count, refresh=self.expiry.due())

        def done(result):
            self._ackWrite = None
            if self.outbox.acked > self._ackSent and self.transport is not None:
                self.writeAck()
            return result

        def failed(failure):
            self.expiry.doubt()
            return failure

        self._ackWrite.addErrback(failed).addBoth(done).addErrback(self.cluster.writeFailed)

    def closeReceived(self, close: Close) -> None:
        """
        The client ends the session: the owner ends it.
        """
        d = self.cluster.shared.notify(self.sid, "owner", b"k|" + self.sid.encode("ascii"))
        d.addErrback(self.cluster.writeFailed)
        self._close(CLOSE_ENDED, "client closed the session")

    def _close(self, code: int, reason: str) -> None:
        transport = self.transport
        if transport is not None:
            transport.closeTransport(code, reason)
        self.detach(transport, reason)

    def _scheduleAck(self) -> None:
        if self._ackCall is None and self.transport is not None:
            self._ackCall = self.registry.clock.callLater(0, self._sendAck)

    def _sendAck(self) -> None:
        self._ackCall = None
        if self.transport is not None:
            self.transport.pushControl(Ack(self.inbox.accepted))
            self.lastSent = self.registry.clock.seconds()

    # From the owner.
    def downReceived(self, message: Data) -> None:
        """
        A backend message, notified by the owner: deliver it in order, or
        read the mailbox after a gap.
        """
        if message.seq == self.outbox.sent + 1:
            self._add(message)
        elif message.seq > self.outbox.sent + 1:
            self.catchUp()

    def _add(self, message: Data) -> None:
        if message.seq != self.outbox.sent + 1:
            return
        try:
            added = self.outbox.add(message.payload, message.isBinary)
        except LimitExceeded:
            self._close(CLOSE_BUFFER_FULL, "replay buffer limit exceeded")
            return
        if self.transport is not None:
            self.transport.pushData(added)
            self.lastSent = self.registry.clock.seconds()

    def catchUp(self) -> None:
        """
        Read what the down mailbox holds past what was delivered (after a
        gap, or once the subscription is back).
        """
        if self._catchingUp:
            return
        self._catchingUp = True
        d = self.cluster.shared.readDown(self.sid, self.outbox.sent)

        def read(messages):
            self._catchingUp = False
            for message in messages:
                self._add(message)

        def failed(failure):
            self._catchingUp = False
            return failure

        d.addCallbacks(read, failed).addErrback(self.cluster.writeFailed)

    def closingReceived(self, code: int, reason: str) -> None:
        """
        The backend closed: pass the closing packet on.
        """
        self.closing = Close(code, reason)
        if self.transport is not None:
            self.transport.pushControl(self.closing)

    def endReceived(self, code: int, reason: str) -> None:
        """
        The owner ended the session.
        """
        self.state = self.state.to(SessionState.ENDED)
        transport, self.transport = self.transport, None
        self.attached = False
        self.forget()
        if transport is not None:
            transport.closeTransport(code, reason)

    def supersededBy(self, node: str) -> None:
        """
        The client attached to C{node}: this node lets go.
        """
        self.attached = False
        transport = self.transport
        self.transport = None
        self.forget()
        if transport is not None:
            transport.letGo()

    def release(self) -> None:
        """
        Answer a held poll now (an upgrade's probe arrived elsewhere).
        """
        if self.transport is not None:
            self.transport.release()

    # Liveness.
    def sweep(self, now: float) -> None:
        """
        Heartbeats, as L{gateway.sessions.session.Session.sweep}.
        """
        transport = self.transport
        if transport is None:
            return
        config = self.registry.config
        if now - self.lastReceived >= config.heartbeatTimeout:
            transport.abortTransport()
            return
        if now - self.lastSent >= config.heartbeat:
            self._sendAck()

    def end(self, backendCode: int, reason: str, resumeCode: int, clientCode: int | None = CLOSE_ENDED) -> None:
        """
        Let go of the client (this node is shutting down): the owner keeps
        the session for a resume elsewhere.
        """
        transport = self.transport
        if transport is not None and clientCode is not None:
            transport.closeTransport(clientCode, reason)
        self.detach(transport, reason)
