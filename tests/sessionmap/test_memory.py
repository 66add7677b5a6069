"""
Tests for L{gateway.sessionmap.memory}.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.plugin import IPlugin
from zope.interface.verify import verifyObject

import gateway.sessionmap
from gateway.errors import ConfigError
from gateway.interfaces import ISessionMap, ISessionMapFactory
from gateway.sessionmap.memory import MemorySessionMap, MemorySessionMapFactory
from plugins import gateway_sessionmaps


def result(d):
    """
    @return: the result of an already-fired Deferred.
    """
    results = []
    d.addBoth(results.append)
    assert results, "Deferred has not fired"
    return results[0]


def test_interface():
    """
    L{MemorySessionMap} provides L{ISessionMap}.
    """
    assert verifyObject(ISessionMap, MemorySessionMap(Clock()))


def test_plugin():
    """
    The drop-in provides L{IPlugin} and L{ISessionMapFactory}, is called
    C{memory} and makes a L{MemorySessionMap}.
    """
    factory = gateway_sessionmaps.memory
    assert verifyObject(IPlugin, factory)
    assert verifyObject(ISessionMapFactory, factory)
    assert factory.name == "memory"
    assert isinstance(factory({}, Clock()), MemorySessionMap)


def test_exports():
    """
    C{gateway.sessionmap} exports the memory map and its factory.
    """
    assert gateway.sessionmap.__all__ == ["MemorySessionMap", "MemorySessionMapFactory"]
    assert gateway.sessionmap.MemorySessionMap is MemorySessionMap


def test_setGetForget():
    """
    A set record is read back per pool and key, and gone once forgotten;
    every call returns a fired Deferred.
    """
    m = MemorySessionMap(Clock())
    assert result(m.getAffinity("p", b"k")) is None
    assert result(m.setAffinity("p", b"k", "b1", 60)) is None
    assert result(m.getAffinity("p", b"k")) == "b1"
    assert result(m.getAffinity("other", b"k")) is None
    assert result(m.forgetAffinity("p", b"k")) is None
    assert result(m.getAffinity("p", b"k")) is None
    assert result(m.forgetAffinity("p", b"never")) is None


def test_overwrite():
    """
    Setting a key again replaces its backend.
    """
    m = MemorySessionMap(Clock())
    m.setAffinity("p", b"k", "b1", 60)
    m.setAffinity("p", b"k", "b2", 60)
    assert result(m.getAffinity("p", b"k")) == "b2"
    assert len(m) == 1


def test_expiry():
    """
    A record expires C{ttl} seconds after it was set (checked on read with
    the clock), and reading it does not extend its life.
    """
    clock = Clock()
    m = MemorySessionMap(clock)
    m.setAffinity("p", b"k", "b1", 10)
    clock.advance(9.9)
    assert result(m.getAffinity("p", b"k")) == "b1"
    clock.advance(0.1)
    assert result(m.getAffinity("p", b"k")) is None
    assert len(m) == 0
    assert clock.getDelayedCalls() == []


def test_refresh():
    """
    Setting a record again restarts its C{ttl}.
    """
    clock = Clock()
    m = MemorySessionMap(clock)
    m.setAffinity("p", b"k", "b1", 10)
    clock.advance(8)
    m.setAffinity("p", b"k", "b1", 10)
    clock.advance(8)
    assert result(m.getAffinity("p", b"k")) == "b1"
    clock.advance(2)
    assert result(m.getAffinity("p", b"k")) is None


def test_zeroTtl():
    """
    A C{ttl} of 0 forgets the key.
    """
    m = MemorySessionMap(Clock())
    m.setAffinity("p", b"k", "b1", 10)
    m.setAffinity("p", b"k", "b1", 0)
    assert result(m.getAffinity("p", b"k")) is None
    assert len(m) == 0


def test_evictionAtLimit():
    """
    The map holds at most C{maxEntries} records: one more evicts the least
    recently set or read.
    """
    m = MemorySessionMap(Clock(), maxEntries=3)
    for k in (b"a", b"b", b"c"):
        m.setAffinity("p", k, "b1", 60)
    assert len(m) == 3
    assert result(m.getAffinity("p", b"a")) == "b1"  # a is now most recent
    m.setAffinity("p", b"d", "b1", 60)
    assert len(m) == 3
    assert result(m.getAffinity("p", b"b")) is None
    for k in (b"a", b"c", b"d"):
        assert result(m.getAffinity("p", k)) == "b1"
    m.setAffinity("p", b"c", "b2", 60)  # refreshing does not grow the map
    assert len(m) == 3


def test_close():
    """
    L{MemorySessionMap.close} drops every record and fires.
    """
    m = MemorySessionMap(Clock())
    m.setAffinity("p", b"k", "b1", 60)
    assert result(m.close()) is None
    assert len(m) == 0


def test_maxEntriesOption():
    """
    The C{max_entries} option bounds the map; the default is 100000.
    """
    factory = MemorySessionMapFactory()
    assert factory({"max_entries": 2}, Clock()).maxEntries == 2
    assert factory({}, Clock()).maxEntries == 100_000


@pytest.mark.parametrize("value", [0, -1, "10", 1.5, True, None])
def test_badMaxEntries(value):
    """
    C{max_entries} must be an integer of at least 1.
    """
    with pytest.raises(ConfigError, match="max_entries must be an integer >= 1"):
        MemorySessionMapFactory()({"max_entries": value}, Clock())


def test_unknownOption():
    """
    An unknown option is a L{ConfigError} naming it and the known options.
    """
    with pytest.raises(ConfigError) as info:
        MemorySessionMapFactory()({"max_entries": 5, "url": "redis://"}, Clock())
    assert str(info.value) == "unknown option 'url' for session map 'memory' (known: max_entries)"


def test_constructorBound():
    """
    L{MemorySessionMap} refuses a C{maxEntries} below 1.
    """
    with pytest.raises(ValueError):
        MemorySessionMap(Clock(), maxEntries=0)
