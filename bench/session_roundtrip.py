"""
Round trips through the session protocol, over WebSocket and over
long-polling, with the Python client.

Starts the seed's echo backend and a gateway as separate processes, then for
each transport: C{--count} round trips one at a time (send a message, wait
for its echo: latency), and C{--count} messages with C{--window} in flight
(throughput).  Every message is acknowledged, as the protocol requires.

    .venv/bin/python bench/session_roundtrip.py [--count 2000] [--window 32]

Prints one table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from twisted.internet import defer, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import startBackend, startGateway  # noqa: E402
from gateway.client import SessionClient  # noqa: E402


class Echoes:
    """
    Counts echoes and fires a waiter when a count is reached.
    """

    def __init__(self) -> None:
        self.count = 0
        self.waiting: tuple[int, defer.Deferred] | None = None

    def received(self, payload, isBinary) -> None:
        self.count += 1
        if self.waiting is not None and self.count >= self.waiting[0]:
            _, d = self.waiting
            self.waiting = None
            d.callback(None)

    def until(self, n: int) -> defer.Deferred:
        if self.count >= n:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self.waiting = (n, d)
        return d


async def measure(reactor, url: str, transport: str, count: int, window: int) -> dict:
    client = SessionClient(url, reactor=reactor, transport=transport, maxBufferMessages=window * 2)
    echoes = Echoes()
    client.on_message(echoes.received)
    await client.connect()
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        client.send(f"ping {i}")
        await echoes.until(echoes.count + 1)
        latencies.append(time.perf_counter() - started)
    sequentialSeconds = sum(latencies)
    base = echoes.count
    started = time.perf_counter()
    sent = 0
    while sent < count:
        while sent < count and sent - (echoes.count - base) < window:
            client.send(f"flood {sent}")
            sent += 1
        await echoes.until(base + sent - window // 2 if sent < count else base + count)
    await echoes.until(base + count)
    pipelinedSeconds = time.perf_counter() - started
    await client.close()
    latencies.sort()
    return {
        "transport": transport,
        "sequential": count / sequentialSeconds,
        "p50": latencies[len(latencies) // 2] * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "mean": statistics.fmean(latencies) * 1000,
        "pipelined": count / pipelinedSeconds,
    }


async def main(reactor, options) -> None:
    backend, backendURL = await startBackend(reactor)
    config = os.path.join(ROOT, "bench", "session_roundtrip.toml")
    with open(config, "w") as f:
        f.write(f'[pool.p]\n[[pool.p.backend]]\nurl = "{backendURL}"\n')
    gateway, port = await startGateway(reactor, config)
    try:
        rows = [await measure(reactor, f"ws://127.0.0.1:{port}/bench", transport,
                              options.count, options.window)
                for transport in ("websocket", "polling")]
    finally:
        gateway.signalProcess("KILL")
        backend.signalProcess("KILL")
        os.unlink(config)
    print(f"{'transport':<10} {'round trips/s (1 in flight)':>28} {'p50 ms':>8} {'p99 ms':>8} "
          f"{f'messages/s ({options.window} in flight)':>28}")
    for row in rows:
        print(f"{row['transport']:<10} {row['sequential']:>28.0f} {row['p50']:>8.2f} {row['p99']:>8.2f} "
              f"{row['pipelined']:>28.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--window", type=int, default=32)
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
