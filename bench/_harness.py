"""
What the benchmarks share: a seed echo backend and a gateway, each started
as its own process, on free ports of 127.0.0.1.
"""

from __future__ import annotations

import os
import re
import sys

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Watch(ProcessProtocol):
    """
    Waits for a line matching a pattern on a child's output.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.ready: defer.Deferred = defer.Deferred()
        self.buffer = b""

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        match = self.pattern.search(self.buffer.decode("utf-8", "replace"))
        if match and not self.ready.called:
            self.ready.callback(match)

    errReceived = outReceived


async def spawn(reactor, args: list[str], pattern: str):
    """
    Start a child and wait (30 s at most) for its readiness line.

    @return: (process transport, the line's match).
    """
    watch = Watch(pattern)
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
    transport = reactor.spawnProcess(watch, args[0], args, env=env, path=ROOT)
    match = await watch.ready.addTimeout(30, reactor)
    return transport, match


async def startBackend(reactor):
    """
    The seed's echo server (Python websockets), replying "Echo: <message>".

    @return: (process transport, ws:// URL).
    """
    process, match = await spawn(
        reactor, [sys.executable, os.path.join(ROOT, "tests/integration/seed_echo.py")],
        r"listening on (\d+)")
    return process, f"ws://127.0.0.1:{match.group(1)}"


async def startGateway(reactor, config: str):
    """
    C{twistd -n gateway --config CONFIG} on a free port.

    @return: (process transport, port).
    """
    process, match = await spawn(
        reactor,
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--config", config],
        r"gateway listening on [^:]+:(\d+)")
    return process, int(match.group(1))
