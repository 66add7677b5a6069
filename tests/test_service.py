"""
L{gateway.service} without the network: what it builds from a
configuration.
"""

from __future__ import annotations

import pytest

from gateway.edge.listeners import DEFAULT_BACKLOG, withBacklog


@pytest.mark.parametrize(
    "given, expected",
    [
        ("tcp:8080", f"tcp:8080:backlog={DEFAULT_BACKLOG}"),
        ("tcp:0:interface=127.0.0.1", f"tcp:0:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"),
        ("ssl:8443:privateKey=k.pem", f"ssl:8443:privateKey=k.pem:backlog={DEFAULT_BACKLOG}"),
        ("tcp:8080:backlog=64", "tcp:8080:backlog=64"),
        ("unix:/run/gw.sock", "unix:/run/gw.sock"),
    ],
)
def test_withBacklog(given: str, expected: str) -> None:
    """
    TCP and TLS listeners get a backlog of 511 unless they set one (Twisted's
    default of 50 drops connections in a burst of handshakes); other
    endpoints are left as they are.
    """
    assert withBacklog(given) == expected


def test_serviceListenersUseBacklog() -> None:
    """
    The service's listeners are built from the endpoint strings with the
    backlog added.
    """
    from twisted.internet.testing import MemoryReactorClock

    from gateway.config import GatewayConfig
    from gateway.service import GatewayService

    reactor = MemoryReactorClock()
    service = GatewayService(GatewayConfig(listen=("tcp:0:interface=127.0.0.1",), demo=True), reactor)
    [(description, endpoint)] = service.endpoints
    endpoint.listen(service.factory)
    [(port, factory, backlog, interface)] = reactor.tcpServers
    assert backlog == DEFAULT_BACKLOG and interface == "127.0.0.1"


def test_proxiedListeners(tmp_path) -> None:
    """
    A C{haproxy:} listener is wrapped (with the backlog added to the
    endpoint it wraps) and its refusals go to the front door's dropped
    connections; the admin API's listener may not read PROXY headers; a
    bad endpoint after C{haproxy:} is one line.
    """
    from dataclasses import replace

    from twisted.internet.testing import MemoryReactorClock

    from gateway.config import AdminConfig, ConfigError, GatewayConfig
    from gateway.edge.proxy import ProxyHeaderFactory
    from gateway.service import GatewayService

    reactor = MemoryReactorClock()
    config = GatewayConfig(listen=("haproxy:tcp:0:interface=127.0.0.1",), proxyProtocolFrom=("10.0.0.0/8",),
                           demo=True)
    service = GatewayService(config, reactor)
    [(_, endpoint)] = service.endpoints
    endpoint.listen(service.factory)
    [(_, factory, backlog, _)] = reactor.tcpServers
    assert isinstance(factory, ProxyHeaderFactory) and backlog == DEFAULT_BACKLOG
    assert factory.wrappedFactory is service.factory and "10.0.0.1" in factory.trusted
    factory.dropped("proxy_header_missing")
    assert service.factory.dropped.total["proxy_header_missing"] == 1
    service.factory.dropped.stop()
    with pytest.raises(ConfigError, match="only the gateway's listen endpoints read PROXY headers"):
        GatewayService(replace(config, admin=AdminConfig(listen="haproxy:tcp:9090", token="t" * 16)), reactor)
    with pytest.raises(ConfigError, match="is not a usable endpoint"):
        GatewayService(replace(config, listen=("haproxy:nonsense:1",)), reactor)


def test_accessLogWired(tmp_path) -> None:
    """
    With C{[access_log]}, one access log is given to the session registry
    and the front door, and a stop closes it; without, both have the null
    one.
    """
    from twisted.internet.testing import MemoryReactorClock

    from gateway.config import AccessLogConfig, GatewayConfig
    from gateway.edge.accesslog import AccessLog, NoAccessLog
    from gateway.service import GatewayService

    service = GatewayService(GatewayConfig(demo=True), MemoryReactorClock())
    assert isinstance(service.accessLog, NoAccessLog)
    assert service.sessions.accessLog is service.factory.accessLog is service.accessLog
    config = GatewayConfig(demo=True, accessLog=AccessLogConfig(path=str(tmp_path / "access.log")))
    service = GatewayService(config, MemoryReactorClock())
    assert isinstance(service.accessLog, AccessLog)
    assert service.sessions.accessLog is service.factory.accessLog is service.accessLog
    assert service.accessLog.stop().called


# The operator's surface: drain, enable, weight, reload, signals, stop.

import signal  # noqa: E402
from functools import partial  # noqa: E402
from pathlib import Path  # noqa: E402

from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.testing import MemoryReactorClock  # noqa: E402
from twisted.logger import capturedLogs  # noqa: E402

from gateway.config import ConfigError, loadConfig  # noqa: E402
from gateway.backends.pool import BackendRetired, InvalidWeight, UnknownBackend, UnknownPool  # noqa: E402
from gateway.service import STOP_MARGIN, GatewayService, NothingToReload  # noqa: E402

TWO = """
[pool.chat]
balance = "least_conn"
[[pool.chat.backend]]
url = "ws://127.0.0.1:9001"
name = "a"
[[pool.chat.backend]]
url = "ws://127.0.0.1:9002"
name = "b"
weight = 2
"""


class ThreadedClock(MemoryReactorClock):
    """
    A memory reactor that records what a signal handler hands it with
    C{callFromThread}, and what twistd reads after it stops.
    """

    _exitSignal = None

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list = []

    def callFromThread(self, f, *args, **kwargs) -> None:
        """
        Record the call; the test runs it.
        """
        self.fromThread.append((f, args, kwargs))


def fileService(tmp_path: Path, text: str = TWO) -> tuple[GatewayService, Path]:
    """
    @return: a service built (not started) from a file, reloadable from
        it, and the file.
    """
    path = tmp_path / "gw.toml"
    path.write_text(text)
    load = partial(loadConfig, str(path))
    service = GatewayService(load(), ThreadedClock())
    service.configLoader = load
    service.endpoints = []  # started on a memory reactor: nothing to listen on
    return service, path


def states(service: GatewayService, pool: str = "chat") -> list[tuple]:
    """
    @return: C{(name, weight, maxConnections, draining, retired)} of each
        backend of C{pool}.
    """
    return [(b.name, b.weight, b.maxConnections, b.draining, b.retired)
            for b in service.pools[pool].backends]


def test_composition(tmp_path: Path) -> None:
    """
    The service is the node's operator surface; the front door it builds
    shares its pools, sessions and session map, and reports connects to
    passive health, which passes them to the health monitor of the
    backend's pool (the service's own monitors, so a replaced or added
    monitor is the one told).
    """
    from zope.interface.verify import verifyObject

    from gateway.interfaces import IConnectObserver, IEdge, IOperator

    service, _ = fileService(tmp_path)
    assert verifyObject(IOperator, service)
    factory = service.factory
    assert verifyObject(IEdge, factory)
    assert (factory.pools, factory.sessions, factory.sessionMap) == (
        service.pools, service.sessions, service.sessionMap)
    assert factory.health is service.health
    assert verifyObject(IConnectObserver, service.health)

    class Monitor:
        def __init__(self):
            self.heard = []

        def connectFailed(self, backend, reason):
            self.heard.append(("failed", backend.name, reason))

        def connectSucceeded(self, backend):
            self.heard.append(("succeeded", backend.name))

    monitor = service.monitors["chat"] = Monitor()
    pool = service.pools["chat"]
    a, _ = pool.backends
    factory.health.connectFailed(pool, a, "refused")
    factory.health.connectSucceeded(pool, a)
    assert monitor.heard == [("failed", "a", "refused"), ("succeeded", "a")]


def test_operatorErrors(tmp_path: Path) -> None:
    """
    Drain, enable and weight name an existing pool and backend; a weight
    must be an integer from 1 to L{gateway.backends.pool.MAX_WEIGHT}.
    """
    service, _ = fileService(tmp_path)
    with pytest.raises(UnknownPool, match="^no pool 'x'$"):
        service.drainBackend("x", "a")
    with pytest.raises(UnknownBackend, match="^pool 'chat' has no backend 'x'$"):
        service.enableBackend("chat", "x")
    with pytest.raises(InvalidWeight):
        service.setWeight("chat", "a", 0)
    assert service.setWeight("chat", "a", 5).weight == 5


def test_drainStartsOnce(tmp_path: Path) -> None:
    """
    A backend starts draining once: the first drain marks it draining and
    logs it (the event the session mover acts on), a second changes and
    logs nothing.
    """
    service, _ = fileService(tmp_path)
    a = service.pools["chat"].get("a")
    with capturedLogs() as events:
        service.drainBackend("chat", "a")
        service.drainBackend("chat", "a")
    heard = [e["backend"] for e in events
             if e.get("log_format") == "backend {backend} of pool {pool} is draining"]
    assert heard == ["a"]
    assert a.draining


def test_reloadWithoutFile() -> None:
    """
    A service built without a file has nothing to reload.
    """
    service = GatewayService(loadConfig(None, backends=["ws://a:1"]), MemoryReactorClock())
    with pytest.raises(NothingToReload):
        service.reload()


def test_reloadNoChange(tmp_path: Path) -> None:
    """
    Reloading an unchanged file changes nothing.
    """
    service, _ = fileService(tmp_path)
    before = states(service)
    done = service.reload()
    assert (done.changes, done.restartNeeded) == ((), ())
    assert states(service) == before


def test_reloadAddRemoveReweight(tmp_path: Path) -> None:
    """
    A reload adds new backends, retires those left out of the file (they
    start draining, kept while they have connections), and gives
    the others the file's weight and connection limit; a backend the
    operator drained stays drained.
    """
    service, path = fileService(tmp_path)

    def draining():
        return {(p.name, b.name) for p in service.pools.values() for b in p.backends if b.draining}

    pool = service.pools["chat"]
    a, b = pool.backends
    b.reserve()
    service.drainBackend("chat", "a")
    before = draining()
    path.write_text(TWO.replace('name = "b"\nweight = 2', 'name = "c"\nmax_connections = 7')
                    .replace('name = "a"', 'name = "a"\nweight = 3'))
    done = service.reload()
    assert done.changes == (
        "pool chat: backend b removed (draining)",
        "pool chat: backend a weight 1 -> 3",
        "pool chat: backend c added",
    )
    assert states(service) == [("a", 3, 0, True, False), ("b", 2, 0, True, True),
                               ("c", 1, 7, False, False)]
    assert sorted(draining() - before) == [("chat", "b")]
    c = pool.backends[2]
    assert {pool.choose(None) for _ in range(5)} == {c}
    assert [p.name for p in service.config.pool("chat").backends] == ["a", "c"]


def test_retiredBackendLeavesWithItsLastConnection(tmp_path: Path) -> None:
    """
    A retired backend is taken out of its pool (and forgotten by its health
    monitor) at the first sweep after its last connection ended; one with no
    connection leaves at once.
    """
    service, path = fileService(tmp_path)
    pool = service.pools["chat"]
    a, b = pool.backends
    slots = [a.reserve(), a.reserve()]
    path.write_text(TWO.replace('url = "ws://127.0.0.1:9001"\nname = "a"\n',
                                'url = "ws://127.0.0.1:9003"\nname = "x"\n'))
    forgotten = []
    service.monitors["chat"].forget = forgotten.append
    with capturedLogs() as events:
        service.reload()
    assert [x.name for x in pool.backends] == ["a", "b", "x"]
    slots.pop().release()
    service._sweep()
    assert a in pool.backends
    slots.pop().release()
    with capturedLogs() as events:
        service._sweep()
    assert [x.name for x in pool.backends] == ["b", "x"]
    assert forgotten == [a]
    assert [e["log_format"] for e in events if "removed" in e.get("log_format", "")] == [
        "backend {backend} of pool {pool} removed: its last connection ended"
    ]
    path.write_text(TWO)
    assert service.reload().changes == (
        "pool chat: backend x removed (draining)",
        "pool chat: backend a added",
    )
    assert [x.name for x in pool.backends] == ["b", "a"]
    assert pool.backends[1] is not a


def test_retiredBackendAddedBack(tmp_path: Path) -> None:
    """
    A retired backend named again by a later reload (before it left) is
    back, not draining.
    """
    service, path = fileService(tmp_path)
    service.pools["chat"].backends[1].reserve()
    path.write_text(TWO.split('[[pool.chat.backend]]\nurl = "ws://127.0.0.1:9002"')[0])
    service.reload()
    assert states(service)[1] == ("b", 2, 0, True, True)
    with pytest.raises(BackendRetired):
        service.enableBackend("chat", "b")
    path.write_text(TWO)
    assert service.reload().changes == ("pool chat: backend b added back",)
    assert states(service)[1] == ("b", 2, 0, False, False)


def test_reloadPoolSettings(tmp_path: Path) -> None:
    """
    A reload applies a pool's balance, affinity_ttl, fail_timeout and
    connect_attempts; affinity and health wait for a restart.
    """
    service, path = fileService(tmp_path)
    pool = service.pools["chat"]
    balancer = pool.balancer
    path.write_text(TWO.replace('balance = "least_conn"', 'balance = "round_robin"\naffinity_ttl = 5\n'
                                'fail_timeout = 2\nconnect_attempts = 1\naffinity = "address"'))
    done = service.reload()
    assert done.changes == (
        "pool chat: balance least_conn -> round_robin",
        "pool chat: affinity_ttl 3600 -> 5",
        "pool chat: connect_attempts 3 -> 1",
        "pool chat: fail_timeout 10 -> 2",
    )
    assert done.restartNeeded == ("pool.chat.affinity",)
    assert pool.balancer is not balancer and type(pool.balancer).__name__ == "RoundRobin"
    assert (pool.affinityTtl, pool.connectAttempts) == (5.0, 1)
    assert service.monitors["chat"].failTimeout == 2.0
    assert pool.keySpec is None and service.config.pool("chat").affinity is None
    assert service.reload().restartNeeded == ("pool.chat.affinity",)


@pytest.mark.parametrize(
    "text, reason",
    [
        ("[pool.chat]\n", "{path}: pool.chat: has no backends; add a [[pool.chat.backend]] table with a url"),
        (TWO.replace("least_conn", "nope"), "unknown balancer 'nope' (known: hash, least_conn, round_robin)"),
        (TWO.replace("9002", "9005"), "{path}: pool chat: backend 'b' now has the URL "
                                      "'ws://127.0.0.1:9005' instead of 'ws://127.0.0.1:9002': "
                                      "give the new server another name"),
        ('listen = ["nope:1"]\n' + TWO, "listen: 'nope:1' is not a usable endpoint: Unknown endpoint type: 'nope'"),
        ("[session_map]\ntype = \"nope\"\n" + TWO, "unknown session map 'nope' (known: memory, redis)"),
    ],
    ids=["invalid", "balancer", "address-changed", "listen", "session-map"],
)
def test_reloadRefused(tmp_path: Path, text: str, reason: str) -> None:
    """
    A file that is wrong, or that the service would refuse at start-up,
    changes nothing; one line saying why is logged and raised.
    """
    service, path = fileService(tmp_path)
    before = states(service)
    config = service.config
    path.write_text(text)
    with capturedLogs() as events, pytest.raises(ConfigError) as caught:
        service.reload()
    assert str(caught.value).startswith(reason.format(path=path))
    assert states(service) == before and service.config is config
    [line] = [e for e in events if e.get("log_level").name == "error"]
    assert line["log_format"] == "gateway: reload failed, nothing changed: {error}"
    assert line["error"] is caught.value


def test_reloadAdminToken(tmp_path: Path) -> None:
    """
    A reload changes the admin token when the admin listener is unchanged,
    and lists a new listener as needing a restart.
    """
    admin = '[admin]\nlisten = "tcp:0:interface=127.0.0.1"\ntoken = "%s"\n'
    service, path = fileService(tmp_path, admin % ("o" * 16) + TWO)
    path.write_text(admin % ("n" * 16) + TWO)
    assert service.reload().changes == ("admin token changed",)
    assert service.config.admin.token == "n" * 16
    path.write_text(admin.replace("tcp:0", "tcp:1") % ("m" * 16) + TWO)
    assert service.reload().restartNeeded == ("admin.listen",)
    assert service.config.admin.token == "n" * 16


def test_hangupReloads(tmp_path: Path) -> None:
    """
    Under twistd with a file, SIGHUP is handled from start to stop: the
    handler hands a reload to the reactor thread, and the previous handler
    is put back when the service stops.  A reload that fails leaves the
    gateway running.
    """
    previous = signal.getsignal(signal.SIGHUP)
    service, path = fileService(tmp_path)
    service.processSignals = True
    service.startService()
    try:
        assert signal.getsignal(signal.SIGHUP) == service._hangup
        path.write_text(TWO.replace("weight = 2", "weight = 4"))
        signal.getsignal(signal.SIGHUP)(signal.SIGHUP, None)
        [(f, args, kwargs)] = service.reactor.fromThread
        f(*args, **kwargs)
        assert states(service)[1][1] == 4
        path.write_text("nonsense")
        with capturedLogs():
            f(*args, **kwargs)
        assert states(service)[1][1] == 4
    finally:
        service.stopService()
    assert signal.getsignal(signal.SIGHUP) == previous


@pytest.mark.parametrize("signals, loader", [(False, True), (True, False)])
def test_noHangupHandler(tmp_path: Path, signals: bool, loader: bool) -> None:
    """
    Outside twistd, or without a file, SIGHUP is left alone.
    """
    previous = signal.getsignal(signal.SIGHUP)
    service, _ = fileService(tmp_path)
    service.processSignals = signals
    if not loader:
        service.configLoader = None
    service.startService()
    assert signal.getsignal(signal.SIGHUP) == previous
    service.stopService()


@pytest.mark.parametrize("signals", [True, False])
def test_cleanStopAfterSigterm(tmp_path: Path, signals: bool) -> None:
    """
    A stop that finishes in time is clean; under twistd, the SIGTERM the
    reactor recorded is then forgotten, so that the process exits with 0.
    """
    service, _ = fileService(tmp_path)
    service.processSignals = signals
    service.startService()
    service.reactor._exitSignal = signal.SIGTERM
    stopped = service.stopService()
    assert stopped.called and service.stoppedCleanly is True
    assert service.reactor._exitSignal == (None if signals else signal.SIGTERM)


def test_otherSignalKept(tmp_path: Path) -> None:
    """
    Only SIGTERM is forgotten: a SIGINT (Ctrl-C) still ends the process as
    a signal.
    """
    service, _ = fileService(tmp_path)
    service.processSignals = True
    service.startService()
    service.reactor._exitSignal = signal.SIGINT
    service.stopService()
    assert service.reactor._exitSignal == signal.SIGINT


def test_stopGivenUpAfterDeadline(tmp_path: Path) -> None:
    """
    A stop still unfinished C{timeouts.shutdown} + L{STOP_MARGIN} seconds
    after it began is given up on, with one line: the stop's Deferred fires,
    the stop is not clean, and the SIGTERM is kept (the process ends as
    killed by it).
    """
    service, _ = fileService(tmp_path)
    service.processSignals = True
    service.startService()
    service.reactor._exitSignal = signal.SIGTERM
    hanging: Deferred = Deferred()

    async def hang() -> None:
        await hanging

    service._stop = hang
    stopped = service.stopService()
    bound = service.config.timeouts.shutdown + STOP_MARGIN
    service.reactor.advance(bound - 0.01)
    assert not stopped.called
    with capturedLogs() as events:
        service.reactor.advance(0.01)
    assert stopped.called and service.stoppedCleanly is False
    assert service.reactor._exitSignal == signal.SIGTERM
    [line] = [e for e in events if e.get("log_level").name == "error"]
    assert line["bound"] == bound
    hanging.callback(None)
    assert service.stoppedCleanly is False


def test_failedStopFails(tmp_path: Path) -> None:
    """
    A stop that fails is not clean, and its Deferred fails.
    """
    service, _ = fileService(tmp_path)
    service.startService()

    async def broken() -> None:
        raise RuntimeError("stop failed")

    service._stop = broken
    stopped = service.stopService()
    failures = []
    stopped.addErrback(failures.append)
    assert service.stoppedCleanly is False and failures[0].check(RuntimeError)


def test_collectAfterDrops() -> None:
    """
    L{CollectAfterDrops} collects the whole heap once a second's look finds
    the open client connections L{DROPS_TO_COLLECT} or more below their
    peak since the last collection, and not otherwise; it stops with its
    service.
    """
    from twisted.internet.task import Clock

    from gateway.collector import DROPS_TO_COLLECT, CollectAfterDrops

    clock = Clock()
    open = [5000]
    collected: list[int] = []
    collector = CollectAfterDrops(clock, lambda: open[0], lambda: collected.append(open[0]))
    collector.start()
    open[0] = 6000
    clock.advance(1)
    open[0] = 6000 - DROPS_TO_COLLECT + 1
    clock.advance(1)
    assert collected == []
    open[0] = 6000 - DROPS_TO_COLLECT
    clock.advance(1)
    assert collected == [6000 - DROPS_TO_COLLECT]
    clock.advance(1)  # the peak is now the count at the collection
    assert len(collected) == 1
    open[0] = 0
    clock.advance(1)
    assert len(collected) == 2
    collector.stop()
    assert clock.getDelayedCalls() == []
