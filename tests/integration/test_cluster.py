"""
Several real C{twistd gateway} nodes sharing sessions through one real
Redis, behind a real HAProxy balancing round robin with no stickiness: a
client that reconnects often, over WebSocket or long-polling, exchanges
thousands of messages exactly once; the node that owns its session is
killed with SIGKILL mid-stream; Redis is killed and restarted under traffic.
"""

from __future__ import annotations

import json
import os
import random
import re
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import ensureDeferred, gatherResults

from gateway.client import ClientState
from gateway.testing import CuttingRelay, connectClient, rawExchange, waitUntil
from gateway.wire.protocol import SUBPROTOCOL, Welcome, decodeMessage
from tests.helpers import redisCommand

from .helpers import TOKEN, HAProxy, LineWatcher, admin
from .traffic import NumberedTraffic

#: Messages each way in each run.
MESSAGES = 2000

#: Seconds after which a node's heartbeat is taken for dead.
NODE_TTL = 1.0


def nodeConfig(tmp_path, name: str, redisURL: str, prefix: str, backends, extra: str = "",
               pool: str = "") -> str:
    """
    @return: the path of a configuration for node C{name}, with C{extra}
        tables and C{pool} keys of pool C{chat}.
    """
    text = (
        "[timeouts]\nshutdown = 2\n" + extra +
        f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nkey_prefix = "{prefix}"\n'
        f'node_id = "{name}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.5\n'
        "[pool.chat]\n" + pool
    )
    for backend in backends:
        text += f'[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


async def startNodes(tmp_path, gateway_process, redis, backends, count: int, extra: str = "",
                     pool: str = ""):
    """
    Start C{count} gateway nodes on C{redis} (see L{nodeConfig}).

    @return: the nodes (by name), and the key prefix.
    """
    prefix = f"c{uuid.uuid4().hex[:6]}:"
    nodes = {}
    for i in range(1, count + 1):
        name = f"n{i}"
        nodes[name] = await gateway_process(
            "--config", nodeConfig(tmp_path, name, redis.url, prefix, backends, extra, pool))
    return nodes, prefix


async def cluster(tmp_path, gateway_process, redis, backends, count: int, extra: str = "",
                  pool: str = ""):
    """
    Start C{count} gateway nodes on C{redis} and HAProxy in front of them.

    @return: the nodes (by name), HAProxy, and the key prefix.
    """
    nodes, prefix = await startNodes(tmp_path, gateway_process, redis, backends, count, extra, pool)
    proxy = HAProxy(str(tmp_path), [n.port for n in nodes.values()])
    await proxy.start()
    return nodes, proxy, prefix


async def nodeHealth(node) -> dict:
    """
    @return: the node's health document.
    """
    answer = await rawExchange(node.port, b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return json.loads(answer.partition(b"\r\n\r\n")[2])


def numbered(url: str, transport: str, rng: random.Random) -> NumberedTraffic:
    """
    @return: a session client sending C{MESSAGES} messages, one to eight
        every 3 ms, reconnecting at once.
    """
    return NumberedTraffic(url, transport, total=MESSAGES, interval=0.003, burst=lambda: rng.randint(1, 8),
                           initialDelay=0.005, maxDelay=0.05)


async def startQuarter(run: NumberedTraffic, redis, prefix: str) -> str:
    """
    Start C{run}, and wait for a quarter of the echoes.

    @return: the name of the node that owns its session.
    """
    await run.start()
    await waitUntil(lambda: len(run.received) >= MESSAGES // 4, timeout=60)
    owner = await redisCommand(redis.port, "HGET", f"{prefix}s:{run.client.sessionId}", "owner")
    return owner.decode()


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_roundRobinExactlyOnce(transport, tmp_path, redis_server, echo_backends, gateway_process):
    """
    Three nodes behind HAProxy round robin, the client's connections cut
    from outside at least 30 times: every reconnection lands on the next
    node, and each of 2,000 messages each way arrives once, in order; the
    session keeps its one backend connection.  Prints the Redis round
    trips per message relayed.
    """
    seed = int(os.environ.get("TXGATEWAY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    backends = await echo_backends(2, record=True)
    nodes, proxy, _ = await cluster(tmp_path, gateway_process, redis_server, backends, 3)
    relay = CuttingRelay(proxy.port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", transport, rng)
    try:
        before = sum([(await nodeHealth(n))["cluster"]["redis_commands"] for n in nodes.values()])
        await run.start()

        def cut():
            if len(run.resumes) < 30 or run.sent < MESSAGES:
                relay.cut()
                reactor.callLater(rng.uniform(0.02, 0.08), cut)

        reactor.callLater(0.05, cut)
        await waitUntil(lambda: len(run.resumes) >= 30, timeout=120)
        await run.finish(timeout=120)
        await run.close()
        after = sum([(await nodeHealth(n))["cluster"]["redis_commands"] for n in nodes.values()])
        relayed = [(await nodeHealth(n))["cluster"] for n in nodes.values()]
    finally:
        await relay.stop()
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nround robin over 3 nodes, {transport} (seed {seed}): {MESSAGES} messages each way,"
          f" {relay.cuts} cuts, {len(run.resumes)} resumes; to the backend {dupUp} duplicated,"
          f" {lostUp} lost; to the client {dupDown} duplicated, {lostDown} lost;"
          f" Redis round trips per message relayed (both directions, heartbeats included):"
          f" {(after - before) / (2 * MESSAGES):.2f}; nodes: {relayed}")
    assert run.resets == [], seed
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0), seed
    assert [m.decode() for b in backends for m in b.factory.received] == [f"c:{i}" for i in range(1, MESSAGES + 1)]
    assert sum(b.factory.opened for b in backends) == 1


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_ownerKilled(transport, tmp_path, redis_server, echo_backends, gateway_process):
    """
    Three nodes behind HAProxy; the node that owns the session is killed
    with SIGKILL mid-stream: the client resumes through another node, which
    takes the session over (after the dead node's heartbeat expires) on the
    same backend; nothing the gateway acknowledged is lost, nothing is
    duplicated.  Prints the time from the kill to the next message.
    """
    rng = random.Random(7)
    backends = await echo_backends(2, record=True)
    nodes, proxy, prefix = await cluster(tmp_path, gateway_process, redis_server, backends, 3)
    run = numbered(f"ws://127.0.0.1:{proxy.port}/chat", transport, rng)
    try:
        owner = await startQuarter(run, redis_server, prefix)
        serving = [b for b in backends if b.factory.received]
        killed = reactor.seconds()
        nodes[owner].signal("KILL")
        first = f"c:{run.sent + 1}"  # the first message sent after the kill
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        resumed = run.arrivals[first] - killed
        await run.finish(timeout=120)
        await run.close()
    finally:
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nowner {owner} killed with SIGKILL, {transport}: traffic resumed {resumed:.2f}s later"
          f" (node_ttl {NODE_TTL}s); to the backend {dupUp} duplicated, {lostUp} lost;"
          f" to the client {dupDown} duplicated, {lostDown} lost")
    assert run.resets == []
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)
    assert [b for b in backends if b.factory.received] == serving  # the same backend
    assert serving[0].factory.opened == 2  # the session's link, and the one after the takeover


@pytest_twisted.ensureDeferred
async def test_redisRestartedUnderTraffic(tmp_path, make_redis_server, echo_backends, gateway_process):
    """
    Two nodes behind HAProxy, Redis killed and restarted empty while a
    WebSocket client sends: the attached session keeps flowing while its
    owner's lease holds, then the owner stops and tells its client to
    resume (which waits for Redis); once Redis is back the owner writes the
    session to Redis again and the client resumes, through either node;
    nothing lost or duplicated.
    """
    redis = make_redis_server()
    rng = random.Random(11)
    backends = await echo_backends(1, record=True)
    nodes, proxy, prefix = await cluster(tmp_path, gateway_process, redis, backends, 2)
    relay = CuttingRelay(proxy.port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    try:
        await run.start()
        await waitUntil(lambda: len(run.received) >= MESSAGES // 4, timeout=60)
        resumes = len(run.resumes)
        redis.kill()
        mark = len(run.received)
        healthy = {name: True for name in nodes}

        async def report():
            for name, node in nodes.items():
                healthy[name] = (await nodeHealth(node))["status"] == "ok"

        deadline = reactor.seconds() + 20
        while any(healthy.values()):  # both nodes say so, within a few heartbeats
            assert reactor.seconds() < deadline, healthy
            await report()
            await task.deferLater(reactor, 0.1, lambda: None)
        assert len(run.received) > mark  # and the attached session kept flowing
        # Its lease run out, the owner stops: the client is told to resume.
        await waitUntil(lambda: run.client.state is not ClientState.open, timeout=15)
        redis.start()
        sid = run.client.sessionId

        async def rewritten():
            for _ in range(500):
                if await redisCommand(redis.port, "EXISTS", f"{prefix}s:{sid}") == 1:
                    return True
                await task.deferLater(reactor, 0.02, lambda: None)
            return False

        assert await rewritten()
        await waitUntil(lambda: len(run.resumes) > resumes, timeout=30)  # through either node
        await run.finish(timeout=120)
        await run.close()
    finally:
        await relay.stop()
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nRedis killed and restarted under traffic: both nodes' health said 503 while it was down,"
          f" the owner stopped once its lease ran out and its client resumed once Redis was back;"
          f" to the backend {dupUp} duplicated, {lostUp} lost; to the client {dupDown}"
          f" duplicated, {lostDown} lost")
    assert run.resets == []
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_ownerStopped(transport, tmp_path, redis_server, echo_backends, gateway_process):
    """
    SIGTERM to the node that owns the session, mid-stream: it tells the
    client to resume (1012) and leaves at once, the client resumes through
    the other node, which takes the session over on the same backend;
    nothing lost or duplicated, and the stopped node exits 0.
    """
    rng = random.Random(5)
    backends = await echo_backends(1, record=True)
    nodes, proxy, prefix = await cluster(tmp_path, gateway_process, redis_server, backends, 2)
    run = numbered(f"ws://127.0.0.1:{proxy.port}/chat", transport, rng)
    try:
        owner = await startQuarter(run, redis_server, prefix)
        stopped = reactor.seconds()
        nodes[owner].signal("TERM")
        first = f"c:{run.sent + 1}"
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        resumed = run.arrivals[first] - stopped
        status = await nodes[owner].wait(30)
        await run.finish(timeout=120)
        await run.close()
    finally:
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nowner {owner} stopped with SIGTERM, {transport}: exit status {status}, traffic resumed"
          f" {resumed:.2f}s later; to the backend {dupUp} duplicated, {lostUp} lost;"
          f" to the client {dupDown} duplicated, {lostDown} lost")
    assert status == 0
    assert run.resets == []
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)


@pytest_twisted.ensureDeferred
async def test_pausedOwnerFenced(tmp_path, redis_server, echo_backends, gateway_process):
    """
    The owner is paused (SIGSTOP) rather than killed: the client resumes
    through another node, which takes the session over once the paused
    node's heartbeat expires.  When the old owner wakes (SIGCONT) its epoch
    is stale: it lets go of the session (closing its backend connection
    with 1001) and pumps nothing, so the backend gets each message once.
    """
    rng = random.Random(3)
    backends = await echo_backends(1, record=True)
    nodes, proxy, prefix = await cluster(tmp_path, gateway_process, redis_server, backends, 3)
    relay = CuttingRelay(proxy.port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    factory = backends[0].factory
    try:
        owner = await startQuarter(run, redis_server, prefix)
        sid = run.client.sessionId
        nodes[owner].signal("STOP")
        relay.cut()  # the client resumes through HAProxy, which skips the paused node
        first = f"c:{run.sent + 1}"
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        newOwner = (await redisCommand(redis_server.port, "HGET", f"{prefix}s:{sid}", "owner")).decode()
        closes = len(factory.closes)
        nodes[owner].signal("CONT")
        await waitUntil(lambda: len(factory.closes) > closes, timeout=30)
        await run.finish(timeout=120)
        links = len(factory.connections)  # the new owner's only
        await run.close()
    finally:
        await relay.stop()
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nowner {owner} paused, {newOwner} took over; on waking {owner} closed its backend"
          f" connection with {factory.closes[closes][1]}; the backend dropped {factory.fenced} messages"
          f" of the old epoch; to the backend {dupUp} duplicated,"
          f" {lostUp} lost; to the client {dupDown} duplicated, {lostDown} lost")
    assert newOwner != owner
    assert factory.closes[closes][1] == 1001
    assert run.resets == []
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)
    assert links == 1


async def rawHello(port: int, **resume):
    """
    Connect a session-protocol WebSocket to a node and say hello (new, or
    resuming C{sid}, C{secret}, C{recv}).

    @return: the client and the gateway's first packet.
    """
    client = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, **resume}))
    payload, isBinary = await client.receive(10)
    return client, decodeMessage(payload, isBinary)


@pytest_twisted.ensureDeferred
async def test_expiredElsewhereIsExpired(tmp_path, redis_server, echo_backends, gateway_process):
    """
    A session that expired on its node (its grace period ran out) is
    refused as expired (4410) when its client resumes through another node,
    as its own node would answer, not as unknown (4404).
    """
    backends = await echo_backends(1, record=True)
    nodes, prefix = await startNodes(tmp_path, gateway_process, redis_server, backends, 2,
                                     extra="[session]\ngrace = 0.5\n")
    client, welcome = await rawHello(nodes["n1"].port)
    assert isinstance(welcome, Welcome)
    closes = len(backends[0].factory.closes)
    client.protocol.transport.abortConnection()
    await waitUntil(lambda: len(backends[0].factory.closes) > closes, timeout=30)
    assert backends[0].factory.closes[closes][1:] == (1001, "client did not resume")
    for node in ("n2", "n1"):
        client = await connectClient(f"ws://127.0.0.1:{nodes[node].port}", path="/chat",
                                     protocols=[SUBPROTOCOL])
        client.send(json.dumps({"t": "hello", "v": 1, "sid": welcome.sid, "secret": welcome.secret,
                                "recv": 0}))
        assert (await client.closed.addTimeout(10, reactor))[1] == 4410, node


@pytest_twisted.ensureDeferred
async def test_ownerKilledSessionStaysOnItsBackend(tmp_path, redis_server, echo_backends, gateway_process):
    """
    Two nodes, two backends, rebalancing on: when the owner is killed with
    SIGKILL and the other node takes its session over on the same backend
    (the client reaching it as soon as the dead node's liveness has
    expired, before the survivor's next heartbeat), the session stays on
    that backend.  The survivor's last view of the cluster still counts the
    dead node's connection to it; the session must not be counted twice
    (once there, once as its own) and moved for balance.
    """
    rng = random.Random(13)
    backends = await echo_backends(2, record=True)
    nodes, prefix = await startNodes(tmp_path, gateway_process, redis_server, backends, 2,
                                     pool="rebalance_rate = 50\n")
    relay = CuttingRelay(nodes["n1"].port, nodes["n2"].port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    try:
        owner = await startQuarter(run, redis_server, prefix)
        [survivor] = [name for name in nodes if name != owner]
        watcher = LineWatcher(nodes[survivor])
        serving = [b for b in backends if b.factory.received]
        relay.targets = [nodes[owner].port]  # refused once it is dead: the client keeps trying
        nodes[owner].signal("KILL")
        first = f"c:{run.sent + 1}"  # the first message sent after the kill
        await nodes[owner].wait(10)
        relay.cut()

        async def expired():
            for _ in range(500):
                if await redisCommand(redis_server.port, "EXISTS", f"{prefix}alive:{owner}") == 0:
                    return
                await task.deferLater(reactor, 0.005, lambda: None)

        await expired()
        relay.targets = [nodes[survivor].port]
        mark = watcher.mark()
        await watcher.wait(r"took session \S+ over", 0, timeout=30)
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        await task.deferLater(reactor, 1.5, lambda: None)  # many mover ticks, a few heartbeats
        moves = watcher.matching(r"move to backend", mark)
        await run.finish(timeout=120)
        await run.close()
    finally:
        await relay.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    assert moves == []
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)
    assert [b for b in backends if b.factory.received] == serving  # the same backend
    assert serving[0].factory.opened == 2  # the session's link, and the one after the takeover



@pytest_twisted.ensureDeferred
async def test_ownerKilledBetweenBackends(tmp_path, redis_server, echo_backends, gateway_process):
    """
    The owner is killed with SIGKILL while its session is between backends
    (its only backend went away, and the session waits for it to come
    back): the client messages it accepted and acknowledged meanwhile,
    which no backend got, are not recorded as delivered, so the node that
    takes the session over hands them to the backend; every message
    arrives once.
    """
    rng = random.Random(17)
    backends = await echo_backends(1, record=True)
    backend = backends[0]
    nodes, prefix = await startNodes(tmp_path, gateway_process, redis_server, backends, 2,
                                     pool="failover_window = 60\nfailover_timeout = 60\n")
    relay = CuttingRelay(nodes["n1"].port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    expected = [f"c:{i}" for i in range(1, MESSAGES + 1)]
    try:
        owner = await startQuarter(run, redis_server, prefix)
        assert owner == "n1"
        await backend.stop()
        stopped = run.sent
        await waitUntil(lambda: run.sent >= stopped + 100, timeout=30)
        run.sender.stop()
        # Acknowledged by the owner, while no backend has them.
        await run.client.whenAcknowledged().addTimeout(30, reactor)
        relay.targets = [nodes["n2"].port]
        nodes["n1"].signal("KILL")
        await nodes["n1"].wait(10)
        relay.cut()
        await backend.restart()
        run.sender.start(0.003)
        await waitUntil(lambda: run.sent >= MESSAGES, timeout=60)
        run.sender.stop()
        atBackend = lambda: [m.decode() for m in backend.factory.received]  # noqa: E731
        await waitUntil(lambda: set(expected) <= set(atBackend()), timeout=30)
        await waitUntil(lambda: len(run.received) >= MESSAGES, timeout=30)
        await run.client.whenAcknowledged().addTimeout(30, reactor)
        await run.close()
    finally:
        await relay.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)
    assert run.resets == []


@pytest_twisted.ensureDeferred
async def test_ownerCutOffFromRedisStops(tmp_path, redis_server, echo_backends, gateway_process):
    """
    The owner is cut off from Redis (its connections to Redis go through a
    relay that is then stopped), while the other node still reaches it.
    Once the owner's lease has run out it stops pumping: its client is
    told to resume (4503), resumes through the other node, which takes the
    session over; the cut-off node writes nothing more to the backend, so
    only the new owner does; every message arrives once.
    """
    rng = random.Random(19)
    backends = await echo_backends(1, record=True)
    factory = backends[0].factory
    toRedis = CuttingRelay(redis_server.port)
    redisPort = await toRedis.start()
    prefix = f"c{uuid.uuid4().hex[:6]}:"
    nodes = {
        "n1": await gateway_process("--config", nodeConfig(
            tmp_path, "n1", f"redis://127.0.0.1:{redisPort}/0", prefix, backends)),
        "n2": await gateway_process("--config", nodeConfig(tmp_path, "n2", redis_server.url, prefix, backends)),
    }
    relay = CuttingRelay(nodes["n1"].port)
    port = await relay.start()
    run = numbered(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    watcher = LineWatcher(nodes["n1"])
    try:
        owner = await startQuarter(run, redis_server, prefix)
        assert owner == "n1"
        relay.targets = [nodes["n2"].port]
        resumes = len(run.resumes)
        await toRedis.stop()
        await waitUntil(lambda: len(run.resumes) > resumes, timeout=15)  # told to resume
        assert watcher.matching(r"node n1: lease expired")
        await run.finish(timeout=120)
        await run.close()
    finally:
        await relay.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nowner cut off from Redis: it stopped once its lease expired; the backend dropped"
          f" {factory.fenced} messages of the old epoch; to the backend {dupUp} duplicated, {lostUp}"
          f" lost; to the client {dupDown} duplicated, {lostDown} lost")
    assert (dupUp, lostUp, dupDown, lostDown) == (0, 0, 0, 0)
    assert run.resets == []
    assert factory.fenced == 0  # nothing came on the old connection after the new one
    assert factory.opened == 2


async def adminNode(gateway_process, tmp_path, name: str, redisURL: str, prefix: str, backends,
                    pool: str = ""):
    """
    Start node C{name} with the admin API on a free port.

    @return: the node and its admin port.
    """
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    node = await gateway_process(
        "--config", nodeConfig(tmp_path, name, redisURL, prefix, backends, pool=pool),
        "--admin", "tcp:0:interface=127.0.0.1", "--admin-token-file", str(token))
    [port] = re.findall(r"admin API listening on 127\.0\.0\.1:(\d+)", node.output)
    return node, int(port)


@pytest_twisted.ensureDeferred
async def test_rebalanceOneNodeAtATime(tmp_path, redis_server, echo_backends, gateway_process):
    """
    Two nodes with ten sessions each, all on backend-1 while backend-2
    drains; backend-2 is enabled again on both at once.  Both see the same
    cluster-wide imbalance (twenty against none), but only the node whose
    turn it is moves sessions, so together they move about the ten an even
    spread needs, not ten each (which would put all twenty on backend-2,
    and then move them back).  Prints the moves.
    """
    backends = await echo_backends(2)
    prefix = f"c{uuid.uuid4().hex[:6]}:"
    pool = 'rebalance_rate = 50\ndrain = "wait"\n'
    nodes = {}
    for name in ("n1", "n2"):
        nodes[name] = await adminNode(gateway_process, tmp_path, name, redis_server.url, prefix, backends, pool)
    watchers = {name: LineWatcher(node) for name, (node, _) in nodes.items()}
    for _, port in nodes.values():
        status, _ = await admin(port, "POST", "/pools/chat/backends/backend-2/drain")
        assert status == 200
    clients = []
    for node, _ in nodes.values():
        for _ in range(10):
            client, welcome = await rawHello(node.port)
            assert isinstance(welcome, Welcome)
            clients.append(client)
    assert len(backends[0].factory.connections) == 20
    await task.deferLater(reactor, 1.0, lambda: None)  # every node's counts seen by the other
    marks = {name: w.mark() for name, w in watchers.items()}
    await gatherResults([ensureDeferred(admin(port, "POST", "/pools/chat/backends/backend-2/enable"))
                         for _, port in nodes.values()])
    await task.deferLater(reactor, 4.0, lambda: None)  # a dozen heartbeats, forty mover ticks
    moves = {name: len(w.matching(r"move to backend", marks[name])) for name, w in watchers.items()}
    spread = [len(b.factory.connections) for b in backends]
    print(f"\nrebalancing 20 sessions over two nodes: moves by node {moves}, sessions per backend {spread}")
    for client in clients:
        client.protocol.transport.abortConnection()
    assert 9 <= sum(moves.values()) <= 12
    assert abs(spread[0] - spread[1]) <= 2 and sum(spread) == 20
