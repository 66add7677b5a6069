"""
What a session costs the gateway in memory, attached and detached.

Starts a backend (the seed's echo server) and a gateway as separate
processes, opens N sessions through the session protocol, then drops every
client connection without a close (the sessions are detached and wait for a
resume), and reads the gateway's resident set size (VmRSS) at each step.

    .venv/bin/python bench/session_memory.py [--sessions 1000]

Two rounds: the second reuses the memory that the first round's client
connections freed, so what it adds once detached is the cost of detached
sessions alone (RSS never shrinks, so a single round could not show it).

Prints one table.  The figure includes everything a session holds: the
Session and its buffers, its backend WebSocket (an Autobahn client protocol
and its TCP transport), and its session-map record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import startBackend, startGateway  # noqa: E402
from gateway.testing import connectClient  # noqa: E402


def rss(pid: int) -> int:
    """
    The resident set size of process C{pid}, in KiB.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def settle(reactor, seconds=1.0):
    """
    Let the gateway finish what it is doing.
    """
    await task.deferLater(reactor, seconds)


async def main(reactor, sessions: int):
    backend, backendURL = await startBackend(reactor)
    config = os.path.join(ROOT, "bench", "session_memory.toml")
    with open(config, "w") as f:
        most = 2 * sessions + 10  # every client comes from 127.0.0.1
        # The clients send nothing: a heartbeat timeout longer than the run
        # keeps them attached until they are dropped.
        f.write(f'[session]\ngrace = 600.0\nheartbeat = 300.0\nheartbeat_timeout = 600.0\n'
                f'max_sessions = {most}\n'
                f'max_sessions_per_ip = {most}\nmax_opens_per_ip = {most}\nopen_burst_per_ip = {most}\n'
                f'[limits]\nmax_connections = {sessions * 4 + 10}\nmax_connections_per_ip = 0\n'
                f'[pool.p]\n[[pool.p.backend]]\nurl = "{backendURL}"\n')
    gateway, gatewayPort = await startGateway(reactor, config)
    url = f"ws://127.0.0.1:{gatewayPort}"
    pid = gateway.pid
    try:
        await settle(reactor)
        base = rss(pid)
        attached, detached = [], []
        for round in range(2):
            clients = await openSessions(url, sessions)
            await settle(reactor)
            attached.append(rss(pid))
            for client in clients:
                client.protocol.dropConnection(abort=True)
            await defer.gatherResults([c.closed for c in clients])
            await settle(reactor, 2.0)
            detached.append(rss(pid))
    finally:
        gateway.signalProcess("KILL")
        backend.signalProcess("KILL")
        os.unlink(config)
    perAttached = (attached[0] - base) / sessions
    # Round 2 reuses the memory round 1's client connections freed, so what
    # it adds once detached is the cost of detached sessions alone.
    perDetached = (detached[1] - detached[0]) / sessions
    print(f"{'sessions':>9} {'base RSS':>10} {'round 1 attached':>17} {'detached':>10} "
          f"{'round 2 detached':>17} {'per attached':>13} {'per detached':>13}")
    print(f"{sessions:>9} {base:>6} KiB {attached[0]:>13} KiB {detached[0]:>6} KiB "
          f"{detached[1]:>13} KiB {perAttached:>9.1f} KiB {perDetached:>9.1f} KiB")


async def welcomed(client) -> None:
    """
    Wait (120 s at most) for C{client}'s welcome.

    @raise RuntimeError: when the gateway closed the connection instead.
    """
    from twisted.internet import reactor

    first = defer.DeferredList([client.messages.get(), client.closed], fireOnOneCallback=True,
                               consumeErrors=True)
    result, index = await first.addTimeout(120, reactor)
    if index == 1:
        raise RuntimeError(f"the gateway closed a session's connection instead of welcoming it: {result}")


async def openSessions(url: str, sessions: int) -> list:
    """
    Open C{sessions} sessions, 100 handshakes at a time.
    """
    clients = []
    for start in range(0, sessions, 100):
        batch = [defer.Deferred.fromCoroutine(connectClient(url, protocols=["txgateway.v1"]))
                 for _ in range(start, min(start + 100, sessions))]
        opened = await defer.gatherResults(batch)
        for client in opened:
            client.send(json.dumps({"t": "hello", "v": 1}))
        for client in opened:
            await welcomed(client)
        clients.extend(opened)
    return clients


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sessions", type=int, default=1000)
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options.sessions)))
