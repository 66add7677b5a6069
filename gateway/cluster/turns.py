"""
Whose turn it is to rebalance a pool, when several gateway nodes share
sessions (docs/operations.md, "Draining and rebalancing").

Every node decides from the same cluster-wide connection counts, up to a
heartbeat old; left alone, each would move its own sessions towards the
same even spread at once, and together they would overshoot it (and then
move them back).  L{RebalanceTurns} gives one node at a time the pool's
turn: a key in Redis naming the node, taken at a heartbeat by a node whose
mover asked for it since the last one, renewed while it keeps asking, and
given up (or left to expire after C{node_ttl}) when it no longer does.
"""

from __future__ import annotations

from typing import Any

from ..errors import GatewayError

__all__ = ["RebalanceTurns"]


class RebalanceTurns:
    """
    This node's turns to rebalance pools: the L{gateway.cluster.node.Cluster}'s
    component behind C{mayRebalance}.

    Redis is asked at most once a heartbeat, and only while some pool is
    wanted or held: one script call, whatever the number of pools.
    """

    def __init__(self, shared: Any) -> None:
        """
        @param shared: the node's L{gateway.sessionmap._shared.SharedSessions}.
        """
        self.shared = shared
        #: Pools whose turn this node has (as of its last heartbeat).
        self.held: set[str] = set()
        self._wanted: set[str] = set()

    def mayRebalance(self, pool: str) -> bool:
        """
        Whether this node has C{pool}'s turn; asking says it wants it.
        """
        self._wanted.add(pool)
        return pool in self.held

    def lost(self) -> None:
        """
        This node's lease ran out: its turns are no longer certain.
        """
        self.held = set()

    async def renew(self) -> None:
        """
        At a heartbeat: take or keep the turns of the pools wanted since
        the last one, give up the others.
        """
        wanted, self._wanted = self._wanted, set()
        if not wanted and not self.held:
            return
        try:
            self.held = await self.shared.rebalanceTurns(wanted, self.held - wanted)
        except GatewayError:
            self.held = set()
