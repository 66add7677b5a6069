"""
Many sessions held at once through gateway nodes sharing one Redis: what
they cost, idle and at a low message rate (the measurements behind
docs/capacity.md).

    .venv/bin/python bench/capacity.py [--nodes 1] [--sessions 9000]
        [--interval 10] [--idle 30] [--active 60]

Starts a real redis-server on a free port, one echo backend (the seed's)
and one gateway node (C{twistd -n gateway --redis ...}) per 9,000 sessions
or part of it, and one load process per node, each opening its node's
share of the sessions over WebSocket with the session protocol.  Then:

 1. opened: how long opening took;
 2. idle (C{--idle} seconds): each node's RSS and CPU, Redis's
    C{used_memory} and command rate, each node's event-loop lag (its
    C{txgateway_event_loop_lag_seconds} histogram, read from C{/metrics});
 3. active (C{--active} seconds): every session sends one message every
    C{--interval} seconds and acknowledges the echo; the same figures,
    plus every message checked to come back exactly once and in order.

A process may open at most C{ulimit -n} files (20,000 on the machine this
was written for); a node holds two sockets per session (client and
backend), so 9,000 sessions per node leaves room to spare.  Prints one
table; the load processes' figures go to standard error as they come.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
import tempfile
import time

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, task, utils
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench._harness import spawn, startBackend
from gateway.testing import RedisServer

#: Sessions per gateway node (and per load process, per backend).
PER_NODE = 9000


# --- the load process --------------------------------------------------------


class LoadSession(WebSocketClientProtocol):
    """
    One session-protocol client (docs/protocol.md): says hello, counts the
    echoes of what it sends (each must come back once, in order),
    acknowledges them, and sends an ack as its heartbeat when it has sent
    nothing for the announced C{heartbeat}.
    """

    def onOpen(self) -> None:
        self.sent = self.received = 0
        self.bad = 0
        self.heartbeat = None
        self.lastSent = time.monotonic()
        self.sendMessage(b'{"t":"hello","v":1}')

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload[:1] != b"{":
            seq, _, data = payload.partition(b":")
            if int(seq) != self.received + 1 or data != b"Echo: %d" % self.received:
                self.bad += 1
            self.received += 1
            self.send(b'{"t":"ack","n":%d}' % self.received)
            return
        packet = json.loads(payload)
        if packet["t"] == "welcome" and self.heartbeat is None:
            self.heartbeat = packet["heartbeat"]
            self.factory.welcomed(self)

    def onClose(self, wasClean, code, reason) -> None:
        self.factory.lost(self, code, reason)

    def send(self, payload: bytes) -> None:
        if self.state == self.STATE_OPEN:
            self.lastSent = time.monotonic()
            self.sendMessage(payload)

    def tick(self) -> None:
        self.sent += 1
        self.send(b"%d:%d" % (self.sent, self.sent - 1))

    def beat(self, now: float) -> None:
        if now - self.lastSent >= self.heartbeat * 0.9:
            self.send(b'{"t":"ack","n":%d}' % self.received)


class Load(WebSocketClientFactory):
    """
    The sessions of one load process, opened 100 at a time.
    """

    protocol = LoadSession

    def __init__(self, url: str, sessions: int) -> None:
        super().__init__(url, protocols=["txgateway.v1"])
        self.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=60)
        self.wanted = sessions
        self.target = 0
        self.sessions: list[LoadSession] = []
        self.closed = 0
        self.waiting: defer.Deferred | None = None

    def welcomed(self, session: LoadSession) -> None:
        self.sessions.append(session)
        if self.waiting is not None and len(self.sessions) >= self.target:
            waiting, self.waiting = self.waiting, None
            waiting.callback(None)

    def lost(self, session, code, reason) -> None:
        self.closed += 1
        if self.closed <= 3:
            print(f"session closed: {code} {reason}", file=sys.stderr)

    async def open(self, reactor, host: str, port: int) -> float:
        started = time.monotonic()
        for start in range(0, self.wanted, 100):
            self.waiting = defer.Deferred()
            self.target = min(start + 100, self.wanted)
            for _ in range(start, self.target):
                reactor.connectTCP(host, port, self)
            await self.waiting.addTimeout(120, reactor)
        return time.monotonic() - started


async def load(reactor, options) -> None:
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    host, port = options.load.rsplit(":", 1)
    factory = Load(f"ws://{options.load}/", options.sessions)

    def beat():
        now = time.monotonic()
        for session in factory.sessions:
            session.beat(now)

    # Beating from the start: the sessions opened first must keep theirs
    # while the rest open (9,000 take longer than the gateway's heartbeat
    # timeout), or the gateway detaches them as silent.
    beating = task.LoopingCall(beat)
    beating.clock = reactor
    beating.start(1.0, now=False)
    seconds = await factory.open(reactor, host, int(port))
    print(json.dumps({"opened": len(factory.sessions), "seconds": round(seconds, 2)}), flush=True)

    lines: defer.DeferredQueue = defer.DeferredQueue()

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line):
            lines.put(line.decode().strip())

        def connectionLost(self, reason):
            lines.put("quit")

    stdio.StandardIO(Commands())
    while True:
        command = await lines.get()
        if command == "quit":
            return
        # "send SECONDS": one message per session every --interval seconds.
        _, duration = command.split()
        sessions = list(factory.sessions)
        random.shuffle(sessions)
        slots = max(1, int(options.interval / 0.1))
        groups = [sessions[i::slots] for i in range(slots)]
        turn = iter(range(10**9))

        def tick(groups=groups, turn=turn, slots=slots):
            for session in groups[next(turn) % slots]:
                session.tick()

        ticking = task.LoopingCall(tick)
        ticking.clock = reactor
        ticking.start(0.1, now=False)
        await task.deferLater(reactor, float(duration))
        ticking.stop()
        # Let the last echoes come back.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(s.received < s.sent for s in sessions):
            await task.deferLater(reactor, 0.2)
        sent = sum(s.sent for s in sessions)
        received = sum(s.received for s in sessions)
        print(json.dumps({"sent": sent, "received": received, "bad": sum(s.bad for s in sessions),
                          "short": sum(s.received < s.sent for s in sessions),
                          "over": sum(s.received > s.sent for s in sessions), "closed": factory.closed}),
              flush=True)


# --- the orchestrator --------------------------------------------------------


class Child(ProcessProtocol):
    """
    A load process: its JSON lines, one at a time.
    """

    def __init__(self) -> None:
        self.lines: defer.DeferredQueue = defer.DeferredQueue()
        self.buffer = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.buffer += data
        *complete, self.buffer = self.buffer.split(b"\n")
        for line in complete:
            self.lines.put(json.loads(line))

    def errReceived(self, data: bytes) -> None:
        sys.stderr.write(data.decode(errors="replace"))

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


def writeConfig(directory: str, i: int, count: int, redisURL: str, backendURL: str) -> str:
    """
    Node C{i}'s configuration, bounds raised for C{count} sessions from one
    address.

    @return: its path.
    """
    config = os.path.join(directory, f"node{i}.toml")
    most = 2 * count + 10
    with open(config, "w") as f:
        f.write(f'[session]\ngrace = 600.0\nmax_sessions = {most}\n'
                f'max_sessions_per_ip = {most}\nmax_opens_per_ip = {most}\n'
                f'open_burst_per_ip = {most}\n'
                f'[limits]\nmax_connections = {count * 4 + 10}\nmax_connections_per_ip = 0\n'
                f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nnode_id = "node{i}"\n'
                f'[metrics]\nlisten = "tcp:0:interface=127.0.0.1"\n'
                f'[pool.p]\n[[pool.p.backend]]\nurl = "{backendURL}"\n'
                f'max_connections = {count + 10}\n')
    return config


def cpuSeconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def redisInfo(port: int) -> dict[str, str]:
    out = await utils.getProcessOutput("redis-cli", ["-p", str(port), "info", "all"], env=os.environ)
    info = {}
    for line in out.decode().splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            info[key] = value.strip()
    return info


async def lagHistogram(port: int) -> tuple[float, float, dict[float, float]]:
    """
    The event-loop lag histogram of the node whose metrics listen on C{port}:
    (sum, count, {bucket bound: cumulative count}).
    """
    out = await utils.getProcessOutput(
        "curl", ["-s", f"http://127.0.0.1:{port}/metrics"], env=os.environ)
    total = count = 0.0
    buckets = {}
    for line in out.decode().splitlines():
        if line.startswith("txgateway_event_loop_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
        elif line.startswith("txgateway_event_loop_lag_seconds_sum"):
            total = float(line.rsplit(" ", 1)[1])
        elif line.startswith("txgateway_event_loop_lag_seconds_count"):
            count = float(line.rsplit(" ", 1)[1])
    return total, count, buckets


def lagFigures(before, after) -> tuple[float, float]:
    """
    Mean lag and the bound under which 99% of the samples fell, in ms,
    between two reads of the histogram.
    """
    samples = after[1] - before[1]
    if samples <= 0:
        return float("nan"), float("nan")
    mean = (after[0] - before[0]) / samples * 1000
    for bound in sorted(after[2]):
        if after[2][bound] - before[2].get(bound, 0) >= 0.99 * samples:
            return mean, bound * 1000
    return mean, float("inf")


async def phase(reactor, seconds, nodes, redisPort, metricsPorts, loads=(), command=None) -> dict:
    infoBefore = await redisInfo(redisPort)
    lagBefore = [await lagHistogram(p) for p in metricsPorts]
    cpuBefore = [cpuSeconds(n.pid) for n in nodes]
    redisCpuBefore = float(infoBefore["used_cpu_sys"]) + float(infoBefore["used_cpu_user"])
    started = time.monotonic()
    if command:
        for child, process in loads:
            process.write(command.encode() + b"\n")
    await task.deferLater(reactor, seconds)
    elapsed = time.monotonic() - started
    infoAfter = await redisInfo(redisPort)
    lagAfter = [await lagHistogram(p) for p in metricsPorts]
    cpuAfter = [cpuSeconds(n.pid) for n in nodes]
    commands = int(infoAfter["total_commands_processed"]) - int(infoBefore["total_commands_processed"])
    redisCpu = float(infoAfter["used_cpu_sys"]) + float(infoAfter["used_cpu_user"]) - redisCpuBefore
    results = [await child.lines.get() for child, _ in loads] if command else []
    return {
        "rss": [rss(n.pid) for n in nodes],
        "cpu": [(a - b) / elapsed * 100 for a, b in zip(cpuAfter, cpuBefore)],
        "lag": [lagFigures(b, a) for b, a in zip(lagBefore, lagAfter)],
        "redisMemory": int(infoAfter["used_memory"]),
        "commandsPerSecond": commands / elapsed,
        "redisCpu": redisCpu / elapsed * 100,
        "loads": results,
        "calls": {key[len("cmdstat_"):]: (calls(infoAfter[key]) - calls(infoBefore.get(key, "calls=0"))) / elapsed
                  for key in infoAfter if key.startswith("cmdstat_")},
    }


def calls(stat: str) -> int:
    """
    The C{calls} of a C{cmdstat_*} line of C{INFO commandstats}.
    """
    return int(stat.split("calls=", 1)[1].split(",", 1)[0])


async def orchestrate(reactor, options) -> None:
    directory = tempfile.mkdtemp(prefix="txgw-capacity-")
    redis = RedisServer(directory)
    redis.start()
    processes = []
    try:
        baseInfo = await redisInfo(redis.port)
        nodeCount = max(options.nodes, -(-options.sessions // PER_NODE))
        counts = [options.sessions // nodeCount] * nodeCount
        nodes, ports, metricsPorts = [], [], []
        for i, count in enumerate(counts):
            backend, backendURL = await startBackend(reactor)
            processes.append(backend)
            config = writeConfig(directory, i, count, redis.url, backendURL)
            node, match = await spawn(
                reactor,
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                 "--pidfile=", "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--config", config],
                r"(?s)metrics listening on [^:]+:(\d+).*gateway listening on [^:]+:(\d+)"
                r"|gateway listening on [^:]+:(\d+).*metrics listening on [^:]+:(\d+)",
                log=os.path.join(directory, f"node{i}.log"))
            processes.append(node)
            groups = match.groups()
            metrics, port = (groups[0], groups[1]) if groups[0] else (groups[3], groups[2])
            nodes.append(node)
            ports.append(int(port))
            metricsPorts.append(int(metrics))
        base = [rss(n.pid) for n in nodes]
        loads = []
        started = time.monotonic()
        for port, count in zip(ports, counts):
            child = Child()
            process = reactor.spawnProcess(
                child, sys.executable,
                [sys.executable, os.path.abspath(__file__), "--load", f"127.0.0.1:{port}",
                 "--sessions", str(count), "--interval", str(options.interval)],
                env=dict(os.environ, PYTHONPATH=ROOT, PYTHONUNBUFFERED="1"), path=ROOT)
            processes.append(process)
            loads.append((child, process))
        opened = [await child.lines.get() for child, _ in loads]
        openSeconds = time.monotonic() - started
        await task.deferLater(reactor, 5)  # let the map writes settle
        idle = await phase(reactor, options.idle, nodes, redis.port, metricsPorts)
        active = await phase(reactor, options.active, nodes, redis.port, metricsPorts, loads,
                             f"send {options.active}")
        for _, process in loads:
            process.write(b"quit\n")
        report(options, counts, base, opened, openSeconds, idle, active, baseInfo)
    finally:
        for process in processes:
            with contextlib.suppress(ProcessExitedAlready):
                process.signalProcess("KILL")
        redis.kill()


def report(options, counts, base, opened, openSeconds, idle, active, baseInfo) -> None:
    sessions = sum(o["opened"] for o in opened)
    redisBase = int(baseInfo["used_memory"])
    print(f"\n{sessions} sessions on {len(counts)} node(s) ({', '.join(map(str, counts))}), one Redis; "
          f"opened in {openSeconds:.1f} s")
    print(f"{'':<34} {'idle':>22} {'1 message/' + str(options.interval) + ' s each way':>28}")
    for i, count in enumerate(counts):
        for label, key in (("RSS KiB per session", "rss"),):
            print(f"node{i}: {label:<27} {(idle[key][i] - base[i]) / count:>22.1f} "
                  f"{(active[key][i] - base[i]) / count:>28.1f}")
        print(f"node{i}: {'RSS MB':<27} {idle['rss'][i] / 1024:>22.0f} {active['rss'][i] / 1024:>28.0f}")
        print(f"node{i}: {'CPU %':<27} {idle['cpu'][i]:>22.1f} {active['cpu'][i]:>28.1f}")
        print(f"node{i}: {'event-loop lag mean / p99 ms':<27} "
              f"{'{:.2f} / {:.0f}'.format(*idle['lag'][i]):>22} {'{:.2f} / {:.0f}'.format(*active['lag'][i]):>28}")
    print(f"{'redis used_memory B per session':<34} {(idle['redisMemory'] - redisBase) / sessions:>22.0f} "
          f"{(active['redisMemory'] - redisBase) / sessions:>28.0f}")
    print(f"{'redis commands/s':<34} {idle['commandsPerSecond']:>22.0f} {active['commandsPerSecond']:>28.0f}")
    print(f"{'redis CPU %':<34} {idle['redisCpu']:>22.1f} {active['redisCpu']:>28.1f}")
    sent = sum(r["sent"] for r in active["loads"])
    received = sum(r["received"] for r in active["loads"])
    rate = sent / options.active
    print(f"{'messages/s each way':<34} {'':>22} {rate:>28.0f}")
    print(f"{'redis commands per message':<34} {'':>22} "
          f"{(active['commandsPerSecond'] - idle['commandsPerSecond']) / (2 * rate) if rate else 0:>28.2f}")
    for name in sorted(active["calls"], key=lambda n: -active["calls"][n])[:8]:
        print(f"{'  ' + name + ' /s':<34} {idle['calls'].get(name, 0):>22.0f} {active['calls'][name]:>28.0f}")
    print(f"{'sent / echoed':<34} {'':>22} {f'{sent} / {received}':>28}")
    faults = ", ".join(str(sum(r[k] for r in active["loads"])) for k in ("bad", "short", "over", "closed"))
    print(f"{'wrong, short, over, closed':<34} {'':>22} {faults:>28}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--sessions", type=int, default=PER_NODE)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--active", type=float, default=60.0)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    options = parser.parse_args()
    run = load if options.load else orchestrate
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, options)))
