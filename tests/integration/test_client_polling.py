"""
The Python client over long-polling, and moving between transports, against
a real gateway and a real backend: exactly-once delivery while connections
are cut, while the session switches from long-polling to WebSocket and back,
and from the command line.
"""

from __future__ import annotations

import os
import random
import re
import sys

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.protocol import Factory, Protocol

from gateway.client import ClientState, SessionClient
from gateway.testing import LOCALHOST, CuttingRelay, projectEnvironment, waitUntil

from .helpers import CLI, pause

MESSAGES = 500
MIN_CUTS = 10


class _Exchange:
    """
    A client sending numbered text messages to an echo backend, recording
    what comes back (and over which transport), and its state changes.
    """

    def __init__(self, client: SessionClient, rng: random.Random) -> None:
        self.client = client
        self.rng = rng
        self.sent = 0
        self.allowed = 0
        self.received: list[str] = []
        self.transports: list[str] = []  # of each message received
        self.resets: list = []
        self.resumes: list = []
        self.opens: list[str] = []  # the transport of each open state
        client.on_message(self._message)
        client.on_state(self._state)
        self._loop = task.LoopingCall(self._sendSome)

    def _message(self, payload, isBinary):
        self.received.append(payload)
        self.transports.append(self.client.transport)

    def _state(self, state, detail):
        if detail.reset:
            self.resets.append(detail)
        if state is ClientState.open:
            self.opens.append(detail.transport)
            if detail.resumed:
                self.resumes.append(detail)

    def _sendSome(self):
        for _ in range(self.rng.randint(1, 4)):
            if self.sent < self.allowed and self.client.bufferedAmount < 100_000:
                self.sent += 1
                self.client.send(f"c:{self.sent}")

    def start(self, allowed: int) -> None:
        self.allowed = allowed
        self._loop.start(0.004)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def expected(self) -> list[str]:
        return [f"c:{i}" for i in range(1, self.sent + 1)]


def _report(name: str, seed: int, exchange: _Exchange, atBackend: list[str], extra: str) -> None:
    expected = exchange.expected()
    print(f"\n{name} (seed {seed}): {len(expected)} messages each way, {extra}; "
          f"to the backend: {len(atBackend) - len(set(atBackend))} duplicated, "
          f"{len(set(expected) - set(atBackend))} lost; to the client: "
          f"{len(exchange.received) - len(set(exchange.received))} duplicated, "
          f"{len(set(expected) - set(exchange.received))} lost")


@pytest_twisted.ensureDeferred
async def test_polling_exactly_once_under_cuts(echo_backends, make_gateway):
    """
    transport="polling": 500 messages from the client to the backend and
    500 echoes back, with every connection cut at least 10 times at random
    moments (held polls and sends in flight included): each side receives
    each message once, in order; the backend saw one connection; no
    WebSocket was ever opened.  TXGATEWAY_SEED=N replays a run.
    """
    seed = int(os.environ.get("TXGATEWAY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    relay = CuttingRelay(gateway.port)
    port = await relay.start()
    client = SessionClient(f"ws://127.0.0.1:{port}/app", reactor=reactor, transport="polling",
                           initialDelay=0.005, maxDelay=0.05, maxBufferMessages=MESSAGES)
    exchange = _Exchange(client, rng)
    await client.connect().addTimeout(30, reactor)
    assert client.transport == "polling"

    def cutNow():
        if len(exchange.resumes) < MIN_CUTS or exchange.sent < MESSAGES:
            relay.cut()
            reactor.callLater(rng.uniform(0.02, 0.08), cutNow)

    exchange.start(MESSAGES)
    reactor.callLater(rng.uniform(0.02, 0.08), cutNow)
    try:
        await waitUntil(
            lambda: exchange.sent >= MESSAGES and len(exchange.resumes) >= MIN_CUTS, timeout=120
        )
        await waitUntil(lambda: len(exchange.received) >= MESSAGES, timeout=120)
        await client.whenAcknowledged().addTimeout(60, reactor)
    finally:
        exchange.stop()
    atBackend = [m.decode() for m in backends[0].factory.received]
    _report("polling", seed, exchange, atBackend,
            f"{relay.cuts} cuts, {len(exchange.resumes)} resumes")
    expected = exchange.expected()
    assert relay.cuts >= MIN_CUTS, seed
    assert len(exchange.resumes) >= MIN_CUTS, seed
    assert exchange.resets == [], seed
    assert atBackend == expected, seed
    assert exchange.received == expected, seed
    assert set(exchange.opens) == {"polling"}
    assert backends[0].factory.opened == 1
    detail = await client.close().addTimeout(30, reactor)
    assert client.state is ClientState.closed and detail.error is None, detail
    await relay.stop()


# ----------------------------------------------------------------------
# A proxy in front of the gateway that may refuse or stall WebSockets.


_UPGRADE = re.compile(rb"(?im)^upgrade:[ \t]*websocket")
_HEAD_END = b"\r\n\r\n"


class _ClientEnd(Protocol):
    """
    The client's side of one proxied connection: reads the first request's
    head, then refuses it (a WebSocket upgrade, in "refuse" mode) or
    connects onward.
    """

    def __init__(self, proxy: UpgradeProxy) -> None:
        self.proxy = proxy
        self.head = b""
        self.decided = False
        self.upgrade = False
        self.stall = False
        self.peer: _GatewayEnd | None = None

    def connectionMade(self):
        self.proxy.ends.add(self)

    def dataReceived(self, data):
        if self.decided:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.write(data)
            else:
                self.head += data
            return
        self.head += data
        if _HEAD_END not in self.head:
            return
        self.decided = True
        self.upgrade = bool(_UPGRADE.search(self.head.split(_HEAD_END, 1)[0]))
        if self.upgrade and self.proxy.mode == "refuse":
            self.proxy.refused += 1
            self.transport.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n"
                                 b"Connection: close\r\n\r\n")
            self.transport.loseConnection()
            return
        self.stall = self.upgrade and self.proxy.mode == "stall"
        if self.stall:
            self.proxy.stalled += 1
        self.transport.pauseProducing()
        from twisted.internet.endpoints import TCP4ClientEndpoint

        factory = Factory.forProtocol(lambda: _GatewayEnd(self))
        d = TCP4ClientEndpoint(reactor, LOCALHOST, self.proxy.targetPort).connect(factory)
        d.addErrback(lambda f: self.transport.abortConnection())

    def connectionLost(self, reason):
        self.proxy.ends.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _GatewayEnd(Protocol):
    """
    The gateway's side: passes the answer back, except that a stalled
    WebSocket gets its handshake answer and nothing after it.
    """

    def __init__(self, client: _ClientEnd) -> None:
        self.client = client
        self.head = b""
        self.headDone = False

    def connectionMade(self):
        self.client.proxy.ends.add(self)
        self.client.peer = self
        pending, self.client.head = self.client.head, b""
        self.transport.write(pending)
        self.client.transport.resumeProducing()

    def dataReceived(self, data):
        if self.client.stall:
            if self.headDone:
                return  # the stalled stream: swallowed
            self.head += data
            if _HEAD_END not in self.head:
                return
            self.headDone = True
            data = self.head.split(_HEAD_END, 1)[0] + _HEAD_END
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connectionLost(self, reason):
        self.client.proxy.ends.discard(self)
        if self.client.transport is not None:
            self.client.transport.loseConnection()


class UpgradeProxy:
    """
    A TCP proxy in front of a gateway whose C{mode} says what happens to
    WebSocket upgrades: C{"pass"}, C{"refuse"} (403) or C{"stall"} (the
    handshake is answered, then nothing the gateway sends gets through, as
    with proxies that buffer streams).  Plain HTTP always passes.
    """

    def __init__(self, targetPort: int, mode: str = "pass") -> None:
        self.targetPort = targetPort
        self.mode = mode
        self.refused = 0
        self.stalled = 0
        self.ends: set[Protocol] = set()
        self._listening = None

    async def start(self) -> int:
        from twisted.internet.endpoints import TCP4ServerEndpoint

        factory = Factory.forProtocol(lambda: _ClientEnd(self))
        factory.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(factory)
        return self._listening.getHost().port

    def cutWebSockets(self) -> int:
        """
        Abort every proxied WebSocket connection (both sides).

        @return: how many were cut.
        """
        cut = 0
        for end in list(self.ends):
            if isinstance(end, _ClientEnd) and end.upgrade and end.transport is not None:
                end.transport.abortConnection()
                if end.peer is not None and end.peer.transport is not None:
                    end.peer.transport.abortConnection()
                cut += 1
        return cut

    async def stop(self) -> None:
        for end in list(self.ends):
            if end.transport is not None:
                end.transport.abortConnection()
        if self._listening is not None:
            await self._listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_session_switches_transports_both_ways(echo_backends, make_gateway):
    """
    transport="auto" behind a proxy that refuses WebSocket upgrades: the
    client falls back to long-polling; its upgrade probes are stalled (the
    probe never comes back) and it stays on long-polling; once upgrades pass
    it moves to WebSocket; when its WebSocket is cut while upgrades stall,
    it falls back to long-polling, and later upgrades again.  Messages flow
    both ways all along, through every switch: each is delivered once, in
    order; the backend saw one connection; no session was lost.
    """
    seed = int(os.environ.get("TXGATEWAY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    proxy = UpgradeProxy(gateway.port, mode="refuse")
    port = await proxy.start()
    client = SessionClient(f"ws://127.0.0.1:{port}/app", reactor=reactor, initialDelay=0.01,
                           maxDelay=0.1, upgradeTimeout=0.3, upgradeDelay=0.01,
                           maxUpgradeDelay=0.1, maxBufferMessages=10000)
    exchange = _Exchange(client, rng)
    switches: list[tuple[str, int]] = []  # (transport, messages received) at each switch

    def noteSwitch(state, detail):
        if state is ClientState.open and (not switches or switches[-1][0] != detail.transport):
            switches.append((detail.transport, len(exchange.received)))

    client.on_state(noteSwitch)
    await client.connect().addTimeout(30, reactor)
    assert proxy.refused >= 1
    assert client.transport == "polling", "fell back after the refused upgrade"

    async def traffic(count: int = 150) -> None:
        # Messages keep flowing (both ways) for a while on this transport.
        target = len(exchange.received) + count
        await waitUntil(lambda: len(exchange.received) >= target, timeout=60)

    def openOn(transport):
        return lambda: client.transport == transport and client.state is ClientState.open

    exchange.start(20000)  # sends all along, until stopped below
    try:
        # 1. Long-polling, while upgrades are refused, then stalled.
        await traffic()
        proxy.mode = "stall"
        await waitUntil(lambda: proxy.stalled >= 1 and not client._driver.upgradeUnderWay, timeout=30)
        await traffic()
        assert client.transport == "polling"
        # 2. Upgrades pass: up to WebSocket, while messages flow.
        proxy.mode = "pass"
        await waitUntil(openOn("websocket"), timeout=30)
        await traffic()
        # 3. The WebSocket breaks while upgrades stall: back to long-polling.
        proxy.mode = "stall"
        assert proxy.cutWebSockets() == 1
        await waitUntil(openOn("polling"), timeout=30)
        stalled = proxy.stalled
        await traffic()
        await waitUntil(lambda: proxy.stalled > stalled and not client._driver.upgradeUnderWay, timeout=30)
        # 4. And up again.
        proxy.mode = "pass"
        await waitUntil(openOn("websocket"), timeout=30)
        await traffic()
        exchange.allowed = exchange.sent  # the end of the sending
        await waitUntil(lambda: len(exchange.received) >= exchange.sent, timeout=60)
        await client.whenAcknowledged().addTimeout(30, reactor)
    finally:
        exchange.stop()
    atBackend = [m.decode() for m in backends[0].factory.received]
    _report("switching", seed, exchange, atBackend,
            f"transports {' -> '.join(t for t, _ in switches)}, {proxy.refused} upgrades refused, "
            f"{proxy.stalled} stalled")
    expected = exchange.expected()
    assert exchange.sent < 20000, "sending went on until the end"
    assert [t for t, _ in switches] == ["polling", "websocket", "polling", "websocket"], switches
    assert {"polling", "websocket"} <= set(exchange.transports)
    assert exchange.resets == [], seed
    assert atBackend == expected, seed
    assert exchange.received == expected, seed
    assert backends[0].factory.opened == 1
    detail = await client.close().addTimeout(30, reactor)
    assert client.state is ClientState.closed and detail.error is None, detail
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_cli_over_polling(echo_backends, make_gateway):
    """
    C{python -m gateway.client --transport polling}: every input line is
    sent once and its echo printed once, in order, across cuts; the states
    it reports name long-polling; it exits 0.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    relay = CuttingRelay(gateway.port)
    port = await relay.start()
    lines = [f"line {i}" for i in range(300)]
    cli = CLI(lines)
    args = [sys.executable, "-m", "gateway.client", f"http://127.0.0.1:{port}/cli",
            "--transport", "polling", "--max-delay", "0.1", "--expect", str(len(lines))]
    reactor.spawnProcess(cli, args[0], args, env=projectEnvironment())
    await waitUntil(lambda: backends[0].factory.received, timeout=30)
    for _ in range(5):
        relay.cut()
        await pause(0.05)
    code = await cli.ended.addTimeout(60, reactor)
    assert code == 0, cli.err.decode()
    assert cli.out.decode().splitlines() == lines
    assert [m.decode() for m in backends[0].factory.received] == lines
    assert "over polling" in cli.err.decode()
    assert "over websocket" not in cli.err.decode()
    await relay.stop()
