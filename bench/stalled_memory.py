"""
What a stalled session costs the gateway in memory, held at its bound.

    .venv/bin/python bench/stalled_memory.py [--sessions 50]
        [--max-buffer-messages 10000] [--max-buffer-bytes 8388608]
        [--max-inflight-messages 1000] [--max-inflight-bytes 1048576]

Two cases, each with a fresh gateway (C{twistd -n gateway}) and a fresh
backend (C{bench/stall_backend.py}) as separate processes on 127.0.0.1:

  - stalled client: N sessions over WebSocket (C{txgateway.v1}: hello,
    welcome) whose clients then stop reading (C{pauseProducing()} on their
    TCP transport) and never acknowledge, while the backend sends each
    session 1 KiB binary messages as fast as TCP lets it (20,000 at most).
    The gateway keeps what the client has not acknowledged in the replay
    buffer and stops reading from the backend at three quarters of
    C{[session] max_buffer_messages} / C{max_buffer_bytes}, or sooner while
    the client's TCP write buffer is full.
  - stalled backend: N sessions whose backend accepts the handshake and
    then never reads, while each client sends 1 KiB binary data packets as
    fast as acks allow (at most 1,000 unacknowledged, as the Python
    client's send buffer).  The gateway keeps the client messages its
    backend has not confirmed (its pong to the gateway's ping) and stops
    reading from the client at C{[session] max_inflight_messages} /
    C{max_inflight_bytes}, or sooner while the backend's TCP write buffer is
    full.

For each case it reads the gateway's resident set size (VmRSS): before the
sessions, with N idle sessions, and once all N are stalled (every session
paused, as the admin API counts them) and the RSS has stopped growing
(polled every 0.5 s until it changes by less than 1% over 2 s, within
C{--timeout} seconds).  It prints these and the growth per stalled session,
next to the bound in payload bytes.  It asserts nothing.

The gateway's file sets the bounds above, C{heartbeat_timeout = 600} (a
stalled client sends nothing, and would otherwise be taken for dead after
the default 25 s and its session detached), and an admin API on a free
port, through which the script counts the sessions: all, attached, paused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
import tempfile
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, error, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers
from zope.interface import implementer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import Watch  # noqa: E402
from bench.session_memory import rss  # noqa: E402
from gateway.testing import connectClient  # noqa: E402

KiB = 1024
MiB = 1024 * KiB
HELLO = json.dumps({"t": "hello", "v": 1}).encode()


class Processes:
    """
    The children started here (with the harness's L{Watch}), each killed at
    the end, whatever happens.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.running: list = []
        reactor.addSystemEventTrigger("before", "shutdown", self.killAll)

    async def start(self, args: list[str], pattern: str):
        """
        Start a child and wait (30 s at most) for a line matching C{pattern}.

        @return: (process transport, the match).
        """
        watch = Watch(pattern)
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1")
        process = self.reactor.spawnProcess(watch, args[0], args, env=env, path=ROOT)
        self.running.append(process)
        match = await watch.ready.addTimeout(30, self.reactor)
        return process, match

    def kill(self, process) -> None:
        try:
            process.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass
        if process in self.running:
            self.running.remove(process)

    def killAll(self) -> None:
        for process in list(self.running):
            self.kill(process)


async def sleep(reactor, seconds: float) -> None:
    await task.deferLater(reactor, seconds)


async def startBackend(processes: Processes, *args: str):
    """
    C{bench/stall_backend.py ARGS}.

    @return: (process transport, ws:// URL).
    """
    process, match = await processes.start(
        [sys.executable, os.path.join(ROOT, "bench", "stall_backend.py"), *args],
        r"listening on (\d+)")
    return process, f"ws://127.0.0.1:{match.group(1)}"


async def startGateway(processes: Processes, scratch: str, backendURL: str, options, token: str):
    """
    C{twistd -n gateway --config FILE} on a free port, with the admin API
    on another.

    @return: (process transport, gateway port, admin port).
    """
    config = os.path.join(scratch, "gateway.toml")
    with open(config, "w") as f:
        f.write(
            "[session]\n"
            f"max_buffer_messages = {options.max_buffer_messages}\n"
            f"max_buffer_bytes = {options.max_buffer_bytes}\n"
            f"max_inflight_messages = {options.max_inflight_messages}\n"
            f"max_inflight_bytes = {options.max_inflight_bytes}\n"
            "heartbeat_timeout = 600.0\n"
            f"max_sessions = {options.sessions + 10}\n"
            "[limits]\n"
            f"max_connections = {2 * options.sessions + 10}\n"
            "[admin]\n"
            'listen = "tcp:0:interface=127.0.0.1"\n'
            f'token = "{token}"\n'
            "[pool.p]\n"
            "[[pool.p.backend]]\n"
            f'url = "{backendURL}"\n'
        )
    process, match = await processes.start(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--config", config],
        r"(?s)(?=.*gateway listening on [^:]+:(\d+))(?=.*admin API listening on [^:]+:(\d+))")
    return process, int(match.group(1)), int(match.group(2))


class Admin:
    """
    The gateway's admin API.
    """

    def __init__(self, reactor, port: int, token: str) -> None:
        self.reactor = reactor
        self.url = f"http://127.0.0.1:{port}"
        self.headers = Headers({b"Authorization": [f"Bearer {token}".encode()]})
        self.agent = Agent(reactor)

    async def sessions(self) -> dict:
        """
        @return: C{GET /sessions}: counts of sessions, attached, paused...
        """
        response = await self.agent.request(
            b"GET", f"{self.url}/sessions".encode(), self.headers).addTimeout(10, self.reactor)
        return json.loads(await readBody(response))


async def backendReport(reactor, backend) -> dict | None:
    """
    Ask the backend (its standard input) how many messages it has sent.
    """
    watch = backend.proto
    start = len(watch.buffer)
    backend.write(b"report\n")
    for _ in range(50):
        await sleep(reactor, 0.1)
        found = re.search(rb'\{"report": [^\n]*\}', watch.buffer[start:])
        if found:
            return json.loads(found.group())["report"]
    return None


async def openStalledClients(url: str, sessions: int) -> list:
    """
    Open C{sessions} sessions, 100 handshakes at a time; once welcomed, each
    client stops reading.
    """
    clients = []
    for start in range(0, sessions, 100):
        batch = [defer.Deferred.fromCoroutine(connectClient(url, protocols=["txgateway.v1"]))
                 for _ in range(start, min(start + 100, sessions))]
        opened = await defer.gatherResults(batch, consumeErrors=True)
        for client in opened:
            client.send(HELLO.decode())
        for client in opened:
            payload, _ = await client.receive(30)
            welcome = json.loads(payload)
            if welcome.get("t") != "welcome":
                raise RuntimeError(f"expected a welcome, got {payload[:200]!r}")
            client.protocol.transport.pauseProducing()
        clients.extend(opened)
    return clients


@implementer(IPushProducer)
class Sender(WebSocketClientProtocol):
    """
    A session client (C{txgateway.v1}) that, once started, sends 1 KiB binary
    data packets as fast as acks allow: at most C{window} unacknowledged,
    and none while its TCP write buffer is full.
    """

    window = 1000
    payload = b"x" * KiB

    def onConnect(self, response) -> None:
        self.sent = 0
        self.acked = 0
        self.sending = False
        self.paused = False
        self.closedWith = None
        self._call = None

    def onOpen(self) -> None:
        self.sendMessage(HELLO, False)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if isBinary or not payload.startswith(b"{"):
            return  # a data packet: the stalled backend sends none
        packet = json.loads(payload)
        kind = packet.get("t")
        if kind == "welcome":
            if not self.factory.welcomed.called:
                self.factory.welcomed.callback(self)
        elif kind == "ack":
            self.acked = max(self.acked, packet["n"])
            self._schedule()
        elif kind == "close":
            self.closedWith = (packet.get("code"), packet.get("reason"))

    def onClose(self, wasClean: bool, code, reason) -> None:
        if self.closedWith is None:
            self.closedWith = (code, reason)
        if not self.factory.welcomed.called:
            self.factory.welcomed.errback(RuntimeError(f"closed before the welcome: {code} {reason}"))

    @property
    def blocked(self) -> bool:
        """
        Whether it can send no more: its window is full or TCP pushes back.
        """
        return self.paused or self.sent - self.acked >= self.window

    def start(self) -> None:
        self.sending = True
        self.transport.registerProducer(self, True)
        self._schedule()

    def _schedule(self) -> None:
        if self.sending and self._call is None and not self.blocked and self.state == self.STATE_OPEN:
            self._call = self.factory.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._call = None
        for _ in range(64):
            if self.blocked or self.state != self.STATE_OPEN:
                return
            self.sent += 1
            self.sendMessage(b"%d:" % self.sent + self.payload, True)
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.sending = False


async def openSenders(reactor, url: str, sessions: int) -> list[Sender]:
    """
    Open C{sessions} sessions with L{Sender}s, 100 at a time.
    """
    async def one() -> Sender:
        factory = WebSocketClientFactory(url, protocols=["txgateway.v1"])
        factory.protocol = Sender
        factory.reactor = reactor
        factory.welcomed = defer.Deferred()
        factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=10,
                                   closeHandshakeTimeout=10)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", int(url.rsplit(":", 1)[1]),
                                 timeout=10).connect(factory)
        return await factory.welcomed.addTimeout(30, reactor)

    senders: list[Sender] = []
    for start in range(0, sessions, 100):
        batch = [defer.Deferred.fromCoroutine(one()) for _ in range(start, min(start + 100, sessions))]
        senders.extend(await defer.gatherResults(batch, consumeErrors=True))
    return senders


async def waitStalled(reactor, pid: int, admin: Admin, sessions: int, timeout: float):
    """
    Poll the RSS every 0.5 s until every session is paused and the RSS has
    changed by less than 1% over 2 s, or C{timeout} seconds have passed, or
    a session is gone.

    @return: (RSS in KiB, seconds waited, whether it settled, the last
        session counts).
    """
    started = time.monotonic()
    samples: list[int] = []
    while True:
        await sleep(reactor, 0.5)
        samples.append(rss(pid))
        counts = await admin.sessions()
        waited = time.monotonic() - started
        if counts["sessions"] < sessions or counts["attached"] < sessions:
            return samples[-1], waited, False, counts
        if (counts["paused"] == sessions and len(samples) >= 5
                and abs(samples[-1] - samples[-5]) < 0.01 * samples[-5]):
            return samples[-1], waited, True, counts
        if waited >= timeout:
            return samples[-1], waited, False, counts


def size(n: float) -> str:
    """
    C{n} bytes, in MiB or KiB.
    """
    if n >= MiB:
        return f"{n / MiB:,.3g} MiB"
    return f"{n / KiB:,.3g} KiB"


def bound(messages: float, nbytes: float) -> str:
    """
    A bound in messages and payload bytes, and what it holds of 1 KiB
    messages (the lower of the two).
    """
    held = min(int(-(-messages // 1)), int(-(-nbytes // KiB)))
    return f"{messages:,.0f} messages / {size(nbytes)} ({held:,} messages of 1 KiB, {size(held * KiB)})"


def report(name: str, sessions: int, figures: dict, bounded: str) -> None:
    base, idle, stalled = figures["base"], figures["idle"], figures["stalled"]
    per = (stalled - idle) / sessions
    counts = figures["counts"]
    state = (f"settled after {figures['waited']:.1f} s" if figures["settled"]
             else f"NOT settled after {figures['waited']:.1f} s")
    print(f"{name}: {sessions} sessions")
    print(f"  baseline RSS           {base:>10,} KiB")
    print(f"  {sessions:>4} idle sessions     {idle:>10,} KiB  (+{(idle - base) / sessions:,.1f} KiB per session)")
    print(f"  {sessions:>4} stalled sessions  {stalled:>10,} KiB  ({state}; admin API: "
          f"{counts['sessions']} sessions, {counts['attached']} attached, {counts['paused']} paused)")
    for line in figures.get("notes", []):
        print(f"  {line}")
    print(f"  {name}: {per:,.0f} KiB ({size(per * KiB)}) per stalled session at a bound of {bounded}")
    print(flush=True)


async def stalledClient(reactor, processes: Processes, scratch: str, options) -> dict:
    backend, backendURL = await startBackend(processes, "flood", "--count", "20000", "--size", "1024")
    token = secrets.token_urlsafe(24)
    gateway, port, adminPort = await startGateway(processes, scratch, backendURL, options, token)
    admin = Admin(reactor, adminPort, token)
    pid = gateway.pid
    clients: list = []
    try:
        await sleep(reactor, 1.0)
        base = rss(pid)
        clients = await openStalledClients(f"ws://127.0.0.1:{port}", options.sessions)
        await sleep(reactor, 1.0)
        idle = rss(pid)
        backend.write(b"go\n")
        stalled, waited, settled, counts = await waitStalled(
            reactor, pid, admin, options.sessions, options.timeout)
        sent = await backendReport(reactor, backend)
        notes = []
        if sent is not None:
            notes.append(f"the backend sent {sent['sent'] / options.sessions:,.0f} messages per session "
                         f"({sent['paused']} of {sent['connections']} connections held back by TCP, "
                         f"{sent['done']} done)")
        return dict(base=base, idle=idle, stalled=stalled, waited=waited, settled=settled,
                    counts=counts, notes=notes)
    finally:
        for client in clients:
            client.protocol.dropConnection(abort=True)
        processes.kill(gateway)
        processes.kill(backend)


async def stalledBackend(reactor, processes: Processes, scratch: str, options) -> dict:
    backend, backendURL = await startBackend(processes, "stall")
    token = secrets.token_urlsafe(24)
    gateway, port, adminPort = await startGateway(processes, scratch, backendURL, options, token)
    admin = Admin(reactor, adminPort, token)
    pid = gateway.pid
    senders: list[Sender] = []
    try:
        await sleep(reactor, 1.0)
        base = rss(pid)
        senders = await openSenders(reactor, f"ws://127.0.0.1:{port}", options.sessions)
        await sleep(reactor, 1.0)
        idle = rss(pid)
        for sender in senders:
            sender.start()
        stalled, waited, settled, counts = await waitStalled(
            reactor, pid, admin, options.sessions, options.timeout)
        acked = sum(s.acked for s in senders) / len(senders)
        sent = sum(s.sent for s in senders) / len(senders)
        ended = [s.closedWith for s in senders if s.closedWith is not None]
        notes = [f"each client had sent {sent:,.0f} messages, {acked:,.0f} acknowledged; "
                 f"{sum(s.blocked for s in senders)} of {len(senders)} could send no more"]
        if ended:
            notes.append(f"{len(ended)} client connections closed, e.g. {ended[0]}")
        return dict(base=base, idle=idle, stalled=stalled, waited=waited, settled=settled,
                    counts=counts, notes=notes)
    finally:
        for sender in senders:
            sender.dropConnection(abort=True)
        processes.kill(gateway)
        processes.kill(backend)


async def main(reactor, options) -> None:
    processes = Processes(reactor)
    scratch = tempfile.mkdtemp(prefix="stalled-memory-")
    started = time.monotonic()
    try:
        figures = await stalledClient(reactor, processes, scratch, options)
        report("stalled client", options.sessions, figures,
               bound(0.75 * options.max_buffer_messages, 0.75 * options.max_buffer_bytes))
        figures = await stalledBackend(reactor, processes, scratch, options)
        report("stalled backend", options.sessions, figures,
               bound(options.max_inflight_messages, options.max_inflight_bytes))
    finally:
        processes.killAll()
        for name in os.listdir(scratch):
            os.unlink(os.path.join(scratch, name))
        os.rmdir(scratch)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--max-buffer-messages", type=int, default=10000)
    parser.add_argument("--max-buffer-bytes", type=int, default=8 * MiB)
    parser.add_argument("--max-inflight-messages", type=int, default=1000)
    parser.add_argument("--max-inflight-bytes", type=int, default=1 * MiB)
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each case's RSS to settle")
    options = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
