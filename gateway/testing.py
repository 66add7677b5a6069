"""
Fixtures for integration tests of WebSocket applications behind txgateway,
with real processes and real sockets on 127.0.0.1.

Installed as a pytest plugin (the C{pytest11} entry point C{txgateway}), so a
project that depends on txgateway gets these fixtures in its pytest-twisted
suites with nothing to import:

  - C{redis_server}: a real C{redis-server} on a free port for the whole
    session; C{make_redis_server} starts private ones (to kill and restart).
  - C{echo_backends}: C{await echo_backends(3)} starts Autobahn echo servers.
  - C{make_gateway}: C{await make_gateway(backends=...)} starts a gateway
    service on a free port and stops it at the end of the test.
  - C{gateway_process}: C{await gateway_process("--backend", url)} runs
    C{twistd -n gateway} as a real process on a free port.

and the helpers L{connectClient} (a WebSocket client with a message queue)
and L{rawExchange} (send bytes, collect the answer).

Nothing here imports the reactor or txredisapi at import time: pytest-twisted
chooses the reactor.
"""

from __future__ import annotations

import os
import random
import signal
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateResponse,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol

from .config import BackendConfig, GatewayConfig, HealthCheckConfig, Limits, PoolConfig, RouteConfig, Timeouts
from .demo import EchoServerFactory, listenEcho

__all__ = [
    "RedisServer",
    "EchoBackend",
    "RunningGateway",
    "TestClient",
    "connectClient",
    "rawExchange",
    "redisServerBinary",
    "waitUntil",
    "startProcess",
    "RunningProcess",
    "GatewayProcess",
    "gatewayConfig",
    "CuttingRelay",
]

LOCALHOST = "127.0.0.1"


def redisServerBinary() -> str:
    """
    @return: the path of C{redis-server}.
    @raise pytest.fail.Exception: when it is missing (never a skip: the
        README's test command installs it).
    """
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: run the test command from README.md, "
                    "which installs it (apt-get install redis-server)")
    return path


class RedisServer:
    """
    A real C{redis-server} process on 127.0.0.1, on a port chosen at random
    and retried until one binds (redis cannot listen on port 0 and report
    it), so that it can be killed and restarted on the same port.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """
        The C{redis://} URL of the server.
        """
        return f"redis://{LOCALHOST}:{self.port}/0"

    def start(self, attempts: int = 20) -> None:
        """
        Start the server, on its previous port when it had one.
        """
        binary = redisServerBinary()
        for _ in range(attempts):
            port = self.port or random.randint(20000, 60000)
            logfile = os.path.join(self.directory, f"redis-{port}.log")
            if os.path.exists(logfile):
                os.remove(logfile)  # readiness is read from a fresh log
            process = subprocess.Popen(
                [binary, "--bind", LOCALHOST, "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", self.directory, "--logfile", logfile],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._waitReady(process, port, logfile):
                self.process, self.port = process, port
                return
            process.kill()
            process.wait()
        raise RuntimeError(f"redis-server did not start after {attempts} attempts")

    @staticmethod
    def _waitReady(process: subprocess.Popen, port: int, logfile: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with open(logfile) as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            if "Ready to accept connections" in text:
                return True
            if "Address already in use" in text or "Could not create server TCP" in text:
                return False
            time.sleep(0.02)  # a synchronous fixture, outside the reactor
        return False

    def kill(self) -> None:
        """
        SIGKILL the server (its port is kept for L{start}).
        """
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """
        SIGTERM the server and wait for it.
        """
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def redis_server():
    """
    A C{redis-server} for the whole test session (synchronous: async
    fixtures cannot be session-scoped).
    """
    directory = tempfile.mkdtemp(prefix="txgateway-redis-")
    server = RedisServer(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def make_redis_server(tmp_path):
    """
    A factory of private C{redis-server}s (to kill and restart), all stopped
    at the end of the test.
    """
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(str(tmp_path))
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@dataclass
class EchoBackend:
    """
    A running echo backend.
    """

    name: str
    port: int
    factory: EchoServerFactory
    listeningPort: object

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"

    def config(self, **kwargs) -> BackendConfig:
        """
        @return: a L{BackendConfig} for it (C{weight}, C{maxConnections}...).
        """
        return BackendConfig(name=self.name, url=self.url, host=LOCALHOST, port=self.port,
                             secure=False, **kwargs)

    async def stop(self) -> None:
        """
        Stop listening and drop its connections.
        """
        stopping = self.listeningPort.stopListening()
        if stopping is not None:
            await stopping
        for proto in list(self.factory.connections):
            proto.dropConnection(abort=True)

    async def restart(self) -> None:
        """
        Listen again on the same port.
        """
        from twisted.internet import reactor

        self.listeningPort = await listenEcho(reactor, self.factory, port=self.port)


@pytest_twisted.async_yield_fixture
async def echo_backends():
    """
    C{await echo_backends(n, prefix=False, record=False)}: start C{n} echo
    servers (named backend-1...); with C{prefix}, replies start with the
    name; with C{record}, each keeps every message it received in
    C{factory.received}.
    """
    from twisted.internet import reactor

    started: list[EchoBackend] = []

    async def start(n: int = 1, prefix: bool = False, record: bool = False) -> list[EchoBackend]:
        out = []
        for _ in range(n):
            name = f"backend-{len(started) + 1}"
            factory = EchoServerFactory(name, prefix=f"{name}: ".encode() if prefix else b"",
                                        record=record)
            port = await listenEcho(reactor, factory)
            backend = EchoBackend(name, port.getHost().port, factory, port)
            started.append(backend)
            out.append(backend)
        return out

    yield start
    for backend in started:
        await backend.stop()


@dataclass
class RunningGateway:
    """
    A started L{gateway.service.GatewayService}.
    """

    service: object
    port: int

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"

    @property
    def httpURL(self) -> str:
        """
        Its C{http://} URL.
        """
        return f"http://{LOCALHOST}:{self.port}"


def gatewayConfig(
    backends: Sequence[EchoBackend | BackendConfig] = (),
    *,
    pools: Sequence[PoolConfig] | None = None,
    routes: Sequence[RouteConfig] | None = None,
    balance: str = "least_conn",
    affinity: str | None = None,
    health: HealthCheckConfig | None = None,
    timeouts: Timeouts | None = None,
    limits: Limits | None = None,
    **kwargs,
) -> GatewayConfig:
    """
    A configuration listening on 127.0.0.1, port 0: one pool C{default} of
    C{backends} at C{/}, unless C{pools} and C{routes} are given.
    """
    if pools is None:
        configs = tuple(b.config() if isinstance(b, EchoBackend) else b for b in backends)
        pools = [PoolConfig(name="default", backends=configs, balance=balance,
                            affinity=affinity, health=health)]
    if routes is None:
        routes = [RouteConfig(prefix="/", pool=pools[0].name)] if pools else []
    return GatewayConfig(
        listen=(f"tcp:0:interface={LOCALHOST}",),
        pools=tuple(pools),
        routes=tuple(routes),
        timeouts=timeouts or Timeouts(),
        limits=limits or Limits(),
        **kwargs,
    )


@pytest_twisted.async_yield_fixture
async def make_gateway():
    """
    C{await make_gateway(backends, **options)} (see L{gatewayConfig}) or
    C{await make_gateway(config=GatewayConfig(...))}: start a gateway in
    this process on a free port; it is stopped at the end of the test.
    """
    from twisted.internet import reactor

    from .service import GatewayService

    running: list[RunningGateway] = []

    async def make(backends=(), *, config: GatewayConfig | None = None, **kwargs) -> RunningGateway:
        if config is None:
            config = gatewayConfig(backends, **kwargs)
        elif not config.listen or config.listen == ("tcp:8080",):
            config = replace(config, listen=(f"tcp:0:interface={LOCALHOST}",))
        service = GatewayService(config, reactor)
        service.startService()
        ports = await service.whenListening()
        gateway = RunningGateway(service, ports[0].getHost().port)
        running.append(gateway)
        return gateway

    yield make
    for gateway in running:
        if gateway.service.running:
            await gateway.service.stopService()


class HandshakeFailed(Exception):
    """
    The WebSocket opening handshake did not succeed.
    """


class _ClientProtocol(WebSocketClientProtocol):
    def onConnect(self, response):
        self.factory.client.response = response

    def onOpen(self):
        client = self.factory.client
        client.protocol = self
        client.opened.callback(client)

    def onMessage(self, payload, isBinary):
        self.factory.client.messages.put((payload, isBinary))

    def onPong(self, payload):
        self.factory.client.pongs.put(payload)

    def onPing(self, payload):
        self.factory.client.pings.put(payload)
        super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        client = self.factory.client
        if not client.opened.called:
            client.opened.errback(HandshakeFailed(reason or "connection closed"))
        client.closed.callback((wasClean, self.remoteCloseCode, self.remoteCloseReason))


@dataclass
class TestClient:
    """
    A WebSocket client for tests.

    @ivar messages: L{DeferredQueue} of C{(payload, isBinary)} received.
    @ivar pongs: L{DeferredQueue} of pong payloads received.
    @ivar pings: L{DeferredQueue} of ping payloads received (each answered).
    @ivar closed: fires with C{(wasClean, remoteCode, remoteReason)}.
    @ivar response: Autobahn's C{ConnectionResponse} (chosen subprotocol,
        headers).
    """

    __test__ = False

    opened: Deferred = field(default_factory=Deferred)
    closed: Deferred = field(default_factory=Deferred)
    messages: DeferredQueue = field(default_factory=DeferredQueue)
    pongs: DeferredQueue = field(default_factory=DeferredQueue)
    pings: DeferredQueue = field(default_factory=DeferredQueue)
    protocol: object = None
    response: object = None

    def send(self, payload: bytes | str, isBinary: bool | None = None, fragmentSize: int | None = None) -> None:
        """
        Send a message (C{str} as text, C{bytes} as binary unless told).
        """
        if isinstance(payload, str):
            payload, isBinary = payload.encode("utf-8"), bool(isBinary)
        elif isBinary is None:
            isBinary = True
        self.protocol.sendMessage(payload, isBinary, fragmentSize=fragmentSize)

    async def receive(self, timeout: float = 10.0):
        """
        @return: the next C{(payload, isBinary)}, within C{timeout} seconds.
        """
        from twisted.internet import reactor

        return await self.messages.get().addTimeout(timeout, reactor)

    def close(self, code: int | None = 1000, reason: str | None = None) -> Deferred:
        """
        Start the closing handshake.

        @return: L{closed}.
        """
        self.protocol.sendClose(code, reason)
        return self.closed


async def connectClient(
    url: str,
    *,
    path: str = "/",
    protocols: Sequence[str] = (),
    headers: dict | None = None,
    bindAddress: str | None = None,
    compression: bool = False,
    tls=None,
    timeout: float = 10.0,
) -> TestClient:
    """
    Open a WebSocket to C{url} + C{path} (a gateway's or a backend's);
    through TLS with C{tls}, an L{IOpenSSLClientConnectionCreator}.

    @raise HandshakeFailed: when the server refuses the handshake.
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from urllib.parse import urlparse

    parsed = urlparse(url)
    client = TestClient()
    factory = WebSocketClientFactory(url.rstrip("/") + path, protocols=list(protocols) or None,
                                     headers=headers or {})
    factory.protocol = _ClientProtocol
    factory.client = client
    options = dict(maxMessagePayloadSize=64 * 1024 * 1024, maxFramePayloadSize=64 * 1024 * 1024,
                   autoPingInterval=0, openHandshakeTimeout=timeout, closeHandshakeTimeout=timeout)
    if compression:
        options["perMessageCompressionOffers"] = [PerMessageDeflateOffer()]
        options["perMessageCompressionAccept"] = lambda r: (
            PerMessageDeflateResponseAccept(r) if isinstance(r, PerMessageDeflateResponse) else None
        )
    factory.setProtocolOptions(**options)
    endpoint = TCP4ClientEndpoint(reactor, parsed.hostname, parsed.port, timeout=timeout,
                                  bindAddress=(bindAddress, 0) if bindAddress else None)
    if tls is not None:
        from twisted.internet.endpoints import wrapClientTLS

        endpoint = wrapClientTLS(tls, endpoint)
    await endpoint.connect(factory)
    return await client.opened.addTimeout(timeout, reactor)


class _Collector(Protocol):
    def connectionMade(self):
        self.received = []
        self.transport.write(self.factory.payload)

    def dataReceived(self, data):
        self.received.append(data)

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


async def rawExchange(port: int, payload: bytes, timeout: float = 10.0, host: str = LOCALHOST) -> bytes:
    """
    Connect, send C{payload}, and return everything received until the
    server closes the connection (within C{timeout} seconds).
    """
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint

    factory = Factory.forProtocol(_Collector)
    factory.payload = payload
    factory.done = Deferred()
    proto = await TCP4ClientEndpoint(reactor, host, port, timeout=timeout).connect(factory)

    def onTimeout(result, timeout):
        proto.transport.abortConnection()
        return result

    return await factory.done.addTimeout(timeout, reactor, onTimeoutCancel=onTimeout)


async def waitUntil(predicate, timeout: float = 10.0, interval: float = 0.01) -> None:
    """
    Wait, without blocking the reactor, until C{predicate()} is true: for
    state that changes on a timer of the code under test (a health check),
    with no event to wait on.

    @raise TimeoutError: when it is still false after C{timeout} seconds.
    """
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError(f"condition still false after {timeout}s")
        await deferLater(reactor, interval)


class _WatchedProcess(ProcessProtocol):
    """
    Collects a child's output line by line and fires C{ready} on the first
    line matching a pattern.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.lines: list[str] = []
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if not self.ready.called:
                match = self.pattern.search(line)
                if match:
                    self.ready.callback(match)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if self._partial:
            self.outReceived(b"\n")
        code = getattr(reason.value, "exitCode", None)
        if code is None and getattr(reason.value, "signal", None):
            code = -reason.value.signal
        self.ended.callback(code)  # first: a readiness failure must see it ended
        if not self.ready.called:
            tail = "\n".join(self.lines[-20:])
            self.ready.errback(RuntimeError(f"process exited ({code}) before it was ready:\n{tail}"))


@dataclass
class RunningProcess:
    """
    A child process started by L{startProcess}.

    @ivar match: the match of the readiness pattern.
    """

    protocol: _WatchedProcess
    transport: object
    match: object

    @property
    def output(self) -> str:
        """
        Everything it printed so far.
        """
        return "\n".join(self.protocol.lines)

    def signal(self, name: str) -> None:
        """
        Send a signal (C{"TERM"}, C{"KILL"}...) if it still runs.
        """
        if not self.protocol.ended.called:
            # Twisted knows only a few signals by name.
            self.transport.signalProcess(getattr(signal, f"SIG{name}", name))

    async def wait(self, timeout: float = 30.0) -> int | None:
        """
        @return: its exit code once it has exited (within C{timeout}), or
            minus the number of the signal that ended it.
        """
        from twisted.internet import reactor

        ended = self.protocol.ended
        if ended.called:
            return ended.result
        waiter: Deferred = Deferred()
        ended.addBoth(lambda code: (waiter.callback(code), code)[1])
        return await waiter.addTimeout(timeout, reactor)


async def startProcess(args: Sequence[str], ready: str, *, env: dict | None = None,
                       cwd: str | None = None, timeout: float = 30.0) -> RunningProcess:
    """
    Start a child process and wait for a line of its output matching
    C{ready} (a regular expression).
    """
    from twisted.internet import reactor

    protocol = _WatchedProcess(ready)
    environment = dict(os.environ if env is None else env)
    transport = reactor.spawnProcess(protocol, args[0], list(args), env=environment, path=cwd)
    process = RunningProcess(protocol, transport, None)
    try:
        process.match = await protocol.ready.addTimeout(timeout, reactor)
    except BaseException:
        process.signal("KILL")
        raise
    return process


def _projectEnvironment() -> dict:
    """
    The environment for a child Python that must import this package (and
    find its twistd drop-in) whether or not it is installed.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class GatewayProcess(RunningProcess):
    """
    A C{twistd -n gateway} child process.
    """

    port: int = 0

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"


@pytest_twisted.async_yield_fixture
async def gateway_process(tmp_path):
    """
    C{await gateway_process("--backend", url, ...)}: run C{twistd -n gateway}
    as a real process listening on a free port of 127.0.0.1 (unless the
    arguments name C{--listen}); killed at the end of the test if still
    running.
    """
    started: list[RunningProcess] = []

    async def start(*args: str, timeout: float = 30.0) -> GatewayProcess:
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "gateway"]
        if "--listen" not in args:
            command += ["--listen", f"tcp:0:interface={LOCALHOST}"]
        command += list(args)
        running = await startProcess(command, r"gateway listening on [^:]+:(\d+)",
                                     env=_projectEnvironment(), cwd=str(tmp_path), timeout=timeout)
        started.append(running)
        process = GatewayProcess(running.protocol, running.transport, running.match,
                                 port=int(running.match.group(1)))
        return process

    yield start
    for process in started:
        process.signal("KILL")
        try:
            await process.wait(10)
        except Exception:
            pass


class _RelayEnd(Protocol):
    """
    One side of a relayed connection.
    """

    def __init__(self, relay, peer=None):
        self.relay = relay
        self.peer = peer
        self.pending = []

    def connectionMade(self):
        self.relay.ends.add(self)
        if self.peer is None:
            # The client side: connect onward, holding what arrives meanwhile.
            self.transport.pauseProducing()
            from twisted.internet import reactor
            from twisted.internet.endpoints import TCP4ClientEndpoint

            factory = Factory.forProtocol(lambda: _RelayEnd(self.relay, self))
            d = TCP4ClientEndpoint(reactor, LOCALHOST, self.relay.nextTarget()).connect(factory)
            d.addErrback(lambda f: self.transport.abortConnection())
        else:
            self.peer.peer = self
            self.peer.transport.resumeProducing()

    def dataReceived(self, data):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason):
        self.relay.ends.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class CuttingRelay:
    """
    A TCP relay in front of a port, whose connections a test can cut at any
    moment (both sides aborted, as a failing network or proxy would), from
    outside the client under test.

    Given several ports, it spreads connections over them in turn (round
    robin, no affinity), as a plain L4 balancer in front of gateway nodes.
    """

    def __init__(self, targetPort: int, *morePorts: int) -> None:
        self.targetPort = targetPort
        self.targets = [targetPort, *morePorts]
        self._turn = 0
        self.ends: set[_RelayEnd] = set()
        self.cuts = 0
        self.port = None
        self._listening = None

    def nextTarget(self) -> int:
        """
        @return: the port the next connection goes to.
        """
        port = self.targets[self._turn % len(self.targets)]
        self._turn += 1
        return port

    async def start(self) -> int:
        """
        Listen on a free port of 127.0.0.1.

        @return: the port.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        factory = Factory.forProtocol(lambda: _RelayEnd(self))
        factory.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(factory)
        self.port = self._listening.getHost().port
        return self.port

    def cut(self) -> int:
        """
        Abort every relayed connection now.

        @return: how many connections were cut.
        """
        ends = [e for e in self.ends if e.transport is not None]
        for end in ends:
            end.transport.abortConnection()
        if ends:
            self.cuts += 1
        return len(ends)

    def pause(self) -> None:
        """
        Stop relaying (both ways) without closing anything: a stalled peer,
        whose TCP buffers fill and push back on the sender.
        """
        for end in self.ends:
            if end.transport is not None:
                end.transport.pauseProducing()

    def resume(self) -> None:
        """
        Relay again after L{pause}.
        """
        for end in self.ends:
            if end.transport is not None:
                end.transport.resumeProducing()

    async def stop(self) -> None:
        """
        Stop listening and cut what is left.
        """
        self.cut()
        if self._listening is not None:
            await self._listening.stopListening()
