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

import json
import os
import shutil
import socket
from pathlib import Path
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet.defer import DeferredQueue
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gateway.config import SessionConfig
from gateway.testing import startProcess

T = 60.0
LOCALHOST = "127.0.0.1"
PAGE = Path(__file__).with_name("browser_page.html")

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log stderr notice;
events {{}}
http {{
    log_format browser '$msec $request_method $uri txgw=$arg_txgw $status upgrade="$http_upgrade"';
    access_log /dev/stderr browser;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {host}:{port};
        location / {{
            # No Upgrade or Connection headers are passed on: WebSocket
            # handshakes reach the gateway as plain GETs.
            proxy_pass http://{host}:{target};
            proxy_http_version 1.1;{extra}
        }}
    }}
}}
"""


def _binary(name: str, *paths: str) -> str:
    found = shutil.which(name) or next((p for p in paths if os.access(p, os.X_OK)), None)
    if found is None:
        pytest.fail(f"{name} is not installed: run `make test`, whose browser-deps step installs "
                    "it (apt-get install chromium chromium-driver nginx)")
    return found


def chromiumBinary() -> str:
    """
    @return: the path of Debian's C{chromium}.
    @raise pytest.fail.Exception: when it is missing (never a skip).
    """
    return _binary("chromium", "/usr/bin/chromium")


def nginxBinary() -> str:
    """
    @return: the path of C{nginx} (in /usr/sbin, which may not be on PATH).
    @raise pytest.fail.Exception: when it is missing (never a skip).
    """
    return _binary("nginx", "/usr/sbin/nginx")


def freePort() -> int:
    """
    @return: a port that was free a moment ago (for nginx, which cannot
        listen on port 0 and report the port; its start is retried).
    """
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------
# What the page sends, and what it must receive.

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

class Report:
    """
    One report of the page (a JSON object with C{event}), whose answer is
    held until L{reply}.
    """

    def __init__(self, data: dict, request) -> None:
        self.data = data
        self._request = request
        self._replied = False

    @property
    def event(self) -> str:
        """
        The kind of report: open, progress, done or error.
        """
        return self.data.get("event", "")

    def reply(self, payload: dict | None = None) -> None:
        """
        Answer the page (it may be waiting for this answer).
        """
        if self._replied:
            return
        self._replied = True
        if getattr(self._request, "_gone", False):
            return
        self._request.setHeader(b"content-type", b"application/json")
        self._request.write(json.dumps(payload or {}).encode("utf-8"))
        self._request.finish()


class _PageResource(Resource):
    """
    GET /page.html: the test page; POST /report: a report, queued.
    """

    isLeaf = True

    def __init__(self, reports: DeferredQueue) -> None:
        super().__init__()
        self.reports = reports

    def render_GET(self, request):
        if request.path != b"/page.html":
            request.setResponseCode(404)
            return b"not found"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        return PAGE.read_bytes()

    def render_POST(self, request):
        if request.path != b"/report":
            request.setResponseCode(404)
            return b"not found"
        report = Report(json.loads(request.content.read()), request)

        def gone(_):
            request._gone = True

        request.notifyFinish().addErrback(gone)
        self.reports.put(report)
        return NOT_DONE_YET


class Browser:
    """
    The page's server on 127.0.0.1 and a headless Chromium showing the page.

    @ivar origin: the page's origin (for the gateway's C{corsOrigins}).
    """

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.reports: DeferredQueue = DeferredQueue()
        self.seen: list[dict] = []
        self.processes: list = []
        self._listening = None
        self.origin = ""

    async def start(self) -> None:
        """
        Listen on a free port.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import TCP4ServerEndpoint

        site = Site(_PageResource(self.reports))
        site.noisy = False
        self._listening = await TCP4ServerEndpoint(reactor, 0, interface=LOCALHOST).listen(site)
        self.origin = f"http://{LOCALHOST}:{self._listening.getHost().port}"

    async def open(self, page: str | None = None, **params) -> None:
        """
        Start Chromium on the page with the query C{params} (see
        browser_page.html), or on the URL C{page}.
        """
        profile = self.directory / f"chromium-{len(self.processes)}"
        profile.mkdir()
        env = dict(os.environ, HOME=str(profile), XDG_CONFIG_HOME=str(profile / "config"),
                   XDG_CACHE_HOME=str(profile / "cache"))
        args = [
            self.binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-proxy-server",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--enable-logging=stderr",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            page or f"{self.origin}/page.html?{urlencode(params)}",
        ]
        process = await startProcess(args, r"DevTools listening on ws://", env=env, timeout=T)
        self.processes.append(process)

    async def expect(self, *events: str, reply: bool = True, timeout: float = T) -> Report:
        """
        @return: the page's next report of one of C{events} (other reports
            are answered and kept in C{seen}), answered unless C{reply} is
            false.
        @raise AssertionError: when the page reports an error, or nothing
            comes within C{timeout} seconds.
        """
        from twisted.internet import reactor

        while True:
            try:
                report = await self.reports.get().addTimeout(timeout, reactor)
            except Exception:
                raise AssertionError(
                    f"no {'/'.join(events)} report from the page within {timeout} s\n"
                    + self.diagnostics()) from None
            self.seen.append(report.data)
            if report.event == "error":
                report.reply()
                raise AssertionError(f"the page failed: {report.data.get('message')}\n"
                                     f"{report.data.get('stack')}\n" + self.diagnostics())
            if report.event in events:
                if reply:
                    report.reply()
                return report
            report.reply()

    def diagnostics(self) -> str:
        """
        What the page reported and the browser printed, for a failure
        message.
        """
        lines = [f"reports: {json.dumps(self.seen)[-3000:]}"]
        for process in self.processes:
            lines.append("chromium output (tail):\n" + "\n".join(process.protocol.lines[-40:]))
        return "\n".join(lines)

    async def stop(self) -> None:
        """
        Stop every Chromium (TERM, then KILL) and the server.
        """
        for process in self.processes:
            process.signal("TERM")
            try:
                await process.wait(10)
            except Exception:
                process.signal("KILL")
                try:
                    await process.wait(10)
                except Exception:
                    pass
        if self._listening is not None:
            await self._listening.stopListening()


@pytest_twisted.async_yield_fixture
async def browser(tmp_path):
    """
    A L{Browser}: the page's server is listening (its C{origin} is known);
    C{await browser.open(...)} starts Chromium.  Everything is stopped at
    the end of the test.
    """
    running = Browser(chromiumBinary(), tmp_path)
    await running.start()
    yield running
    await running.stop()


@pytest_twisted.async_yield_fixture
async def make_nginx(tmp_path):
    """
    C{await make_nginx(targetPort)}: a real nginx on a free port of
    127.0.0.1 proxying to C{targetPort} without passing Upgrade or
    Connection headers (so that WebSocket handshakes fail), logging each
    request on its output; with C{passHost=True} it passes the browser's
    C{Host} on.

    @return: (from the call) the running process and its port.
    """
    binary = nginxBinary()
    started = []

    async def start(targetPort: int, attempts: int = 10, passHost: bool = False):
        failures = []
        for attempt in range(attempts):
            port = freePort()
            directory = tmp_path / f"nginx-{len(started)}-{attempt}"
            directory.mkdir()
            config = directory / "nginx.conf"
            # With passHost, the browser's Host is passed on (as a site
            # serving its own page through nginx does), so that the gateway
            # sees the page's origin as its own.
            extra = "\n            proxy_set_header Host $http_host;" if passHost else ""
            config.write_text(NGINX_CONF.format(dir=directory, host=LOCALHOST, port=port,
                                                target=targetPort, extra=extra))
            try:
                # Written once the listening socket is bound.
                process = await startProcess(
                    [binary, "-p", str(directory), "-c", str(config), "-e", "stderr"],
                    r"getrlimit\(RLIMIT_NOFILE\)", timeout=T)
            except RuntimeError as e:  # exited: most likely the port was taken meanwhile
                failures.append(str(e))
                continue
            started.append(process)
            return process, port
        raise RuntimeError(f"nginx did not start in {attempts} attempts:\n" + "\n".join(failures))

    yield start
    for process in started:
        process.signal("TERM")
        try:
            await process.wait(10)
        except Exception:
            process.signal("KILL")


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


def webSocketAttempts(log: str) -> list[float]:
    """
    @return: when (nginx's C{$msec}) each WebSocket handshake reached nginx,
        which passed it on as the plain GET the gateway answers with 426.
    """
    return [float(line.split()[0]) for line in log.splitlines()
            if 'GET /echo txgw=- 426 upgrade="websocket"' in line]


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
