"""
Real C{twistd gateway} nodes sharing sessions through two real Redis
shards (C{[session_map] shards}): sessions land on both shards, as the
ring says, and resume through either node; the shard that is not the home
one killed and restarted empty: sessions on the home shard keep exchanging
messages exactly once meanwhile, those on the killed shard wait as in a
Redis outage and go on without loss once it is back.
"""

from __future__ import annotations

import json
import uuid

import pytest_twisted
from twisted.internet import reactor, task

from gateway.client import ClientState
from gateway.sessionmap._ring import HashRing
from gateway.testing import CuttingRelay, rawExchange, waitUntil
from gateway.wire.protocol import SUBPROTOCOL, Welcome, decodeMessage
from tests.helpers import redisCommand

from .traffic import NumberedTraffic

#: Seconds after which a node's heartbeat is taken for dead.
NODE_TTL = 1.0

#: The shards' names, the home one first.
NAMES = ("home", "other")
RING = HashRing(list(NAMES))


def nodeConfig(tmp_path, name: str, servers, prefix: str, backends) -> str:
    """
    @return: the path of a configuration of node C{name} on the shards
        C{servers} (named L{NAMES}).
    """
    shards = ", ".join(f'{{url = "{s.url}", name = "{n}"}}' for n, s in zip(NAMES, servers))
    text = (
        "[timeouts]\nshutdown = 2\n"
        f'[session_map]\ntype = "redis"\nshards = [{shards}]\nkey_prefix = "{prefix}"\n'
        f'node_id = "{name}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.75\n'
        "[pool.chat]\n"
    )
    for backend in backends:
        text += f'[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return str(path)


async def startNodes(tmp_path, gateway_process, servers, backends):
    """
    @return: nodes C{n1} and C{n2} on C{servers}, and their key prefix.
    """
    prefix = f"h{uuid.uuid4().hex[:6]}:"
    nodes = {}
    for name in ("n1", "n2"):
        nodes[name] = await gateway_process("--config", nodeConfig(tmp_path, name, servers, prefix, backends))
    return nodes, prefix


async def health(node) -> tuple[int, dict]:
    """
    @return: the node's health status and document.
    """
    answer = await rawExchange(node.port, b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def shardOf(sid: str) -> int:
    return RING.shardFor(sid.encode())


async def shardTrouble(node) -> bool:
    """
    @return: whether the node's health says 200 while it names trouble on
        shard C{other} and none on the home shard.
    """
    status, document = await health(node)
    shards = document["cluster"]["shards"]
    return status == 200 and shards["home"]["redis"] == "ok" and shards["other"]["redis"] != "ok"


def traffic(relay: CuttingRelay, tag: str, total: int) -> NumberedTraffic:
    """
    @return: a session client through C{relay}, over WebSocket, sending
        C{total} messages tagged C{tag}, two every 10 ms.
    """
    return NumberedTraffic(f"ws://127.0.0.1:{relay.port}/chat", tag=tag, total=total, burst=lambda: 2)


async def openRaw(port: int) -> str:
    """
    Open a session on a node with a bare hello.

    @return: its id (the connection is left open).
    """
    from gateway.testing import connectClient

    client = await connectClient(f"ws://127.0.0.1:{port}", path="/chat", protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1}))
    payload, isBinary = await client.receive(10)
    welcome = decodeMessage(payload, isBinary)
    assert isinstance(welcome, Welcome)
    return welcome.sid


@pytest_twisted.ensureDeferred
async def test_sessionsSpreadOverShards(tmp_path, make_redis_server, echo_backends, gateway_process):
    """
    Two nodes on two shards: sessions opened on both nodes are written to
    the shard their id hashes to, and only there, both shards holding
    some; the registry is on the home shard, each node's liveness on both.
    A session on each shard, its client cut at random between the two
    nodes (so that each resumes through the other node, relayed, then
    back), exchanges every message once each way.
    """
    servers = [make_redis_server(), make_redis_server()]
    backends = await echo_backends(1, record=True)
    nodes, prefix = await startNodes(tmp_path, gateway_process, servers, backends)
    held = [[], []]
    for i in range(40):
        sid = await openRaw(nodes["n1" if i % 2 else "n2"].port)
        held[shardOf(sid)].append(sid)
        if min(len(h) for h in held) >= 3:
            break
    assert min(len(h) for h in held) >= 3, [len(h) for h in held]
    for shard, sids in enumerate(held):
        for sid in sids:
            assert await redisCommand(servers[shard].port, "EXISTS", f"{prefix}s:{sid}") == 1
            assert await redisCommand(servers[1 - shard].port, "EXISTS", f"{prefix}s:{sid}") == 0
    assert await redisCommand(servers[0].port, "ZCARD", f"{prefix}nodes") == 2
    assert await redisCommand(servers[1].port, "EXISTS", f"{prefix}nodes") == 0
    for server in servers:
        assert await redisCommand(server.port, "EXISTS", f"{prefix}alive:n1") == 1

    runs: dict[int, NumberedTraffic] = {}
    relayOf: dict[int, CuttingRelay] = {}
    relays = []
    try:
        while len(runs) < 2:
            relay = CuttingRelay(nodes["n1"].port, nodes["n2"].port)
            await relay.start()
            relays.append(relay)
            run = traffic(relay, f"t{len(relays)}", 300)
            shard = shardOf(await run.start())
            if shard in runs:
                await run.close()
                continue
            runs[shard] = run
            relayOf[shard] = relay

        def cut():
            cutting = [s for s, r in runs.items() if r.sent < r.total or len(r.resumes) < 3]
            for s in cutting:  # none once it has sent all (its close is not cut)
                relayOf[s].cut()
            if cutting:
                reactor.callLater(0.15, cut)

        reactor.callLater(0.1, cut)
        await waitUntil(lambda: all(len(r.resumes) >= 3 for r in runs.values()), timeout=60)
        for run in runs.values():
            await run.finish()
            await run.close()
    finally:
        for relay in relays:
            await relay.stop()
    for shard, run in runs.items():
        run.check(backends)
        assert len(run.resumes) >= 3, (shard, len(run.resumes))
    print(f"\ntwo nodes on two shards: sessions by shard {[len(h) for h in held]};"
          f" resumes through alternate nodes {[len(runs[s].resumes) for s in (0, 1)]}, every message once")


@pytest_twisted.ensureDeferred
async def test_otherShardKilled(tmp_path, make_redis_server, echo_backends, gateway_process):
    """
    The shard that is not the home one is killed (SIGKILL) and restarted
    empty while two sessions send, one held on each shard, both owned by
    n1 and the home one's client on n2 (relayed).  The home shard's
    session goes on exchanging messages exactly once; both nodes' health
    stays 200, naming the killed shard's trouble.  The other session waits
    as under a Redis outage: its client is told to resume once n1's lease
    on that shard runs out, and resumes once the shard is back and n1 has
    written the session to it again.  Nothing lost or duplicated on either.
    """
    servers = [make_redis_server(), make_redis_server()]
    backends = await echo_backends(1, record=True)
    nodes, prefix = await startNodes(tmp_path, gateway_process, servers, backends)
    runs: dict[int, NumberedTraffic] = {}
    relayOf: dict[int, CuttingRelay] = {}
    relays = []
    try:
        while len(runs) < 2:
            relay = CuttingRelay(nodes["n1"].port)
            await relay.start()
            relays.append(relay)
            run = traffic(relay, f"t{len(relays)}", 1500)
            shard = shardOf(await run.start())
            if shard in runs:
                await run.close()
                continue
            runs[shard] = run
            relayOf[shard] = relay
        home, other = runs[0], runs[1]
        relayOf[0].targets = [nodes["n2"].port]
        relayOf[0].cut()  # resumes through n2: relayed over the home shard
        await waitUntil(lambda: len(home.resumes) >= 1, timeout=30)
        await waitUntil(lambda: len(other.received) >= 100, timeout=30)
        sid = other.client.sessionId

        servers[1].kill()
        mark = len(home.received)
        await waitUntil(lambda: other.client.state is not ClientState.open, timeout=15)
        for node in nodes.values():
            deadline = reactor.seconds() + 15
            while not await shardTrouble(node):  # a subscription wedged by load recovers
                assert reactor.seconds() < deadline, await health(node)
                await task.deferLater(reactor, 0.1, lambda: None)
        await waitUntil(lambda: len(home.received) >= mark + 200, timeout=30)
        assert home.resets == [] and home.client.state is ClientState.open

        servers[1].start()

        async def rewritten():
            for _ in range(500):
                if await redisCommand(servers[1].port, "EXISTS", f"{prefix}s:{sid}") == 1:
                    return True
                await task.deferLater(reactor, 0.02, lambda: None)
            return False

        assert await rewritten()
        for run in runs.values():
            await run.finish()
            await run.close()
    finally:
        for relay in relays:
            await relay.stop()
    for run in runs.values():
        run.check(backends)
    print(f"\nshard 'other' killed and restarted under traffic: the home shard's session kept flowing"
          f" ({home.total} messages, relayed through n2), the other's resumed {len(other.resumes)} time(s)"
          f" once the shard was back; every message once each way")
