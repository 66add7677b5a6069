"""
Balancing over real backends: how 300 long-lived connections spread under
each balancer, hash stability when a backend leaves, affinity kept in the
session map, and health checks taking a backend out and back.
"""

from __future__ import annotations

import collections

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults

from gateway.config import HealthCheckConfig
from gateway.testing import connectClient, waitUntil

CONNECTIONS = 300


def address(i: int) -> str:
    """
    The i-th of 300 distinct loopback client addresses (127.0.1.1...).
    """
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def whichBackend(client) -> str:
    """
    Ask a prefixed echo backend for its name through an open client.
    """
    client.send("who")
    payload, _ = await client.receive()
    return payload.split(b":", 1)[0].decode()


async def openMany(url: str, n: int, **kwargs) -> list:
    """
    Open C{n} clients, 50 handshakes at a time; C{bindAddress} may be a
    function of the client's index.
    """
    clients = []
    bind = kwargs.pop("bindAddress", None)
    for start in range(0, n, 50):
        batch = [
            connectClient(url, bindAddress=bind(i) if bind else None, **kwargs)
            for i in range(start, min(start + 50, n))
        ]
        clients.extend(await gatherResults([Deferred.fromCoroutine(c) for c in batch]))
    return clients


async def closeAll(clients) -> None:
    """
    Close every client and wait for the closing handshakes.
    """
    await gatherResults([c.close().addTimeout(10, reactor) for c in clients])


@pytest.mark.parametrize("balance", ["least_conn", "round_robin", "hash"])
@pytest_twisted.ensureDeferred
async def test_distribution_of_300_connections(balance, echo_backends, make_gateway):
    """
    300 long-lived connections over 3 equal backends: least_conn and
    round_robin put exactly 100 on each; hash on 300 distinct client
    addresses puts between 60 and 140 on each.
    """
    backends = await echo_backends(3, prefix=True)
    gateway = await make_gateway(backends, balance=balance)
    clients = await openMany(gateway.url, CONNECTIONS, bindAddress=address)
    counts = collections.Counter()
    for client in clients:
        counts[await whichBackend(client)] += 1
    distribution = [counts[b.name] for b in backends]
    print(f"\n{balance}: {CONNECTIONS} connections over 3 backends -> {distribution}")
    assert sum(distribution) == CONNECTIONS
    assert [b.factory.opened for b in backends] == distribution
    if balance == "hash":
        assert all(60 <= n <= 140 for n in distribution), distribution
    else:
        assert distribution == [100, 100, 100]
    await closeAll(clients)


@pytest_twisted.ensureDeferred
async def test_weights_honoured(echo_backends, make_gateway):
    """
    With weights 1:2:3, least_conn spreads 300 connections 50/100/150.
    """
    backends = await echo_backends(3, prefix=True)
    configs = [b.config(weight=w) for b, w in zip(backends, (1, 2, 3))]
    gateway = await make_gateway(configs)
    clients = await openMany(gateway.url, CONNECTIONS)
    distribution = [b.factory.opened for b in backends]
    print(f"\nleast_conn weights 1:2:3 -> {distribution}")
    assert distribution == [50, 100, 150]
    await closeAll(clients)


@pytest_twisted.ensureDeferred
async def test_hash_stable_when_a_backend_leaves(echo_backends, make_gateway):
    """
    Hashing on the client address: when one of three backends is removed
    from the pool, only the clients that were on it move; every other
    client reaches the same backend as before.
    """
    backends = await echo_backends(3, prefix=True)
    before = {}
    gateway = await make_gateway(backends, balance="hash")
    clients = await openMany(gateway.url, CONNECTIONS, bindAddress=address)
    for i, client in enumerate(clients):
        before[i] = await whichBackend(client)
    await closeAll(clients)
    await gateway.service.stopService()

    gateway = await make_gateway(backends[:2], balance="hash")
    clients = await openMany(gateway.url, CONNECTIONS, bindAddress=address)
    moved = stayed = 0
    for i, client in enumerate(clients):
        now = await whichBackend(client)
        if before[i] == backends[2].name:
            moved += 1
            assert now != backends[2].name
        else:
            assert now == before[i], (i, before[i], now)
            stayed += 1
    print(f"\nhash: backend-3 removed: {moved} clients moved, {stayed} stayed")
    assert moved + stayed == CONNECTIONS and moved > 0
    await closeAll(clients)


@pytest_twisted.ensureDeferred
async def test_affinity_kept_in_session_map(echo_backends, make_gateway):
    """
    With cookie affinity, a client that reconnects with the same cookie
    returns to the backend it had, even when least_conn would choose
    another; when that backend is down it moves, and then stays on the new
    one.
    """
    backends = await echo_backends(3, prefix=True)
    gateway = await make_gateway(backends, affinity="cookie:sid")
    alice = {"Cookie": "sid=alice"}
    first = await connectClient(gateway.url, headers=alice)
    home = await whichBackend(first)
    # A second tab with the same cookie goes to the same, busier backend.
    second = await connectClient(gateway.url, headers=alice)
    assert await whichBackend(second) == home
    await closeAll([first, second])
    others = await openMany(gateway.url, 4)
    again = await connectClient(gateway.url, headers=alice)
    assert await whichBackend(again) == home
    await closeAll([again, *others])

    # Its backend goes away: the client moves, and the record follows it.
    homeBackend = next(b for b in backends if b.name == home)
    await homeBackend.stop()
    moved = await connectClient(gateway.url, headers=alice)
    newHome = await whichBackend(moved)
    assert newHome != home
    await closeAll([moved])
    await homeBackend.restart()
    back = await connectClient(gateway.url, headers=alice)
    assert await whichBackend(back) == newHome
    await closeAll([back])


@pytest_twisted.ensureDeferred
async def test_health_checks_take_backend_out_and_back(echo_backends, make_gateway):
    """
    With active WebSocket health checks, a backend that stops is marked
    down after `fall` failed checks and gets no new connections; when it
    returns it is marked up after `rise` good checks and is used again.
    """
    backends = await echo_backends(2, prefix=True)
    health = HealthCheckConfig(type="websocket", path="/", interval=0.1, timeout=0.5, rise=2, fall=2)
    gateway = await make_gateway(backends, health=health)
    pool = gateway.service.pools["default"]
    down = pool.backend(backends[0].name)
    await waitUntil(lambda: backends[0].factory.opened >= 2)  # health checks reach it

    await backends[0].stop()
    await waitUntil(lambda: not down.healthy)
    clients = await openMany(gateway.url, 6)
    assert {await whichBackend(c) for c in clients} == {backends[1].name}

    await backends[0].restart()
    await waitUntil(lambda: down.healthy)
    returned = await connectClient(gateway.url)
    assert await whichBackend(returned) == backends[0].name
    await closeAll([returned, *clients])


@pytest_twisted.ensureDeferred
async def test_passive_failures_mark_backend_down(echo_backends, make_gateway):
    """
    Without active checks, connect failures seen by the proxy mark a backend
    down after `fall` of them (3 by default), after which it is not tried.
    """
    backends = await echo_backends(2, prefix=True)
    gateway = await make_gateway(backends, balance="round_robin")
    pool = gateway.service.pools["default"]
    await backends[0].stop()
    dead = pool.backend(backends[0].name)
    clients = []
    for _ in range(6):
        client = await connectClient(gateway.url)
        assert await whichBackend(client) == backends[1].name
        clients.append(client)
    assert not dead.healthy
    await closeAll(clients)
