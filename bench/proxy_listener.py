"""
What a PROXY protocol listener costs: the same transparent tunnels through a
plain listener and through a C{haproxy:} one of the same gateway.

Starts the seed's echo backend and one gateway (separate processes) with two
listeners, C{tcp:} and C{haproxy:tcp:} (trusting 127.0.0.1), then, for each
listener in turn, C{--rounds} times: C{--tunnels} tunnels opened one after
the other (connect, PROXY v2 header on the second listener, upgrade, 101,
close: set-up latency), and C{--messages} 1 KiB messages through one tunnel
with C{--window} in flight (throughput).  With C{--access-log} the gateway
also writes an access log to a temporary file.

    .venv/bin/python bench/proxy_listener.py [--tunnels 300] [--messages 20000] [--window 64] [--rounds 3]

Prints one table (medians over the rounds).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import struct
import sys
import tempfile
import time

from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import Watch, startBackend  # noqa: E402
from gateway.wire.frames import OP_TEXT, FrameTracker, encodeClose, encodeFrame  # noqa: E402

HEADER = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", 12)
          + bytes([203, 0, 113, 7, 127, 0, 0, 1]) + struct.pack("!HH", 40000, 8080))
UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class Tunnel(Protocol):
    """
    A raw transparent client: the upgrade (after a PROXY header, if given),
    then frames, counting the frames that come back.
    """

    def __init__(self, header: bytes) -> None:
        self.header = header
        self.opened: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.buffer = b""
        self.tracker = FrameTracker()
        self.waiting: tuple[int, defer.Deferred] | None = None

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)
        self.transport.write(self.header + UPGRADE)

    def dataReceived(self, data: bytes) -> None:
        if not self.opened.called:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end == -1:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101 "):
                raise RuntimeError(self.buffer[:200])
            data, self.buffer = self.buffer[end + 4:], b""
            self.opened.callback(None)
        self.tracker.feed(data)
        if self.waiting is not None and self.tracker.dataFrames >= self.waiting[0]:
            d, self.waiting = self.waiting[1], None
            d.callback(None)

    def until(self, frames: int) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if self.tracker.dataFrames >= frames:
            d.callback(None)
        else:
            self.waiting = (frames, d)
        return d

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)


async def connect(reactor, port: int, header: bytes) -> Tunnel:
    tunnel = Tunnel(header)
    await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(Factory.forProtocol(lambda: tunnel))
    await tunnel.opened.addTimeout(10, reactor)
    return tunnel


async def setUp(reactor, port: int, header: bytes, count: int) -> list[float]:
    """
    @return: the seconds each of C{count} tunnels took from connect to 101.
    """
    times = []
    for _ in range(count):
        started = time.perf_counter()
        tunnel = await connect(reactor, port, header)
        times.append(time.perf_counter() - started)
        tunnel.transport.write(encodeClose(1000, "", mask=True))
        await tunnel.closed.addTimeout(10, reactor)
    return times


async def throughput(reactor, port: int, header: bytes, count: int, window: int) -> float:
    """
    @return: messages a second echoed through one tunnel, C{window} in flight.
    """
    tunnel = await connect(reactor, port, header)
    frame = encodeFrame(OP_TEXT, b"x" * 1024, mask=True)
    started = time.perf_counter()
    sent = 0
    while sent < count:
        burst = min(window - (sent - tunnel.tracker.dataFrames), count - sent)
        if burst > 0:
            tunnel.transport.write(frame * burst)
            sent += burst
        await tunnel.until(max(sent - window + 1, 1)).addTimeout(30, reactor)
    await tunnel.until(count).addTimeout(30, reactor)
    elapsed = time.perf_counter() - started
    tunnel.transport.write(encodeClose(1000, "", mask=True))
    await tunnel.closed.addTimeout(10, reactor)
    return count / elapsed


async def main(reactor, options) -> None:
    backend, url = await startBackend(reactor)
    directory = tempfile.mkdtemp(prefix="txgateway-bench-")
    config = os.path.join(directory, "gateway.toml")
    text = 'proxy_protocol_from = ["127.0.0.1/32"]\n'
    if options.access_log:
        text += f'[access_log]\npath = "{os.path.join(directory, "access.log")}"\n'
    text += f'[pool.chat]\n[[pool.chat.backend]]\nurl = "{url}"\n'
    with open(config, "w") as f:
        f.write(text)
    watch = Watch(r"listening on 127\.0\.0\.1:(\d+) \(haproxy:")
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    gateway = reactor.spawnProcess(
        watch, sys.executable,
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "gateway",
         "--config", config, "--listen", "tcp:0:interface=127.0.0.1", "--listen", "haproxy:tcp:0:interface=127.0.0.1"],
        env=env, path=ROOT)
    try:
        proxied = int((await watch.ready.addTimeout(30, reactor)).group(1))
        [plain] = re.findall(r"listening on 127\.0\.0\.1:(\d+) \(tcp:", watch.buffer.decode())
        listeners = [("tcp:", int(plain), b""), ("haproxy:tcp: (v2 header)", proxied, HEADER)]
        results: dict[str, dict[str, list[float]]] = {name: {"p50": [], "p99": [], "rate": []}
                                                      for name, _, _ in listeners}
        for _ in range(options.rounds):
            for name, port, header in listeners:
                times = sorted(await setUp(reactor, port, header, options.tunnels))
                results[name]["p50"].append(times[len(times) // 2] * 1000)
                results[name]["p99"].append(times[int(len(times) * 0.99)] * 1000)
                results[name]["rate"].append(
                    await throughput(reactor, port, header, options.messages, options.window))
        print(f"{'listener':<28}{'set-up p50 ms':>15}{'set-up p99 ms':>15}{'echoes/s (1 KiB)':>18}")
        for name, figures in results.items():
            print(f"{name:<28}{statistics.median(figures['p50']):>15.2f}"
                  f"{statistics.median(figures['p99']):>15.2f}{statistics.median(figures['rate']):>18.0f}")
        print(f"({options.tunnels} tunnels one after the other, {options.messages} messages with "
              f"{options.window} in flight; medians of {options.rounds} rounds; access log "
              f"{'on' if options.access_log else 'off'})")
    finally:
        gateway.signalProcess("KILL")
        backend.signalProcess("KILL")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tunnels", type=int, default=300)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--access-log", action="store_true")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
