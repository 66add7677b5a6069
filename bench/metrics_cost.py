"""
What the metrics cost, in-process with timeit (no sockets): the tunnel's
splice hot path and a session's message paths with the counting they do,
the counting alone, what a C{prometheus_client} counter increment would
cost instead, and one scrape of a node holding many sessions.

    .venv/bin/python bench/metrics_cost.py [--sessions N]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import timeit
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter, generate_latest

from gateway.backends.balancers import RoundRobin
from gateway.backends.pool import Backend, Pool
from gateway.config import SessionConfig
from gateway.metrics import Metrics, Traffic
from gateway.metrics.scrape import StateCollector
from gateway.sessions.states import SessionState
from gateway.transports.tunnel import Tunnel
from gateway.wire.frames import OP_TEXT, encodeFrame
from gateway.wire.protocol import Outbox


class _Transport:
    """
    A transport that takes every write (not plain TCP, so L{writeNow}
    writes through C{write}).
    """

    def write(self, data: bytes) -> None:
        pass


def _spliced():
    """
    @return: the client side of a spliced tunnel, its other side writing
        nowhere.
    """
    edge = SimpleNamespace(reactor=None, config=SimpleNamespace(limits=None, timeouts=None),
                           metrics=Metrics(CollectorRegistry(), process=False))
    tunnel = Tunnel.__new__(Tunnel)
    tunnel.factory = edge
    from gateway.transports.tunnel import BackendSide, ClientSide

    client, backend = ClientSide(tunnel), BackendSide(tunnel)
    client.other, backend.other = backend, client
    backend.transport = _Transport()
    tunnel.spliced = True
    return client


def perCall(statement, number: int, **names) -> float:
    """
    @return: nanoseconds per call of C{statement}, best of five.
    """
    timer = timeit.Timer(statement, globals=names)
    return min(timer.repeat(5, number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sessions", type=int, default=10_000, help="sessions of the scrape (10000)")
    options = parser.parse_args()
    n = 200_000

    client = _spliced()
    frame = encodeFrame(OP_TEXT, b"x" * 64, True)
    side = SimpleNamespace(received=0)
    traffic = Traffic()
    registry = CollectorRegistry()
    child = Counter("bench_bytes", "bench", ["mode"], registry=registry).labels("transparent")
    print(f"tunnel splice, one 70-byte frame per read: {perCall('c.splicedDataReceived(f)', n, c=client, f=frame):.0f} ns"
          " per read (counting included)")
    print(f"  its counting alone (an int added to the side): {perCall('s.received += len(f)', n, s=side, f=frame):.0f} ns")
    print(f"  a prometheus_client counter inc instead: {perCall('c.inc(len(f))', n, c=child, f=frame):.0f} ns")
    owner = SimpleNamespace(traffic=traffic)
    payload = b"x" * 64
    statement = "t = o.traffic; t.sessionUpMessages += 1; t.sessionUpBytes += len(p)"
    print(f"session message, its counting (two int additions): {perCall(statement, n, o=owner, p=payload):.0f} ns")
    two = "c.inc(); c.inc(len(p))"
    print(f"  two prometheus_client counter incs instead: {perCall(two, n, c=child, p=payload):.0f} ns")

    metrics = Metrics(CollectorRegistry())
    config = SessionConfig()
    backends = [Backend(f"b{i}", "127.0.0.1", i + 1) for i in range(10)]
    pool = Pool("chat", backends, RoundRobin())
    sessions = {}
    for i in range(options.sessions):
        outbox = Outbox(config.maxBufferMessages, config.maxBufferBytes)
        outbox.add(b"x" * 64, False)
        sessions[str(i)] = SimpleNamespace(pool=pool, state=SessionState.ATTACHED,
                                           transport=SimpleNamespace(kind="ws"), outbox=outbox,
                                           inflight=(1, 64), paused=False)
    edge = SimpleNamespace(openConnections=options.sessions, tunnels=[], dropped=SimpleNamespace(total={}))
    metrics.registry.register(StateCollector(pools={"chat": pool}, sessions=SimpleNamespace(sessions=sessions),
                                             edge=edge, traffic=metrics.traffic, config=config))
    seconds = min(timeit.repeat(lambda: generate_latest(metrics.registry), repeat=5, number=1))
    size = len(generate_latest(metrics.registry))
    print(f"one scrape with {options.sessions} sessions and 10 backends: {seconds * 1e3:.1f} ms, {size} bytes")


if __name__ == "__main__":
    main()
