"""
Socket.IO round trips, straight to a python-socketio server and through the
gateway (a route with C{protocol = "socket.io"}), over long-polling and over
WebSocket, with python-socketio's client.

Starts bench/socketio_server.py (python-socketio on aiohttp) and a gateway
as separate processes; for each path and transport, C{--count} acknowledged
"echo" events one at a time (latency).  Needs the project's test
environment (python-socketio[client] and aiohttp, in setup.cfg's test
extras):

    .venv/bin/python bench/socketio_roundtrip.py [--count 1000]

Prints one table.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import socketio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(command: list[str], ready: str, **kwargs) -> tuple[subprocess.Popen, int]:
    """
    @return: a process and the port it printed in its C{ready} line.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               **kwargs)
    deadline = time.monotonic() + 30
    for line in process.stdout:
        match = re.search(ready, line)
        if match:
            return process, int(match.group(1))
        if time.monotonic() > deadline:
            break
    process.kill()
    raise RuntimeError(f"{command[0]} did not start")


def measure(url: str, transport: str, count: int) -> dict:
    """
    @return: round-trip figures for C{count} acknowledged events.
    """
    client = socketio.Client(reconnection=False)
    client.on("echo", lambda data: True)
    client.connect(url, transports=[transport], wait_timeout=10)
    for i in range(50):  # warm up
        client.call("echo", i, timeout=10)
    times = []
    started = time.perf_counter()
    for i in range(count):
        t = time.perf_counter()
        client.call("echo", i, timeout=10)
        times.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    client.disconnect()
    times.sort()
    return {
        "rate": count / elapsed,
        "p50": statistics.median(times) * 1000,
        "p99": times[int(len(times) * 0.99) - 1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    options = parser.parse_args()
    server, serverPort = start([sys.executable, os.path.join(ROOT, "bench", "socketio_server.py")],
                               r"listening on (\d+)")
    directory = tempfile.mkdtemp()
    config = os.path.join(directory, "gateway.toml")
    with open(config, "w") as f:
        f.write('[[route]]\nprefix = "/socket.io/"\npool = "app"\nprotocol = "socket.io"\n'
                f'[pool.app]\n[[pool.app.backend]]\nurl = "ws://127.0.0.1:{serverPort}"\n')
    env = dict(os.environ, PYTHONPATH=ROOT)
    gateway, gatewayPort = start(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "gateway", "--config", config, "--listen", "tcp:0:interface=127.0.0.1"],
        r"gateway listening on [^:]+:(\d+)", cwd=directory, env=env)
    try:
        rows = []
        for path, port in (("direct", serverPort), ("gateway", gatewayPort)):
            for transport in ("polling", "websocket"):
                figures = measure(f"http://127.0.0.1:{port}", transport, options.count)
                rows.append((path, transport, figures))
    finally:
        gateway.terminate()
        server.terminate()
        gateway.wait(10)
        server.wait(10)
    print(f"{options.count} acknowledged events, one at a time (python-socketio client and server)")
    print("| path | transport | round trips/s | p50 | p99 |")
    print("| --- | --- | --- | --- | --- |")
    for path, transport, f in rows:
        print(f"| {path} | {transport} | {f['rate']:.0f} | {f['p50']:.2f} ms | {f['p99']:.2f} ms |")


if __name__ == "__main__":
    main()
