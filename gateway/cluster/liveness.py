"""
A node's liveness on each shard of the Redis session map (docs/architecture.md,
"Several nodes"): its heartbeat, written to every shard, and the lease
each heartbeat gives it there (L{ShardLease}); what the node does when a
lease runs out or comes back; and the watch on the other nodes its
sessions depend on.  L{Liveness} is the L{gateway.cluster.node.Cluster}'s
component for this job.

Another node may take a session over only once the owner's liveness has
expired on the shard holding the session (that shard's scripts check it),
so each shard's lease is the owner's alone to keep: a shard that does not
answer suspends only the sessions it holds.  The registry of nodes, their
connection counts and rebalancing turns are on the home shard: while it
is away the node keeps the last counts it read, and rebalances nothing.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..errors import GatewayError
from ..sessions.states import SessionState

__all__ = ["REVALIDATE_AT_ONCE", "Liveness", "ShardLease"]

#: The most sessions whose ownership is read at once after trouble on a
#: shard (L{Liveness.revalidate}): their reads go out together (pipelined
#: on the map's connections), so that checking thousands of sessions takes
#: a few round trips, not one each, well within a lease.
REVALIDATE_AT_ONCE = 512


class ShardLease:
    """
    This node's lease on one shard: its liveness there is certain until
    L{until} (C{node_ttl} after its last heartbeat there was sent).

    @ivar index: the shard's place in the shared sessions' C{maps}.
    @ivar map: the shard's map.
    @ivar trouble: why the last heartbeat there failed, or L{None}.
    @ivar suspended: whether the sessions it holds were suspended when the
        lease ran out (until a heartbeat confirms which are still ours).
    @ivar revalidating: while the owned sessions there are being checked.
    @ivar masterSeen: the shard's count of master changes when its
        sessions were last checked.
    @ivar renewing: while a heartbeat there is under way (with the check
        of the sessions it may lead to).
    """

    def __init__(self, index: int, redisMap: Any, clock, nodeTtl: float) -> None:
        self.index = index
        self.map = redisMap
        self.clock = clock
        self.nodeTtl = nodeTtl
        self.until = 0.0
        self.trouble: str | None = None
        self.recoveredAt = float("-inf")
        self.suspended = False
        self.revalidating = False
        self.masterSeen = redisMap.masterChanges
        self.renewing = False
        self.timer: Any = None

    @property
    def name(self) -> str:
        """
        The shard's name.
        """
        return self.map.name

    def valid(self) -> bool:
        """
        Whether this node's liveness on the shard is certain now (and its
        sessions there are not being checked).
        """
        return not self.revalidating and self.clock.seconds() < self.until

    def justRecovered(self) -> bool:
        """
        Whether the shard was out of reach less than C{node_ttl} ago (or
        still is): an owner may not have written its sessions there again.
        """
        return self.trouble is not None or self.clock.seconds() - self.recoveredAt < self.nodeTtl


class Liveness:
    """
    The heartbeat and the leases of one node, one lease per shard.

    @ivar leases: by shard, the home shard's first.
    """

    log = Logger()

    def __init__(self, cluster: Any) -> None:
        """
        @param cluster: this node's L{gateway.cluster.node.Cluster} (its
            store, subscriptions, sessions, relays, turns and counts).
        """
        self.cluster = cluster
        self.leases = [ShardLease(i, m, cluster.clock, cluster.nodeTtl)
                       for i, m in enumerate(cluster.shared.maps)]
        self.home = self.leases[0]
        self._loop: LoopingCall | None = None
        self._beating = False

    def of(self, sid: str | None) -> ShardLease:
        """
        @return: the lease on the shard holding session C{sid} (the home
            shard's for L{None}).
        """
        if sid is None or len(self.leases) == 1:
            return self.home
        return self.leases[self.cluster.shared.shardOf(sid)]

    def _where(self, lease: ShardLease) -> str:
        return "Redis" if len(self.leases) == 1 else f"Redis shard {lease.name}"

    def start(self) -> Deferred:
        """
        Beat now, and every C{node_ttl / 3}.
        """
        cluster = self.cluster
        self._loop = LoopingCall(self.heartbeat)
        self._loop.clock = cluster.clock
        self._loop.start(cluster.nodeTtl / 3, now=False).addErrback(
            lambda f: self.log.failure("cluster heartbeat failed", f))
        return self.beat()

    def stop(self) -> None:
        """
        Beat no more, and trust no lease (forward nothing more from Redis).
        """
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for lease in self.leases:
            if lease.timer is not None and lease.timer.active():
                lease.timer.cancel()
            lease.timer = None
            lease.until = 0.0

    def heartbeat(self) -> None:
        """
        Every C{node_ttl / 3}: see L{beat}.
        """
        self.beat().addErrback(lambda f: self.log.failure("cluster heartbeat failed", f))

    def beat(self) -> Deferred:
        """
        Write this node's liveness to every shard at once (renewing each
        lease that answers); then, unless an earlier beat's upkeep is still
        under way, check the subscriptions, exchange the counts and turns
        on the home shard, and look after the sessions that depend on
        other nodes.
        """
        return Deferred.fromCoroutine(self._beat())

    async def _beat(self) -> None:
        cluster = self.cluster
        sent = cluster.clock.seconds()
        info = {"sessions": len(cluster.registry.sessions), "relayed": len(cluster.relays),
                "ring": cluster.shared.ring.fingerprint()}
        renewals = gatherResults([self._renew(lease, sent, info) for lease in self.leases],
                                 consumeErrors=True)
        if self._beating:
            # The upkeep of an earlier beat (several round trips, one after
            # the other, on a node that may be busy) is still under way: the
            # leases are renewed all the same, on time.  Renewed only once
            # the upkeep was done, a lease would run out on a starved node
            # although Redis answers every heartbeat.
            await renewals
            return
        self._beating = True
        try:
            answered = await renewals
            if answered[0]:
                await cluster.exchangeCounts()
                await cluster.turns.renew()
            await self.watchPeers()
            if answered[0]:
                await cluster.readNodes()
            now = cluster.clock.seconds()
            for session, mirror in cluster.owned():
                if answered[self.of(session.sid).index]:
                    mirror.touch(now)
        finally:
            self._beating = False

    def _renew(self, lease: ShardLease, sent: float, info: dict[str, Any]) -> Deferred[bool]:
        """
        The heartbeat on one shard (L{_beatShard}), unless the previous one
        there is still under way (waiting for its answer, within the
        map's C{timeout}, or checking the shard's sessions).

        @return: L{Deferred} firing with whether the shard answered this
            heartbeat.
        """
        if lease.renewing:
            return succeed(False)
        lease.renewing = True

        def done(result: object) -> object:
            lease.renewing = False
            return result

        return Deferred.fromCoroutine(self._beatShard(lease, sent, info)).addBoth(done)

    async def _beatShard(self, lease: ShardLease, sent: float, info: dict[str, Any]) -> bool:
        """
        The heartbeat on one shard; after trouble there, a pause, or a
        change of master, the sessions it holds are checked before the
        lease is trusted again.

        @return: whether the shard answered.
        """
        cluster = self.cluster
        try:
            await cluster.shared.heartbeat(info, lease.index)
        except GatewayError as e:
            if lease.trouble is None:
                self.log.warn("node {node}: cannot reach {where} ({error}): attached sessions"
                              " keep flowing while its lease holds; resumes on other nodes and"
                              " takeovers wait", node=cluster.node, where=self._where(lease),
                              error=str(e))
            lease.trouble = str(e)
            return False
        wasValid = lease.valid()
        moved = lease.map.masterChanges != lease.masterSeen
        if lease.trouble is not None or not wasValid or moved:
            # Not sure yet which sessions are still ours: pump nothing
            # until each has been checked.
            if lease.trouble is not None:
                lease.recoveredAt = cluster.clock.seconds()
            lease.revalidating = True
            lease.until = sent + cluster.nodeTtl
            lease.trouble = None
            try:
                await self.revalidate(lease)
            finally:
                lease.revalidating = False
            suspended, lease.suspended = lease.suspended, False
            for session, mirror in cluster.owned(lease.index):
                if session.state is not SessionState.ENDED:
                    if suspended:
                        session.unsuspend()
                    mirror.catchUp()
        lease.until = sent + cluster.nodeTtl
        self._arm(lease)
        cluster.subscriptions[lease.index].check()
        return True

    def _arm(self, lease: ShardLease) -> None:
        """
        Watch the lease just renewed: L{_expired} runs when it ends,
        unless a heartbeat renews it first.
        """
        delay = max(0.0, lease.until - self.cluster.clock.seconds())
        if lease.timer is not None and lease.timer.active():
            lease.timer.reset(delay)
        else:
            lease.timer = self.cluster.clock.callLater(delay, self._expired, lease)

    def _expired(self, lease: ShardLease) -> None:
        """
        The lease on a shard ran out (it did not answer the heartbeats, or
        this node was paused): another node may take the sessions owned
        here on that shard over now, and only it may pump them.  Each
        client is closed with 4503 (it resumes through another node, which
        takes the session over, or here once this node is sure again);
        reading from the backend pauses, and client messages wait,
        unacknowledged.  A session never written to Redis cannot be taken
        and keeps flowing.
        """
        lease.timer = None
        if lease.valid():
            self._arm(lease)
            return
        cluster = self.cluster
        if not lease.suspended:
            on = "" if len(self.leases) == 1 else f" on shard {lease.name}"
            self.log.warn("node {node}: lease expired{on} ({error}): its clients are told to resume"
                          " elsewhere, and its sessions wait", node=cluster.node, on=on,
                          error=lease.trouble or "no heartbeat")
        lease.suspended = True
        if lease is self.home:
            cluster.turns.lost()
        for session, mirror in cluster.owned(lease.index):
            if mirror.recorded:
                session.suspend()

    async def revalidate(self, lease: ShardLease) -> None:
        """
        After trouble on a shard or a pause: end here the sessions on it
        that another node has taken, and read what was missed; the expiry
        of every one's keys is refreshed with its next write or heartbeat.

        After the shard's master moved (a Sentinel failover), the new
        master may hold an older copy of a record than the old one
        acknowledged (replication is asynchronous): every session there
        still owned here, by an epoch no newer than this node's, is written
        whole again.  The check is done again at the next heartbeat until
        it got through.
        """
        cluster = self.cluster
        masterChanges = lease.map.masterChanges
        rewrite = masterChanges != lease.masterSeen
        for _, mirror in cluster.owned(lease.index):
            # What Redis holds now may not have this node's last refreshes
            # of the keys' expiry: the next write or heartbeat refreshes.
            mirror.expiryInDoubt()
        owned = list(cluster.owned(lease.index))
        for start in range(0, len(owned), REVALIDATE_AT_ONCE):
            chunk = owned[start:start + REVALIDATE_AT_ONCE]
            try:
                answers = await gatherResults([cluster.shared.ownership(s.sid) for s, _ in chunk],
                                              consumeErrors=True)
            except FirstError as e:
                if e.subFailure.check(GatewayError):
                    return
                e.subFailure.raiseException()
            for (session, mirror), ownership in zip(chunk, answers):
                if session.mirror is mirror and not await self._settle(session, mirror, ownership, rewrite):
                    return
        lease.masterSeen = masterChanges

    async def _settle(self, session: Any, mirror: Any, ownership: tuple[str, int] | None,
                      rewrite: bool) -> bool:
        """
        Act on what Redis says of a session owned here (L{revalidate}).

        @return: whether Redis could be written as needed (if not, the
            check is done again at the next heartbeat).
        """
        cluster = self.cluster
        if ownership is None:
            try:
                await mirror.resync()
            except GatewayError:
                return False
        elif rewrite and ownership[1] <= mirror.epoch:
            # What other nodes accepted first: writing it whole
            # empties the up mailbox.
            try:
                await mirror.catchUp(owned=True)
                await mirror.resync("the Redis master moved")
            except GatewayError:
                return False  # not written: again at the next heartbeat
        elif ownership != (cluster.node, mirror.epoch):
            session.fenced(True)
        else:
            mirror.catchUp()
        return True

    async def watchPeers(self) -> None:
        """
        Take over the relayed sessions whose owner died; treat as detached
        the owned sessions whose client's node died.  A node is dead for a
        session when its liveness has expired on the session's shard (what
        that shard's takeover script checks).
        """
        cluster = self.cluster
        relays = [r for r in cluster.relays.values() if r.attached]
        remote = [(s, m) for s, m in cluster.owned() if m.remote]
        wanted: dict[int, set[str]] = {}
        for relay in relays:
            wanted.setdefault(self.of(relay.sid).index, set()).add(relay.owner)
        for session, mirror in remote:
            wanted.setdefault(self.of(session.sid).index, set()).add(mirror.remote)
        for shard, nodes in sorted(wanted.items()):
            try:
                alive = await cluster.shared.aliveOn(shard, nodes)
            except GatewayError:
                continue  # the shard is away: its sessions wait for it
            for node in nodes - alive:
                cluster.nodeDied(node)
            for relay in relays:
                if (self.of(relay.sid).index == shard and relay.attached and relay.owner not in alive
                        and relay.transport is not None):
                    Deferred.fromCoroutine(cluster.takeover.adoptRelay(relay)).addErrback(
                        lambda f: self.log.failure("taking a session over failed", f))
            for session, mirror in remote:
                if self.of(session.sid).index == shard and mirror.remote and mirror.remote not in alive:
                    session.detachedElsewhere(mirror.remote)
