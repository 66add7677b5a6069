"""
Moving sessions between backends on purpose (docs/operations.md, "Draining
and rebalancing"): off backends that drain (the admin API, a reload that
removed them), and towards an even spread when backends are unevenly loaded
(one came back after a restart, one was added, weights changed).

Each pool has its own budget per second (C{drain_rate}, C{rebalance_rate}),
spent on a tick every L{SessionMover.TICK} seconds, so that a fleet is
evened out within minutes without a storm of reconnections.  With several
gateway nodes, one node at a time rebalances a pool (the registry's cluster
strategy says whose turn it is), since each decides from the same
cluster-wide counts.  A move is
invisible to the session's client (L{gateway.sessions.upstream.Upstream.move}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..interfaces import IFixedPlacement
from .states import SessionState

if TYPE_CHECKING:
    from ..backends.pool import Backend, Pool
    from .registry import SessionRegistry
    from .session import Session

__all__ = ["SessionMover"]


class SessionMover(Service):
    """
    Spends each pool's move budgets on its node's sessions.

    @ivar drained: sessions moved off draining backends so far.
    @ivar rebalanced: sessions moved for balance so far.
    """

    log = Logger()

    #: Seconds between ticks.
    TICK = 0.1

    def __init__(self, pools: dict[str, Pool], registry: SessionRegistry, clock) -> None:
        self.pools = pools
        self.registry = registry
        self.clock = clock
        self.drained = 0
        self.rebalanced = 0
        self._drainCredit: dict[str, float] = {}
        self._balanceCredit: dict[str, float] = {}
        #: Sessions this mover started moving, until their move is done.
        self._moving: set[Session] = set()
        self._loop: LoopingCall | None = None
        self._last: float | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.TICK, now=False).addErrback(
            lambda f: self.log.failure("moving sessions failed", f))

    def stopService(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        return super().stopService()

    def tick(self) -> None:
        """
        Add to each pool's budgets the time since the last tick, and spend
        them.
        """
        now = self.clock.seconds()
        elapsed = self.TICK if self._last is None else max(0.0, now - self._last)
        self._last = now
        self._moving = {s for s in self._moving if s.switching == "move"}
        grouped: dict[str, dict[Backend, list[Session]]] | None = None

        def sessionsOf(pool: Pool) -> dict[Backend, list[Session]]:
            # The node's sessions are looked through only on a tick that may
            # move one, and then once for every pool.
            nonlocal grouped
            if grouped is None:
                grouped = self._movable()
            return grouped.get(pool.name, {})

        for pool in self.pools.values():
            if pool.drain == "move" and any(b.draining for b in pool.backends):
                self._drain(pool, sessionsOf(pool), elapsed)
            else:
                self._drainCredit.pop(pool.name, None)
            if pool.rebalanceRate > 0 and not IFixedPlacement.providedBy(pool.balancer):
                self._rebalance(pool, sessionsOf, elapsed)
            else:
                self._balanceCredit.pop(pool.name, None)

    def _movable(self) -> dict[str, dict[Backend, list[Session]]]:
        """
        @return: the sessions that could be moved now (on a backend, not
            already between backends, not ending), by pool and backend.
        """
        byPool: dict[str, dict[Backend, list[Session]]] = {}
        for session in self.registry.sessions.values():
            backend = session.backend
            if backend is None or session.switching is not None or session.state not in (SessionState.ATTACHED, SessionState.DETACHED):
                continue
            byPool.setdefault(session.pool.name, {}).setdefault(backend, []).append(session)
        return byPool

    def _drain(self, pool: Pool, sessions: dict[Backend, list[Session]], elapsed: float) -> None:
        leaving = [s for b, group in sessions.items() if b.draining for s in group]
        if not leaving:
            self._drainCredit.pop(pool.name, None)
            return
        credit = min(self._drainCredit.get(pool.name, 0.0) + elapsed * pool.drainRate,
                     _cap(pool.drainRate))
        if not any(b.available() for b in pool.backends):
            self._drainCredit[pool.name] = credit
            return  # nowhere to go: they stay until a backend can take them
        for session in leaving:
            if credit < 1:
                break
            if session.move(None):
                credit -= 1
                self.drained += 1
                self._moving.add(session)
        self._drainCredit[pool.name] = credit

    def _rebalance(self, pool: Pool, sessionsOf, elapsed: float) -> None:
        candidates = [b for b in pool.backends if b.available()]
        if len(candidates) < 2:
            self._balanceCredit.pop(pool.name, None)
            return
        credit = min(self._balanceCredit.get(pool.name, 0.0) + elapsed * pool.rebalanceRate,
                     _cap(pool.rebalanceRate))
        if any(s.pool is pool for s in self._moving):
            # Counts are in flux until the moves under way are done (and
            # this node keeps its turn meanwhile).
            self._balanceCredit[pool.name] = credit
            self.registry.cluster.mayRebalance(pool.name)
            return
        # The load as the balancer sees it: connections here and on other
        # nodes.
        loads = {b: float(b.connections + b.remote) for b in pool.backends}
        total = sum(loads[b] for b in candidates)
        weights = sum(b.weight for b in candidates)
        moved = False
        while credit >= 1:
            shares = {b: total * b.weight / weights for b in candidates}
            source = max(candidates, key=lambda b: (loads[b] - shares[b], b.name))
            target = min(candidates, key=lambda b: (loads[b] - shares[b], b.name))
            # Move only when it brings both nearer their shares.
            if loads[source] - shares[source] < 1 or shares[target] - loads[target] < 1:
                break
            group = sessionsOf(pool).get(source, [])
            session = self._pick(group)
            if session is None:
                break
            if not moved and not self.registry.cluster.mayRebalance(pool.name):
                # Another node's turn (with several nodes): they would all
                # move towards the same spread at once, and overshoot it.
                break
            if not session.move(target):
                break
            self._moving.add(session)
            group.remove(session)
            loads[source] -= 1
            loads[target] += 1
            credit -= 1
            self.rebalanced += 1
            moved = True
        if not moved and credit >= 1:
            credit = 1.0  # balanced: no budget piles up for a later burst
        self._balanceCredit[pool.name] = credit

    @staticmethod
    def _pick(sessions: Iterable[Session]) -> Session | None:
        """
        @return: the session to move first: a detached one (nobody waits on
            it), else the one quiet the longest.
        """
        best = None
        for session in sessions:
            if session.state is SessionState.DETACHED:
                return session
            if best is None or session.lastReceived < best.lastReceived:
                best = session
        return best

    def state(self) -> dict:
        """
        @return: the admin API's C{mover} counts: sessions C{drained} and
            C{rebalanced} so far, and C{moving} now.
        """
        return {"drained": self.drained, "rebalanced": self.rebalanced, "moving": len(self._moving)}


def _cap(rate: float) -> float:
    """
    @return: the most budget a pool may hold: a tick's worth and one more
        (so that a fraction left over is never lost to a tick that came a
        little early), and no burst after a quiet spell.
    """
    return max(1.0, rate * SessionMover.TICK) + 1.0
