"""
Tests for L{gateway.dropins}: plugins found by name through
L{twisted.plugin.getPlugins}.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.plugin import IPlugin, getPlugins
from zope.interface.verify import verifyObject

import plugins
from gateway.backends.balancers import LeastConnections, RendezvousHash, RoundRobin
from gateway.errors import ConfigError, UnknownPlugin
from gateway.interfaces import IBalancerFactory, ISessionMap, ISessionMapFactory
from gateway.dropins import (
    balancerNames,
    findBalancerFactory,
    findSessionMapFactory,
    sessionMapNames,
)
from gateway.sessionmap.memory import MemorySessionMap


@pytest.mark.parametrize(
    "name,cls",
    [("least_conn", LeastConnections), ("round_robin", RoundRobin), ("hash", RendezvousHash)],
)
def test_findBalancer(name, cls):
    """
    Each built-in balancer is found by its name and makes balancers of its
    class.
    """
    factory = findBalancerFactory(name)
    assert verifyObject(IBalancerFactory, factory)
    assert factory.name == name
    assert isinstance(factory(), cls)


def test_findSessionMap():
    """
    The C{memory} session map is found by name and makes a
    L{MemorySessionMap}.
    """
    factory = findSessionMapFactory("memory")
    assert verifyObject(ISessionMapFactory, factory)
    sessionMap = factory({}, Clock())
    assert isinstance(sessionMap, MemorySessionMap)
    assert verifyObject(ISessionMap, sessionMap)


def test_unknownBalancer():
    """
    An unknown balancer name raises L{UnknownPlugin} (a L{ConfigError})
    whose message lists the known names, sorted.
    """
    with pytest.raises(UnknownPlugin) as info:
        findBalancerFactory("foo")
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == "unknown balancer 'foo' (known: hash, least_conn, round_robin)"


def test_unknownSessionMap():
    """
    An unknown session map name raises L{UnknownPlugin} listing the known
    ones.
    """
    with pytest.raises(UnknownPlugin, match=r"^unknown session map 'redis2' \(known: .*memory"):
        findSessionMapFactory("redis2")


def test_names():
    """
    L{balancerNames} and L{sessionMapNames} list the names, sorted.
    """
    assert balancerNames() == ["hash", "least_conn", "round_robin"]
    assert "memory" in sessionMapNames()
    assert sessionMapNames() == sorted(sessionMapNames())


def test_foundThroughGetPlugins():
    """
    The built-ins are ordinary drop-ins: L{getPlugins} on the C{plugins}
    package finds them as L{IPlugin}s providing the factory interfaces.
    """
    balancers = list(getPlugins(IBalancerFactory, plugins))
    assert sorted(b.name for b in balancers) == ["hash", "least_conn", "round_robin"]
    for b in balancers:
        assert verifyObject(IPlugin, b)
    maps = list(getPlugins(ISessionMapFactory, plugins))
    assert "memory" in [m.name for m in maps]
    assert all(IPlugin.providedBy(m) for m in maps)


def test_pluginPackagePath():
    """
    The C{plugins} package extends its path like C{twisted.plugins}, so
    drop-ins in other C{plugins} directories on C{sys.path} are found too.
    """
    assert plugins.__all__ == []
    assert len(plugins.__path__) >= 1
