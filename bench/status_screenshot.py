"""
A screenshot of the status page under load, for docs/status-page.png.

It starts a redis-server, two echo backends (tests/integration/seed_echo.py)
and two gateway nodes sharing sessions through that Redis (the admin API on
node A), drives a bounded load through both nodes for a while (session
clients over WebSocket and long-polling, plain WebSocket clients through
tunnels, a new session every second), drains one backend and changes a
weight through the admin API, then opens the status page of node A in
Debian's headless Chromium, types the token, waits for the page to have
drawn a minute of figures and writes the PNG.  Everything runs on 127.0.0.1
and is stopped at the end, whatever happens.

    .venv/bin/python bench/status_screenshot.py                # writes docs/status-page.png
    .venv/bin/python bench/status_screenshot.py --seconds 20 --output /tmp/status.png

It prints the figures the page showed.  The tests never write the committed
PNG; run this by hand when the page changes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer, task  # noqa: E402

from bench._harness import spawn, startBackend  # noqa: E402
from gateway.client import SessionClient  # noqa: E402
from gateway.testing import RedisServer, connectClient, rawExchange  # noqa: E402
from gateway.testing._browser import Chromium, chromiumBinary  # noqa: E402


def config(backends: list[str], redisURL: str, prefix: str, node: str) -> str:
    """
    @return: one node's configuration: pool C{chat} of C{backends} on the
        shared Redis session map.
    """
    text = (f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nkey_prefix = "{prefix}"\n'
            f'node_id = "{node}"\n\n[pool.chat]\n')
    for i, url in enumerate(backends, 1):
        text += f'[[pool.chat.backend]]\nname = "echo-{i}"\nurl = "{url}"\n'
    return text


async def startNode(reactor, directory: Path, text: str, *args: str):
    """
    C{twistd -n gateway --config FILE ARGS} on a free port.

    @return: (process transport, port, its output so far).
    """
    path = directory / f"{len(list(directory.glob('*.toml')))}.toml"
    path.write_text(text)
    process, match = await spawn(
        reactor,
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
         "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--config", str(path), *args],
        r"gateway listening on [^:]+:(\d+)")
    return process, int(match.group(1)), match.string


async def adminCall(port: int, token: str, method: str, path: str, body: bytes = b"") -> dict:
    """
    One admin request.

    @return: its JSON answer.
    """
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n")
    answer = await rawExchange(port, head.encode() + body)
    return json.loads(answer.partition(b"\r\n\r\n")[2])


async def main(reactor, options) -> None:
    binary = chromiumBinary()
    if binary is None:
        raise SystemExit("status_screenshot: chromium is not installed (apt-get install chromium)")
    directory = Path(tempfile.mkdtemp(prefix="txgateway-status-"))
    processes = []
    clients: list[SessionClient] = []
    tunnels = []
    loops: list[task.LoopingCall] = []
    redis = RedisServer(str(directory))
    browser = None
    try:
        redis.start()
        backends = []
        for _ in range(2):
            process, url = await startBackend(reactor)
            processes.append(process)
            backends.append(url)
        token = secrets.token_urlsafe(24)
        tokenFile = directory / "admin-token"
        tokenFile.write_text(token + "\n")
        tokenFile.chmod(0o600)
        prefix = f"status-{secrets.token_hex(4)}:"
        nodeA, portA, output = await startNode(
            reactor, directory, config(backends, redis.url, prefix, "node-a"),
            "--admin", "tcp:0:interface=127.0.0.1", "--admin-token-file", str(tokenFile))
        processes.append(nodeA)
        adminPort = int(output.split("admin API listening on 127.0.0.1:")[1].split()[0])
        nodeB, portB, _ = await startNode(reactor, directory,
                                          config(backends, redis.url, prefix, "node-b"))
        processes.append(nodeB)

        # The load: sessions and tunnels on both nodes, a message from each
        # every 1/rate s, and a short session opened every second.
        for port, transports in ((portA, ["websocket"] * 4 + ["polling"] * 2),
                                 (portB, ["websocket"] * 3 + ["polling"])):
            for transport in transports:
                client = SessionClient(f"ws://127.0.0.1:{port}/chat", transport=transport,
                                       reactor=reactor)
                await client.connect()
                clients.append(client)
            for _ in range(2):
                tunnels.append(await connectClient(f"ws://127.0.0.1:{port}", path="/chat"))

        def send() -> None:
            for client in clients:
                client.send("tick")
            for tunnel in tunnels:
                tunnel.send("tick")
                del tunnel.messages.pending[:]  # the echoes are not kept

        async def shortSession() -> None:
            client = SessionClient(f"ws://127.0.0.1:{portA}/chat", transport="websocket", reactor=reactor)
            await client.connect()
            client.send("hello")
            await client.whenAcknowledged()
            await client.close()

        for call, interval in ((send, 1 / options.rate),
                               (lambda: defer.ensureDeferred(shortSession()), 1.0)):
            loop = task.LoopingCall(call)
            loop.clock = reactor
            loop.start(interval)
            loops.append(loop)

        browser = Chromium(binary, directory / "chromium", width=options.width, height=options.height)
        await browser.start(f"http://127.0.0.1:{adminPort}/status")
        await browser.waitFor("document.activeElement.id === 'token'")
        await browser.type(token)
        await browser.press("Enter")
        await browser.waitFor("Number(document.body.dataset.updates) >= 2")
        await task.deferLater(reactor, options.seconds / 2)
        await adminCall(adminPort, token, "POST", "/pools/chat/backends/echo-2/weight", b'{"weight": 3}')
        await adminCall(adminPort, token, "POST", "/pools/chat/backends/echo-1/drain")
        await task.deferLater(reactor, options.seconds / 2)
        figures = await browser.evaluate(
            "Object.fromEntries([...document.querySelectorAll('.figure')].map(f =>"
            " [f.querySelector('.label').textContent, f.querySelector('.value').textContent]))")
        output = Path(options.output)
        await browser.screenshot(output)
        for name, value in figures.items():
            print(f"{name:24} {value}")
        print(f"wrote {output} ({output.stat().st_size} bytes)")
    finally:
        for loop in loops:
            if loop.running:
                loop.stop()
        for client in clients:
            try:
                await client.close().addTimeout(5, reactor)
            except Exception:
                pass
        for tunnel in tunnels:
            try:
                await tunnel.close().addTimeout(5, reactor)
            except Exception:
                pass
        if browser is not None:
            await browser.stop()
        for process in processes:
            try:
                process.signalProcess("KILL")
            except Exception:
                pass
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=str(ROOT / "docs" / "status-page.png"))
    parser.add_argument("--seconds", type=float, default=60.0, help="load before the shot (default 60)")
    parser.add_argument("--rate", type=float, default=25.0, help="messages per second per client")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, parser.parse_args())))
