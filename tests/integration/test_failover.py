"""
Sessions across backend trouble, with real backends and real clients: a
backend killed (SIGKILL) under traffic, one restarted within the failover
window, a drain and a reload moving 300 sessions, rebalancing after a
backend returns, and a stalled client and a stalled backend held at their
bounds.

Each test prints what it measured (messages lost and duplicated, times).
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import replace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater

from gateway.client import ClientState, SessionClient
from gateway.config import BackendConfig, HealthCheckConfig, PoolConfig, SessionConfig
from gateway.testing import (
    LOCALHOST,
    CuttingRelay,
    gatewayConfig,
    projectEnvironment,
    startProcess,
    waitUntil,
)

HERE = os.path.dirname(os.path.abspath(__file__))


async def echoProcess(name: str, port: int = 0):
    """
    Start an echo backend process.

    @return: the process and its port.
    """
    process = await startProcess([sys.executable, os.path.join(HERE, "echo_server.py"), name, str(port)],
                                 r"listening on (\d+)", env=projectEnvironment())
    return process, int(process.match.group(1))


def backendConfig(name: str, port: int) -> BackendConfig:
    return BackendConfig(name=name, url=f"ws://{LOCALHOST}:{port}", host=LOCALHOST, port=port, secure=False)


def poolOf(backends, **settings) -> PoolConfig:
    return PoolConfig(name="default", backends=tuple(backends), **settings)


class Traffic:
    """
    Session clients, each sending numbered messages at a steady pace and
    counting the echoes, and whether any ever had to reconnect.
    """

    def __init__(self, url: str, n: int, transport: str = "websocket") -> None:
        self.clients = [SessionClient(url + "/", transport=transport, reactor=reactor) for _ in range(n)]
        self.echoes: list[Counter] = [Counter() for _ in range(n)]
        self.sent = [0] * n
        self.states: list[list] = [[] for _ in range(n)]
        self.running = False
        for i, client in enumerate(self.clients):
            client.on_message(lambda payload, isBinary, i=i: self.echoes[i].update([payload]))
            client.on_state(lambda state, detail, i=i: self.states[i].append(state))

    async def connect(self, batch: int = 50) -> None:
        for start in range(0, len(self.clients), batch):
            await gatherResults([c.connect().addTimeout(30, reactor)
                                 for c in self.clients[start:start + batch]])
        for states in self.states:
            states.clear()

    def start(self, interval: float) -> Deferred:
        self.running = True

        async def run(i: int) -> None:
            client = self.clients[i]
            await deferLater(reactor, interval * i / len(self.clients), lambda: None)
            while self.running:
                self.sent[i] += 1
                client.send(f"c{i}-m{self.sent[i]}")
                await deferLater(reactor, interval, lambda: None)

        return gatherResults([Deferred.fromCoroutine(run(i)) for i in range(len(self.clients))])

    async def stop(self, done: Deferred, timeout: float = 60.0) -> None:
        self.running = False
        await done
        await waitUntil(lambda: self.lost() == 0, timeout=timeout)

    def lost(self) -> int:
        return sum(1 for i, sent in enumerate(self.sent) for m in range(1, sent + 1)
                   if self.echoes[i][f"c{i}-m{m}"] == 0)

    def duplicated(self) -> int:
        return sum(count - 1 for echoes in self.echoes for count in echoes.values() if count > 1)

    def reconnected(self) -> int:
        return sum(1 for states in self.states if ClientState.reconnecting in states)

    async def close(self) -> None:
        await gatherResults([c.close().addTimeout(30, reactor) for c in self.clients])


def sessionsOn(gateway) -> Counter:
    return Counter(s.backend.name if s.backend else None for s in gateway.service.sessions.sessions.values())


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_backendKilledDuringTraffic(make_gateway, transport):
    """
    SIGKILL the backend process of 20 sessions under traffic: each session
    fails over to the other backend, its client stays connected, and under
    C{replay} every message sent is echoed (the unconfirmed ones sent again).
    """
    one, portOne = await echoProcess("one")
    two, portTwo = await echoProcess("two")
    try:
        pool = poolOf([backendConfig("one", portOne), backendConfig("two", portTwo)],
                      failoverWindow=0.2, rebalanceRate=0)
        gateway = await make_gateway(config=gatewayConfig(pools=[pool]))
        gateway.service.drainBackend("default", "two")
        traffic = Traffic(gateway.url, 20, transport)
        await traffic.connect()
        assert sessionsOn(gateway) == {"one": 20}
        gateway.service.enableBackend("default", "two")
        running = traffic.start(0.01)
        await deferLater(reactor, 1.0, lambda: None)
        started = time.monotonic()
        one.signal("KILL")
        await waitUntil(lambda: sessionsOn(gateway) == {"two": 20}, timeout=30)
        moved = time.monotonic() - started
        await deferLater(reactor, 0.5, lambda: None)
        await traffic.stop(running)
        sent = sum(traffic.sent)
        print(f"\nbackend killed ({transport}): {sent} messages sent by 20 sessions, lost "
              f"{traffic.lost()}, duplicated {traffic.duplicated()}, all failed over in {moved:.2f}s, "
              f"clients reconnected: {traffic.reconnected()}")
        assert traffic.lost() == 0
        assert traffic.reconnected() == 0
        failovers = sum(s.failovers for s in gateway.service.sessions.sessions.values())
        assert failovers == 20
        await traffic.close()
    finally:
        one.signal("KILL")
        two.signal("KILL")


@pytest_twisted.ensureDeferred
async def test_sameBackendFirstWithinWindow(echo_backends, make_gateway):
    """
    A backend that comes back within C{failover_window} gets its sessions
    back, resumed (C{X-Session-Resumed: 1} and the counts); the other backend
    gets none of them.
    """
    one, two = await echo_backends(2)
    pool = poolOf([one.config(), two.config()], failoverWindow=5.0, rebalanceRate=0)
    gateway = await make_gateway(config=gatewayConfig(pools=[pool]))
    gateway.service.drainBackend("default", "backend-2")
    traffic = Traffic(gateway.url, 3)
    await traffic.connect()
    gateway.service.enableBackend("default", "backend-2")
    for i, client in enumerate(traffic.clients):
        client.send(f"c{i}-m1")
        traffic.sent[i] = 1
    await waitUntil(lambda: traffic.lost() == 0)
    sessions = gateway.service.sessions.sessions.values()
    await waitUntil(lambda: all(s.upstream.confirmed == 1 and not s.upstream.unconfirmed for s in sessions))
    await one.stop()
    await deferLater(reactor, 0.5, lambda: None)
    assert sessionsOn(gateway) == {None: 3}
    await one.restart()
    await waitUntil(lambda: sessionsOn(gateway) == {"backend-1": 3})
    handshake = one.factory.handshakes[-1].decode("latin-1").lower()
    assert "x-session-resumed: 1" in handshake
    assert "x-session-delivered: 1" in handshake and "x-session-received: 1" in handshake
    assert two.factory.opened == 0
    for i, client in enumerate(traffic.clients):
        client.send(f"c{i}-m2")
        traffic.sent[i] = 2
    await waitUntil(lambda: traffic.lost() == 0)
    assert traffic.reconnected() == 0
    await traffic.close()


@pytest_twisted.ensureDeferred
async def test_failoverPolicyClose(echo_backends, make_gateway):
    """
    Under C{failover = "close"} a dropped backend ends the session: the
    client is told with the close packet (1011).
    """
    [one] = await echo_backends(1)
    gateway = await make_gateway(config=gatewayConfig(pools=[poolOf([one.config()], failover="close")]))
    client = SessionClient(gateway.url, transport="websocket", reactor=reactor)
    await client.connect().addTimeout(10, reactor)
    closed = client.nextState(ClientState.closed)
    await one.stop()
    state, detail = await closed.addTimeout(10, reactor)
    assert detail.code in (1006, 1011)


@pytest_twisted.ensureDeferred
async def test_drainMovesThreeHundredSessions(echo_backends, make_gateway):
    """
    Draining a backend with 300 sessions under traffic moves them all to
    the other at C{drain_rate} (100 a second here), and loses nothing.
    """
    one, two = await echo_backends(2)
    pool = poolOf([one.config(), two.config()], drainRate=100.0, rebalanceRate=0)
    # 300 sessions from one address: past the per-address defaults.
    session = SessionConfig(maxSessionsPerIp=300, openBurstPerIp=300)
    gateway = await make_gateway(config=gatewayConfig(pools=[pool], session=session))
    service = gateway.service
    service.drainBackend("default", "backend-2")
    traffic = Traffic(gateway.url, 300)
    await traffic.connect()
    assert sessionsOn(gateway) == {"backend-1": 300}
    service.enableBackend("default", "backend-2")
    running = traffic.start(0.25)
    await deferLater(reactor, 0.5, lambda: None)
    started = time.monotonic()
    service.drainBackend("default", "backend-1")
    await waitUntil(lambda: sessionsOn(gateway) == {"backend-2": 300}, timeout=60)
    took = time.monotonic() - started
    await traffic.stop(running)
    print(f"\ndrain: 300 sessions moved in {took:.2f}s at drain_rate 100/s; "
          f"{sum(traffic.sent)} messages sent, lost {traffic.lost()}, duplicated {traffic.duplicated()}, "
          f"clients reconnected: {traffic.reconnected()}")
    assert took >= 2.0  # the rate holds: 300 at 100 a second
    assert traffic.lost() == 0
    assert traffic.duplicated() == 0  # a clean close confirms everything
    assert traffic.reconnected() == 0
    assert one.factory.connections == set()
    await traffic.close()


@pytest_twisted.ensureDeferred
async def test_rebalanceAfterBackendReturns(echo_backends, make_gateway):
    """
    300 sessions opened while one of two backends was down are spread
    evenly once it returns (active health checks see it), at
    C{rebalance_rate}; the time taken is printed.
    """
    one, two = await echo_backends(2)
    health = HealthCheckConfig(interval=0.2, timeout=1.0, rise=1, fall=1)
    pool = poolOf([one.config(), two.config()], health=health, rebalanceRate=50.0)
    # 300 sessions from one address: past the per-address defaults.
    session = SessionConfig(maxSessionsPerIp=300, openBurstPerIp=300)
    gateway = await make_gateway(config=gatewayConfig(pools=[pool], session=session))
    service = gateway.service
    await two.stop()
    backendTwo = service.pools["default"].backend("backend-2")
    await waitUntil(lambda: not backendTwo.healthy)
    traffic = Traffic(gateway.url, 300)
    await traffic.connect()
    assert sessionsOn(gateway) == {"backend-1": 300}
    running = traffic.start(0.5)
    await two.restart()
    await waitUntil(lambda: backendTwo.healthy)
    started = time.monotonic()

    def even():
        counts = sessionsOn(gateway)
        return abs(counts["backend-1"] - counts["backend-2"]) <= 1 and counts[None] == 0

    await waitUntil(even, timeout=60)
    took = time.monotonic() - started
    await deferLater(reactor, 1.0, lambda: None)
    assert even()  # and it stays so: no moves back and forth
    await traffic.stop(running)
    print(f"\nrebalance: 300 sessions spread 150/150 {took:.2f}s after the backend returned "
          f"(rebalance_rate 50/s; {service.mover.rebalanced} moved); lost {traffic.lost()}, "
          f"duplicated {traffic.duplicated()}")
    assert service.mover.rebalanced == 150
    assert traffic.lost() == 0 and traffic.reconnected() == 0
    await traffic.close()


@pytest_twisted.ensureDeferred
async def test_reloadMovesSessionsOffRemovedBackend(echo_backends, make_gateway):
    """
    A reload that removes a backend and adds another moves the removed
    one's sessions to the new one (drain policy C{move}), loses nothing, and
    takes the removed backend out once its last session left.
    """
    one, two = await echo_backends(2)
    first = gatewayConfig(pools=[poolOf([one.config()], drainRate=50.0)])
    gateway = await make_gateway(config=first)
    service = gateway.service
    traffic = Traffic(gateway.url, 50)
    await traffic.connect()
    running = traffic.start(0.2)
    service.configLoader = lambda: replace(first, pools=(poolOf([two.config()], drainRate=50.0),))
    reloaded = service.reload()
    assert "pool default: backend backend-1 removed (draining)" in reloaded.changes
    await waitUntil(lambda: sessionsOn(gateway) == {"backend-2": 50}, timeout=30)
    await traffic.stop(running)
    await waitUntil(lambda: [b.name for b in service.pools["default"].backends] == ["backend-2"], timeout=10)
    assert traffic.lost() == 0 and traffic.duplicated() == 0 and traffic.reconnected() == 0
    await traffic.close()


@pytest_twisted.ensureDeferred
async def test_stalledClientAtItsBound(echo_backends, make_gateway):
    """
    A client that stops reading (its TCP path stalls) while the backend
    floods: the gateway stops reading from the backend, holding at most the
    replay buffer's bound; when the client reads again it gets everything,
    once, in order.
    """
    [one] = await echo_backends(1)
    session = SessionConfig(maxBufferMessages=2000, maxBufferBytes=4 * 1024 * 1024)
    gateway = await make_gateway([one], session=session)
    relay = CuttingRelay(gateway.port)
    await relay.start()
    got: list = []
    client = SessionClient(f"ws://{LOCALHOST}:{relay.port}", transport="websocket", reactor=reactor)
    client.on_message(lambda payload, isBinary: got.append(payload))
    await client.connect().addTimeout(10, reactor)
    [gatewaySession] = gateway.service.sessions.sessions.values()
    [backend] = one.factory.connections
    relay.pause()
    total, payload = 20000, b"x" * 1024
    for i in range(total):
        backend.sendMessage(b"%d:" % i + payload, True)
    await waitUntil(lambda: gatewaySession.upstream.backendValve.closed, timeout=30)
    await deferLater(reactor, 1.0, lambda: None)
    held = len(gatewaySession.outbox)
    assert gatewaySession.state == "attached"
    assert held <= session.maxBufferMessages
    print(f"\nstalled client: reading from the backend paused ({sorted(gatewaySession.upstream.backendValve.reasons)})"
          f" with {held} messages ({gatewaySession.outbox.pendingBytes} bytes) held; bound "
          f"{session.maxBufferMessages}")
    relay.resume()
    await waitUntil(lambda: len(got) == total, timeout=60)
    assert [bytes(m).split(b":", 1)[0] for m in got] == [b"%d" % i for i in range(total)]
    assert not gatewaySession.upstream.backendValve.closed
    await client.close().addTimeout(10, reactor)
    await relay.stop()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_stalledBackendAtItsBound(echo_backends, make_gateway, transport):
    """
    A backend that stops reading while its client sends: the gateway holds
    at most C{max_inflight_messages} unconfirmed (plus one read or one
    send), stops reading from the client, and the client's messages wait on
    its side; when the backend reads again everything arrives, once.
    """
    [one] = await echo_backends(1)
    session = SessionConfig(maxInflightMessages=200)
    gateway = await make_gateway([one], session=session)
    got: list = []
    client = SessionClient(gateway.url + "/", transport=transport, reactor=reactor, maxBufferMessages=100000,
                           maxBufferBytes=256 * 1024 * 1024)
    client.on_message(lambda payload, isBinary: got.append(payload))
    await client.connect().addTimeout(10, reactor)
    [gatewaySession] = gateway.service.sessions.sessions.values()
    [backend] = one.factory.connections
    backend.transport.pauseProducing()
    total, payload = 5000, "y" * 1024
    for i in range(total):
        client.send(f"{i}:{payload}")
    await waitUntil(lambda: gatewaySession.upstream.clientValve.closed, timeout=30)
    await deferLater(reactor, 1.0, lambda: None)
    held = len(gatewaySession.upstream.unconfirmed)
    print(f"\nstalled backend ({transport}): reading from the client paused "
          f"({sorted(gatewaySession.upstream.clientValve.reasons)}) with {held} unconfirmed messages "
          f"({gatewaySession.upstream.unconfirmedBytes} bytes); bound {session.maxInflightMessages}")
    assert held <= session.maxInflightMessages + 1000
    assert gatewaySession.inbox.accepted < total
    backend.transport.resumeProducing()
    await waitUntil(lambda: len(got) == total, timeout=60)
    assert [m.split(":", 1)[0] for m in got] == [str(i) for i in range(total)]
    await client.close().addTimeout(10, reactor)
