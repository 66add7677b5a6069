"""
The demo, C{twistd -n gateway --demo}, as a user meets it: a real twistd
process with its echo backends, driven by the Python client (both
transports) and a plain WebSocket, and its page in headless Chromium behind
nginx proxying without the Upgrade headers (a proxy that breaks
WebSockets).  What the page shows is read from the browser through its
DevTools protocol (C{Runtime.evaluate}).
"""

from __future__ import annotations

import json
import re

import pytest_twisted
from twisted.internet import reactor

from gateway.client import SessionClient
from gateway.testing import connectClient, rawExchange, waitUntil
from .browser import LOCALHOST, Browser, webSocketAttempts

T = 30.0



def status(response: bytes) -> int:
    """
    @return: the status code of a raw HTTP response.
    """
    return int(response.split(b" ", 2)[1])


def get(path: str) -> bytes:
    """
    @return: a GET request for C{path}, closing the connection after it.
    """
    return f"GET {path} HTTP/1.1\r\nHost: {LOCALHOST}\r\nConnection: close\r\n\r\n".encode()


async def echoes(client: SessionClient, count: int) -> list:
    """
    Open C{client}, send C{count} messages, and return the echoes once all
    arrived; then close it.
    """
    received: list = []
    client.onMessage(lambda payload, isBinary: received.append(payload))
    await client.connect().addTimeout(T, reactor)
    for i in range(count):
        client.send(f"m{i}")
    await waitUntil(lambda: len(received) >= count, timeout=T)
    detail = await client.close().addTimeout(T, reactor)
    assert detail.error is None
    return received


@pytest_twisted.ensureDeferred
async def test_demo_logs_no_frames_and_answers_what_browsers_ask(gateway_process):
    """
    Sessions over WebSocket and long-polling, and a plain WebSocket, through
    the demo: its output has no debug line (Autobahn's per-frame and
    per-handshake lines once made up most of it), only one line when each
    backend connection opens and one when it ends, naming the backend and
    the session by its short id.  What browsers ask of a site by themselves
    (favicon.ico, robots.txt, apple-touch-icon.png, their developer tools'
    /.well-known/ probe) gets a 404, never the routed path's 426; the page
    has its icon inline; a plain GET of the route still gets 426.
    """
    gateway = await gateway_process("--demo")
    before = len(gateway.output.splitlines())
    for transport in ("websocket", "polling"):
        client = SessionClient(f"{gateway.url}/echo", reactor=reactor, transport=transport)
        received = await echoes(client, 20)
        assert len(received) == 20 and re.fullmatch(r"backend-\d: m0", received[0])
    plain = await connectClient(gateway.url, path="/echo")
    for i in range(20):
        plain.send(f"p{i}")
    for i in range(20):
        payload, _ = await plain.receive()
        assert payload.endswith(f": p{i}".encode())
    await plain.close().addTimeout(T, reactor)
    await waitUntil(lambda: gateway.output.count(" ended (") >= 3, timeout=T)
    lines = gateway.output.splitlines()[before:]
    assert not [line for line in lines if "#debug]" in line], "\n".join(lines)
    opened = [line for line in lines if line.endswith(" opened")]
    ended = [line for line in lines if " ended (" in line]
    assert len(opened) == len(ended) == 3, "\n".join(lines)
    assert all(re.search(r"\] backend-\d: session [\w-]{8}\u2026 opened$", line) for line in opened[:2])
    assert re.search(r"\] backend-\d: a connection from 127\.0\.0\.1 opened$", opened[2])
    assert all(re.search(r" ended \(1000\), 20 messages echoed$", line) for line in ended), ended
    assert len(lines) <= 8, "\n".join(lines)  # (and a line or two of the gateway's own)

    for path in ("/favicon.ico", "/robots.txt", "/apple-touch-icon.png",
                 "/apple-touch-icon-precomposed.png", "/.well-known/appspecific/com.chrome.devtools.json"):
        answer = await rawExchange(gateway.port, get(path))
        assert status(answer) == 404, (path, answer)
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["status"] == 404
    page = await rawExchange(gateway.port, get("/"))
    assert status(page) == 200 and b'rel="icon" href="data:image/svg+xml,' in page
    assert status(await rawExchange(gateway.port, get("/echo"))) == 426
    gateway.signal("TERM")
    assert await gateway.wait() == 0


class DevTools:
    """
    A connection to the page of a headless Chromium through its DevTools
    protocol: L{evaluate} runs an expression in the page.
    """

    def __init__(self, client) -> None:
        self._client = client
        self._next = 0

    @classmethod
    async def connect(cls, running: Browser, host: str) -> DevTools:
        """
        Connect to the page of C{running}'s Chromium whose URL has C{host}.
        """
        process = running.processes[-1]
        port = int(re.search(r"DevTools listening on ws://[^:]+:(\d+)/", process.output).group(1))
        from twisted.web.client import Agent, readBody

        response = await Agent(reactor).request(b"GET", f"http://{LOCALHOST}:{port}/json/list".encode())
        targets = json.loads(await readBody(response).addTimeout(T, reactor))
        page = next(t for t in targets if t["type"] == "page" and host in t["url"])
        path = "/" + page["webSocketDebuggerUrl"].split("/", 3)[3]
        return cls(await connectClient(f"ws://{LOCALHOST}:{port}", path=path))

    async def evaluate(self, expression: str):
        """
        @return: the value of C{expression} in the page.
        """
        self._next += 1
        self._client.send(json.dumps({"id": self._next, "method": "Runtime.evaluate",
                                      "params": {"expression": expression, "returnByValue": True}}))
        while True:
            payload, _ = await self._client.receive(timeout=T)
            message = json.loads(payload)
            if message.get("id") == self._next:
                return message["result"]["result"].get("value")

    async def waitFor(self, expression: str, timeout: float = T):
        """
        @return: the first true value of C{expression}, polled every 0.1 s.
        """
        from twisted.internet.task import deferLater

        deadline = reactor.seconds() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if reactor.seconds() > deadline:
                page = await self.evaluate("document.body.innerText")
                raise AssertionError(f"{expression} still false after {timeout} s; the page:\n{page}")
            await deferLater(reactor, 0.1, lambda: None)

    async def close(self) -> None:
        await self._client.close().addTimeout(T, reactor)


STATUS = 'document.getElementById("status").innerText'
LOG = 'document.getElementById("log").innerText'


@pytest_twisted.ensureDeferred
async def test_demo_page_behind_a_proxy_that_breaks_websockets(gateway_process, browser, make_nginx):
    """
    The demo page behind nginx proxying without the Upgrade headers: the
    page says plainly that it is connected over long-polling because the
    WebSocket is unavailable, with no line styled as an error, and when it
    will try the WebSocket again (within the first 5 s, by default); a
    message sent from the page is echoed by a demo backend; after the try
    fails (nginx sees it) the next comes 5 to 10 s later.  Nothing the
    browser asked for got a 426 but the WebSocket handshakes, and it did
    not ask for /favicon.ico (the icon is inline).  The demo's output has
    one line for the session, none per request or frame.
    """
    gateway = await gateway_process("--demo")
    nginx, port = await make_nginx(gateway.port, passHost=True)
    await browser.open(page=f"http://{LOCALHOST}:{port}/")
    tools = await DevTools.connect(browser, f"{LOCALHOST}:{port}")
    try:
        shown = await tools.waitFor(f'/next try in/.test({STATUS}) && {STATUS}')
        assert re.search(r"state: open · transport: long-polling \(WebSocket unavailable, next try in [1-5] s\)",
                         shown), shown
        log = await tools.evaluate(LOG)
        assert "connected over long-polling, because the WebSocket is unavailable" in log, log
        assert "switching to long-polling" in log, log
        assert await tools.evaluate('document.querySelectorAll("#log .err").length') == 0, log
        await tools.evaluate('document.getElementById("msg").value = "hi from the page";'
                             'document.getElementById("f").requestSubmit()')
        echoed = await tools.waitFor(f'/< backend-\\d: hi from the page/.test({LOG}) && {LOG}')
        assert "> hi from the page" in echoed
        # The first try fails (nginx strips the upgrade again); the next is
        # 5 to 10 s away.
        log = await tools.waitFor(f'({LOG}).split("next try in").length === 3 && {LOG}', timeout=T)
        delays = [int(n) for n in re.findall(r"next try in (\d+) s", log)]
        assert 3 <= delays[0] <= 5 and 5 <= delays[1] <= 10, log
        assert len(webSocketAttempts(nginx.output)) == 2  # the first WebSocket and one try
        assert await tools.evaluate('document.querySelectorAll("#log .err").length') == 0, log
    finally:
        await tools.close()
    requests = [line for line in nginx.output.splitlines() if re.match(r"\d+\.\d+ (GET|POST|HEAD) ", line)]
    refused = [line for line in requests if " 426 " in line]
    assert refused and all('GET /echo txgw=- 426 upgrade="websocket"' in line for line in refused), requests
    assert not [line for line in requests if "/favicon.ico" in line], requests
    # The demo's terminal: one line for the session, none per poll or frame.
    output = gateway.output.splitlines()
    assert not [line for line in output if "#debug]" in line], gateway.output
    assert len([line for line in output if re.search(r"\] backend-\d: session .* opened$", line)]) == 1
