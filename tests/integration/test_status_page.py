"""
The status page (gateway/static/status.*) in Debian's headless Chromium,
driven through the DevTools protocol (L{gateway.testing._browser}), against
two real C{twistd -n gateway} nodes sharing one redis-server, in front of two
echo backends: the page loads without a token and shows nothing, takes the
token, shows live figures that change under load (sessions over each
transport, message rates, handshake latency, the two nodes), and its
buttons drain a backend and set a weight, as C{GET /pools} then says; and
in front of a python-socketio server, it counts and lists Socket.IO
sessions.

The browser fails the test, never skips it, when it is missing (C{make
test} installs it).
"""

from __future__ import annotations

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import LoopingCall

from gateway.client import SessionClient
from gateway.testing._browser import Chromium, chromiumBinary

from .helpers import (
    TOKEN,
    admin,
    backendsByName,
    engineHandshake,
    engineWebSocket,
    poolFile,
    socketIOFile,
    startGateway,
)

#: The bound of every wait in the page, in seconds (they only catch hangs).
WAIT = 60.0


def browserBinary() -> str:
    """
    @return: Debian's C{chromium}.
    @raise pytest.fail.Exception: when it is not installed (never a skip).
    """
    binary = chromiumBinary()
    if binary is None:
        pytest.fail("chromium is not installed: run `make test`, whose browser-deps step installs it")
    return binary


def sharedConfig(backends, redisURL: str, prefix: str, node: str) -> str:
    """
    @return: the configuration of one node: pool C{chat} of C{backends},
        sessions shared through Redis under C{prefix}, node id C{node}.
    """
    extra = (f'[session_map]\ntype = "redis"\nurl = "{redisURL}"\nkey_prefix = "{prefix}"\n'
             f'node_id = "{node}"\nnode_ttl = 3.0\n')
    return poolFile(backends, extra)


#: Two scrapes of a histogram and a counter, and what the page computes
#: from them: the parser reads escaped label values, C{+Inf} and
#: timestamps; increases are per label filter (a counter that went down was
#: reset, so its new value is the increase); quantiles interpolate within
#: buckets as Prometheus' C{histogram_quantile} does (10 observations: 4 up
#: to 0.01 s, 5 more up to 0.1 s, 1 above).
ARITHMETIC = r"""(() => {
  const S = window.TxGatewayStatus;
  const before = S.parseMetrics([
    '# HELP h_seconds x', '# TYPE h_seconds histogram',
    'h_seconds_bucket{le="0.01",mode="a"} 1', 'h_seconds_bucket{le="0.1",mode="a"} 1',
    'h_seconds_bucket{le="+Inf",mode="a"} 1',
    'c_total{path="a\\"b\\\\c",d="up"} 5', 'c_total{path="x",d="down"} 100 1700000000000', ''].join("\n"));
  const now = S.parseMetrics([
    'h_seconds_bucket{le="0.01",mode="a"} 5', 'h_seconds_bucket{le="0.1",mode="a"} 10',
    'h_seconds_bucket{le="+Inf",mode="a"} 11',
    'c_total{path="a\\"b\\\\c",d="up"} 12', 'c_total{path="x",d="down"} 3', ''].join("\n"));
  return {
    label: now.get("c_total")[0].labels.path,
    up: S.increase(now, before, "c_total", l => l.d === "up"),
    down: S.increase(now, before, "c_total", l => l.d === "down"),
    missing: S.increase(now, before, "nothing_total"),
    first: S.increase(now, null, "c_total"),
    p40: S.quantile(0.4, now, before, "h_seconds"),
    p50: S.quantile(0.5, now, before, "h_seconds"),
    p99: S.quantile(0.99, now, before, "h_seconds"),
    empty: S.quantile(0.5, before, before, "h_seconds"),
  };
})()"""
EXPECTED = {"label": 'a"b\\c', "up": 7, "down": 3, "missing": 0, "first": None,
            "p40": pytest.approx(0.01), "p50": pytest.approx(0.028), "p99": pytest.approx(0.1),
            "empty": None}


def text(element: str) -> str:
    """
    @return: JavaScript for the text of the element with id C{element}.
    """
    return f"document.getElementById({json.dumps(element)}).textContent"


@pytest_twisted.ensureDeferred
async def test_statusPageLiveFiguresAndActions(tmp_path, redis_server, echo_backends, gateway_process):
    """
    The page is served without a token and holds no figure; a wrong token
    sends it back to its form with the gateway's refusal; the right one
    (typed, kept in sessionStorage, never in the URL) shows both nodes,
    the pool's backends, and figures that follow the load driven through
    node A: three sessions (two over WebSocket, one over long-polling),
    message rates above zero while messages flow, a handshake latency
    point; then its Drain button drains backend-1 and its weight field sets
    backend-2's weight, as node A's C{GET /pools} confirms.  No request
    breaks the page's Content-Security-Policy.
    """
    one, two = await echo_backends(2, prefix=True)
    prefix = f"status-{uuid.uuid4().hex[:8]}:"
    (tmp_path / "b").mkdir()
    nodeA, adminPort, _, _ = await startGateway(
        gateway_process, tmp_path, sharedConfig([one, two], redis_server.url, prefix, "node-a"))
    nodeB, _, _, _ = await startGateway(
        gateway_process, tmp_path / "b", sharedConfig([one, two], redis_server.url, prefix, "node-b"))

    browser = Chromium(browserBinary(), tmp_path / "chromium", width=1280, height=1000)
    clients: list[SessionClient] = []
    sender = None
    try:
        await browser.start(f"http://127.0.0.1:{adminPort}/status")
        # Served without a token, it shows its form and no figure.
        await browser.waitFor("document.body.dataset.state === 'signed-out'"
                              " && document.activeElement.id === 'token'", WAIT)
        assert await browser.evaluate(text("fig-sessions")) == "-"
        assert await browser.evaluate("document.getElementById('dashboard').hidden") is True
        assert await browser.evaluate(ARITHMETIC) == EXPECTED

        # A wrong token: the gateway refuses it, the page forgets it.
        await browser.type("not-the-admin-token-0000")
        await browser.press("Enter")
        await browser.waitFor(text("login-message") + " === 'The gateway refused this token.'", WAIT)
        assert await browser.evaluate("sessionStorage.length") == 0

        # The right one.
        await browser.evaluate("document.getElementById('token').focus()")
        await browser.type(TOKEN)
        await browser.press("Enter")
        await browser.waitFor("Number(document.body.dataset.updates) >= 2", WAIT)
        assert TOKEN not in await browser.evaluate("location.href")
        assert await browser.evaluate("sessionStorage.getItem('txgateway.admin.token')") == TOKEN
        assert await browser.evaluate(text("fig-sessions")) == "0"
        assert await browser.evaluate(
            "[...document.querySelectorAll('#pools tr[data-backend]')].map(r => r.dataset.backend)"
        ) == ["backend-1", "backend-2"]
        nodes = await browser.waitFor(
            "document.querySelectorAll('#nodes tbody tr').length === 2 &&"
            " [...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node)", WAIT)
        assert nodes == ["node-a", "node-b"]
        assert await browser.evaluate(text("node-id")) == "node-a"

        # Load through node A: three sessions, messages flowing.
        received = [0]
        for transport in ("websocket", "websocket", "polling"):
            client = SessionClient(f"{nodeA.url}/chat", transport=transport, reactor=reactor)
            client.onMessage(lambda payload, isBinary: received.__setitem__(0, received[0] + 1))
            await client.connect()
            clients.append(client)

        def send() -> None:
            for client in clients:
                client.send("tick")

        sender = LoopingCall(send)
        sender.clock = reactor
        sender.start(0.02)
        await browser.waitFor(
            f"{text('fig-sessions')} === '3' && {text('sessions-websocket')} === '2'"
            f" && {text('sessions-longpoll')} === '1' && Number({text('fig-up')}) > 0"
            f" && Number({text('fig-down')}) > 0", WAIT)
        assert received[0] > 0
        await browser.waitFor("document.querySelector('#chart-handshake polyline, #chart-handshake circle')"
                              " !== null", WAIT)
        assert await browser.evaluate("document.querySelectorAll('#chart-messages polyline').length") >= 1
        assert "attached 3" in await browser.evaluate(
            "document.querySelector('#chart-sessions .legend').textContent")

        # Drain backend-1 with its button.
        await browser.evaluate(
            "document.querySelector('tr[data-backend=\"backend-1\"] button[data-action=\"drain\"]').click()")
        await browser.waitFor("document.querySelector('tr[data-backend=\"backend-1\"]')"
                              ".dataset.draining === 'true'", WAIT)
        status, pools = await admin(adminPort, "GET", "/pools")
        backends = backendsByName(pools)
        assert status == 200
        assert (backends["backend-1"]["draining"], backends["backend-2"]["draining"]) == (True, False)
        await browser.waitFor(
            "document.querySelector('#actions li').textContent.includes('drain chat/backend-1: done')", WAIT)

        # Set backend-2's weight with its field.
        await browser.evaluate(
            "document.querySelector('tr[data-backend=\"backend-2\"] input').focus()")
        await browser.type("3")
        await browser.press("Enter")
        await browser.waitFor(
            "document.querySelector('tr[data-backend=\"backend-2\"] td.num').textContent === '3'", WAIT)
        status, pools = await admin(adminPort, "GET", "/pools")
        assert backendsByName(pools)["backend-2"]["weight"] == 3

        # The wrong token's 401 is the one error the browser logged.
        errors = [m for m in browser.messages if m["level"] == "error"]
        assert [m["source"] for m in errors] == ["network"], errors
        assert "401" in errors[0]["text"]
        # The policy reaches the browser: a script written into the page is
        # not run.
        await browser.evaluate("const s = document.createElement('script');"
                               " s.textContent = 'window.injected = 1'; document.body.appendChild(s)")
        assert await browser.evaluate("typeof window.injected") == "undefined"
    finally:
        if sender is not None and sender.running:
            sender.stop()
        for client in clients:
            await client.close().addTimeout(10, reactor)
        await browser.stop()
    for process in (nodeA, nodeB):
        process.signal("TERM")
        assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_statusPageShowsSocketIOSessions(tmp_path, socketio_server, gateway_process):
    """
    The page counts a real server's Socket.IO sessions (in all, over each
    transport, on their backend's row) and lists them with their short
    sid, transport, client, backend and node; the list follows them as
    they come and go.
    """
    process, adminPort, _, _ = await startGateway(
        gateway_process, tmp_path, socketIOFile([socketio_server], route="ping_interval = 60\n"))
    sid, _ = await engineHandshake(process.port)
    client, _ = await engineWebSocket(process.port)
    browser = Chromium(browserBinary(), tmp_path / "chromium", width=1280, height=1000)
    try:
        await browser.start(f"http://127.0.0.1:{adminPort}/status")
        await browser.waitFor("document.body.dataset.state === 'signed-out'"
                              " && document.activeElement.id === 'token'", WAIT)
        await browser.type(TOKEN)
        await browser.press("Enter")
        rows = await browser.waitFor(
            f"{text('fig-socketio')} === '2' && document.querySelectorAll('#socketio tbody tr').length === 2"
            " && [...document.querySelectorAll('#socketio tbody tr')].map(r => [...r.cells].map(c =>"
            " c.textContent))", WAIT)
        assert [row[0] for row in rows] == [sid[:8] + "\N{HORIZONTAL ELLIPSIS}", rows[1][0]]
        assert [(row[1], row[2], row[3], row[6]) for row in rows] == [
            ("polling", "127.0.0.1", "app / sio-1", "local"), ("websocket", "127.0.0.1", "app / sio-1", "local")]
        assert await browser.evaluate(text("socketio-polling")) == "1"
        assert await browser.evaluate(text("socketio-websocket")) == "1"
        assert await browser.evaluate(text("fig-socketio-detail")) == "1 polling · 1 ws"
        assert "2 socket.io" in await browser.evaluate(
            "document.querySelector('tr[data-backend=\"sio-1\"]').cells[6].textContent")
        assert "2 Socket.IO session(s)" in await browser.evaluate(text("socketio-summary"))
        # The WebSocket's session ends: the page follows.
        await client.close().addTimeout(10, reactor)
        await browser.waitFor(f"{text('fig-socketio')} === '1'"
                              " && document.querySelectorAll('#socketio tbody tr').length === 1", WAIT)
        errors = [m for m in browser.messages if m["level"] == "error"]
        assert errors == [], errors
    finally:
        await browser.stop()
    process.signal("TERM")
    assert await process.wait() == 0
