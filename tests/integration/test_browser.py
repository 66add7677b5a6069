"""
The JavaScript client (gateway/static/txgateway.js) in a real browser.

Debian's headless Chromium (installed by the Makefile's C{browser-deps}; the
tests fail, never skip, without it) opens tests/integration/browser_page.html
from a small twisted.web server of the test.  The page loads the client from
the gateway's C{/_gateway/txgateway.js}, opens a session on an in-process
gateway in front of a recording echo backend, sends messages and reports
what it received by POSTing JSON back to the server it came from.  The page's
origin is not the gateway's, so long-polling requests cross origins and the
gateway's CORS allow-list is exercised too.

What breaks connections here is real: nginx proxying without the Upgrade and
Connection headers, and TCP relays that cut connections, go silent, or
refuse WebSocket handshakes.
"""

from __future__ import annotations


import pytest
import pytest_twisted
from twisted.internet.protocol import Factory, Protocol

from gateway.config import SessionConfig

from .browser import LOCALHOST, webSocketAttempts

def sentPayload(i: int) -> tuple[bytes, bool]:
    """
    @return: message C{i} of browser_page.html's C{message(i)}, as the
        backend receives it, and whether it is binary.
    """
    if i % 7 == 3:
        return bytes([i & 255, (i >> 8) & 255, 0x3A, 0xFF, 0x00]), True
    return f"msg {i}: h\u00e9llo \u2713".encode("utf-8"), False


def echoed(i: int) -> str:
    """
    @return: the page's record of the echo of message C{i}.
    """
    payload, isBinary = sentPayload(i)
    if isBinary:
        return "bin:" + ",".join(str(b) for b in payload)
    return payload.decode("utf-8")


def assertExactlyOnce(done: dict, backend) -> None:
    """
    Every message the page sent reached the backend once, in order, and
    every echo reached the page once, in order; one backend connection
    carried the whole session; at every state change the client's
    C{transport} was the state's (never a transport just given up).
    """
    sent = done["sent"]
    assert sent > 0
    received = backend.factory.received
    expected = [sentPayload(i)[0] for i in range(sent)]
    assert len(received) == len(expected), f"the backend got {len(received)} of {sent} messages"
    assert received == expected
    assert done["received"] == [echoed(i) for i in range(sent)]
    assert backend.factory.opened == 1
    assert done["finalState"] == "closed"
    assert done["closed"]["error"] is None and done["closed"]["dropped"] == 0
    assert not any(s["reset"] for s in done["states"])
    assert [s["clientTransport"] for s in done["states"]] == [s["transport"] for s in done["states"]]


def opens(done: dict) -> list[dict]:
    """
    @return: the page's C{open} state changes.
    """
    return [s for s in done["states"] if s["state"] == "open"]


# ----------------------------------------------------------------------
# The browser and the page's server.

class _Upstream(Protocol):
    def __init__(self, downstream: _Downstream) -> None:
        self.downstream = downstream

    def connectionMade(self) -> None:
        self.downstream.upstreamConnected(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.downstream.stalled:
            self.downstream.transport.write(data)

    def connectionLost(self, reason) -> None:
        if not self.downstream.stalled:
            self.downstream.transport.loseConnection()


class _Downstream(Protocol):
    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.first = True
        self.lost = False
        self.stalled = False

    def connectionMade(self) -> None:
        if self.relay.outage > 0:
            self.relay.outage -= 1
            self.transport.abortConnection()
            return
        self.relay.connections.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self.stalled:
            return
        if self.first:
            self.first = False
            head = data.lower()
            if self.relay.refusingUpgrades and head.startswith(b"get ") and b"upgrade: websocket" in head:
                self.relay.refused += 1
                self.transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                self.transport.loseConnection()
                return
            from twisted.internet import reactor
            from twisted.internet.endpoints import TCP4ClientEndpoint

            factory = Factory.forProtocol(lambda: _Upstream(self))
            d = TCP4ClientEndpoint(reactor, LOCALHOST, self.relay.targetPort).connect(factory)
            d.addErrback(lambda _: self.transport.abortConnection())
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.transport.write(data)

    def upstreamConnected(self, upstream: _Upstream) -> None:
        if self.lost:
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        pending, self.pending = self.pending, []
        for data in pending:
            upstream.transport.write(data)

    def connectionLost(self, reason) -> None:
        self.lost = True
        self.relay.connections.discard(self)
        if self.upstream is not None:
            self.upstream.transport.abortConnection()


class Relay:
    """
    A TCP relay in front of a port, standing for a failing network or a
    proxy: it can cut every connection (both sides aborted), drop the next
    few connections at once (an outage), stall connections (silence), and,
    while
    C{refusingUpgrades}, it answers WebSocket handshakes with 502 as a proxy
    that does not support them would.

    @ivar cuts: how many times connections were cut.
    @ivar refused: how many WebSocket handshakes were refused.
    """

    def __init__(self, targetPort: int) -> None:
        self.targetPort = targetPort
        self.refusingUpgrades = False
        self.refused = 0
        self.cuts = 0
        self.outage = 0
        self.connections: set[_Downstream] = set()
        self._listening = None

    async def start(self) -> int:
        """
        Listen on a free port of 127.0.0.1.

        @return: the port.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        factory = Factory.forProtocol(lambda: _Downstream(self))
        factory.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(factory)
        return self._listening.getHost().port

    def cut(self, outage: int = 0) -> int:
        """
        Abort every relayed connection now, and the next C{outage} new
        ones as soon as they are made (so that a browser's silent retry of
        a request on a new connection fails too).

        @return: how many connections were cut.
        """
        connections = [c for c in self.connections if c.transport is not None]
        for connection in connections:
            connection.transport.abortConnection()
        self.cuts += 1
        self.outage = outage
        return len(connections)

    def stall(self) -> int:
        """
        From now on, silently drop whatever arrives on the connections open
        now, either way, and keep them open even when the gateway closes its
        side (a path gone silent); new connections are relayed as usual.

        @return: how many connections were stalled.
        """
        connections = [c for c in self.connections if c.transport is not None]
        for connection in connections:
            connection.stalled = True
        return len(connections)

    async def stop(self) -> None:
        """
        Stop listening and drop every connection.
        """
        for connection in list(self.connections):
            connection.transport.abortConnection()
        if self._listening is not None:
            await self._listening.stopListening()


def pageParams(url: str, scripts: str, **params) -> dict:
    """
    The page's query: the session's URL, where the client's scripts are,
    and the rest.
    """
    return dict(url=f"{url}/echo", script=f"{scripts}/_gateway/txgateway.js", **params)


# ----------------------------------------------------------------------
# The tests.

@pytest_twisted.ensureDeferred
async def test_websocket_messages_both_ways_exactly_once(browser, echo_backends, make_gateway):
    """
    Over a WebSocket (transport "websocket"), every message the page sends
    reaches the backend once and in order, every echo reaches the page once
    and in order (text as strings, binary as bytes), the client reports the
    "websocket" transport, and close() ends the session cleanly.  The
    gateway serves the client as a classic script and as an ES module that
    exports the same classes.  The page registers its callbacks with
    onMessage and onState, and also with their old names (on_message,
    on_state, on_failover), which still work.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(corsOrigins=(browser.origin,)))
    await browser.open(**pageParams(gateway.httpURL, gateway.httpURL, transport="websocket",
                                    count=300, module=f"{gateway.httpURL}/_gateway/txgateway.mjs"))
    opened = await browser.expect("open")
    assert opened.data["transport"] == "websocket" and opened.data["state"] == "open"
    done = (await browser.expect("done")).data
    assertExactlyOnce(done, backends[0])
    assert done["moduleOK"] is True
    assert done["aliasesOK"] is True  # on_message, on_state, on_failover still work
    assert done["transport"] == "websocket"
    assert [s["transport"] for s in opens(done)] == ["websocket"]
    assert done["closed"]["code"] == 4000


@pytest_twisted.ensureDeferred
async def test_falls_back_to_long_polling_behind_a_proxy_that_breaks_websockets(
        browser, echo_backends, make_gateway, make_nginx):
    """
    Behind nginx proxying without the Upgrade headers, the WebSocket
    handshake fails (the gateway answers the plain GET with 426); a client
    in "auto" mode falls back to long-polling by itself, across origins
    (CORS), and delivers every message exactly once both ways.  Its tries
    to move back to a WebSocket fail the same way and change nothing, and
    they back off: the n-th comes between half and all of
    min(upgradeDelay * 2**n, maxUpgradeDelay) after the failure before it
    (here 0.5 s doubling to 2 s, over 6 s held on long-polling and the
    messages after), each told to onUpgradeScheduled with its delay and
    why ("the WebSocket did not open"); nginx saw exactly those tries.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(corsOrigins=(browser.origin,)))
    nginx, port = await make_nginx(gateway.port)
    proxied = f"http://{LOCALHOST}:{port}"
    await browser.open(**pageParams(proxied, proxied, transport="auto", count=300, idle=6,
                                    upgradeDelay=0.5, maxUpgradeDelay=2))
    opened = await browser.expect("open")
    assert opened.data["transport"] == "polling"
    done = (await browser.expect("done")).data
    assertExactlyOnce(done, backends[0])
    assert done["transport"] == "polling"
    assert {s["transport"] for s in opens(done)} == {"polling"}
    assert done["states"][0]["state"] == "reconnecting"  # the WebSocket failed first
    assert done["states"][0]["transport"] == "polling"  # (and the next attempt's is said at once)
    assert done["closed"]["code"] == 4000
    log = nginx.output
    # The browser's handshake went through nginx, which did not pass the
    # upgrade on: the gateway saw a plain GET of a routed path.
    assert 'GET /echo txgw=- 426 upgrade="websocket"' in log
    assert "POST /echo txgw=open 200" in log
    assert "POST /echo txgw=poll 200" in log
    assert "POST /echo txgw=send 200" in log
    # The upgrade backoff.
    upgrades = done["upgrades"]
    delays = [u["delay"] for u in upgrades]
    assert all(u["error"] == "the WebSocket did not open" for u in upgrades), upgrades
    for n, delay in enumerate(delays):
        bound = min(2.0, 0.5 * 2 ** n)
        assert bound / 2 - 0.01 <= delay <= bound + 0.01, (n, delays)
    assert delays[:3] == sorted(delays[:3])  # never shorter than the one before, up to the cap
    attempts = webSocketAttempts(log)
    tries = len(attempts) - 1  # after the first, failed, WebSocket
    assert len(upgrades) - 1 <= tries <= len(upgrades), (attempts, delays)
    # Each try came at least its delay after the one before.
    gaps = [later - earlier for earlier, later in zip(attempts, attempts[1:])]
    assert all(gap >= delay - 0.05 for gap, delay in zip(gaps[1:], delays[1:])), (gaps, delays)
    # In the 6 s held on long-polling: at most 7 tries (delays of at least
    # 0.25, 0.5, 1, 1, ...), at least 3 (at most 0.5, 1, 2, 2, ...).
    held = [t for t in attempts[1:] if t - attempts[0] <= 6.0]
    assert 3 <= len(held) <= 7, (attempts, delays)


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_cut_connections_resume_exactly_once(transport, browser, echo_backends, make_gateway):
    """
    A relay between the browser and the gateway cuts every connection three
    times while messages flow both ways (each time with a short outage, so
    that Chromium's own silent retry of an HTTP request fails too); the
    page's client resumes the same session each time (same backend
    connection, no reset), over the same transport, and every message
    arrives exactly once, in order, both ways.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(corsOrigins=(browser.origin,)))
    relay = Relay(gateway.port)
    port = await relay.start()
    try:
        await browser.open(**pageParams(f"http://{LOCALHOST}:{port}", gateway.httpURL,
                                        transport=transport, count=400, batch=5, pace=10))
        await browser.expect("open")
        for _ in range(3):
            await browser.expect("progress")
            assert relay.cut(outage=2) > 0
        done = (await browser.expect("done")).data
    finally:
        await relay.stop()
    assertExactlyOnce(done, backends[0])
    assert relay.cuts == 3
    resumed = [s for s in opens(done) if s["resumed"]]
    assert len(resumed) >= 3
    assert {s["transport"] for s in opens(done)} == {transport}
    assert any(s["state"] == "reconnecting" for s in done["states"])


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_silent_connection_is_dropped_and_resumed(transport, browser, echo_backends,
                                                        make_gateway):
    """
    When the path to the gateway goes silent without closing (a relay drops
    everything both ways), the client gives the connection up after twice
    the heartbeat plus one second without hearing from the gateway, and
    resumes the session on a new connection; every message arrives exactly
    once, in order, both ways.
    """
    backends = await echo_backends(1, record=True)
    # The gateway waits longer than the client before it takes the client
    # for dead: the client notices the silence first.
    gateway = await make_gateway(backends, session=SessionConfig(
        corsOrigins=(browser.origin,), heartbeat=1.0, heartbeatTimeout=10.0, pollTimeout=2.0))
    relay = Relay(gateway.port)
    port = await relay.start()
    try:
        await browser.open(**pageParams(f"http://{LOCALHOST}:{port}", gateway.httpURL,
                                        transport=transport, count=200, batch=5, pace=20))
        await browser.expect("open")
        await browser.expect("progress")
        assert relay.stall() > 0
        done = (await browser.expect("done")).data
    finally:
        await relay.stop()
    assertExactlyOnce(done, backends[0])
    lost = [s for s in done["states"] if s["state"] == "reconnecting"]
    assert lost and lost[0]["error"] == "nothing received for 3 s"
    assert opens(done)[-1]["resumed"] is True
    assert {s["transport"] for s in opens(done)} == {transport}


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_quiet_session_stays_open_on_heartbeats(transport, browser, echo_backends,
                                                     make_gateway):
    """
    A session that sends nothing for several heartbeat periods (and, on
    long-polling, several poll timeouts) stays open on its first
    connection: heartbeats (acks) keep both sides from taking it for dead.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(
        corsOrigins=(browser.origin,), heartbeat=1.0, heartbeatTimeout=2.5, pollTimeout=2.0))
    await browser.open(**pageParams(gateway.httpURL, gateway.httpURL, transport=transport,
                                    count=20, idle=5))
    await browser.expect("open")
    done = (await browser.expect("done")).data
    assertExactlyOnce(done, backends[0])
    assert [s["state"] for s in done["states"]] == ["open", "closed"]
    assert gateway.service.sessions.sessions == {}


@pytest_twisted.ensureDeferred
async def test_long_polling_session_upgrades_to_websocket(browser, echo_backends, make_gateway):
    """
    In "auto" mode, a session that started on long-polling because the
    WebSocket handshake was refused moves to a WebSocket once one works (a
    probe, then the outstanding poll ends, then a resume on the WebSocket),
    while messages flow, and every message arrives exactly once, in order,
    both ways.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(corsOrigins=(browser.origin,),
                                                                 pollTimeout=2.0))
    relay = Relay(gateway.port)
    relay.refusingUpgrades = True
    port = await relay.start()
    try:
        await browser.open(**pageParams(f"http://{LOCALHOST}:{port}", gateway.httpURL,
                                        transport="auto", count=100, batch=5, pace=20,
                                        until="websocket", upgradeDelay=0.5, maxUpgradeDelay=1))
        opened = await browser.expect("open", reply=False)
        assert opened.data["transport"] == "polling"
        assert relay.refused >= 1
        relay.refusingUpgrades = False
        opened.reply()
        done = (await browser.expect("done")).data
    finally:
        await relay.stop()
    assertExactlyOnce(done, backends[0])
    assert done["transport"] == "websocket"
    transports = [s["transport"] for s in opens(done)]
    assert transports[0] == "polling" and transports[-1] == "websocket"
    assert opens(done)[-1]["resumed"] is True
    assert done["closed"]["code"] == 4000


@pytest_twisted.ensureDeferred
async def test_page_from_a_refused_origin_stops(browser, echo_backends, make_gateway):
    """
    A page from an origin the route does not allow (no C{cors_origins}, no
    C{allowed_origins}): in auto mode its WebSocket handshake gets 403 and
    its long-polling open 403 with code 4003, and the client stops, its
    connect() failing with the gateway's reason, instead of retrying for
    ever; no backend is contacted.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    await browser.open(**pageParams(gateway.httpURL, gateway.httpURL))
    with pytest.raises(AssertionError, match="pages from this origin may not connect"):
        await browser.expect("open")
    assert backends[0].factory.opened == 0
