"""
Several gateway nodes sharing sessions through Redis (docs/architecture.md,
"Several nodes").

A L{Cluster} is one node's part: its id and heartbeat, its subscription to
its own channel, the L{Mirror} of each session it owns (which writes the
session's state to Redis as it changes), and the L{RelaySession}s of the
sessions it serves for other owners.  It resumes a session that another
node owns by relaying, and takes one over when its owner has died.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import Elsewhere, GatewayError, LimitExceeded, NoBackendAvailable, ResumeRefused
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_RESUME_FAILED,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    Data,
    Hello,
    shortId,
)
from ..sessions.states import SessionState
from .relay import GAP_PATIENCE, GAP_RETRY, RelaySession
from ..sessionmap._scripts import FENCED, GONE

if TYPE_CHECKING:
    from ..sessions.session import Session, SessionRegistry

__all__ = ["Cluster", "Mirror", "secretHash"]


def secretHash(secret: str) -> str:
    """
    @return: what Redis keeps of a session secret (never the secret).
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _storeUnavailable(error: Exception) -> Exception:
    """
    @return: the refusal of a resume that needs Redis while it is away (the
        client tries again).
    """
    return ResumeRefused(CLOSE_UNAVAILABLE, f"the session store is unavailable: {error}")


def _checkSecret(expected: str, given: str) -> None:
    """
    @raise ResumeRefused: 4403 unless C{given} is C{expected} (compared in
        constant time).
    """
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise ResumeRefused(CLOSE_BAD_SECRET, "wrong session secret")


class Mirror:
    """
    The owner's writes of one session's state to Redis.

    Backend messages are written as they come (the client gets them at
    once, without waiting).  The count of client messages handed to the
    backend is written before they are acknowledged, one write at a time,
    so that a resume on any node never hears of fewer messages than the
    client was told.  Acknowledgements from the client are written one at
    a time, the newest winning.

    A write refused because another node took the session over (its epoch
    is newer) ends the session here at once, quietly: the other node pumps
    it now.

    @ivar epoch: the session's epoch when this node took it.
    @ivar remote: the node the client is attached to, when not this one.
    """

    def __init__(self, cluster: Cluster, session: Session, epoch: int) -> None:
        self.cluster = cluster
        self.shared = cluster.shared
        self.session = session
        self.sid = session.sid
        self.epoch = epoch
        self.remote: str | None = None
        self.attachSeq = 0
        self.upWritten = session.inbox.accepted
        self._upWrite: Deferred | None = None
        self._upWaiters: list[Deferred] = []
        self._ackWrite: Deferred | None = None
        self._acked = session.outbox.acked
        self.lastWrite = cluster.clock.seconds()
        self._catchingUp = False
        self._held: dict[int, Data] = {}
        self._heldSince = 0.0
        self._heldWaiters: list[Deferred] = []
        self._resyncing = False
        #: The session's target, backend headers and origin, for L{resync}.
        self.origin: tuple[bytes, dict[str, str], str | None] = (b"/", {}, None)

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

    async def resync(self) -> None:
        """
        Write the whole session again (record and the messages the client
        has not acknowledged), from what this node holds; once at a time.
        """
        if self._resyncing:
            return
        self._resyncing = True
        session = self.session
        try:
            if session.state is SessionState.ENDED:
                return
            self.cluster.log.info("session {sid}: its record was gone from Redis; writing it again",
                                  sid=shortId(self.sid))
            await self.cluster.register(session, *self.origin, epoch=self.epoch)
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
            self.upWritten = session.inbox.accepted
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

    def forwarded(self) -> Deferred:
        """
        Write how many client messages were handed to the backend.

        @return: L{Deferred} firing (with the count written, or L{None} when
            Redis could not be written: the session keeps flowing) once the
            count the session has now is written.
        """
        waiter: Deferred = Deferred()
        if self.upWritten >= self.session.inbox.accepted:
            waiter.callback(self.upWritten)
            return waiter
        self._upWaiters.append(waiter)
        if self._upWrite is None:
            self._writeUp()
        return waiter

    def _writeUp(self) -> None:
        count = self.session.inbox.accepted
        waiters, self._upWaiters = self._upWaiters, []

        def done(reply):
            # Written, or Redis is unavailable (reply None): either way the
            # session keeps flowing; the count is written again with the
            # next message.
            self._upWrite = None
            self.upWritten = max(self.upWritten, count)
            for waiter in waiters:
                waiter.callback(self.upWritten)
            if self._upWaiters:
                self._writeUp()

        d = self.shared.forwarded(self.sid, self.epoch, count)
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
        if self._ackWrite is not None:
            return
        written = self._acked
        d = self.shared.acked(self.sid, written)
        self._ackWrite = d

        def done(result):
            self._ackWrite = None
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

    def end(self, code: int, reason: str) -> None:
        """
        The session ended: delete it; its client, if on another node, is
        closed with C{code}.
        """
        d = self.shared.end(self.sid, self.epoch, code, reason)
        d.addErrback(self.cluster.writeFailed)

    def touch(self, now: float) -> None:
        """
        Keep the session's keys alive when nothing was written lately.
        """
        if now - self.lastWrite >= self.shared.sessionTtl / 3:
            self.lastWrite = now
            self.shared.touch(self.sid).addErrback(self.cluster.writeFailed)

    def upNotice(self, message: Data) -> None:
        """
        A client message accepted by another node: hand it to the backend
        in order, or read the up mailbox after a gap.
        """
        if not self.cluster.leaseValid():
            return  # read from the mailbox once this node is sure it owns it
        accepted = self.session.inbox.accepted
        if message.seq == accepted + 1:
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
        while self._held and self.cluster.mayPump():
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

    def catchUp(self) -> Deferred:
        """
        Hand the backend what the up mailbox holds past what it was given.

        @return: L{Deferred} firing when done.
        """
        if self._catchingUp or not self.cluster.leaseValid():
            return succeed(None)
        self._catchingUp = True
        d = self.shared.readUp(self.sid, self.session.inbox.accepted)

        def read(messages):
            self._catchingUp = False
            for message in messages:
                if message.seq == self.session.inbox.accepted + 1:
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


class Cluster:
    """
    This node's part in a cluster of gateway nodes sharing sessions.

    @ivar node: this node's id (random per process).
    @ivar relays: the sessions served here for other owners, by id.
    """

    log = Logger()

    def __init__(self, registry: SessionRegistry, sessionMap, clock, *, nodeTtl: float,
                 node: str | None = None) -> None:
        from ..sessionmap._shared import Subscription

        self.registry = registry
        self.clock = clock
        self.node = node or secrets.token_hex(6)
        config = registry.config
        sessionTtl = max(config.grace * 2, config.heartbeatTimeout * 2, nodeTtl * 3)
        self.shared = sessionMap.sharedSessions(self.node, sessionTtl=sessionTtl, nodeTtl=nodeTtl)
        self.nodeTtl = nodeTtl
        self.subscription = Subscription(self.shared, self.noticeReceived, self.resubscribed)
        self.relays: dict[str, RelaySession] = {}
        self.opener = None  # set by the gateway: reopens a backend link
        self._leaseUntil = 0.0
        self._revalidating = False
        self._heartbeats: LoopingCall | None = None
        self._beating = False
        self._redisTrouble: str | None = None
        self.takeovers = 0

    # Running.
    def start(self) -> Deferred:
        """
        Announce this node, subscribe to its channel and start the
        heartbeat.
        """
        self.subscription.start()
        self._heartbeats = LoopingCall(self.heartbeat)
        self._heartbeats.clock = self.clock
        self._heartbeats.start(self.nodeTtl / 3, now=False).addErrback(
            lambda f: self.log.failure("cluster heartbeat failed", f))
        self.log.info("gateway node {node} shares its sessions through Redis", node=self.node)
        return self._beat()

    def stop(self) -> Deferred:
        """
        Stop the heartbeat and say that this node is gone, so that its
        sessions are taken over at once.
        """
        if self._heartbeats is not None and self._heartbeats.running:
            self._heartbeats.stop()
        self._leaseUntil = 0.0  # forward nothing more from Redis
        d = self.shared.leave()
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: self.subscription.stop())
        return d

    def leaseValid(self) -> bool:
        """
        Whether this node's liveness in Redis is certain (its last heartbeat
        was written less than C{nodeTtl} ago): while it is not, another node
        may have taken its sessions, and it forwards nothing read from
        Redis.
        """
        return not self._revalidating and self.clock.seconds() < self._leaseUntil

    def mayPump(self) -> bool:
        """
        Whether this node may hand its own clients' messages to backends:
        while its liveness is certain, and while Redis is known to be away
        (no other node can take a session over then, and attached sessions
        keep flowing).  Not after a pause, until a heartbeat has confirmed
        which sessions it still owns.
        """
        return self.leaseValid() or self._redisTrouble is not None

    @property
    def healthy(self) -> bool:
        """
        Whether Redis answers and the subscription works.
        """
        return self._redisTrouble is None and self.subscription.healthy

    def health(self) -> dict[str, Any]:
        """
        @return: this node's view of the cluster, for the health endpoint.
        """
        return {
            "node": self.node,
            "redis": "ok" if self._redisTrouble is None else self._redisTrouble,
            "subscription": "ok" if self.subscription.healthy else (
                "wedged" if self.subscription.wedged else "down"),
            "relayed": len(self.relays),
            "takeovers": self.takeovers,
            "redis_commands": self.shared.map.commandsIssued,
        }

    def heartbeat(self) -> None:
        """
        Every C{nodeTtl / 3}: write this node's liveness, check the
        subscription, and look after the sessions that depend on other
        nodes.
        """
        self._beat().addErrback(lambda f: self.log.failure("cluster heartbeat failed", f))

    def _beat(self) -> Deferred:
        return Deferred.fromCoroutine(self._heartbeat())

    async def _heartbeat(self) -> None:
        if self._beating:
            return
        self._beating = True
        try:
            sent = self.clock.seconds()
            try:
                await self.shared.heartbeat({"sessions": len(self.registry.sessions),
                                             "relayed": len(self.relays)})
            except GatewayError as e:
                if self._redisTrouble is None:
                    self.log.warn("node {node}: cannot reach Redis ({error}): attached sessions"
                                  " keep flowing; resumes on other nodes and takeovers wait",
                                  node=self.node, error=str(e))
                self._redisTrouble = str(e)
                return
            wasValid = self.leaseValid()
            if self._redisTrouble is not None or not wasValid:
                # Not sure yet which sessions are still ours: pump nothing
                # until each has been checked.
                self._revalidating = True
                self._leaseUntil = sent + self.nodeTtl
                self._redisTrouble = None
                try:
                    await self._revalidate()
                finally:
                    self._revalidating = False
                for session in list(self.registry.sessions.values()):
                    if session.mirror is not None and session.state is not SessionState.ENDED:
                        session.mirror.catchUp()
            self._leaseUntil = sent + self.nodeTtl
            self.subscription.check()
            await self._exchangeCounts()
            await self._watchPeers()
            now = self.clock.seconds()
            for session in list(self.registry.sessions.values()):
                if session.mirror is not None:
                    session.mirror.touch(now)
        finally:
            self._beating = False

    async def _exchangeCounts(self) -> None:
        """
        Publish this node's connections per backend and learn the others',
        so that least-connections and connection limits count the whole
        cluster (as of the last heartbeat).
        """
        pools = self.opener.service.pools if self.opener is not None else {}
        counts = {f"{p.name}/{b.name}": b.connections for p in pools.values() for b in p.backends}
        try:
            others = await self.shared.exchangeCounts(counts)
        except GatewayError:
            return
        for pool in pools.values():
            for backend in pool.backends:
                backend.remote = others.get(f"{pool.name}/{backend.name}", 0)

    async def _revalidate(self) -> None:
        """
        After Redis trouble or a pause: end here the sessions that another
        node has taken, and read what was missed.
        """
        for session in list(self.registry.sessions.values()):
            mirror = session.mirror
            if mirror is None:
                continue
            try:
                ownership = await self.shared.ownership(session.sid)
            except GatewayError:
                return
            if ownership is None:
                await mirror.resync()
            elif ownership != (self.node, mirror.epoch):
                session.fenced(True)
            else:
                mirror.catchUp()

    async def _watchPeers(self) -> None:
        """
        Take over the relayed sessions whose owner died; treat as detached
        the owned sessions whose client's node died.
        """
        nodes = {r.owner for r in self.relays.values() if r.attached}
        nodes |= {s.mirror.remote for s in self.registry.sessions.values()
                  if s.mirror is not None and s.mirror.remote}
        if not nodes:
            return
        alive = set(await self.shared.liveNodes())
        for relay in list(self.relays.values()):
            if relay.attached and relay.owner not in alive and relay.transport is not None:
                Deferred.fromCoroutine(self._adoptRelay(relay)).addErrback(
                    lambda f: self.log.failure("taking a session over failed", f))
        for session in list(self.registry.sessions.values()):
            mirror = session.mirror
            if mirror is not None and mirror.remote and mirror.remote not in alive:
                session.detachedElsewhere(mirror.remote)

    def writeFailed(self, failure) -> None:
        """
        The errback of every write: Redis outages are logged once by the
        map; anything else is a bug, logged whole.
        """
        if not failure.check(GatewayError):
            self.log.failure("a shared session write failed", failure)

    # Notifications.
    def noticeReceived(self, data: bytes) -> None:
        """
        A notification on this node's channel (see
        L{gateway.sessionmap._scripts}).
        """
        kind, _, rest = data.partition(b"|")
        if kind in (b"d", b"u"):
            sid, seq, binary, payload = rest.split(b"|", 3)
            message = Data(int(seq), payload, binary == b"1")
            if kind == b"d":
                relay = self.relays.get(sid.decode("ascii"))
                if relay is not None:
                    relay.downReceived(message)
            else:
                session = self.registry.sessions.get(sid.decode("ascii"))
                if session is not None and session.mirror is not None:
                    session.mirror.upNotice(message)
            return
        sid, _, rest = rest.partition(b"|")
        key = sid.decode("ascii", "replace")
        session = self.registry.sessions.get(key)
        relay = self.relays.get(key)
        if kind == b"a":
            if session is not None:
                session.remoteAcked(int(rest))
        elif kind == b"t":
            node, _, n = rest.decode("ascii", "replace").partition("|")
            seq = int(n or 0)
            if node == self.node:
                return
            if session is not None and session.mirror is not None and seq > session.mirror.attachSeq:
                session.mirror.attachSeq = seq
                session.attachedElsewhere(node)
            if relay is not None and seq > relay.attachSeq:
                relay.supersededBy(node)
        elif kind == b"x":
            if session is not None:
                session.detachedElsewhere(rest.decode("ascii", "replace"))
        elif kind in (b"c", b"e"):
            code, _, reason = rest.partition(b"|")
            if relay is not None:
                text = reason.decode("utf-8", "replace")
                if kind == b"c":
                    relay.closingReceived(int(code), text)
                else:
                    relay.endReceived(int(code), text)
        elif kind == b"k":
            if session is not None:
                session.closeReceived(None)
        elif kind == b"r":
            target = relay if relay is not None else session
            release = getattr(getattr(target, "transport", None), "release", None)
            if release is not None:
                release()

    def resubscribed(self) -> None:
        """
        The subscription is (back) up: check the sessions owned here (Redis
        may have restarted empty, or another node taken some) and read what
        may have been missed.
        """
        Deferred.fromCoroutine(self._revalidate()).addErrback(
            lambda f: self.log.failure("checking sessions after resubscribing failed", f))
        for relay in list(self.relays.values()):
            relay.catchUp()

    # Sessions.
    async def register(self, session: Session, target: bytes, headers: dict[str, str],
                       origin: str | None, *, epoch: int | None = None) -> None:
        """
        Write a session's record, so that any node can serve it: a new one
        (epoch 1), or again (L{Mirror.resync}).  When Redis is unavailable
        the session works on this node only until it is written again.
        """
        mirror = session.mirror
        if mirror is None:
            mirror = session.mirror = Mirror(self, session, 1)
        mirror.origin = (target, headers, origin)
        backend = session.backend
        fields: dict[str, Any] = {
            "secret": secretHash(session.secret), "pool": session.pool.name,
            "backend": backend.name if backend is not None else "",
            "target": target, "headers": headers, "origin": origin or "",
            "kind": "", "created": f"{session.created:.3f}",
        }
        if epoch is not None:
            remote = mirror.remote
            fields.update(
                epoch=epoch, upRecv=session.inbox.accepted, upFwd=session.inbox.accepted,
                downSent=session.outbox.sent, downAcked=session.outbox.acked,
                attached=remote or (self.node if session.transport is not None else ""),
                kind="" if remote else "ws" if session.transport is not None
                and not hasattr(session.transport, "letGo") else "poll",
            )
            if session.closing is not None:
                fields["closing"] = f"{session.closing.code}|{session.closing.reason}"
        try:
            await self.shared.create(session.sid, fields)
        except GatewayError:
            self.log.debug("session {sid} not shared: Redis unavailable", sid=shortId(session.sid))

    async def attachHere(self, session: Session, kind: str) -> None:
        """
        The client of a session owned here resumes here: take the
        attachment, and hand the backend what the client sent through
        other nodes.

        @raise Elsewhere: a poll while a live node holds it on a WebSocket.
        """
        mirror = session.mirror
        if mirror is None:
            return
        try:
            status = await self.shared.attach(session.sid, kind)
        except GatewayError:
            return  # Redis is unavailable: serve it from what this node has
        if status[0] == "elsewhere":
            raise Elsewhere("the session is on a WebSocket on another node")
        if status[0] != "ok":
            return
        record = status[2]
        mirror.remote = None
        mirror.attachSeq = max(mirror.attachSeq, record.attachSeq)
        if record.upRecv > session.inbox.accepted:
            await mirror.catchUp()

    async def resume(self, hello: Hello, kind: str) -> Any:
        """
        Resume a session this node does not hold: relay it from its live
        owner, or take it over from a dead one.

        @raise ResumeRefused: unknown or expired, wrong secret, or a count
            that cannot be honoured.
        @raise Elsewhere: see L{attachHere}.
        """
        sid = hello.sid
        try:
            status = await self.shared.attach(sid, kind)
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if status[0] == "elsewhere":
            raise Elsewhere("the session is on a WebSocket on another node")
        if status[0] != "ok":
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, "unknown session")
        _, alive, record = status
        _checkSecret(record.secret, secretHash(hello.secret or ""))
        if hello.received < record.downAcked:
            raise ResumeRefused(
                CLOSE_RESUME_FAILED,
                f"cannot resume from message {hello.received}: messages {record.downAcked + 1}"
                f" to {record.downSent} are held",
            )
        if alive and record.owner != self.node:
            relay = RelaySession(self, sid, hello.secret, record)
            relay.attachSeq = record.attachSeq
            await relay.load(hello.received)
            old = self.relays.get(sid)
            if old is not None and old is not relay:
                old.supersededBy(self.node)
            self.relays[sid] = relay
            if hello.received > record.downAcked:
                relay._writeAck()
            return relay
        return await self.takeOver(sid, hello.secret, hello.received)

    async def lookup(self, sid: str, secret: str) -> RelaySession:
        """
        A relay for a long-polling C{send} through this node (which does not
        take the client's attachment).

        @raise ResumeRefused: unknown, or wrong secret.
        """
        relay = self.relays.get(sid)
        if relay is not None:
            _checkSecret(relay.secret, secret)
            return relay
        try:
            record = await self.shared.read(sid)
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if record is None:
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, "unknown session")
        _checkSecret(record.secret, secretHash(secret))
        relay = RelaySession(self, sid, secret, record)
        relay.outbox.sent = record.downSent
        relay.outbox.acked = record.downAcked
        return relay

    async def takeOver(self, sid: str, secret: str, received: int) -> Session:
        """
        Become the owner of a session whose owner died: a new epoch (which
        fences the old owner), a new backend connection to the same backend
        (C{X-Session-Resumed: 1}), and the state read from the mailboxes.

        @raise ResumeRefused: when it cannot be taken (gone, or its backend
            cannot be reached).
        """
        try:
            status = await self.shared.takeOver(sid)
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if status[0] == "alive":
            raise ResumeRefused(CLOSE_UNAVAILABLE, "the session's node is alive again; resume again")
        if status[0] != "ok":
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, "unknown session")
        record = status[1]
        registry = self.registry
        existing = registry.sessions.get(sid)
        if existing is not None:
            return existing
        pool = self.opener.pool(record.pool) if self.opener is not None else None
        if pool is None:
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, f"the session's pool {record.pool!r} is not here")
        link = None
        if record.closing is None:
            headers = dict(record.headers)
            headers["X-Session-Resumed"] = "1"
            headers["X-Session-Epoch"] = str(record.epoch)
            # What the gateway knows the backend got, and what it got from
            # the backend: a backend that keeps its messages skips the
            # first and sends again what came after the second.
            headers["X-Session-Delivered"] = str(record.upFwd)
            headers["X-Session-Received"] = str(max(record.downSent, received))
            try:
                backend, link = await self.opener.reopen(pool, record.backend, record.target,
                                                         headers, record.origin)
            except (NoBackendAvailable, GatewayError) as e:
                raise ResumeRefused(CLOSE_UNAVAILABLE, f"the session's backend cannot be reached: {e}") from None
        try:
            down = await self.shared.readDown(sid, record.downAcked)
            up = await self.shared.readUp(sid, record.upFwd)
        except GatewayError as e:
            if link is not None:
                link.closeLink(1001, "session takeover failed")
            raise _storeUnavailable(e) from None
        existing = registry.sessions.get(sid)
        if existing is not None:  # pragma: no cover - two resumes at once
            if link is not None:
                link.closeLink(1001, "session taken over twice")
            return existing
        session = registry.adopt(sid, secret, pool, link, record, down, received)
        session.mirror = Mirror(self, session, record.epoch)
        session.mirror.origin = session.origin = (record.target, record.headers, record.origin)
        session.mirror.attachSeq = record.attachSeq
        if link is not None:
            link.bind(session, backend)
        self.takeovers += 1
        self.log.info("node {node} took session {sid} over (epoch {epoch}) from {owner}",
                      node=self.node, sid=shortId(sid), epoch=record.epoch, owner=record.owner)
        for message in up:
            if message.seq == session.inbox.accepted + 1:
                session.forward(message)
        session.mirror.forwarded()
        return session

    async def _adoptRelay(self, relay: RelaySession) -> None:
        """
        The owner of a session relayed here died: take it over here, with
        its client staying connected.
        """
        transport = relay.transport
        try:
            session = await self.takeOver(relay.sid, relay.secret, relay.outbox.acked)
        except GatewayError as e:
            self.log.info("session {sid}: takeover failed: {e}", sid=shortId(relay.sid), e=str(e))
            return
        if relay.transport is not transport or transport is None:
            return
        relay.transport = None
        relay._forget()
        transport.session = session
        # Deliver from what the client has received (no welcome: the client
        # stays on this connection, and its counts carry on).
        session.adoptTransport(transport, relay.outbox.sent)

    def probe(self, sid: str) -> None:
        """
        Tell the node holding the session's poll to answer it (an upgrade).
        """
        d = self.shared.notify(sid, "attached", b"r|" + sid.encode("ascii"))
        d.addErrback(self.writeFailed)

