"""
The C{redis} session map over several Redis servers (C{shards}), each a
L{gateway.sessionmap.redis.RedisSessionMap} of its own: a session's keys,
an affinity record and an Engine.IO session's key live on the shard the
consistent-hash ring (L{gateway.sessionmap._ring}) names for its id or
key, so that every command and script touches one server; the registry of
nodes, their connection counts and rebalancing turns live on the I{home}
shard (the first), where every node finds them.

Every node must be given the same shards (the same names; the same home):
each writes its ring's fingerprint into its heartbeat, and a node that
reads another fingerprint there logs it loudly (L{gateway.cluster.node}).

A shard that is down fails only the commands that need it: the sessions
and affinity records it holds wait for it as a single Redis's do in an
outage, the others are not affected.  Only the home shard must answer at
start-up; another that does not is connected in the background.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from zope.interface import implementer

from ..interfaces import IMeasured, IMetrics, ISessionMap
from ._ring import HashRing
from ._shared import SharedSessions

__all__ = ["ShardedSessionMap"]


@implementer(ISessionMap, IMeasured)
class ShardedSessionMap:
    """
    Affinity and session records spread over several Redis servers.

    @ivar shards: the shards' maps, the home shard first.
    @ivar ring: which shard holds which key.
    """

    #: Several gateway nodes share sessions through it.
    shared = True

    def __init__(self, shards: Sequence[Any], reactor) -> None:
        """
        @param shards: L{gateway.sessionmap.redis.RedisSessionMap}s with the
            same key prefix, timeout and node settings, and names of their
            own; only the first (home) one C{required} at start-up.
        """
        self.shards = tuple(shards)
        self.home = self.shards[0]
        self.ring = HashRing([shard.name for shard in self.shards])
        self.reactor = reactor
        self.keyPrefix = self.home.keyPrefix
        self.timeout = self.home.timeout
        self.nodeTtl = self.home.nodeTtl
        self.nodeId = self.home.nodeId

    def _shardFor(self, key: bytes) -> Any:
        return self.shards[self.ring.shardFor(key)]

    @property
    def connected(self) -> bool:
        """
        Whether the home shard is connected.
        """
        return self.home.connected

    @property
    def commandsIssued(self) -> int:
        """
        Commands issued so far, on every shard.
        """
        return sum(shard.commandsIssued for shard in self.shards)

    def measureWith(self, metrics: IMetrics) -> None:
        """
        Count every shard's commands in C{metrics}, by shard.
        """
        for shard in self.shards:
            shard.measureWith(metrics)

    def sharedSessions(self, node: str, *, sessionTtl: float, nodeTtl: float) -> SharedSessions:
        """
        @return: the sessions several nodes share, spread over the shards.
        """
        return SharedSessions(self.shards, node, sessionTtl=sessionTtl, nodeTtl=nodeTtl, ring=self.ring)

    def start(self) -> Deferred[None]:
        """
        Connect every shard at once.

        @return: L{Deferred} firing once each is connected, or (any but
            the home shard) known to be away and reconnecting; failing with
            the home shard's L{gateway.errors.SessionMapUnavailable}.
        """
        starting = [shard.start() for shard in self.shards]
        for d in starting[1:]:
            d.addErrback(lambda f: None)  # only closing fails these; see required
        d = gatherResults(starting, consumeErrors=True)
        d.addErrback(lambda failure: failure.value.subFailure)
        return d.addCallback(lambda _: None)

    def close(self) -> Deferred[None]:
        """
        Close every shard's connections.
        """
        d = gatherResults([shard.close() for shard in self.shards], consumeErrors=True)
        return d.addCallback(lambda _: None)

    # ISessionMap, each call on the shard of its key.
    def getAffinity(self, pool: str, key: bytes) -> Deferred[str | None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.getAffinity}.
        """
        return self._shardFor(key).getAffinity(pool, key)

    def setAffinity(self, pool: str, key: bytes, backend: str, ttl: float) -> Deferred[None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.setAffinity}.
        """
        return self._shardFor(key).setAffinity(pool, key, backend, ttl)

    def forgetAffinity(self, pool: str, key: bytes) -> Deferred[None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.forgetAffinity}.
        """
        return self._shardFor(key).forgetAffinity(pool, key)

    def getSession(self, sid: str) -> Deferred[dict | None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.getSession}.
        """
        return self._shardFor(sid.encode("utf-8")).getSession(sid)

    def putSession(self, sid: str, record: Mapping[str, Any], ttl: float) -> Deferred[None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.putSession}.
        """
        return self._shardFor(sid.encode("utf-8")).putSession(sid, record, ttl)

    def forgetSession(self, sid: str) -> Deferred[None]:
        """
        See L{gateway.sessionmap.redis.RedisSessionMap.forgetSession}.
        """
        return self._shardFor(sid.encode("utf-8")).forgetSession(sid)
