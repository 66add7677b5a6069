"""
Engine.IO sessions across nodes (L{SharedEngines}): which node holds each
session (a key in Redis, written when it opens and deleted when it ends),
and the messages nodes send each other about them on their channels
(C{E|...} notices, read by L{gateway.engineio.relay}).

It carries bytes and knows nothing of Engine.IO: what the messages mean is
the edge's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.defer import Deferred
from zope.interface import implementer

from ..interfaces import IEngineCluster

if TYPE_CHECKING:
    from .node import Cluster

__all__ = ["SharedEngines"]


@implementer(IEngineCluster)
class SharedEngines:
    """
    The L{IEngineCluster} of a node sharing sessions through Redis, over
    its L{Cluster}'s connection and channel.
    """

    sharesSessions = True

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.node = cluster.node

    def own(self, sid: str, ttl: float) -> Deferred:
        """
        Record this node as the holder of C{sid} for C{ttl} seconds.
        """
        return self.cluster.shared.ownEngine(sid, ttl)

    async def _owner(self, sid: str) -> str | None:
        shared = self.cluster.shared
        node = await shared.engineOwner(sid)
        if node is None or node == self.node:
            return node
        return node if await shared.nodeAlive(node, near=sid) else None

    def owner(self, sid: str) -> Deferred:
        """
        @return: L{Deferred} firing with the live node holding C{sid}, or
            L{None} (none, or its node is dead).
        """
        return Deferred.fromCoroutine(self._owner(sid))

    def disown(self, sid: str) -> Deferred:
        """
        C{sid} has ended.
        """
        return self.cluster.shared.forgetEngine(sid)

    def send(self, node: str, message: bytes) -> Deferred:
        """
        Publish C{message} to C{node}'s channel.
        """
        return self.cluster.shared.publish(node, b"E|" + message)

    def listen(self, listener: Callable[[bytes], None]) -> None:
        """
        Hand this node's Engine.IO notices to C{listener}.
        """
        self.cluster.listenEngines(listener)
