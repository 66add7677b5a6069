"""
What one session is made of in the gateway's memory: Python objects by
type, per attached and per detached session.

    .venv/bin/python bench/session_census.py [--sessions 2000] [--top 25] [--trace [--by-line]]

The gateway runs in this process (the service twistd would run, from a
configuration file like C{bench/session_memory.py}'s), so that its objects
can be counted; the backend (L{gateway.demo}'s echo server) and the
clients (as in C{bench/session_memory.py}) run in a second process, so that
none of their objects are counted.  A census is taken after a warm-up (100
sessions opened, then detached: they stay), with N more sessions attached,
and once every client connection was dropped without a close (the sessions
detached, each keeping its backend connection).

A census walks every object the garbage collector tracks and the untracked
ones they refer to (strings, bytes, numbers, tuples and dicts of those),
each once, and adds up C{sys.getsizeof} by type; an instance's
C{__dict__} is counted under its owner's type as C{Type.__dict__} (an
instance that kept its attributes without a dict is given one, a few
dozen bytes more than it held).  It misses what Python objects do not own:
the allocator's overhead and fragmentation, C libraries' own buffers, and
the kernel's socket buffers (not in the RSS either).  With
C{--trace}, C{tracemalloc} runs from the start, and the Python allocations
are also grouped by the file (or line) that made them, which is slower.
RSS is not read here: C{bench/session_memory.py} measures it, with the
gateway in a process of its own.

A census holds the reactor for seconds, so the gateway is configured with
a heartbeat timeout longer than the run, and the backend sends no pings.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections import Counter

from twisted.internet import defer, task
from twisted.internet.protocol import ProcessProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def typeName(t: type) -> str:
    """
    @return: C{t}'s qualified name, with its module unless a builtin.
    """
    module = t.__module__
    return t.__qualname__ if module == "builtins" else f"{module}.{t.__qualname__}"


def census(*keep: Counter) -> tuple[Counter, Counter]:
    """
    Count every live object once, by type: all but the census's own (its
    working sets, and the earlier results in C{keep}).

    @return: the counts and the bytes (C{sys.getsizeof}) by type name.
    """
    gc.collect()
    skip = {id(o) for o in keep}
    tracked = [o for o in gc.get_objects() if id(o) not in skip]
    seen = {id(o) for o in tracked} | skip
    seen.add(id(tracked))
    owned: dict[int, str] = {}
    counts: Counter = Counter()
    sizes: Counter = Counter()
    # Instance dicts count under their owner's type.
    for o in tracked:
        t = type(o)
        if t.__dictoffset__ and not isinstance(o, type):
            try:
                d = object.__getattribute__(o, "__dict__")
            except AttributeError:
                continue
            if type(d) is dict:
                owned[id(d)] = typeName(t) + ".__dict__"
                if id(d) not in seen:  # an untracked dict: counted below
                    seen.add(id(d))
                    tracked.append(d)
    stack: list = []
    for o in tracked:
        name = owned.get(id(o)) or typeName(type(o))
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
        for r in gc.get_referents(o):
            if id(r) not in seen:
                seen.add(id(r))
                stack.append(r)
        while stack:
            u = stack.pop()
            name = typeName(type(u))
            counts[name] += 1
            sizes[name] += sys.getsizeof(u)
            for r in gc.get_referents(u):
                if id(r) not in seen:
                    seen.add(id(r))
                    stack.append(r)
    del tracked, seen, owned
    return counts, sizes


def traced(byLine: bool) -> Counter:
    """
    @return: the bytes tracemalloc holds by the file (or, C{byLine}, the
        line) that allocated them, but this file's.
    """
    import tracemalloc

    gc.collect()
    by: Counter = Counter()
    key = "lineno" if byLine else "filename"
    here = os.path.abspath(__file__)
    for stat in tracemalloc.take_snapshot().statistics(key):
        name = stat.traceback[0].filename
        if name == here:
            continue  # the census's own records, and the dicts it made
        if byLine:
            name += f":{stat.traceback[0].lineno}"
        for prefix in (ROOT + os.sep, sys.prefix + os.sep):
            name = name.removeprefix(prefix)
        by[name] += stat.size
    return by


def printDiff(title: str, before: tuple[Counter, Counter], after: tuple[Counter, Counter],
              sessions: int, top: int) -> None:
    """
    Print the types that grew most from C{before} to C{after}, per session.
    """
    counts = after[0].copy()
    counts.subtract(before[0])
    sizes = after[1].copy()
    sizes.subtract(before[1])
    total = sum(sizes.values())
    print(f"\n{title}: {total / sessions / 1024:.1f} KiB of Python objects per session")
    print(f"{'bytes':>8} {'objects':>8}  type")
    for name, size in sizes.most_common(top):
        print(f"{size / sessions:>8.0f} {counts[name] / sessions:>8.2f}  {name}")


def printTraced(title: str, before: Counter, after: Counter, sessions: int, top: int) -> None:
    """
    Print the files whose allocations grew most, per session.
    """
    diff = after.copy()
    diff.subtract(before)
    print(f"\n{title}: {sum(diff.values()) / sessions / 1024:.1f} KiB traced per session, by where allocated")
    for name, size in diff.most_common(top):
        print(f"{size / sessions:>8.0f}  {name}")


def writeConfig(backendURL: str, sessions: int) -> str:
    """
    Write the gateway's configuration: bounds wide enough for C{sessions}
    sessions from one address, one pool of C{backendURL}.

    @return: the file's path.
    """
    config = os.path.join(ROOT, "bench", "session_census.toml")
    most = sessions + 1000  # the warm-up's sessions stay, detached
    with open(config, "w") as f:
        f.write(f'[session]\ngrace = 600.0\nheartbeat = 300.0\nheartbeat_timeout = 600.0\n'
                f'max_sessions = {most}\n'
                f'max_sessions_per_ip = {most}\nmax_opens_per_ip = {most}\nopen_burst_per_ip = {most}\n'
                f'[limits]\nmax_connections = {sessions * 4 + 1000}\nmax_connections_per_ip = 0\n'
                f'[pool.p]\n[[pool.p.backend]]\nurl = "{backendURL}"\n')
    return config


async def gatewayMain(reactor, sessions: int, top: int, trace: bool, byLine: bool) -> None:
    """
    Run the gateway here, the backend and the clients as processes, and
    print the censuses.
    """
    from gateway.config import loadConfig
    from gateway.service import GatewayService

    peers = Peers(reactor)
    command = [sys.executable, os.path.abspath(__file__), "--peers"]
    reactor.spawnProcess(peers, command[0], command, env=dict(os.environ, PYTHONPATH=ROOT), path=ROOT)
    config = None
    try:
        backendURL = (await peers.ask(b"backend\n", 60)).decode()
        config = writeConfig(backendURL, sessions)
        service = GatewayService(loadConfig(config, listen=["tcp:0:interface=127.0.0.1"]), reactor)
        service.startService()
        port = (await service.whenListening())[0].getHost().port
        await peers.ask(b"gateway ws://127.0.0.1:%d\n" % port, 10)
        await peers.ask(b"open 100\n", 120)  # warm-up: every code path run once
        await peers.ask(b"drop\n", 60)
        await task.deferLater(reactor, 1.0)
        base = census()
        baseTrace = traced(byLine) if trace else None
        await peers.ask(b"open %d\n" % sessions, 600)
        await task.deferLater(reactor, 1.0)
        attached = census(*base, *([baseTrace] if trace else []))
        attachedTrace = traced(byLine) if trace else None
        await peers.ask(b"drop\n", 120)
        await task.deferLater(reactor, 2.0)
        detached = census(*base, *attached, *([baseTrace, attachedTrace] if trace else []))
        detachedTrace = traced(byLine) if trace else None
        print(f"{sessions} sessions (for the RSS they cost, run bench/session_memory.py)")
        printDiff("attached", base, attached, sessions, top)
        printDiff("detached", base, detached, sessions, top)
        if trace:
            printTraced("attached", baseTrace, attachedTrace, sessions, top)
            printTraced("detached", baseTrace, detachedTrace, sessions, top)
        await service.stopService()
    finally:
        peers.transport.closeStdin()
        if config is not None:
            os.unlink(config)

class Peers(ProcessProtocol):
    """
    The peers' process, seen from the gateway's: L{ask} writes a command
    and waits for its answer line.
    """

    def __init__(self, reactor) -> None:
        self.reactor = reactor
        self.buffer = b""
        self.waiting: defer.Deferred | None = None

    def ask(self, line: bytes, timeout: float) -> defer.Deferred:
        """
        Send the command C{line}.

        @return: L{Deferred} firing with the answer line; a C{failed}
            answer fails it.
        """
        self.waiting = defer.Deferred()
        self.transport.write(line)
        return self.waiting.addCallback(self._checked).addTimeout(timeout, self.reactor)

    @staticmethod
    def _checked(answer: bytes) -> bytes:
        if answer == b"failed":
            raise RuntimeError("the peers' process failed (its traceback is above)")
        return answer

    def outReceived(self, data: bytes) -> None:
        """
        Answer lines.
        """
        self.buffer += data
        while b"\n" in self.buffer:
            line, self.buffer = self.buffer.split(b"\n", 1)
            if self.waiting is not None:
                waiting, self.waiting = self.waiting, None
                waiting.callback(line)

    def errReceived(self, data: bytes) -> None:
        """
        The peers' errors: to ours.
        """
        sys.stderr.write(data.decode("utf-8", "replace"))


async def peersMain(reactor) -> None:
    """
    The peers' process: C{backend} starts the echo backend (Autobahn's,
    from L{gateway.demo}, which sends no pings: a census holds the
    gateway's reactor for seconds, and a backend that pings would take the
    gateway for dead) and answers its URL; C{gateway URL} names the gateway;
    C{open N} opens N sessions; C{drop} drops every client connection
    without a close.  Each answers with a line.
    """
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    from bench.session_memory import openSessions
    from gateway.demo import EchoServerFactory, listenEcho

    done: defer.Deferred = defer.Deferred()
    held: list = []
    gateway: list[str] = []

    class Commands(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            defer.Deferred.fromCoroutine(self.run(line.decode())).addErrback(self.failed)

        async def run(self, line: str) -> None:
            if line == "backend":
                port = await listenEcho(reactor, EchoServerFactory("backend"))
                self.sendLine(b"ws://127.0.0.1:%d" % port.getHost().port)
            elif line.startswith("gateway "):
                gateway[:] = [line.split()[1]]
                self.sendLine(b"ok")
            elif line.startswith("open "):
                held.extend(await openSessions(gateway[0], int(line.split()[1])))
                self.sendLine(b"opened")
            elif line == "drop":
                for client in held:
                    client.protocol.dropConnection(abort=True)
                await defer.gatherResults([c.closed for c in held])
                held.clear()
                self.sendLine(b"dropped")

        def failed(self, failure) -> None:
            sys.stderr.write(failure.getTraceback())
            self.sendLine(b"failed")

        def connectionLost(self, reason) -> None:
            if not done.called:
                done.callback(None)

    stdio.StandardIO(Commands())
    await done


def main() -> None:
    """
    Run the census (or, with C{--peers}, the peers' process).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace", action="store_true", help="group allocations by file (tracemalloc)")
    parser.add_argument("--by-line", action="store_true", help="with --trace, by line rather than by file")
    parser.add_argument("--peers", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()

    if options.peers:
        task.react(lambda reactor: defer.Deferred.fromCoroutine(peersMain(reactor)))
        return
    if options.trace:
        import tracemalloc

        tracemalloc.start()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(
        gatewayMain(reactor, options.sessions, options.top, options.trace, options.by_line)))


if __name__ == "__main__":
    main()
