"""
The built-in balancers: pure policies that pick one backend of a pool.

Each is an L{IBalancer}; none touches a socket or the reactor.  They share
these rules:

  - a backend that is down, draining or at its connection limit
    (C{not backend.available()}) is never chosen, nor one in C{exclude};
  - a backend's C{weight} is its share of the connections; a backend of
    weight 0 (or less) gets no new connections, as in HAProxy;
  - when nothing is left to choose from, C{choose} returns L{None}.

L{BalancerFactory} names a balancer class for the plugin registry; the
instances live in C{plugins/gateway_balancers.py}.
"""

from __future__ import annotations

import hashlib
import math
from typing import Collection, Sequence

from twisted.plugin import IPlugin
from zope.interface import implementer

from ..interfaces import IBalancer, IBalancerFactory, IFixedPlacement
from .pool import Backend

__all__ = [
    "LeastConnections",
    "RoundRobin",
    "RendezvousHash",
    "BalancerFactory",
    "rendezvousScore",
]


def _candidates(
    backends: Sequence[Backend], exclude: Collection[Backend]
) -> list[Backend]:
    """
    @return: the backends that may be chosen: available, of positive weight
        and not excluded, in configuration order.
    """
    return [
        b for b in backends if b.weight > 0 and b.available() and b not in exclude
    ]


@implementer(IBalancer)
class LeastConnections:
    """
    Send each connection to the backend with the fewest connections for its
    weight: the least C{(connections + 1) / weight}, that is the backend
    whose share would be smallest after taking this connection.

    Ties are broken by rotating through the tied backends, so that short
    connections (which leave every count at 0) still spread evenly and
    long-lived ones end up exactly proportional to the weights.
    """

    def __init__(self) -> None:
        self._turn = 0

    def choose(
        self,
        backends: Sequence[Backend],
        key: bytes | None,
        exclude: Collection[Backend],
    ) -> Backend | None:
        """
        Pick the available backend with the least connections per weight;
        C{key} is ignored.  See L{IBalancer.choose}.
        """
        tied: list[Backend] = []
        best: Backend | None = None
        for backend in _candidates(backends, exclude):
            if best is None:
                best, tied = backend, [backend]
                continue
            # Compare (c1 + 1) / w1 with (c2 + 1) / w2 exactly, in integers.
            mine = (backend.connections + backend.remote + 1) * best.weight
            theirs = (best.connections + best.remote + 1) * backend.weight
            if mine < theirs:
                best, tied = backend, [backend]
            elif mine == theirs:
                tied.append(backend)
        if not tied:
            return None
        chosen = tied[self._turn % len(tied)]
        self._turn += 1
        return chosen


@implementer(IBalancer)
class RoundRobin:
    """
    Smooth weighted round robin, nginx's algorithm: on every choice each
    candidate's current weight grows by its weight, the candidate with the
    highest current weight is chosen and loses the total of the candidates'
    weights.  Weights 5:1:1 give C{a a b a c a a}, not C{a a a a a b c}.

    Backends that are down, draining, full or excluded are skipped (their
    current weight is kept for when they come back).  Current weights are
    kept by backend name, which is unique within a pool.
    """

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def choose(
        self,
        backends: Sequence[Backend],
        key: bytes | None,
        exclude: Collection[Backend],
    ) -> Backend | None:
        """
        Pick the next backend in weighted round-robin order; C{key} is
        ignored.  See L{IBalancer.choose}.
        """
        candidates = _candidates(backends, exclude)
        if not candidates:
            return None
        if len(self._current) > len(backends):
            names = {b.name for b in backends}
            self._current = {n: w for n, w in self._current.items() if n in names}
        total = 0
        best: Backend | None = None
        bestWeight = 0
        for backend in candidates:
            current = self._current.get(backend.name, 0) + backend.weight
            self._current[backend.name] = current
            total += backend.weight
            if best is None or current > bestWeight:
                best, bestWeight = backend, current
        assert best is not None
        self._current[best.name] = bestWeight - total
        return best


def rendezvousScore(key: bytes, backend: Backend) -> float:
    """
    The weighted rendezvous (highest random weight) score of C{backend} for
    C{key}: C{-weight / ln(u)}, where C{u} in (0, 1) is drawn from
    C{blake2b(key + b"\\0" + name, digest_size=8)}.

    It depends only on the key, the backend's name and its weight, so every
    gateway node (any process, any machine) computes the same score.  The
    backend with the highest score wins, and the chance that a backend wins
    is its weight over the total weight.

    @return: a positive score (0 for a weight of 0 or less).
    """
    if backend.weight <= 0:
        return 0.0
    digest = hashlib.blake2b(
        key + b"\0" + backend.name.encode("utf-8"), digest_size=8
    ).digest()
    # 52 bits keep (h + 0.5) exact in a double: u is in (0, 1), never 0 or 1.
    h = int.from_bytes(digest, "big") >> 12
    u = (h + 0.5) / (1 << 52)
    return -backend.weight / math.log(u)


@implementer(IBalancer, IFixedPlacement)
class RendezvousHash:
    """
    Weighted rendezvous hashing on the affinity key: each key goes to the
    available backend with the highest L{rendezvousScore} for it.

    A key's choice depends only on the key and the backends that are
    available, so gateway nodes agree without talking to each other, and
    when a backend leaves the pool (or is down, draining or full) only the
    keys it served move, each to its next-best backend; when a backend
    joins, only the keys it now wins move to it.

    With no key (C{key is None}: the pool has no affinity key and the
    caller had no client address to hash), it behaves like
    L{LeastConnections}.

    Its idea of even is each key on its own backend, not equal counts: the
    session mover does not rebalance its pools (L{IFixedPlacement}).
    """

    def __init__(self) -> None:
        self._noKey = LeastConnections()

    def choose(
        self,
        backends: Sequence[Backend],
        key: bytes | None,
        exclude: Collection[Backend],
    ) -> Backend | None:
        """
        Pick the available backend that scores highest for C{key}, or the
        least loaded one when C{key} is L{None}.  See L{IBalancer.choose}.
        """
        if key is None:
            return self._noKey.choose(backends, key, exclude)
        best: Backend | None = None
        bestScore = -1.0
        for backend in _candidates(backends, exclude):
            score = rendezvousScore(key, backend)
            if score > bestScore:
                best, bestScore = backend, score
        return best


@implementer(IPlugin, IBalancerFactory)
class BalancerFactory:
    """
    A named maker of balancers of one class, for the plugin registry.

    @ivar name: the name used in configuration (C{balance = "..."}).
    @ivar description: one line describing the policy.
    """

    def __init__(self, name: str, description: str, balancerClass: type) -> None:
        self.name = name
        self.description = description
        self.balancerClass = balancerClass

    def __call__(self) -> IBalancer:
        """
        @return: a new balancer, for one pool.
        """
        return self.balancerClass()

    def __repr__(self) -> str:
        return f"<BalancerFactory {self.name!r} {self.balancerClass.__name__}>"
