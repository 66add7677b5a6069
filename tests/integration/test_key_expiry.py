"""
The expiry of a shared session's keys in a real Redis, with two real
C{twistd gateway} nodes whose C{session_ttl} is a few seconds: the writes
refresh it only now and then (a third of C{session_ttl} apart), yet the
keys never expire under a live session, on its owner, relayed by another
node, or across a takeover; and once the session is gone with its nodes,
they expire by themselves.
"""

from __future__ import annotations

import uuid

import pytest_twisted
from twisted.internet import reactor, task

from gateway.client import SessionClient
from gateway.testing import CuttingRelay, waitUntil
from tests.helpers import query

#: Seconds a node's heartbeat lasts.
NODE_TTL = 1.0

#: The nodes' C{session_ttl}: the largest of twice the grace period, twice
#: the heartbeat timeout and three times C{node_ttl} (gateway.cluster.node).
SESSION_TTL = 3.0

#: Seconds between the client's messages.
INTERVAL = 0.3

#: How long each stage of the test lasts: over twice C{session_ttl}.
STAGE = 2.3 * SESSION_TTL

#: Reads the three keys' PTTL at once.
PTTLS = "return {redis.call('PTTL', KEYS[1]), redis.call('PTTL', KEYS[2]), redis.call('PTTL', KEYS[3])}"


def nodeConfig(tmp_path, name: str, redisURL: str, prefix: str, backend) -> str:
    """
    @return: the path of node C{name}'s configuration: a grace period and
        heartbeat timeout of 1 s, so that C{session_ttl} is C{3 * node_ttl}.
    """
    path = tmp_path / f"{name}.toml"
    path.write_text(
        "[timeouts]\nshutdown = 2\n"
        "[session]\ngrace = 1\nheartbeat = 0.5\nheartbeat_timeout = 1\n"
        f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nkey_prefix = "{prefix}"\n'
        f'node_id = "{name}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.5\n'
        f'[pool.chat]\n[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n')
    return str(path)


class Watch:
    """
    Reads the PTTL of a session's three keys every 20 ms, and keeps what
    went wrong: a key that existed and is gone (-2), or one without an
    expiry (-1).
    """

    def __init__(self, port: int, keys: list[str]) -> None:
        self.port = port
        self.keys = keys
        self.seen = [False] * len(keys)
        self.wrong: list[tuple[float, str, int]] = []
        self.reads = 0
        self.least = [float("inf")] * len(keys)
        self.loop = task.LoopingCall(self.read)

    async def read(self) -> None:
        ttls = await query(self.port, "EVAL", PTTLS, "3", *self.keys)
        self.reads += 1
        for i, ttl in enumerate(ttls):
            if ttl >= 0:
                self.seen[i] = True
                self.least[i] = min(self.least[i], ttl)
            elif ttl == -1 or self.seen[i]:
                self.wrong.append((reactor.seconds(), self.keys[i], ttl))

    def start(self) -> None:
        self.loop.start(0.02).addErrback(lambda f: self.wrong.append((reactor.seconds(), "read", f)))

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


@pytest_twisted.ensureDeferred
async def test_keysLiveWhileTheSessionDoes(tmp_path, redis_server, echo_backends, gateway_process):
    """
    With C{session_ttl} 3 s, a client sending a message every 0.3 s for
    about 7 s on the node that owns its session, then as long relayed by
    the other node, then as long again once its owner was killed (SIGKILL)
    and the other node took the session over: the session's keys exist
    all the while (PTTL, read every 20 ms, never -2 once a key exists) and
    always with an expiry (never -1), and every echo comes back once, in
    order.  Then the client drops without ending the session and the last
    node is killed: the keys expire by themselves, within C{session_ttl}.
    """
    (backend,) = await echo_backends(1, record=True)
    prefix = f"x{uuid.uuid4().hex[:6]}:"
    nodes = {}
    for name in ("n1", "n2"):
        nodes[name] = await gateway_process(
            "--config", nodeConfig(tmp_path, name, redis_server.url, prefix, backend))
    relay = CuttingRelay(nodes["n1"].port, nodes["n2"].port)  # n1 first, then in turn
    port = await relay.start()
    client = SessionClient(f"ws://127.0.0.1:{port}/chat", reactor=reactor, initialDelay=0.005,
                           maxDelay=0.05, transport="websocket")
    received: list[str] = []
    client.on_message(lambda payload, isBinary: received.append(payload))
    sent = 0

    def send() -> None:
        nonlocal sent
        sent += 1
        client.send(f"m:{sent}")

    sender = task.LoopingCall(send)
    watch = None
    try:
        await client.connect()
        sid = client.sessionId
        record = f"{prefix}s:{sid}"
        watch = Watch(redis_server.port, [record, f"{record}:up", f"{record}:down"])
        watch.start()
        sender.start(INTERVAL)

        async def stage(owner: str, attached: str) -> None:
            until = reactor.seconds() + STAGE
            await waitUntil(lambda: reactor.seconds() >= until, timeout=STAGE + 5)
            fields = await query(redis_server.port, "HMGET", record, "owner", "attached")
            assert [f.decode() for f in fields] == [owner, attached]

        await stage("n1", "n1")
        relay.cut()  # the client resumes through n2, which relays it
        await stage("n1", "n2")
        nodes["n1"].signal("KILL")  # n2 takes the session over, its client staying on
        await stage("n2", "n2")
        sender.stop()
        await waitUntil(lambda: len(received) >= sent, timeout=10)
        watch.stop()
        assert watch.wrong == [], watch.wrong
        assert all(watch.seen) and watch.reads > 3 * STAGE / 0.1
        assert received == [f"m:{i}" for i in range(1, sent + 1)]

        client.abort()
        nodes["n2"].signal("KILL")
        killed = reactor.seconds()

        async def gone() -> bool:
            return await query(redis_server.port, "EXISTS", *watch.keys) == 0

        while not await gone():
            assert reactor.seconds() - killed < SESSION_TTL + 1.0, "the keys outlived session_ttl"
            await task.deferLater(reactor, 0.05, lambda: None)
    finally:
        if sender.running:
            sender.stop()
        if watch is not None:
            watch.stop()
        client.abort()
        await relay.stop()
    print(f"\nsession_ttl {SESSION_TTL}s: {sent} messages each way over {3 * STAGE:.0f}s (owner,"
          f" relayed, taken over), the keys' PTTL read {watch.reads} times, never gone nor"
          f" without expiry (least PTTL seen, ms: {watch.least}); gone"
          f" {reactor.seconds() - killed:.2f}s after the last node was killed")
