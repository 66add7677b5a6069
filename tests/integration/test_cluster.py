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
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.client import ClientState, SessionClient
from gateway.testing import CuttingRelay, rawExchange, waitUntil
from tests.helpers import redisCommand

from .helpers import HAProxy

#: Messages each way in each run.
MESSAGES = 2000

#: Seconds after which a node's heartbeat is taken for dead.
NODE_TTL = 1.0


def nodeConfig(tmp_path, name: str, redisURL: str, prefix: str, backends) -> str:
    """
    @return: the path of a configuration for node C{name}.
    """
    text = (
        "[timeouts]\nshutdown = 2\n"
        f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nkey_prefix = "{prefix}"\n'
        f'node_id = "{name}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.5\n'
        "[pool.chat]\n"
    )
    for backend in backends:
        text += f'[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


async def cluster(tmp_path, gateway_process, redis, backends, count: int):
    """
    Start C{count} gateway nodes on C{redis} and HAProxy in front of them.

    @return: the nodes (by name), HAProxy, and the key prefix.
    """
    prefix = f"c{uuid.uuid4().hex[:6]}:"
    nodes = {}
    for i in range(1, count + 1):
        name = f"n{i}"
        nodes[name] = await gateway_process("--config", nodeConfig(tmp_path, name, redis.url, prefix, backends))
    proxy = HAProxy(str(tmp_path), [n.port for n in nodes.values()])
    await proxy.start()
    return nodes, proxy, prefix


async def nodeHealth(node) -> dict:
    """
    @return: the node's health document.
    """
    answer = await rawExchange(node.port, b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return json.loads(answer.partition(b"\r\n\r\n")[2])


class Run:
    """
    A session client sending C{MESSAGES} numbered messages to an echo
    backend, counting what arrives.
    """

    def __init__(self, url: str, transport: str, rng: random.Random) -> None:
        self.client = SessionClient(url, reactor=reactor, initialDelay=0.005, maxDelay=0.05,
                                    maxBufferMessages=MESSAGES, transport=transport)
        self.rng = rng
        self.received: list[str] = []
        self.arrivals: dict[str, float] = {}
        self.resets: list = []
        self.resumes: list = []
        self.sent = 0
        self.client.on_message(self._message)
        self.client.on_state(self._state)
        self.sender = task.LoopingCall(self._send)

    def _message(self, payload, isBinary) -> None:
        self.received.append(payload)
        self.arrivals[payload] = reactor.seconds()

    def _state(self, state, detail) -> None:
        if detail.reset:
            self.resets.append(detail)
        if state is ClientState.open and detail.resumed:
            self.resumes.append(detail)

    def _send(self) -> None:
        for _ in range(self.rng.randint(1, 8)):
            if self.sent < MESSAGES:
                self.sent += 1
                self.client.send(f"c:{self.sent}")

    async def start(self) -> None:
        await self.client.connect()
        self.sender.start(0.003)

    async def startQuarter(self, redis, prefix: str) -> str:
        """
        Start, and wait for a quarter of the echoes.

        @return: the name of the node that owns the session.
        """
        await self.start()
        await waitUntil(lambda: len(self.received) >= MESSAGES // 4, timeout=60)
        owner = await redisCommand(redis.port, "HGET", f"{prefix}s:{self.client.sessionId}", "owner")
        return owner.decode()

    async def finish(self) -> None:
        await waitUntil(lambda: self.sent >= MESSAGES, timeout=120)
        self.sender.stop()
        await waitUntil(lambda: len(self.received) >= MESSAGES, timeout=120)
        await self.client.whenAcknowledged().addTimeout(60, reactor)

    def report(self, backends) -> tuple[int, int, int, int]:
        """
        @return: messages duplicated and lost on the way to the backends,
            and on the way back to the client.
        """
        expected = [f"c:{i}" for i in range(1, MESSAGES + 1)]
        atBackend = [m.decode() for b in backends for m in b.factory.received]
        return (len(atBackend) - len(set(atBackend)), len(set(expected) - set(atBackend)),
                len(self.received) - len(set(self.received)), len(set(expected) - set(self.received)))

    async def close(self) -> None:
        """
        Close the session, through whichever node the client is on: the
        gateway ends it with 4000.
        """
        if self.sender.running:
            self.sender.stop()
        detail = await self.client.close().addTimeout(30, reactor)
        assert (detail.code, detail.error) == (4000, None), detail


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
    run = Run(f"ws://127.0.0.1:{port}/chat", transport, rng)
    try:
        before = sum([(await nodeHealth(n))["cluster"]["redis_commands"] for n in nodes.values()])
        await run.start()

        def cut():
            if len(run.resumes) < 30 or run.sent < MESSAGES:
                relay.cut()
                reactor.callLater(rng.uniform(0.02, 0.08), cut)

        reactor.callLater(0.05, cut)
        await waitUntil(lambda: len(run.resumes) >= 30, timeout=120)
        await run.finish()
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
    run = Run(f"ws://127.0.0.1:{proxy.port}/chat", transport, rng)
    try:
        owner = await run.startQuarter(redis_server, prefix)
        serving = [b for b in backends if b.factory.received]
        killed = reactor.seconds()
        nodes[owner].signal("KILL")
        first = f"c:{run.sent + 1}"  # the first message sent after the kill
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        resumed = run.arrivals[first] - killed
        await run.finish()
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
    WebSocket client sends: the attached session keeps flowing, its owner
    writes it to Redis again once Redis is back, and a resume through the
    other node afterwards works; nothing lost or duplicated.
    """
    redis = make_redis_server()
    rng = random.Random(11)
    backends = await echo_backends(1, record=True)
    nodes, proxy, prefix = await cluster(tmp_path, gateway_process, redis, backends, 2)
    relay = CuttingRelay(proxy.port)
    port = await relay.start()
    run = Run(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    try:
        await run.start()
        await waitUntil(lambda: len(run.received) >= MESSAGES // 4, timeout=60)
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
        mark = len(run.received)
        await waitUntil(lambda: len(run.received) > mark + 100, timeout=60)
        redis.start()
        sid = run.client.sessionId

        async def rewritten():
            for _ in range(500):
                if await redisCommand(redis.port, "EXISTS", f"{prefix}s:{sid}") == 1:
                    return True
                await task.deferLater(reactor, 0.02, lambda: None)
            return False

        assert await rewritten()
        resumes = len(run.resumes)
        relay.cut()  # resume, through either node
        await waitUntil(lambda: len(run.resumes) > resumes, timeout=30)
        await run.finish()
        await run.close()
    finally:
        await relay.stop()
        proxy.stop()
    dupUp, lostUp, dupDown, lostDown = run.report(backends)
    print(f"\nRedis killed and restarted under traffic: both nodes' health said 503 while it was down;"
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
    run = Run(f"ws://127.0.0.1:{proxy.port}/chat", transport, rng)
    try:
        owner = await run.startQuarter(redis_server, prefix)
        stopped = reactor.seconds()
        nodes[owner].signal("TERM")
        first = f"c:{run.sent + 1}"
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        resumed = run.arrivals[first] - stopped
        status = await nodes[owner].wait(30)
        await run.finish()
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
    run = Run(f"ws://127.0.0.1:{port}/chat", "websocket", rng)
    factory = backends[0].factory
    try:
        owner = await run.startQuarter(redis_server, prefix)
        sid = run.client.sessionId
        nodes[owner].signal("STOP")
        relay.cut()  # the client resumes through HAProxy, which skips the paused node
        first = f"c:{run.sent + 1}"
        await waitUntil(lambda: first in run.arrivals, timeout=60)
        newOwner = (await redisCommand(redis_server.port, "HGET", f"{prefix}s:{sid}", "owner")).decode()
        closes = len(factory.closes)
        nodes[owner].signal("CONT")
        await waitUntil(lambda: len(factory.closes) > closes, timeout=30)
        await run.finish()
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
