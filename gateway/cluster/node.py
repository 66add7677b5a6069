"""
Several gateway nodes sharing sessions through Redis (docs/architecture.md,
"Several nodes").

A L{Cluster} is one node's part, and the session registry's
L{ISessionCluster} strategy when nodes share sessions: its id, its
heartbeat and leases on each shard of the map (its
L{gateway.cluster.liveness.Liveness} component), its subscription to its
own channel on each shard, the
L{gateway.cluster.mirror.Mirror} of each session it owns (which writes the
session's state to Redis as it changes), and the L{RelaySession}s of the
sessions it serves for other owners.  It resumes a session that another
node owns by relaying, and takes one over when its owner has died (its
L{gateway.cluster.takeover.Takeover} component).
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import Elsewhere, GatewayError, ResumeRefused
from ..wire.protocol import (
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    Data,
    Hello,
    shortId,
)
from ..interfaces import ISessionCluster, ISessionOpener
from .liveness import Liveness
from .mirror import Mirror
from .relay import RelaySession
from .takeover import Takeover, secretHash
from .turns import RebalanceTurns

if TYPE_CHECKING:
    from ..sessions.registry import SessionRegistry
    from ..sessions.session import Session

__all__ = ["Cluster"]


@implementer(ISessionCluster)
class Cluster:
    """
    This node's part in a cluster of gateway nodes sharing sessions.

    @ivar node: this node's id (random per process).
    @ivar relays: the sessions served here for other owners, by id.
    @ivar opener: what reopens a backend link for a takeover (the
        gateway's L{ISessionOpener}), and whose pools' connection counts
        are exchanged with the other nodes.
    """

    log = Logger()

    #: Sessions are shared with the other nodes.
    sharesSessions = True

    def __init__(self, registry: SessionRegistry, sessionMap, clock, *, nodeTtl: float,
                 node: str | None = None, opener: ISessionOpener | None = None) -> None:
        from ..sessionmap._subscription import Subscription

        self.registry = registry
        self.clock = clock
        self.node = node or secrets.token_hex(6)
        config = registry.config
        sessionTtl = max(config.grace * 2, config.heartbeatTimeout * 2, nodeTtl * 3)
        self.shared = sessionMap.sharedSessions(self.node, sessionTtl=sessionTtl, nodeTtl=nodeTtl)
        self.nodeTtl = nodeTtl
        #: This node's subscription to its channel on each shard.
        self.subscriptions = [
            Subscription(self.shared, self.noticeReceived, lambda i=i: self.resubscribed(i), shard=i)
            for i in range(len(self.shared.maps))]
        self.relays: dict[str, RelaySession] = {}
        self.opener = opener
        #: The heartbeat, and the lease on each shard.
        self.liveness = Liveness(self)
        #: The other live nodes' connections per backend at the last
        #: heartbeat, by node.
        self._remoteCounts: dict[str, dict[str, int]] = {}
        #: The live nodes' info at the last heartbeat that read it (L{nodes}).
        self._nodes: dict[str, dict[str, Any]] = {}
        self._nodesRead: float | None = None
        #: The live nodes whose shard list differs from this node's, with
        #: their ring's fingerprint (L{readNodes}).
        self.shardListDiffers: dict[str, str] = {}
        #: Resumes of sessions this node does not hold, and takeovers.
        self.takeover = Takeover(self)
        self._engineListener = None
        #: Which pools this node may rebalance now.
        self.turns = RebalanceTurns(self.shared)
        self._announced = False

    # Running.
    def start(self) -> Deferred:
        """
        Announce this node, subscribe to its channel on every shard and
        start the heartbeat.
        """
        self._announced = True
        for subscription in self.subscriptions:
            subscription.start()
        self.log.info("gateway node {node} shares its sessions through Redis", node=self.node)
        return self.liveness.start()

    def stop(self) -> Deferred:
        """
        Stop the heartbeat and say that this node is gone, so that its
        sessions are taken over at once.  A node that never started (its
        session map could not) says nothing: that would only connect to
        Redis once more, and log the failure the start reported again.
        """
        self.liveness.stop()
        if not self._announced:
            return gatherResults([s.stop() for s in self.subscriptions], consumeErrors=True)
        d = self.shared.leave()
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: gatherResults([s.stop() for s in self.subscriptions], consumeErrors=True))
        return d

    def leaseValid(self, sid: str | None = None) -> bool:
        """
        Whether this node's liveness is certain on the shard holding session
        C{sid} (the home shard by default): its last heartbeat there was
        written less than C{nodeTtl} ago.  While it is not, another node
        may have taken the shard's sessions, and this node forwards nothing
        of them read from Redis.
        """
        return self.liveness.of(sid).valid()

    def mayPump(self, sid: str | None = None) -> bool:
        """
        Whether this node may hand session C{sid}'s client messages to its
        backend: while its lease on the session's shard holds (its
        liveness is certain), Redis reachable or not.  Once the lease has
        run out another node may have taken the session over and be
        pumping it: then this node stops (L{Liveness}) until a heartbeat
        has confirmed which sessions it still owns there.
        """
        return self.leaseValid(sid)

    def justRecovered(self, sid: str | None = None) -> bool:
        """
        Whether this node lost touch with the shard holding session C{sid}
        less than C{nodeTtl} ago (or has not heard from it since): an owner
        may not have written its sessions again yet (Redis came back
        empty), so a session that Redis does not know may still be one, and
        a resume of it is told to try again (4503), not that it is unknown.
        """
        return self.liveness.of(sid).justRecovered()

    @property
    def healthy(self) -> bool:
        """
        Whether the home shard answers and the subscription there works
        (another shard's trouble touches only its own sessions, and shows
        in L{health}).
        """
        return self.liveness.home.trouble is None and self.subscriptions[0].healthy

    def health(self) -> dict[str, Any]:
        """
        @return: this node's view of the cluster, for the health endpoint:
            with several shards, each shard's state too, and the nodes that
            were given another list of shards.
        """
        def state(subscription) -> str:
            return "ok" if subscription.healthy else "wedged" if subscription.wedged else "down"

        leases = self.liveness.leases
        home = leases[0]
        health: dict[str, Any] = {
            "node": self.node,
            "redis": "ok" if home.trouble is None else home.trouble,
            "subscription": state(self.subscriptions[0]),
            "relayed": len(self.relays),
            "takeovers": self.takeover.count,
            "redis_commands": sum(m.commandsIssued for m in self.shared.maps),
        }
        if len(leases) > 1:
            health["shards"] = {
                lease.name: {"home": lease is home, "redis": "ok" if lease.trouble is None else lease.trouble,
                             "subscription": state(self.subscriptions[lease.index]),
                             "redis_commands": lease.map.commandsIssued}
                for lease in leases}
        if self.shardListDiffers:
            health["shard_list_differs"] = sorted(self.shardListDiffers)
        return health

    async def _heartbeat(self) -> None:
        """
        One heartbeat now (L{Liveness.beat}).
        """
        await self.liveness.beat()

    async def _revalidate(self, shard: int = 0) -> None:
        """
        Check the sessions owned here on shard C{shard} against Redis
        (L{Liveness.revalidate}).
        """
        await self.liveness.revalidate(self.liveness.leases[shard])

    async def exchangeCounts(self) -> None:
        """
        Publish this node's connections per backend and learn the others',
        so that least-connections and connection limits count the whole
        cluster (as of the last heartbeat).
        """
        pools = self.opener.pools if self.opener is not None else {}
        counts = {f"{p.name}/{b.name}": b.connections for p in pools.values() for b in p.backends}
        try:
            self._remoteCounts = await self.shared.exchangeCounts(counts)
        except GatewayError:
            return
        self._countRemote()

    def _countRemote(self) -> None:
        """
        Set each backend's C{remote} count: the sum of the other live
        nodes' connections to it.
        """
        sums: dict[str, int] = {}
        for counts in self._remoteCounts.values():
            for key, count in counts.items():
                sums[key] = sums.get(key, 0) + count
        pools = self.opener.pools if self.opener is not None else {}
        for pool in pools.values():
            for backend in pool.backends:
                backend.remote = sums.get(f"{pool.name}/{backend.name}", 0)

    def nodeDied(self, node: str) -> None:
        """
        C{node} is dead (a session was taken over from it, or its liveness
        expired): its connections, as of the last heartbeat, no longer
        count.  Its sessions taken over here are counted here; left
        uncorrected until the next heartbeat, they would count twice, and
        the mover would move them off their backend for balance.
        """
        if node != self.node and self._remoteCounts.pop(node, None) is not None:
            self._countRemote()

    async def readNodes(self) -> None:
        """
        Read what every live node said at its heartbeat, for L{nodes}: once
        per heartbeat, however often the status is asked for.  A node whose
        ring of shards differs from this one's is logged (once, and again
        if it changes): the two place sessions on different shards.
        """
        try:
            self._nodes = await self.shared.liveNodeInfo()
        except GatewayError:
            return
        self._nodesRead = self.clock.seconds()
        mine = self.shared.ring.fingerprint()
        differs = {}
        for node, info in self._nodes.items():
            theirs = info.get("ring")
            if node != self.node and isinstance(theirs, str) and theirs != mine:
                differs[node] = theirs
                if self.shardListDiffers.get(node) != theirs:
                    self.log.error(
                        "node {other} was given other Redis shards than node {node} (their ring"
                        " {theirs}, this one's {mine}): the two look for sessions on different"
                        " shards, so a session resumed through the other is lost; give every"
                        " node the same shard list (the same names, the same first one)",
                        other=node, node=self.node, theirs=theirs, mine=mine)
        self.shardListDiffers = differs

    def nodes(self) -> dict[str, Any]:
        """
        @return: the live nodes as of the last heartbeat (this one first,
            then by id), each with the sessions it held and those it
            relayed, and how many seconds ago they were read.
        """
        listed = [{"node": self.node, "self": True,
                   "sessions": len(self.registry.sessions), "relayed": len(self.relays)}]
        for node, info in sorted(self._nodes.items()):
            if node != self.node:
                listed.append({"node": node, "self": False, "sessions": info.get("sessions"),
                               "relayed": info.get("relayed")})
        age = None if self._nodesRead is None else max(0.0, self.clock.seconds() - self._nodesRead)
        return {"shared": True, "node": self.node, "nodes": listed, "age": age}

    def owned(self, shard: int | None = None):
        """
        @param shard: only those on this shard (by its index), or all.
        @return: the sessions owned here, each with its L{Mirror} (every
            one held but those ending here after Redis refused a write or
            while this node shuts down, which are written no more).
        """
        several = shard is not None and len(self.shared.maps) > 1
        for session in list(self.registry.sessions.values()):
            mirror = session.mirror
            if isinstance(mirror, Mirror) and not (several and self.shared.shardOf(session.sid) != shard):
                yield session, mirror

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
        if kind == b"E":
            if self._engineListener is not None:
                self._engineListener(rest)
            return
        if kind in (b"d", b"u"):
            sid, seq, binary, payload = rest.split(b"|", 3)
            message = Data(int(seq), payload, binary == b"1")
            if kind == b"d":
                relay = self.relays.get(sid.decode("ascii"))
                if relay is not None:
                    relay.downReceived(message)
            else:
                session = self.registry.sessions.get(sid.decode("ascii"))
                if session is not None and isinstance(session.mirror, Mirror):
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
            if session is not None and isinstance(session.mirror, Mirror) and seq > session.mirror.attachSeq:
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
            transport = target.transport if target is not None else None
            if transport is not None:
                transport.release()

    def listenEngines(self, listener) -> None:
        """
        Hand the Engine.IO notices on this node's channel (C{E|...},
        L{gateway.cluster.engines}) to C{listener}.
        """
        self._engineListener = listener

    def resubscribed(self, shard: int = 0) -> None:
        """
        The subscription on shard C{shard} is (back) up: check the sessions
        owned here on it (Redis may have restarted empty, or another node
        taken some) and read what the relays of its sessions may have
        missed.
        """
        Deferred.fromCoroutine(self._revalidate(shard)).addErrback(
            lambda f: self.log.failure("checking sessions after resubscribing failed", f))
        several = len(self.shared.maps) > 1
        for relay in list(self.relays.values()):
            if not several or self.shared.shardOf(relay.sid) == shard:
                relay.catchUp()

    # Sessions.
    async def register(self, session: Session, target: bytes, headers: dict[str, str],
                       origin: str | None, *, epoch: int | None = None) -> None:
        """
        Write a session's record, so that any node can serve it: a new one
        (epoch 1), or again (L{Mirror.resync}).  When Redis is unavailable
        the session works on this node only until it is written again.

        The write refreshes the expiry of the session's keys: the record's
        (its mailboxes, emptied, get theirs when made again).
        """
        mirror = session.mirror
        if not isinstance(mirror, Mirror):
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
                # What the backend has not confirmed is written after (Mirror.resync).
                epoch=epoch, upRecv=mirror.delivered(), upFwd=mirror.delivered(),
                downSent=session.outbox.sent, downAcked=session.outbox.acked,
                attached=remote or (self.node if session.transport is not None else ""),
                kind="" if remote else "ws" if session.transport is not None
                and session.transport.kind == "ws" else "poll",
            )
            if session.closing is not None:
                fields["closing"] = f"{session.closing.code}|{session.closing.reason}"
        sent = self.clock.seconds()
        try:
            await self.shared.create(session.sid, fields)
        except GatewayError:
            if epoch is not None:
                raise  # written again: the caller tries again later
            self.log.debug("session {sid} not shared: Redis unavailable", sid=shortId(session.sid))
            mirror.recorded = False
        else:
            mirror.recorded = True
            mirror.expiry.refreshed(sent)

    async def attachHere(self, session: Session, kind: str) -> None:
        """
        The client of a session owned here resumes here: take the
        attachment, and hand the backend what the client sent through
        other nodes.

        @raise Elsewhere: a poll while a live node holds it on a WebSocket.
        """
        mirror = session.mirror
        if not isinstance(mirror, Mirror):
            return  # no longer written to Redis: it is ending here
        if mirror.recorded and not self.leaseValid(session.sid):
            # Another node may own it by now: the client tries again,
            # elsewhere or here once this node knows.
            raise ResumeRefused(CLOSE_UNAVAILABLE, "this gateway node is not sure it still holds the"
                                " session; resume again")
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

    def resume(self, hello: Hello, kind: str) -> Deferred:
        """
        Resume a session this node does not hold: relay it from its live
        owner, or take it over from a dead one (L{Takeover.resume}).
        """
        return Deferred.fromCoroutine(self.takeover.resume(hello, kind))

    def lookup(self, sid: str, secret: str) -> Deferred:
        """
        A relay for a long-polling C{send} through this node
        (L{Takeover.lookup}).
        """
        return Deferred.fromCoroutine(self.takeover.lookup(sid, secret))

    def probe(self, sid: str) -> None:
        """
        Tell the node holding the session's poll to answer it (an upgrade).
        """
        d = self.shared.notify(sid, "attached", b"r|" + sid.encode("ascii"))
        d.addErrback(self.writeFailed)

    # The registry's strategy (ISessionCluster) for what is not above.
    def newSessionHeaders(self, sid: str) -> dict[str, str]:
        """
        @return: C{X-Session-Id}, and C{X-Session-Epoch: 1} (raised by every
            takeover).
        """
        return {"X-Session-Id": sid, "X-Session-Epoch": "1"}

    def relayHere(self, sid: str | None) -> RelaySession | None:
        """
        @return: the relay of session C{sid} if its client is attached
            here, else L{None}.
        """
        relay = self.relays.get(sid) if sid else None
        return relay if relay is not None and relay.attached else None

    def recordState(self, session: Session) -> None:
        """
        Nothing to do: the shared record is kept by the session's mirror.
        """

    def forget(self, session: Session) -> None:
        """
        Nothing to do: the session's mirror deleted its shared record.
        """

    def sweep(self, now: float) -> None:
        """
        Heartbeats of the sessions relayed here.
        """
        for relay in list(self.relays.values()):
            relay.sweep(now)

    def mayRebalance(self, pool: str) -> bool:
        """
        Whether this node has the turn to rebalance C{pool} (and its lease
        holds); asking says it wants it (L{RebalanceTurns}).
        """
        return self.turns.mayRebalance(pool) and self.leaseValid()

    def shutDown(self) -> None:
        """
        The sessions live on: each client is told to resume (1012,
        "service restart"), which it does through another node, and that
        node takes the session over; the backend links close with 1001.
        """
        for relay in list(self.relays.values()):
            relay.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1012)
        for session in list(self.registry.sessions.values()):
            session.handOff()
