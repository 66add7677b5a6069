"""
Tests for L{gateway.backends.balancers} and the balancer drop-ins.
"""

from __future__ import annotations

from collections import Counter

import pytest
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

from gateway.backends.balancers import (
    BalancerFactory,
    LeastConnections,
    RendezvousHash,
    RoundRobin,
    rendezvousScore,
)
from gateway.interfaces import IBalancer, IBalancerFactory
from gateway.backends.pool import Backend
from plugins import gateway_balancers

BALANCERS = [LeastConnections, RoundRobin, RendezvousHash]
KEYS = [b"client-%d" % i for i in range(300)]


def makeBackends(*weights: int, maxConnections: int = 0) -> list[Backend]:
    """
    @return: backends C{b0}, C{b1}, ... with the given weights.
    """
    return [
        Backend(f"b{i}", "127.0.0.1", 9000 + i, weight=w, maxConnections=maxConnections)
        for i, w in enumerate(weights)
    ]


def longLived(balancer, backends, n=300, keys=None):
    """
    Make C{n} picks, each one holding its connection open.

    @return: the connection count of each backend, in order.
    """
    for i in range(n):
        chosen = balancer.choose(backends, keys[i] if keys else None, ())
        assert chosen is not None
        chosen.reserve()
    return [b.connections for b in backends]


def keyedPicks(balancer, backends, keys=KEYS, exclude=()):
    """
    @return: a mapping of each key to the name of the backend chosen for it.
    """
    return {k: balancer.choose(backends, k, exclude).name for k in keys}


@pytest.mark.parametrize("cls", BALANCERS)
def test_providesIBalancer(cls):
    """
    Every balancer provides L{IBalancer}.
    """
    assert verifyObject(IBalancer, cls())


@pytest.mark.parametrize(
    "name,cls",
    [
        ("leastConnections", LeastConnections),
        ("roundRobin", RoundRobin),
        ("rendezvousHash", RendezvousHash),
    ],
)
def test_plugins(name, cls):
    """
    Each drop-in in C{plugins/gateway_balancers.py} provides L{IPlugin} and
    L{IBalancerFactory}, has a one-line description and makes a new balancer
    of its class on every call.
    """
    factory = getattr(gateway_balancers, name)
    assert verifyObject(IPlugin, factory)
    assert verifyObject(IBalancerFactory, factory)
    assert factory.description and "\n" not in factory.description
    first, second = factory(), factory()
    assert isinstance(first, cls) and first is not second
    assert verifyObject(IBalancer, first)


def test_pluginNames():
    """
    The drop-ins are called C{least_conn}, C{round_robin} and C{hash}.
    """
    assert [
        gateway_balancers.leastConnections.name,
        gateway_balancers.roundRobin.name,
        gateway_balancers.rendezvousHash.name,
    ] == ["least_conn", "round_robin", "hash"]


def test_factoryRepr():
    """
    A L{BalancerFactory} shows its name and class.
    """
    assert repr(BalancerFactory("x", "y", RoundRobin)) == "<BalancerFactory 'x' RoundRobin>"


# -- distribution


@pytest.mark.parametrize("cls", [LeastConnections, RoundRobin])
def test_evenExact(cls):
    """
    300 long-lived connections over 3 equal backends end exactly 100 each.
    """
    assert longLived(cls(), makeBackends(1, 1, 1)) == [100, 100, 100]


@pytest.mark.parametrize("cls", [LeastConnections, RoundRobin])
def test_weightedExact(cls):
    """
    With weights 1:2:3, 300 long-lived connections end exactly 50/100/150.
    """
    assert longLived(cls(), makeBackends(1, 2, 3)) == [50, 100, 150]


def test_hashEven():
    """
    300 distinct keys over 3 equal backends land 60..140 on each (measured:
    92/113/95).
    """
    counts = longLived(RendezvousHash(), makeBackends(1, 1, 1), keys=KEYS)
    assert sum(counts) == 300
    assert all(60 <= c <= 140 for c in counts), counts


def test_hashWeighted():
    """
    With weights 1:2:3, keys spread in proportion to the weights (300 keys,
    measured 45/117/138; expected 50/100/150).
    """
    counts = longLived(RendezvousHash(), makeBackends(1, 2, 3), keys=KEYS)
    assert 25 <= counts[0] <= 75
    assert 70 <= counts[1] <= 130
    assert 115 <= counts[2] <= 185


def test_leastConnectionsShortLivedRotate():
    """
    With equal weights and connections that close at once (every count
    stays 0), least connections rotates through the backends.
    """
    backends = makeBackends(1, 1, 1)
    balancer = LeastConnections()
    picks = [balancer.choose(backends, None, ()).name for _ in range(9)]
    assert Counter(picks) == {"b0": 3, "b1": 3, "b2": 3}
    assert picks[:3] == ["b0", "b1", "b2"]


def test_leastConnectionsPrefersLeastLoaded():
    """
    Least connections picks the backend with the least (connections + 1)
    / weight.
    """
    backends = makeBackends(1, 2)
    backends[0].reserve()  # (1 + 1) / 1 = 2
    held = [backends[1].reserve() for _ in range(4)]  # (4 + 1) / 2 = 2.5
    assert LeastConnections().choose(backends, None, ()) is backends[0]
    held.pop().release()
    held.pop().release()  # 1.5
    assert LeastConnections().choose(backends, None, ()) is backends[1]


def test_roundRobinSmooth():
    """
    Weights 5:1:1 interleave as nginx does: a a b a c a a.
    """
    backends = makeBackends(5, 1, 1)
    balancer = RoundRobin()
    picks = "".join(balancer.choose(backends, None, ()).name[1] for _ in range(7))
    assert picks == "0010200"


def test_roundRobinSkipsDown():
    """
    Round robin skips a down backend and spreads over the others.
    """
    backends = makeBackends(1, 1, 1)
    backends[1].healthy = False
    balancer = RoundRobin()
    picks = Counter(balancer.choose(backends, None, ()).name for _ in range(10))
    assert picks == {"b0": 5, "b2": 5}


def test_hashWithoutKey():
    """
    With no key, the hash balancer behaves like least connections.
    """
    backends = makeBackends(1, 1, 1)
    assert longLived(RendezvousHash(), backends) == [100, 100, 100]


# -- limits, exclude, state


@pytest.mark.parametrize("cls", BALANCERS)
def test_maxConnections(cls):
    """
    A backend at its connection limit is never chosen; with all of them
    full the balancer returns L{None}.
    """
    backends = makeBackends(1, 1, 1, maxConnections=10)
    balancer = cls()
    counts = longLived(balancer, backends, n=30, keys=KEYS)
    assert counts == [10, 10, 10]
    assert balancer.choose(backends, b"k", ()) is None
    assert balancer.choose(backends, None, ()) is None


@pytest.mark.parametrize("cls", BALANCERS)
def test_fullSkipped(cls):
    """
    A full backend is skipped even when it would otherwise win.
    """
    backends = makeBackends(1, 1, 1)
    backends[0].maxConnections = 1
    backends[0].reserve()
    balancer = cls()
    for key in KEYS[:50]:
        assert balancer.choose(backends, key, ()) is not backends[0]


@pytest.mark.parametrize("cls", BALANCERS)
def test_exclude(cls):
    """
    Excluded backends are never chosen; excluding all gives L{None}.
    """
    backends = makeBackends(1, 1, 1)
    balancer = cls()
    for key in KEYS[:50]:
        assert balancer.choose(backends, key, [backends[0], backends[2]]) is backends[1]
    assert balancer.choose(backends, b"k", backends) is None


@pytest.mark.parametrize("cls", BALANCERS)
@pytest.mark.parametrize("state", ["healthy", "draining"])
def test_downAndDrainingSkipped(cls, state):
    """
    Backends that are down or draining are never chosen; with none left the
    balancer returns L{None}.
    """
    backends = makeBackends(1, 1, 1)
    for b in backends[:2]:
        setattr(b, state, state == "draining")
    balancer = cls()
    for key in KEYS[:50]:
        assert balancer.choose(backends, key, ()) is backends[2]
        assert balancer.choose(backends, None, ()) is backends[2]
    setattr(backends[2], state, state == "draining")
    assert balancer.choose(backends, b"k", ()) is None


@pytest.mark.parametrize("cls", BALANCERS)
def test_empty(cls):
    """
    A pool with no backends gives L{None}.
    """
    assert cls().choose([], b"k", ()) is None


@pytest.mark.parametrize("cls", BALANCERS)
def test_zeroWeight(cls):
    """
    A backend of weight 0 gets no new connections.
    """
    backends = makeBackends(0, 1)
    balancer = cls()
    for key in KEYS[:20]:
        assert balancer.choose(backends, key, ()) is backends[1]
    backends[1].healthy = False
    assert balancer.choose(backends, b"k", ()) is None


# -- hash stability


def test_hashDeterministic():
    """
    The hash balancer's choice depends only on the key and the backends:
    two instances (two gateway nodes) agree, and the scores are fixed
    values (the same in every process and on every machine).
    """
    backends = makeBackends(1, 1, 1)
    assert keyedPicks(RendezvousHash(), backends) == keyedPicks(RendezvousHash(), backends)
    # blake2b(b"client-0\0b0") gives u = 0.8157...; -1 / ln(u) = 4.9116...
    assert rendezvousScore(b"client-0", backends[0]) == pytest.approx(
        4.911691185390767, rel=1e-12
    )
    heavier = Backend("b0", "elsewhere", 1, weight=3)
    assert rendezvousScore(b"client-0", heavier) == pytest.approx(
        3 * 4.911691185390767, rel=1e-12
    )


@pytest.mark.parametrize("how", ["removed", "down", "draining", "full", "excluded"])
def test_hashRemovalMovesOnlyItsKeys(how):
    """
    When one of 3 backends leaves (removed, down, draining, full or
    excluded), only the keys it served move; no other key changes backend.
    """
    backends = makeBackends(1, 1, 1)
    before = keyedPicks(RendezvousHash(), backends)
    gone = backends[1]
    exclude = ()
    if how == "removed":
        backends = [backends[0], backends[2]]
    elif how == "down":
        gone.healthy = False
    elif how == "draining":
        gone.draining = True
    elif how == "full":
        gone.maxConnections = 1
        gone.reserve()
    else:
        exclude = (gone,)
    after = keyedPicks(RendezvousHash(), backends, exclude=exclude)
    moved = {k for k in KEYS if before[k] != after[k]}
    onGone = {k for k in KEYS if before[k] == gone.name}
    assert moved == onGone
    assert len(onGone) > 50
    assert all(after[k] != gone.name for k in KEYS)


def test_hashAdditionMovesOnlyToNew():
    """
    Adding a 4th backend moves only keys to the new backend (about a
    quarter of them), none between the old ones.
    """
    backends = makeBackends(1, 1, 1)
    before = keyedPicks(RendezvousHash(), backends)
    newcomer = Backend("b3", "127.0.0.1", 9003)
    after = keyedPicks(RendezvousHash(), [*backends, newcomer])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if after[k] == "b3"}
    assert 40 <= len(moved) <= 110


def test_hashWeightChangeMovesTowardHeavier():
    """
    Raising one backend's weight only moves keys to it.
    """
    backends = makeBackends(1, 1, 1)
    before = keyedPicks(RendezvousHash(), backends)
    backends[0].weight = 2
    after = keyedPicks(RendezvousHash(), backends)
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved and all(after[k] == "b0" for k in moved)
