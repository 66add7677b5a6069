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

A stalled client's own TCP buffers fill first: the gateway then holds what
the kernel's socket buffers towards the client hold (read from
/proc/net/tcp, and printed), often less than the replay buffer's bound.  So
the stalled clients then read again, still acknowledging nothing: the
gateway reads from the backend until the replay buffer is at its bound,
each client counts the messages it holds, and the RSS is read once more.

The gateway's file sets the bounds above, C{heartbeat_timeout = 600} (a
stalled client sends nothing, and would otherwise be taken for dead after
the default 25 s and its session detached), and an admin API on a free
port, through which the script counts the sessions: all, attached, paused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, error, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import Watch  # noqa: E402
from bench.session_memory import rss  # noqa: E402
from gateway.testing import rawExchange  # noqa: E402

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
            f"max_sessions_per_ip = {options.sessions + 10}\n"
            f"max_opens_per_ip = {options.sessions + 10}\n"
            f"open_burst_per_ip = {options.sessions + 10}\n"
            "[limits]\n"
            f"max_connections = {2 * options.sessions + 10}\nmax_connections_per_ip = 0\n"
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
    The gateway's admin API (HTTP/1.0, one connection per request).
    """

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token

    async def sessions(self) -> dict:
        """
        @return: C{GET /sessions}: the counts of sessions, attached, paused...
        """
        answer = await rawExchange(self.port, (
            "GET /sessions HTTP/1.0\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n").encode())
        head, _, body = answer.partition(b"\r\n\r\n")
        if head.split(b" ", 2)[1:2] != [b"200"]:
            raise RuntimeError(f"admin API: {head.splitlines()[0] if head else b'no answer'!r}")
        return json.loads(body)


async def backendReport(reactor, backend) -> dict:
    """
    Ask the backend (on its standard input) what it has sent.
    """
    watch = backend.proto
    start = len(watch.buffer)
    backend.write(b"report\n")
    for _ in range(50):
        await sleep(reactor, 0.1)
        found = re.search(rb'\{"report": [^\n]*\}', watch.buffer[start:])
        if found:
            return json.loads(found.group())["report"]
    raise RuntimeError("the backend did not report")


def queued(connections: list[tuple[int, int]]) -> list[int]:
    """
    Bytes the kernel holds on loopback TCP connections, each given as
    (sender's port, receiver's port): those in the sender's send queue and
    in the receiver's receive queue (from /proc/net/tcp).
    """
    totals = dict.fromkeys(connections, 0)
    with open("/proc/net/tcp") as f:
        next(f)
        for row in f:
            fields = row.split()
            local, remote = (int(a.split(":")[1], 16) for a in fields[1:3])
            tx, rx = (int(q, 16) for q in fields[4].split(":"))
            if (local, remote) in totals:
                totals[local, remote] += tx
            elif (remote, local) in totals:
                totals[remote, local] += rx
    return list(totals.values())


@implementer(IPushProducer)
class BenchClient(WebSocketClientProtocol):
    """
    A session client (C{txgateway.v1}): it opens a new session, counts the
    data packets that arrive and never acknowledges one.  Once L{start}ed,
    it sends 1 KiB binary data packets as fast as acks allow: at most
    C{window} unacknowledged, and none while its TCP write buffer is full.

    @ivar received: the sequence number of the last data packet received.
    """

    window = 1000
    payload = b"x" * KiB

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
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
            self.received = int(payload[:payload.index(b":")])
            return
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
        Whether it can send no more: its window is full, or TCP pushes back.
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


async def openClients(reactor, port: int, sessions: int) -> list[BenchClient]:
    """
    Open C{sessions} sessions, 100 handshakes at a time.
    """
    async def one() -> BenchClient:
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}/", protocols=["txgateway.v1"])
        factory.protocol = BenchClient
        factory.noisy = False
        factory.reactor = reactor
        factory.welcomed = defer.Deferred()
        factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=10,
                                   closeHandshakeTimeout=10)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10).connect(factory)
        return await factory.welcomed.addTimeout(30, reactor)

    clients: list[BenchClient] = []
    for start in range(0, sessions, 100):
        batch = [defer.Deferred.fromCoroutine(one()) for _ in range(start, min(start + 100, sessions))]
        clients.extend(await defer.gatherResults(batch, consumeErrors=True))
    return clients


@dataclass
class Reading:
    """
    The gateway's RSS once its sessions are stalled, and how it got there.
    """

    rss: int
    waited: float
    how: str
    counts: dict

    def describe(self, sessions: int) -> str:
        counts = self.counts
        return (f"{self.how} after {self.waited:.1f} s; admin API: {counts['sessions']} of {sessions} "
                f"sessions, {counts['attached']} attached, {counts['paused']} paused")


async def waitStalled(reactor, pid: int, admin: Admin, sessions: int, timeout: float,
                      progress=None) -> Reading:
    """
    Poll the RSS every 0.5 s until every session is paused and the RSS has
    changed by less than 1% over 2 s (and so has C{progress()}, when
    given), or C{timeout} seconds have passed, or a session is gone or
    detached.
    """
    started = time.monotonic()
    samples: list[tuple[int, object]] = []
    while True:
        await sleep(reactor, 0.5)
        samples.append((rss(pid), progress() if progress is not None else None))
        counts = await admin.sessions()
        waited = time.monotonic() - started
        now, before = samples[-1], samples[-5] if len(samples) >= 5 else None
        if counts["sessions"] < sessions or counts["attached"] < sessions:
            return Reading(now[0], waited, "SESSIONS ENDED OR DETACHED", counts)
        if (counts["paused"] == sessions and before is not None
                and abs(now[0] - before[0]) < 0.01 * before[0] and now[1] == before[1]):
            return Reading(now[0], waited, "settled", counts)
        if waited >= timeout:
            return Reading(now[0], waited, "NOT SETTLED", counts)


def size(n: float) -> str:
    """
    C{n} bytes, in MiB or KiB.
    """
    for unit, scale in (("MiB", MiB), ("KiB", KiB)):
        if n >= scale:
            value = n / scale
            return f"{value:,.{2 if value < 10 else 1 if value < 100 else 0}f} {unit}"
    return f"{n:,.0f} bytes"


def bound(messages: float, nbytes: float) -> tuple[str, int]:
    """
    @return: a bound in messages and payload bytes as text, and how many
        1 KiB messages reach it.
    """
    held = min(math.ceil(messages), math.ceil(nbytes / KiB))
    return f"{messages:,.0f} messages / {size(nbytes)}", held


def say(text: str, indent: int = 0) -> None:
    """
    Print C{text}, wrapped at 100 columns.
    """
    print(textwrap.fill(text, 100, initial_indent=" " * indent, subsequent_indent=" " * indent))


def row(label: str, kib: int, idle: int | None, sessions: int, note: str = "") -> None:
    """
    One row: an RSS, its growth per session over C{idle}, and a note below.
    """
    per = f"{(kib - idle) / sessions:>+10,.1f} KiB per session" if idle is not None else ""
    print(f"  {label:<28} {kib:>10,} KiB  {per}".rstrip())
    if note:
        say(note, 6)


async def stalledClient(reactor, processes: Processes, scratch: str, options) -> None:
    n = options.sessions
    text, held = bound(0.75 * options.max_buffer_messages, 0.75 * options.max_buffer_bytes)
    say(f"stalled client: {n} sessions whose clients stop reading and never acknowledge, while the "
        f"backend sends each 1 KiB messages (20,000 at most). The gateway stops reading from the "
        f"backend at 3/4 of the replay buffer's bounds, {text} ({held:,} messages of 1 KiB), or "
        f"while the client's TCP write buffer is full.")
    backend, backendURL = await startBackend(processes, "flood", "--count", "20000", "--size", "1024")
    token = secrets.token_urlsafe(24)
    gateway, port, adminPort = await startGateway(processes, scratch, backendURL, options, token)
    admin = Admin(adminPort, token)
    pid = gateway.pid
    clients: list[BenchClient] = []
    try:
        await sleep(reactor, 1.0)
        base = rss(pid)
        clients = await openClients(reactor, port, n)
        for client in clients:
            client.transport.pauseProducing()
        await sleep(reactor, 1.0)
        idle = rss(pid)
        backend.write(b"go\n")
        stalled = await waitStalled(reactor, pid, admin, n, options.timeout)
        sent = await backendReport(reactor, backend)
        kernel = queued([(port, c.transport.getHost().port) for c in clients])
        # The same clients read again, and still acknowledge nothing: the
        # gateway reads from the backend until the replay buffer is at its
        # bound, and each client learns how many messages it holds.
        for client in clients:
            client.transport.resumeProducing()
        reading = await waitStalled(reactor, pid, admin, n, options.timeout,
                                    progress=lambda: sum(c.received for c in clients))
    finally:
        for client in clients:
            client.dropConnection(abort=True)
        processes.kill(gateway)
        processes.kill(backend)
    received = [c.received for c in clients]
    mean = sum(received) / n
    frame = 4 + len(f"{held}:") + KiB  # a data packet's frame: header, "SEQ:", payload
    # What a session held when it stopped: the data packets in the kernel's
    # buffers, plus those in its client connection's write buffer (Twisted's
    # 64 KiB threshold, plus what one 64 KiB read from the backend carried).
    most = (max(kernel) + 2 * (64 * KiB + frame)) // frame
    row("baseline", base, None, n)
    row(f"{n} idle sessions", idle, base, n)
    row(f"{n} stalled, not reading", stalled.rss, idle, n,
        f"{stalled.describe(n)}. The backend had sent {sent['sentMin']:,} to {sent['sentMax']:,} "
        f"messages per session ({sent['paused']} of {sent['connections']} held back by TCP). The "
        f"kernel's socket buffers towards the clients held {size(sum(kernel) / n)} per session "
        f"(about {sum(kernel) / n / frame:,.0f} data packets, sent and unacknowledged, outside the "
        f"RSS), {size(max(kernel))} at most: so a session held at most about {most:,} messages, "
        + (f"fewer than {held:,}: the gateway stopped reading at the client's full TCP write "
           f"buffer, before the replay buffer's bound." if most < held else
           f"enough to reach the bound's {held:,}."))
    row(f"{n} reading, never acking", reading.rss, idle, n,
        f"{reading.describe(n)}. Each client received {min(received):,} to {max(received):,} "
        f"messages: what the replay buffer holds, {size(mean * KiB)} of payload on average.")
    ended = [c.closedWith for c in clients if c.closedWith is not None]
    if ended:
        say(f"{len(ended)} client connections were closed, for example {ended[0]}", 6)
    say(f"stalled client: {size((stalled.rss - idle) / n * KiB)} per session, not reading; "
        f"{size((reading.rss - idle) / n * KiB)} per session at a bound of {text} (holding "
        f"{mean:,.0f} messages, {size(mean * KiB)})", 2)
    print(flush=True)


async def stalledBackend(reactor, processes: Processes, scratch: str, options) -> None:
    n = options.sessions
    text, held = bound(options.max_inflight_messages, options.max_inflight_bytes)
    say(f"stalled backend: {n} sessions whose backend stops reading after its handshake, while "
        f"each client sends 1 KiB messages as fast as acks allow ({BenchClient.window:,} "
        f"unacknowledged at most). The gateway stops reading from the client at {text} not "
        f"confirmed by the backend ({held:,} messages of 1 KiB), or while the backend's TCP write "
        f"buffer is full.")
    backend, backendURL = await startBackend(processes, "stall")
    token = secrets.token_urlsafe(24)
    gateway, port, adminPort = await startGateway(processes, scratch, backendURL, options, token)
    admin = Admin(adminPort, token)
    pid = gateway.pid
    clients: list[BenchClient] = []
    try:
        await sleep(reactor, 1.0)
        base = rss(pid)
        clients = await openClients(reactor, port, n)
        await sleep(reactor, 1.0)
        idle = rss(pid)
        for client in clients:
            client.start()
        stalled = await waitStalled(reactor, pid, admin, n, options.timeout,
                                    progress=lambda: sum(c.sent for c in clients))
    finally:
        for client in clients:
            client.dropConnection(abort=True)
        processes.kill(gateway)
        processes.kill(backend)
    acked = [c.acked for c in clients]
    mean = sum(acked) / n
    row("baseline", base, None, n)
    row(f"{n} idle sessions", idle, base, n)
    row(f"{n} stalled", stalled.rss, idle, n,
        f"{stalled.describe(n)}. Each client had sent {min(c.sent for c in clients):,} to "
        f"{max(c.sent for c in clients):,} messages, of which the gateway had acknowledged "
        f"{min(acked):,} to {max(acked):,}: those it accepted and holds until the backend confirms "
        f"them; {sum(c.blocked for c in clients)} of {n} clients could send no more.")
    ended = [c.closedWith for c in clients if c.closedWith is not None]
    if ended:
        say(f"{len(ended)} client connections were closed, for example {ended[0]}", 6)
    say(f"stalled backend: {size((stalled.rss - idle) / n * KiB)} per session at a bound of "
        f"{text} (holding {mean:,.0f} messages, {size(mean * KiB)})", 2)
    print(flush=True)


async def main(reactor, options) -> None:
    processes = Processes(reactor)
    scratch = tempfile.mkdtemp(prefix="stalled-memory-")
    reactor.addSystemEventTrigger("before", "shutdown", shutil.rmtree, scratch, ignore_errors=True)
    started = time.monotonic()
    try:
        await stalledClient(reactor, processes, scratch, options)
        await stalledBackend(reactor, processes, scratch, options)
    finally:
        processes.killAll()
    print(f"({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--max-buffer-messages", type=int, default=10000)
    parser.add_argument("--max-buffer-bytes", type=int, default=8 * MiB)
    parser.add_argument("--max-inflight-messages", type=int, default=1000)
    parser.add_argument("--max-inflight-bytes", type=int, default=1 * MiB)
    parser.add_argument("--timeout", type=float, default=40.0,
                        help="seconds to wait, each time, for the RSS to settle")
    options = parser.parse_args()
    for name, least in (("sessions", 1), ("max_buffer_messages", 1), ("max_buffer_bytes", 1024),
                        ("max_inflight_messages", 1), ("max_inflight_bytes", 1024)):
        if getattr(options, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, options)))
