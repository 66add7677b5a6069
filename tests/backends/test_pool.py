"""
Tests for L{gateway.backends.pool}: a L{Backend}'s availability (health,
draining, connection limits counting other nodes), its connection slots
(L{Backend.reserve}, L{ConnectionSlot.release}), the operator's changes
(drain, enable, weight) and their errors, and a L{Pool}: finding its
backends, reloading them from the configuration, pruning the retired ones
and saying why none is available.
"""

from __future__ import annotations

import pytest

from gateway.backends.balancers import LeastConnections
from gateway.backends.pool import (
    MAX_WEIGHT,
    NO_SLOT,
    Backend,
    BackendRetired,
    ConnectionSlot,
    InvalidWeight,
    Pool,
    PoolError,
    UnknownBackend,
    UnknownPool,
    checkWeight,
)
from gateway.config import BackendConfig
from gateway.errors import GatewayError


def config(name: str, port: int, *, weight: int = 1, maxConnections: int = 0,
           secure: bool = False, host: str = "127.0.0.1") -> BackendConfig:
    """
    @return: the configuration of backend C{name} on C{host:port}.
    """
    url = f"{'wss' if secure else 'ws'}://{host}:{port}"
    return BackendConfig(name, url, host, port, secure, weight, maxConnections)


def makePool(*names: str) -> Pool:
    """
    @return: pool C{chat} of backends C{names} (ports 9001, 9002, ...),
        least connections.
    """
    backends = [Backend.fromConfig(config(n, 9001 + i)) for i, n in enumerate(names)]
    return Pool("chat", backends, LeastConnections())


# -- Backend


def test_defaults():
    """
    A new backend is up, not draining nor retired, of weight 1, without a
    connection limit or connections, and its URL follows its address.
    """
    backend = Backend("b", "example.com", 9001)
    assert (backend.healthy, backend.draining, backend.retired) == (True, False, False)
    assert (backend.weight, backend.maxConnections, backend.connections, backend.remote) == (1, 0, 0, 0)
    assert backend.url == "ws://example.com:9001"
    assert Backend("b", "example.com", 443, secure=True).url == "wss://example.com:443"
    assert Backend("b", "h", 1, url="ws://h:1/").url == "ws://h:1/"


def test_fromConfig():
    """
    L{Backend.fromConfig} builds the backend a configuration describes: its
    name, address, TLS, URL as written, weight and connection limit.
    """
    backend = Backend.fromConfig(config("b", 9443, weight=3, maxConnections=7, secure=True, host="h"))
    assert (backend.name, backend.host, backend.port, backend.secure, backend.url) == (
        "b", "h", 9443, True, "wss://h:9443",
    )
    assert (backend.weight, backend.maxConnections, backend.connections) == (3, 7, 0)
    assert backend.available()


def test_sameAddress():
    """
    Two configurations name the same server when host, port and TLS agree,
    whatever their names, weights and limits.
    """
    backend = Backend.fromConfig(config("b", 9001))
    assert backend.sameAddress(config("other", 9001, weight=5, maxConnections=2))
    assert not backend.sameAddress(config("b", 9002))
    assert not backend.sameAddress(config("b", 9001, host="127.0.0.2"))
    assert not backend.sameAddress(config("b", 9001, secure=True))


@pytest.mark.parametrize(
    "healthy, draining, available",
    [(True, False, True), (False, False, False), (True, True, False), (False, True, False)],
)
def test_available(healthy, draining, available):
    """
    A backend takes new connections only while healthy and not draining.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    backend.healthy, backend.draining = healthy, draining
    assert backend.available() is available


def test_limitCountsEveryNode():
    """
    A connection limit counts this node's connections and those other nodes
    reported: at the limit the backend is full and takes no new connection;
    a limit of 0 is none.
    """
    backend = Backend("b", "127.0.0.1", 9001, maxConnections=3)
    backend.reserve()
    backend.remote = 1
    assert not backend.full() and backend.available()
    backend.reserve()
    assert backend.full() and not backend.available()
    backend.remote = 0
    assert not backend.full()
    unlimited = Backend("u", "127.0.0.1", 9002)
    for _ in range(1000):
        unlimited.reserve()
    assert not unlimited.full() and unlimited.available()


def test_repr():
    """
    A backend's C{repr} shows its name, URL, connections and state.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    backend.reserve()
    assert repr(backend) == "<Backend b ws://127.0.0.1:9001 conns=1>"
    backend.healthy, backend.draining, backend.retired = False, True, True
    assert repr(backend) == "<Backend b ws://127.0.0.1:9001 conns=1 down draining retired>"


# -- connection slots


def test_reserveAndRelease():
    """
    Each L{Backend.reserve} counts one connection, held by the slot it
    returns; releasing the slot takes it off the count.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    first, second = backend.reserve(), backend.reserve()
    assert isinstance(first, ConnectionSlot)
    assert (first.backend, first.held, backend.connections) == (backend, True, 2)
    first.release()
    assert (first.held, second.held, backend.connections) == (False, True, 1)
    second.release()
    assert backend.connections == 0


def test_releaseTwice():
    """
    Releasing a slot again does nothing: a connection that two paths end
    comes off the count once, and the other slots are left alone.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    slot, other = backend.reserve(), backend.reserve()
    slot.release()
    slot.release()
    slot.release()
    assert (backend.connections, other.held) == (1, True)


def test_releaseAfterLeavingThePool():
    """
    A retired backend leaves its pool when its last slot is released;
    releasing that slot again afterwards leaves the count at 0.
    """
    pool = makePool("a", "b")
    a = pool.backends[0]
    slot = a.reserve()
    pool.update([config("b", 9002)])
    assert pool.prune() == []
    slot.release()
    assert pool.prune() == [a]
    assert a not in pool.backends
    slot.release()
    assert a.connections == 0


def test_slotsAndLimits():
    """
    Slots are what the connection limit counts: at C{maxConnections} held
    slots the backend is full, and releasing one makes it available again.
    Reserving past the limit is still counted (a caller that asked for
    that backend by name, as a session's forced move does).
    """
    backend = Backend("b", "127.0.0.1", 9001, maxConnections=2)
    slots = [backend.reserve(), backend.reserve()]
    assert not backend.available()
    extra = backend.reserve()
    assert backend.connections == 3
    extra.release()
    slots[0].release()
    assert backend.available()
    assert backend.connections == 1


def test_connectionsReadOnly():
    """
    The count has one owner: it cannot be set from outside, only changed
    by reserving and releasing slots.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    with pytest.raises(AttributeError):
        backend.connections = 5
    assert backend.connections == 0


def test_noSlot():
    """
    L{NO_SLOT}, the slot of a holder without a connection, is not held,
    has no backend, and releasing it does nothing.
    """
    assert (NO_SLOT.held, NO_SLOT.backend) == (False, None)
    NO_SLOT.release()
    assert NO_SLOT.held is False


def test_slotRepr():
    """
    A slot's C{repr} names its backend and says whether it is held.
    """
    slot = Backend("b", "127.0.0.1", 9001).reserve()
    assert repr(slot) == "<ConnectionSlot b held>"
    slot.release()
    assert repr(slot) == "<ConnectionSlot b released>"
    assert repr(NO_SLOT) == "<ConnectionSlot None released>"


# -- operator's changes


def test_drainAndEnable():
    """
    C{drain} and C{enable} say whether they changed anything; draining
    leaves the connections alone.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    backend.reserve()
    assert backend.drain() is True
    assert backend.drain() is False
    assert (backend.draining, backend.connections) == (True, 1)
    assert backend.enable() is True
    assert backend.enable() is False
    assert backend.available()


def test_enableRetired():
    """
    A retired backend cannot be enabled: it must be named in the file again.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    backend.retired = True
    backend.drain()
    with pytest.raises(BackendRetired, match="removed from the configuration"):
        backend.enable()
    assert backend.draining


def test_setWeight():
    """
    C{setWeight} changes the weight and returns the previous one.
    """
    backend = Backend("b", "127.0.0.1", 9001)
    assert backend.setWeight(5) == 1
    assert backend.setWeight(MAX_WEIGHT) == 5
    assert backend.weight == MAX_WEIGHT


@pytest.mark.parametrize(
    "value, shown",
    [(0, "0"), (MAX_WEIGHT + 1, str(MAX_WEIGHT + 1)), (-3, "-3"), (True, "true"), (1.5, "1.5"),
     ("2", '"2"'), (None, "null"), ("x" * 100, '"' + "x" * 36 + "..."), ({1}, "{1}")],
)
def test_invalidWeight(value, shown):
    """
    A weight that is not an integer from 1 to L{MAX_WEIGHT} (a boolean is
    not one) is refused with L{InvalidWeight}, showing the value as JSON
    (cut to 40 characters), and the weight is left as it was.
    """
    backend = Backend("b", "127.0.0.1", 9001, weight=4)
    with pytest.raises(InvalidWeight) as caught:
        backend.setWeight(value)
    assert str(caught.value) == f"weight must be an integer from 1 to {MAX_WEIGHT}, not {shown}"
    assert backend.weight == 4


def test_checkWeight():
    """
    L{checkWeight} returns a valid weight unchanged.
    """
    assert [checkWeight(w) for w in (1, 7, MAX_WEIGHT)] == [1, 7, MAX_WEIGHT]


def test_errors():
    """
    The pool errors are L{PoolError}s, and so L{GatewayError}s.
    """
    for error in (UnknownPool, UnknownBackend, BackendRetired, InvalidWeight):
        assert issubclass(error, PoolError)
    assert issubclass(PoolError, GatewayError)


# -- Pool


def test_backendAndGet():
    """
    C{backend} finds a backend by name or returns L{None}; C{get} raises
    L{UnknownBackend} instead.
    """
    pool = makePool("a", "b")
    assert pool.backend("b") is pool.backends[1]
    assert pool.backend("c") is None
    assert pool.get("a") is pool.backends[0]
    with pytest.raises(UnknownBackend, match="pool 'chat' has no backend 'c'"):
        pool.get("c")


def test_chooseSkipsUnavailableAndExcluded():
    """
    C{choose} asks the balancer for an available backend, not one excluded.
    """
    pool = makePool("a", "b", "c")
    a, b, c = pool.backends
    a.healthy = False
    b.drain()
    assert {pool.choose(None) for _ in range(5)} == {c}
    assert pool.choose(None, exclude={c}) is None


def test_chooseWeighted():
    """
    The balancer spreads held connections by weight.
    """
    pool = makePool("a", "b")
    pool.backends[1].setWeight(3)
    for _ in range(40):
        pool.choose(None).reserve()
    assert [b.connections for b in pool.backends] == [10, 30]


def test_updateAddsRetiresAndChanges():
    """
    A reload adds new backends, retires those left out (draining; reported
    once as newly retired), and gives the others the file's weight and
    limit; a backend the operator drained stays drained.
    """
    pool = makePool("a", "b", "c")
    a, b, c = pool.backends
    c.drain()
    changes, retired = pool.update([config("a", 9001, weight=2, maxConnections=9),
                                    config("c", 9003), config("d", 9004)])
    assert changes == [
        "pool chat: backend b removed (draining)",
        "pool chat: backend a weight 1 -> 2",
        "pool chat: backend a max_connections 0 -> 9",
        "pool chat: backend d added",
    ]
    assert retired == [b]
    assert (b.retired, b.draining) == (True, True)
    assert (a.weight, a.maxConnections) == (2, 9)
    assert c.draining and not c.retired
    assert [x.name for x in pool.backends] == ["a", "b", "c", "d"]
    assert pool.backends[3].available()
    assert pool.update([config("a", 9001, weight=2, maxConnections=9),
                        config("c", 9003), config("d", 9004)]) == ([], [])


def test_updateRetiresAlreadyDrained():
    """
    A backend the operator had drained is retired by a reload but not
    reported as newly draining.
    """
    pool = makePool("a", "b")
    pool.backends[1].drain()
    changes, retired = pool.update([config("a", 9001)])
    assert changes == ["pool chat: backend b removed (draining)"]
    assert retired == []
    assert pool.backends[1].retired


def test_updateAddsBack():
    """
    A retired backend named again before it left is back, not draining,
    with its connections.
    """
    pool = makePool("a", "b")
    b = pool.backends[1]
    b.reserve()
    pool.update([config("a", 9001)])
    changes, retired = pool.update([config("a", 9001), config("b", 9002)])
    assert changes == ["pool chat: backend b added back"]
    assert (b.retired, b.draining, b.connections, b.available()) == (False, False, 1, True)
    assert pool.backends[1] is b


def test_checkUpdate():
    """
    A reload that keeps a backend's name but changes its address is
    refused, saying why; new names and unchanged addresses are fine.
    """
    pool = makePool("a")
    assert pool.checkUpdate([config("a", 9001, weight=5), config("b", 9009)]) is None
    assert pool.checkUpdate([config("a", 9002)]) == (
        "pool chat: backend 'a' now has the URL 'ws://127.0.0.1:9002' instead of "
        "'ws://127.0.0.1:9001': give the new server another name"
    )


def test_prune():
    """
    C{prune} takes out the retired backends without connections, only.
    """
    pool = makePool("a", "b", "c")
    a, b, c = pool.backends
    slot = b.reserve()
    c.reserve()
    pool.update([config("c", 9003)])
    assert pool.prune() == [a]
    assert pool.backends == [b, c]
    slot.release()
    assert pool.prune() == [b]
    assert pool.backends == [c]
    assert pool.prune() == []


@pytest.mark.parametrize(
    "setup, reason",
    [
        ("empty", "pool 'chat' has no backends"),
        ("draining", "every backend of pool 'chat' is draining"),
        ("full", "every backend of pool 'chat' is at its connection limit"),
        ("down", "no backend of pool 'chat' is up"),
        ("downAndFull", "every backend of pool 'chat' is at its connection limit"),
    ],
)
def test_noneAvailableReason(setup, reason):
    """
    The reason no backend can take a connection names the pool and the
    most telling cause: none at all, all draining, all the healthy ones
    full, or none up.
    """
    pool = makePool("a", "b")
    a, b = pool.backends
    if setup == "empty":
        pool.backends = []
    elif setup == "draining":
        a.drain(), b.drain()
    elif setup == "full":
        for backend in (a, b):
            backend.maxConnections = 1
            backend.reserve()
    elif setup == "down":
        a.healthy = b.healthy = False
    else:
        a.healthy = False
        b.maxConnections = 1
        b.reserve()
    assert pool.noneAvailableReason() == reason
