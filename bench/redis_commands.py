"""
Redis commands per message: what sharing sessions through Redis costs.

Starts C{--shards} redis-servers (2 by default), the seed's echo backend
and two gateway nodes on those shards, each as its own process, then for
each case sends C{--count} messages through a session client (C{--window}
in flight) and waits for every echo and acknowledgement:

  - C{owner}: the client is on the node that owns its session (its
    backend link): every message is written to Redis, nothing relayed;
  - C{relayed}: the client resumed through the other node, which serves
    it from the mailboxes: every message crosses Redis.

Before and after each case it reads C{INFO commandstats} of every shard
(commands Redis ran, those run inside the Lua scripts included) and the
nodes' own count of round trips (their health document's
C{redis_commands}), and prints both per message (each direction counted:
a message and its echo are two), by shard.  The nodes' heartbeats (every
C{node_ttl / 3}) are in the figures too; C{--idle} measures them alone
for as long as the cases took, to subtract.

    .venv/bin/python bench/redis_commands.py [--count 2000] [--window 16] [--shards 2] [--transport websocket]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import startBackend, startGateway  # noqa: E402
from bench.session_roundtrip import Echoes  # noqa: E402
from gateway.client import ClientState, SessionClient  # noqa: E402
from gateway.testing import CuttingRelay, RedisServer, rawExchange  # noqa: E402


async def commandCounts(port: int) -> dict[str, int]:
    """
    @return: how many times each command has run on the server at C{port}
        (C{INFO commandstats}).
    """
    answer = await rawExchange(port, b"INFO commandstats\r\nQUIT\r\n")
    counts = {}
    for line in answer.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            counts[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    return counts


async def health(port: int) -> dict:
    answer = await rawExchange(port, b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return json.loads(answer.partition(b"\r\n\r\n")[2])["cluster"]


class Snapshot:
    """
    The shards' command counts and the nodes' round trips, at one moment.
    """

    @classmethod
    async def take(cls, servers, nodes) -> Snapshot:
        snapshot = cls()
        snapshot.commands = [await commandCounts(s.port) for s in servers]
        snapshot.trips = [(await health(port))["redis_commands"] for port in nodes]
        snapshot.at = time.perf_counter()
        return snapshot

    def since(self, earlier: Snapshot) -> dict:
        """
        @return: per shard, the commands run by name; the nodes' round trips.
        """
        shards = []
        for now, then in zip(self.commands, earlier.commands):
            shards.append({name: n - then.get(name, 0) for name, n in now.items()
                           if name not in ("info",) and n - then.get(name, 0)})
        return {"shards": shards, "trips": sum(self.trips) - sum(earlier.trips),
                "seconds": self.at - earlier.at}


async def run(reactor, case: str, nodes: list[int], servers, options) -> dict:
    relay = CuttingRelay(nodes[0])
    await relay.start()
    client = SessionClient(f"ws://127.0.0.1:{relay.port}/bench", reactor=reactor,
                           transport=options.transport, maxBufferMessages=options.window * 4)
    echoes = Echoes()
    client.on_message(echoes.received)
    try:
        await client.connect()
        client.send("warm up")
        await echoes.until(1)
        if case == "relayed":
            relay.targets = [nodes[1]]
            reopened = client.nextState(ClientState.open)
            relay.cut()
            await reopened.addTimeout(30, reactor)
            client.send("resumed")
            await echoes.until(2)
        await client.whenAcknowledged().addTimeout(30, reactor)
        base = echoes.count
        before = await Snapshot.take(servers, nodes)
        sent = 0
        while sent < options.count:
            while sent < options.count and sent - (echoes.count - base) < options.window:
                client.send(f"m{sent}")
                sent += 1
            await echoes.until(base + sent - options.window // 2 if sent < options.count
                               else base + options.count).addTimeout(60, reactor)
        await client.whenAcknowledged().addTimeout(30, reactor)
        after = await Snapshot.take(servers, nodes)
        await client.close().addTimeout(30, reactor)
    finally:
        await relay.stop()
    return after.since(before)


def report(case: str, delta: dict, messages: int, idle: dict | None) -> None:
    per = 2 * messages
    total = sum(sum(s.values()) for s in delta["shards"])
    line = (f"{case:<8} {delta['trips'] / per:>11.2f} {total / per:>13.2f}"
            + "".join(f" {sum(s.values()) / per:>9.2f}" for s in delta["shards"]))
    if idle is not None:
        scale = delta["seconds"] / max(idle["seconds"], 1e-9)
        idleTrips = idle["trips"] * scale
        line += f"   {(delta['trips'] - idleTrips) / per:>8.2f}"
    print(line)
    for index, shard in enumerate(delta["shards"]):
        top = sorted(shard.items(), key=lambda kv: -kv[1])
        print(f"{'':8}   shard {index}: " + ", ".join(f"{name} {n / per:.2f}" for name, n in top))


async def main(reactor, options) -> None:
    directory = tempfile.mkdtemp(prefix="txgateway-bench-redis-")
    servers = [RedisServer(directory) for _ in range(options.shards)]
    processes = []
    try:
        for server in servers:
            server.start()
        backend, backendURL = await startBackend(reactor)
        processes.append(backend)
        shards = ", ".join(f'{{url = "{s.url}", name = "s{i}"}}' for i, s in enumerate(servers))
        nodes = []
        for name in ("n1", "n2"):
            config = os.path.join(directory, f"{name}.toml")
            with open(config, "w") as f:
                f.write(f'[session_map]\ntype = "redis"\nshards = [{shards}]\nnode_id = "{name}"\n'
                        f'[pool.p]\n[[pool.p.backend]]\nurl = "{backendURL}"\n')
            gateway, port = await startGateway(reactor, config)
            processes.append(gateway)
            nodes.append(port)
        results = {case: await run(reactor, case, nodes, servers, options) for case in ("owner", "relayed")}
        idle = None
        if options.idle:
            seconds = max(r["seconds"] for r in results.values())
            before = await Snapshot.take(servers, nodes)
            await task.deferLater(reactor, seconds, lambda: None)
            idle = (await Snapshot.take(servers, nodes)).since(before)
    finally:
        for process in processes:
            process.signalProcess("KILL")
        for server in servers:
            server.stop()
    print(f"\n{options.count} messages each way, {options.window} in flight, {options.transport},"
          f" two nodes on {options.shards} shard(s); per message (each way counted):")
    header = (f"{'case':<8} {'round trips':>11} {'Redis commands':>13}"
              + "".join(f" {'shard ' + str(i):>9}" for i in range(options.shards)))
    if idle is not None:
        header += f"   {'trips less heartbeats':>8}"
    print(header)
    for case, delta in results.items():
        report(case, delta, options.count, idle)
    if idle is not None:
        print(f"idle, {idle['seconds']:.1f}s: {idle['trips']} round trips (heartbeats)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--transport", choices=("websocket", "polling"), default="websocket")
    parser.add_argument("--idle", action="store_true", help="measure the heartbeats alone too")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
