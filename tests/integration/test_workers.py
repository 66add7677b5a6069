"""
Real C{twistd gateway --workers 2} processes, with a real Redis session
map and real echo backends: both workers accept on the shared listener, a
killed worker is started again, SIGTERM stops them all cleanly, SIGHUP
reloads every worker, the admin API answers for all of them, and a rolling
restart under load refuses no connection and loses no session message,
and ends Socket.IO sessions promptly as their workers are replaced.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.testing import connectClient, rawExchange, waitUntil

from tests.helpers import selfSignedCertificate

from .helpers import (
    TOKEN,
    admin,
    engineHandshake,
    engineWebSocket,
    pause,
    poolFile,
    request,
    socketIOFile,
    startGateway,
)
from .traffic import NumberedTraffic

#: The bound of every wait, in seconds.
WAIT = 30.0


def redisTable(url: str) -> str:
    """
    @return: a C{[session_map]} on C{url} with a key prefix of its own.
    """
    return (f'[session_map]\ntype = "redis"\nurl = "{url}"\n'
            f'key_prefix = "w{uuid.uuid4().hex[:6]}:"\nnode_ttl = 1.0\ntimeout = 0.5\n')


async def startWorkers(gateway_process, tmp_path, backends, redis, *args: str, extra: str = "",
                       pool: str = "", top: str = ""):
    """
    Start a gateway of two workers with the admin API, and wait until both
    listen.

    @param pool: keys for the C{[pool.chat]} table.
    @param top: top-level keys (before every table).

    @return: C{(process, admin port, line watcher, config file)}.
    """
    text = top + poolFile(backends, extra=redisTable(redis.url) + extra)
    text = text.replace("[pool.chat]\n", "[pool.chat]\n" + pool)
    started = await startGateway(gateway_process, tmp_path, text, "--workers", "2", *args)
    process, port, watcher, config = started
    await watcher.wait(r"workers: 2 of 2 ready", 0, timeout=WAIT)
    return started


async def workers(port: int) -> list[dict]:
    """
    @return: the C{GET /workers} list.
    """
    status, body = await admin(port, "GET", "/workers")
    assert status == 200, body
    return body["workers"]


def alive(pid: int) -> bool:
    """
    @return: whether process C{pid} exists (and is not a zombie).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest_twisted.ensureDeferred
async def test_bothWorkersAccept(tmp_path, redis_server, echo_backends, gateway_process):
    """
    Connections on the one port are served by both workers (the admin API's
    C{GET /workers} counts each worker's), C{GET /pools} adds up every
    worker's connections, and a drain through the admin API reaches every
    worker.  Each worker is a Redis node of its own.
    """
    backends = await echo_backends(2)
    process, port, watcher, _ = await startWorkers(gateway_process, tmp_path, backends, redis_server)
    clients = []

    async def more(n: int) -> None:
        for _ in range(n):
            i = len(clients)
            client = await connectClient(process.url, timeout=WAIT)
            client.send(f"m{i}")
            assert (await client.receive(WAIT))[0] == f"m{i}".encode()
            clients.append(client)
            await task.deferLater(reactor, 0.02, lambda: None)

    await more(20)
    listed = await workers(port)
    # Which worker accepts is the kernel's choice: on a busy machine one may
    # win many in a row, so open more (bounded) until both have some.
    while min(w["connections"] for w in listed) == 0 and len(clients) < 100:
        await more(10)
        listed = await workers(port)
    print("\nconnections per worker:", [(w["worker"], w["connections"]) for w in listed])
    assert [w["worker"] for w in listed] == [0, 1]
    assert all(w["state"] == "ready" and alive(w["pid"]) for w in listed)
    assert sum(w["connections"] for w in listed) == len(clients)
    assert all(w["connections"] > 0 for w in listed)
    status, pools = await admin(port, "GET", "/pools")
    assert status == 200
    assert sum(b["connections"] for b in pools["pools"][0]["backends"]) == len(clients)
    name = backends[0].name
    mark = watcher.mark()
    status, body = await admin(port, "POST", f"/pools/chat/backends/{name}/drain")
    assert (status, body["draining"]) == (200, True)
    assert len(watcher.matching(rf"\[worker [01]/\d+ .*backend {name} of pool chat is draining",
                                mark)) == 2
    assert (await admin(port, "POST", "/workers"))[0] == 405
    assert (await admin(port, "GET", "/workers/restart"))[0] == 405
    assert (await admin(port, "GET", "/workers", token=None))[0] == 401
    # /metrics answers for every worker, each series labelled with its worker.
    metrics = await rawExchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                      b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    head, _, text = metrics.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"text/plain" in head
    for number in (0, 1):
        assert b'txgateway_connections_accepted_total{' in text
        assert b'worker="%d"' % number in text
    assert text.count(b"# HELP txgateway_event_loop_lag_seconds ") == 1
    # The status page is served by the supervisor's listener too.
    page = await rawExchange(port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert page.startswith(b"HTTP/1.1 200 ") and b"text/html" in page.partition(b"\r\n\r\n")[0]
    nodes = watcher.matching(r"\[worker [01]/\d+ .*gateway node (\w+) shares its sessions")
    assert len({line.rsplit("node ", 1)[1] for line in nodes}) == 2
    for client in clients:
        await client.close().addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_killedWorkerRestarted(tmp_path, redis_server, echo_backends, gateway_process):
    """
    A worker killed with SIGKILL is started again under the same number,
    and serves.
    """
    backends = await echo_backends(1)
    process, port, watcher, _ = await startWorkers(gateway_process, tmp_path, backends, redis_server)
    before = await workers(port)
    mark = watcher.mark()
    os.kill(before[1]["pid"], signal.SIGKILL)
    await watcher.wait(r"worker 1 \(pid \d+\) died \(signal 9\) .* starting it again in", mark)
    await watcher.wait(r"worker 1 \(pid \d+\) is listening", mark, timeout=WAIT)
    after = await workers(port)
    assert after[1]["pid"] != before[1]["pid"] and after[1]["restarts"] == 1
    assert after[0]["pid"] == before[0]["pid"] and after[0]["restarts"] == 0
    for _ in range(6):
        client = await connectClient(process.url, timeout=WAIT)
        client.send("x")
        assert (await client.receive(WAIT))[0] == b"x"
        await client.close().addTimeout(WAIT, reactor)


@pytest_twisted.ensureDeferred
async def test_sigtermStopsAll(tmp_path, redis_server, echo_backends, gateway_process):
    """
    SIGTERM to the supervisor stops every worker as a single gateway
    stops (an open tunnel gets 1001 at a frame boundary), and the process
    exits with status 0, its workers gone.
    """
    backends = await echo_backends(1)
    process, port, watcher, _ = await startWorkers(gateway_process, tmp_path, backends, redis_server)
    pids = [w["pid"] for w in await workers(port)]
    client = await connectClient(process.url, timeout=WAIT)
    process.signal("TERM")
    wasClean, code, _ = await client.closed.addTimeout(WAIT, reactor)
    assert code == 1001
    assert await process.wait(WAIT) == 0
    assert not any(alive(pid) for pid in pids)
    assert watcher.matching("stopping 2 workers")
    assert not watcher.matching("Traceback")


@pytest_twisted.ensureDeferred
async def test_sighupReloadsEveryWorker(tmp_path, redis_server, echo_backends, gateway_process):
    """
    SIGHUP to the supervisor makes every worker reload the file: a new
    weight is in force in both.
    """
    backends = await echo_backends(2)
    process, port, watcher, config = await startWorkers(gateway_process, tmp_path, backends,
                                                        redis_server)
    name = backends[0].name
    config.write_text(poolFile(backends, extra=config.read_text().split("[pool.chat]")[0]
                               .split("shutdown = 2\n", 1)[1], **{name: 7}))
    mark = watcher.mark()
    process.signal("HUP")
    for number in (0, 1):
        await watcher.wait(rf"\[worker {number}/\d+ .*configuration reloaded from .*weight 1 -> 7",
                           mark, timeout=WAIT)
    status, pools = await admin(port, "GET", "/pools")
    weights = {b["name"]: b["weight"] for b in pools["pools"][0]["backends"]}
    assert weights[name] == 7


@pytest_twisted.ensureDeferred
async def test_unixListenerKeptAcrossRestart(tmp_path, redis_server, echo_backends, gateway_process):
    """
    A Unix socket listener is shared too: after a rolling restart (on
    SIGUSR2) its path is still there and served.
    """
    backends = await echo_backends(1)
    path = str(tmp_path / "gw.sock")
    process, port, watcher, _ = await startWorkers(
        gateway_process, tmp_path, backends, redis_server,
        "--listen", "tcp:0:interface=127.0.0.1", "--listen", f"unix:{path}")
    assert b"200 OK" in await unixExchange(path)
    process.signal("USR2")
    await watcher.wait(r"rolling restart done: 2 of 2", 0, timeout=60)
    assert os.path.exists(path)
    # Served at once; healthy once the new workers' first heartbeats are
    # in (a loaded machine may take a moment).
    answers = [await unixExchange(path)]
    deadline = reactor.seconds() + WAIT
    while b"200 OK" not in answers[-1] and reactor.seconds() < deadline:
        await task.deferLater(reactor, 0.1, lambda: None)
        answers.append(await unixExchange(path))
    assert b"200 OK" in answers[-1], [a[:80] for a in answers]


@pytest_twisted.ensureDeferred
async def test_tlsListener(tmp_path, redis_server, echo_backends, gateway_process):
    """
    An C{ssl:} listener is shared too: each worker runs TLS on the adopted
    socket with the listener's key and certificate.
    """
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    backends = await echo_backends(1)
    keyPath, certPath, pem = selfSignedCertificate(tmp_path)
    process, port, watcher, _ = await startWorkers(
        gateway_process, tmp_path, backends, redis_server,
        "--listen", f"ssl:0:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}")
    tls = optionsForClientTLS("localhost", trustRoot=Certificate.loadPEM(pem))
    for i in range(8):
        client = await connectClient(f"wss://127.0.0.1:{process.port}", tls=tls, timeout=WAIT)
        client.send(f"t{i}")
        assert (await client.receive(WAIT))[0] == f"t{i}".encode()
        await client.close().addTimeout(WAIT, reactor)
    assert b"X-Forwarded-Proto: https" in backends[0].factory.handshakes[0]


class _Collect(Protocol):
    def connectionMade(self):
        self.data = []
        self.transport.write(b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    def dataReceived(self, data):
        self.data.append(data)

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.data))


async def unixExchange(path: str) -> bytes:
    """
    @return: the gateway's answer to a health request over the Unix socket.
    """
    factory = Factory.forProtocol(_Collect)
    factory.done = Deferred()
    await UNIXClientEndpoint(reactor, path, timeout=5).connect(factory)
    return await factory.done.addTimeout(WAIT, reactor)


class Opener:
    """
    Opens transparent connections one after another (each: handshake, one
    echo, close), counting attempts, refusals and connections broken before
    their echo.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.attempts = 0
        self.refused: list[str] = []
        self.broken: list[str] = []
        self.running = True
        self.done: Deferred | None = None

    async def run(self) -> None:
        while self.running:
            self.attempts += 1
            number = self.attempts
            try:
                client = await connectClient(self.url, timeout=10)
            except Exception as e:
                self.refused.append(repr(e))
                continue
            try:
                client.send(f"o{number}")
                payload, _ = await client.receive(10)
                assert payload == f"o{number}".encode()
                await client.close().addTimeout(10, reactor)
            except Exception as e:
                self.broken.append(repr(e))


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_rollingRestartUnderLoad(transport, tmp_path, redis_server, echo_backends,
                                       gateway_process):
    """
    A rolling restart of two workers (started through the admin API) while
    a client opens transparent connections continuously and a session
    client (over WebSocket, or long-polling) sends a message every 10 ms: no connection attempt is refused or
    broken, and every session message arrives once, in order, the session
    going on through another worker when its own was replaced (resumed
    there, or over long-polling taken over there); every worker
    was replaced, each replacement listening before its old worker stopped.
    Rebalancing is off: with one session and tunnels coming and going, the
    session mover would move the session between the two backends every
    second, which is not what is tested here.
    """
    backends = await echo_backends(2, record=True)
    process, port, watcher, _ = await startWorkers(gateway_process, tmp_path, backends,
                                                   redis_server, pool="rebalance_rate = 0\n")
    before = {w["pid"] for w in await workers(port)}
    opener = Opener(process.url)
    sender = NumberedTraffic(process.url + "/chat", transport, tag="s")
    await sender.start()
    openers = [Deferred.fromCoroutine(opener.run()) for _ in range(2)]
    await task.deferLater(reactor, 0.5, lambda: None)
    mark = watcher.mark()
    status, body = await admin(port, "POST", "/workers/restart")
    assert (status, body) == (202, {"rolling_restart": "started", "workers": 2})
    status, _ = await admin(port, "POST", "/workers/restart")
    assert status == 409
    await watcher.wait(r"rolling restart done: 2 of 2 workers replaced", mark, timeout=90)
    await task.deferLater(reactor, 0.5, lambda: None)
    opener.running = False
    for d in openers:
        await d.addTimeout(WAIT, reactor)
    sender.stop()
    try:
        await waitUntil(lambda: len(sender.received) >= sender.sent, timeout=WAIT)
    except TimeoutError:
        pass  # the figures below say what is missing
    await sender.client.close().addTimeout(WAIT, reactor)
    after = {w["pid"] for w in await workers(port)}
    expected = sender.expected()
    lost = len(set(expected) - set(sender.received))
    duplicated = len(sender.received) - len(set(sender.received))
    print(f"\nrolling restart of 2 workers, session over {transport}: {opener.attempts}"
          " connection attempts,"
          f" {len(opener.refused)} refused, {len(opener.broken)} broken; session: {sender.sent}"
          f" messages, {lost} lost, {duplicated} duplicated, {len(sender.resumes)} resumes")
    assert opener.refused == [] and opener.broken == []
    assert opener.attempts > 20
    # On failure, what the workers logged says where the session stopped.
    logged = "\n".join(line for line in watcher.lines[mark:] if "session" in line or "lease" in line)[-6000:]
    assert (lost, duplicated) == (0, 0), (sorted(set(expected) - set(sender.received))[:10], logged)
    assert sender.received == expected
    # The session went on through another worker: the client resumed
    # there, or (over long-polling, whose next poll may simply reach the
    # other worker) that worker took the session over without the client
    # seeing a break.
    assert sender.resets == [] and (len(sender.resumes) >= 1 or " over (epoch " in logged), logged
    assert before.isdisjoint(after) and len(after) == 2
    lines = watcher.lines[mark:]
    for number in (0, 1):
        listening = next(i for i, line in enumerate(lines)
                         if re_search(rf"worker {number} \(pid \d+\) is listening", line))
        draining = next(i for i, line in enumerate(lines)
                        if re_search(rf"\[worker {number}/\d+ .*draining", line))
        assert listening < draining


def re_search(pattern: str, line: str) -> bool:
    import re

    return re.search(pattern, line) is not None


@pytest_twisted.ensureDeferred
async def test_proxyProtocolListener(tmp_path, redis_server, echo_backends, gateway_process):
    """
    A C{haproxy:} listener handed to workers: each worker reads the PROXY
    header of the connections it accepts, and the backend sees the carried
    address; a connection without one from a trusted peer is closed.
    """
    from .helpers import localTCP, markedUpgrade, proxyV1, sendAndCollect

    backends = await echo_backends(1)
    process, _, _, _ = await startWorkers(gateway_process, tmp_path, backends, redis_server,
                                          "--listen", "haproxy:tcp:0:interface=127.0.0.1",
                                          top='proxy_protocol_from = ["127.0.0.1/32"]\n')
    for i in range(10):
        answer = await sendAndCollect(localTCP(process.port), proxyV1(f"203.0.113.{i + 1}"),
                                      markedUpgrade(f"w{i}"))
        assert answer.startswith(b"HTTP/1.1 101 "), answer[:80]
    seen = b"".join(backends[0].factory.handshakes)
    for i in range(10):
        assert b"X-Marker: w%d\r\n" % i in seen
        assert b"X-Forwarded-For: 203.0.113.%d\r\n" % (i + 1) in seen
    assert await sendAndCollect(localTCP(process.port), markedUpgrade("none")) == b""


@pytest_twisted.ensureDeferred
async def test_transparentOnlyOnTheMemoryMap(tmp_path, echo_backends, gateway_process):
    """
    Every route C{protocol = "transparent"}: two workers start on the
    in-memory map (no Redis) and tunnel WebSocket clients, the pool's
    cookie affinity warned of as each worker's own; a client offering the
    session subprotocol is tunnelled too.
    """
    backends = await echo_backends(1)
    text = poolFile(backends).replace(
        "[pool.chat]\n",
        '[[route]]\nprefix = "/"\npool = "chat"\nprotocol = "transparent"\n[pool.chat]\naffinity = "cookie:sid"\n', 1)
    process, _, watcher, _ = await startGateway(gateway_process, tmp_path, text, "--workers", "2")
    await watcher.wait(r"workers: 2 of 2 ready", 0, timeout=WAIT)
    assert watcher.matching(r"pool chat's cookie:sid affinity records are each worker's own")
    for i in range(6):
        client = await connectClient(process.url, timeout=WAIT,
                                     protocols=["txgateway.v1"] if i % 2 else [])
        client.send(f"t{i}")
        assert (await client.receive(WAIT))[0] == f"t{i}".encode()
        await client.close().addTimeout(WAIT, reactor)


async def followPolls(port: int, sid: str) -> list[bytes]:
    """
    Poll Engine.IO session C{sid} (each poll over a new connection, so
    through either worker) until it ends: a close packet, or a 400 (the
    session gone).

    @return: the answers, the last one ending the session.
    """
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    seen = []
    while True:
        status, _, body = await request(port, "GET", target)
        seen.append(body if status == 200 else b"%d %s" % (status, body))
        if status != 200 or b"1" in body.split(b"\x1e"):
            return seen


@pytest_twisted.ensureDeferred
async def test_rollingRestartEndsSocketIOSessions(tmp_path, redis_server, socketio_server,
                                                  gateway_process):
    """
    A rolling restart of two workers ends each Socket.IO session as the
    worker holding it is replaced, long before a ping could time out: a
    poll held for it (by either worker) is answered with the close packet;
    a poll the replaced worker held for a session of the other one is
    answered with a noop, and the client's next poll goes on through
    another worker; a WebSocket is closed with 1001 (going away).  After
    the restart each client reconnects to a new session at once.  The admin
    API counts and lists every worker's sessions.
    """
    text = socketIOFile([socketio_server], route="ping_interval = 300\nping_timeout = 300\n",
                        top="[timeouts]\ndrain = 0.5\nshutdown = 2\n", extra=redisTable(redis_server.url))
    process, port, watcher, _ = await startGateway(gateway_process, tmp_path, text, "--workers", "2")
    await watcher.wait(r"workers: 2 of 2 ready", 0, timeout=WAIT)
    sids = [(await engineHandshake(process.port))[0] for _ in range(6)]
    sockets = [(await engineWebSocket(process.port))[0] for _ in range(2)]
    status, counts = await admin(port, "GET", "/sessions")
    assert (status, counts["socketio"]["sessions"], counts["socketio"]["polling"]) == (200, 8, 6)
    status, listing = await admin(port, "GET", "/sessions/socketio")
    assert (listing["count"], len(listing["sessions"])) == (8, 8)
    nodes = {entry["node"] for entry in listing["sessions"]}
    listed = await workers(port)
    assert sum(w["socketio"] for w in listed) == 8
    assert len(nodes) == sum(1 for w in listed if w["socketio"])  # each worker is a node of its own
    print("\nSocket.IO sessions per worker:", [(w["worker"], w["socketio"]) for w in listed])
    followers = [Deferred.fromCoroutine(followPolls(process.port, sid)) for sid in sids]
    await pause(0.5)  # the polls are held
    mark = watcher.mark()
    started = reactor.seconds()
    status, _ = await admin(port, "POST", "/workers/restart")
    assert status == 202
    ended = await gatherResults(followers).addTimeout(WAIT, reactor)
    closes = [await client.closed.addTimeout(WAIT, reactor) for client in sockets]
    took = reactor.seconds() - started
    await watcher.wait(r"rolling restart done: 2 of 2 workers replaced", mark, timeout=90)
    last = [answers[-1] for answers in ended]
    noops = sum(answers.count(b"6") for answers in ended)
    print(f"rolling restart: {len(sids)} polling sessions ended within {took:.1f}s"
          f" ({sum(a == b'1' for a in last)} by a close packet, {noops} noop(s) before),"
          f" WebSockets closed with {[code for _, code, _ in closes]}; nodes {sorted(nodes)}")
    assert [code for _, code, _ in closes] == [1001, 1001]
    assert all(a.endswith(b"1") or a.startswith(b"400 ") for a in last), last
    assert any(a.endswith(b"1") for a in last), last
    await engineHandshake(process.port)  # a client's reconnection
    process.signal("TERM")
    assert await process.wait() == 0
