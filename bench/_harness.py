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

    def __init__(self, pattern: str, log: str | None = None) -> None:
        """
        @param log: a file to which all the child's output goes, if given
            (the child's log, for a look after a run).
        """
        self.pattern = re.compile(pattern)
        self.ready: defer.Deferred = defer.Deferred()
        self.buffer = b""
        self.log = open(log, "ab") if log else None

    def outReceived(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        if self.ready.called:
            return  # ready: nothing more to look for, or to keep
        self.buffer += data
        match = self.pattern.search(self.buffer.decode("utf-8", "replace"))
        if match:
            self.ready.callback(match)

    def processEnded(self, reason) -> None:
        if self.log is not None:
            self.log.close()

    errReceived = outReceived


async def spawn(reactor, args: list[str], pattern: str, log: str | None = None):
    """
    Start a child and wait (30 s at most) for its readiness line.

    @param log: a file for all the child's output.
    @return: (process transport, the line's match).
    """
    watch = Watch(pattern, log)
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
