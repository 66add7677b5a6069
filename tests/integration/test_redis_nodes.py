"""
Two gateway nodes sharing one Redis session map, in front of the same three
echo backends, with cookie affinity: a client routed by one node returns to
the same backend through the other; with Redis killed or hung, transparent
clients are still served (the balancer chooses); once Redis is back the
nodes share affinity again, without being restarted.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.logger import globalLogPublisher

from gateway.config import SessionMapConfig
from gateway.testing import connectClient, waitUntil
from tests.helpers import commandCounts, redisCommand

#: The bound of every wait, in seconds.
WAIT = 10.0

#: The session map's command timeout, in seconds.
TIMEOUT = 0.5

#: Clients with cookies of their own in each affinity check.
USERS = 6


def within(awaitable, seconds: float = WAIT):
    """
    @return: a L{Deferred} of C{awaitable} that fails after C{seconds}.
    """
    return ensureDeferred(awaitable).addTimeout(seconds, reactor)


def redisMap(url: str, prefix: str) -> SessionMapConfig:
    """
    @return: a C{[session_map]} of type C{redis} on C{url}.
    """
    return SessionMapConfig(
        type="redis", options=(("key_prefix", prefix), ("timeout", TIMEOUT), ("url", url))
    )


async def twoNodes(make_gateway, backends, url: str) -> tuple[str, list]:
    """
    Start two gateways on the same Redis (a key prefix of their own), with
    cookie affinity, and connect their session maps.

    @return: the key prefix and the two running gateways.
    """
    prefix = f"nodes-{uuid.uuid4().hex[:8]}:"
    nodes = []
    for _ in range(2):
        node = await within(make_gateway(backends, affinity="cookie:sid",
                                          sessionMap=redisMap(url, prefix)))
        await within(node.service.sessionMap.start())
        nodes.append(node)
    return prefix, nodes


async def connect(node, user: str | None = None):
    """
    Open a client through C{node}, with cookie C{sid=user} when given.
    """
    headers = {"Cookie": f"theme=dark; sid={user}"} if user else {}
    return await within(connectClient(node.url, headers=headers, timeout=WAIT))


async def whichBackend(client) -> str:
    """
    Ask a prefixed echo backend for its name through an open client.
    """
    client.send("who")
    payload, _ = await client.receive(WAIT)
    return payload.split(b":", 1)[0].decode()


async def closeAll(clients) -> None:
    """
    Close every client and wait for the closing handshakes.
    """
    await gatherResults([c.close().addTimeout(WAIT, reactor) for c in clients])


async def homesThrough(node, users: list[str]) -> dict[str, str]:
    """
    Connect every user through C{node}, one after the other, holding the
    connections open so that the node's balancer spreads them; close them.

    @return: the backend each user got.
    """
    clients, homes = [], {}
    for user in users:
        client = await connect(node, user)
        clients.append(client)
        homes[user] = await whichBackend(client)
    await closeAll(clients)
    return homes


async def assertSharedAffinity(nodeA, nodeB, port: int, prefix: str) -> dict[str, str]:
    """
    Users routed by node A return to the same backends through node B,
    connecting in the reverse order (so that B's balancer alone would place
    them differently); the records in Redis name those backends.

    @return: each user's backend.
    """
    users = [f"user-{uuid.uuid4().hex[:6]}" for _ in range(USERS)]
    homes = await homesThrough(nodeA, users)
    assert len(set(homes.values())) == 3, homes  # spread over the 3 backends
    for user, home in homes.items():
        key = f"{prefix}aff:default:cookie:{user}"
        assert await within(redisCommand(port, "GET", key)) == home.encode()
    assert await homesThrough(nodeB, users[::-1]) == homes
    return homes


@pytest_twisted.ensureDeferred
async def test_two_nodes_route_a_key_to_one_backend(redis_server, echo_backends, make_gateway):
    """
    A client routed by node A returns to the same backend when it connects
    through node B, and the other way round; each connection with an
    affinity key costs exactly two Redis commands (a GET before choosing, a
    SET refreshing the record after connecting), one without costs none.
    """
    backends = await within(echo_backends(3, prefix=True))
    prefix, (nodeA, nodeB) = await twoNodes(make_gateway, backends, redis_server.url)

    before = await within(commandCounts(redis_server.port))
    homes = await assertSharedAffinity(nodeA, nodeB, redis_server.port, prefix)
    after = await within(commandCounts(redis_server.port))
    connections = 2 * len(homes)
    # Plus the GET of each user's record by assertSharedAffinity itself.
    assert after.get("get", 0) - before.get("get", 0) == connections + len(homes)
    assert after.get("set", 0) - before.get("set", 0) == connections

    # And back through A, from B's records.
    assert await homesThrough(nodeA, list(homes)) == homes

    # A client without the cookie is balanced with no Redis command at all.
    before = await within(commandCounts(redis_server.port))
    plain = await connect(nodeB)
    await whichBackend(plain)
    await closeAll([plain])
    after = await within(commandCounts(redis_server.port))
    assert after.get("get", 0) == before.get("get", 0)
    assert after.get("set", 0) == before.get("set", 0)


@pytest_twisted.ensureDeferred
async def test_redis_killed_clients_still_served(make_redis_server, echo_backends, make_gateway):
    """
    With Redis killed, clients with and without affinity keys are served
    through both nodes at once (the balancer chooses; no Redis wait), each
    node logs the outage once; once Redis is back on its port, the nodes
    reconnect by themselves and share affinity again.
    """
    server = make_redis_server()
    backends = await within(echo_backends(3, prefix=True))
    prefix, (nodeA, nodeB) = await twoNodes(make_gateway, backends, server.url)
    await assertSharedAffinity(nodeA, nodeB, server.port, prefix)

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        server.kill()
        await within(waitUntil(lambda: not nodeA.service.sessionMap.connected
                               and not nodeB.service.sessionMap.connected))
        clients, took = [], []
        for i in range(12):
            node = (nodeA, nodeB)[i % 2]
            started = reactor.seconds()
            client = await connect(node, f"user-{i % 4}" if i < 8 else None)
            took.append(reactor.seconds() - started)
            clients.append(client)
            assert (await whichBackend(client)).startswith("backend-")
        await closeAll(clients)
        assert max(took) < TIMEOUT, took
    finally:
        globalLogPublisher.removeObserver(events.append)
    outages = [e for e in events if "falls back to the balancer" in e.get("log_format", "")]
    assert sorted(id(e["log_source"]) for e in outages) == sorted(
        id(n.service.sessionMap) for n in (nodeA, nodeB))

    server.start()
    await within(waitUntil(lambda: nodeA.service.sessionMap.connected
                           and nodeB.service.sessionMap.connected))
    await assertSharedAffinity(nodeA, nodeB, server.port, prefix)


@pytest_twisted.ensureDeferred
async def test_redis_hung_clients_still_served(make_redis_server, echo_backends, make_gateway):
    """
    With Redis hung (SIGSTOP), clients are still served: the first client
    through each node waits the map's timeout twice (its GET times out on
    one pooled connection, its SET on the other, and each silent connection
    is dropped), later clients do not wait at all; once Redis runs again
    the nodes share affinity again.
    """
    server = make_redis_server()
    backends = await within(echo_backends(3, prefix=True))
    prefix, (nodeA, nodeB) = await twoNodes(make_gateway, backends, server.url)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        took = []
        for i in range(8):
            node = (nodeA, nodeB)[i % 2]
            started = reactor.seconds()
            client = await connect(node, f"user-{i}")
            took.append(reactor.seconds() - started)
            assert (await whichBackend(client)).startswith("backend-")
            await closeAll([client])
        assert max(took) < 2 * TIMEOUT + 0.3, took
        assert max(took[2:]) < TIMEOUT, took
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    await within(waitUntil(lambda: nodeA.service.sessionMap.connected
                           and nodeB.service.sessionMap.connected))
    await assertSharedAffinity(nodeA, nodeB, server.port, prefix)


@pytest_twisted.ensureDeferred
async def test_clusterWideConnections(redis_server, echo_backends, make_gateway):
    """
    Two nodes count each other's connections (exchanged every heartbeat):
    least-connections on one node avoids the backend the other node has
    loaded, and a backend's max_connections holds across both nodes.
    """
    one, two = await echo_backends(2, prefix=True)
    prefix = f"conns-{uuid.uuid4().hex[:8]}:"
    smap = SessionMapConfig(type="redis", options=(
        ("key_prefix", prefix), ("node_ttl", 0.3), ("timeout", TIMEOUT), ("url", redis_server.url)))
    backends = [one.config(maxConnections=3), two.config()]
    a = await within(make_gateway(backends, sessionMap=smap))
    b = await within(make_gateway(backends, sessionMap=smap))
    viaA = [await connect(a) for _ in range(2)]  # least_conn: one on each backend
    viaA.append(await connect(a))
    names = sorted([await whichBackend(c) for c in viaA])
    assert names == ["backend-1", "backend-1", "backend-2"] or names == ["backend-1", "backend-2", "backend-2"]
    poolB = b.service.pools["default"]
    await within(waitUntil(lambda: sum(x.remote for x in poolB.backends) == 3, timeout=WAIT))
    counts = {x.name: x.remote for x in poolB.backends}
    heavier = max(counts, key=counts.get)
    lighter = min(counts, key=counts.get)
    viaB = await connect(b)
    assert await whichBackend(viaB) == lighter  # B counts A's connections
    # Fill backend-1 to its limit of 3 across both nodes: B then never picks it.
    extra = []
    for _ in range(10):  # least_conn spreads them; a few reach backend-1
        if poolB.backend("backend-1").connections + poolB.backend("backend-1").remote >= 3:
            break
        extra.append(await connect(b))
    await within(waitUntil(lambda: poolB.backend("backend-1").full(), timeout=WAIT))
    later = [await connect(b) for _ in range(3)]
    assert [await whichBackend(c) for c in later] == ["backend-2"] * 3
    print(f"\ncluster-wide counts: node B saw {counts} from node A ({heavier} heavier)")
    for client in viaA + [viaB] + extra + later:
        await client.close().addTimeout(WAIT, reactor)
