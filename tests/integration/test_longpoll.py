"""
The session protocol over HTTP long-polling, against a real gateway and
backend: the three requests, held polls, nothing lost by an aborted poll,
bad requests of every kind, CORS, and sessions moving between WebSocket
and long-polling.
"""

from __future__ import annotations

import base64
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web.client import Agent, readBody
from twisted.web.http_headers import Headers

from gateway.config import SessionConfig
from gateway.wire.protocol import SUBPROTOCOL
from gateway.testing import connectClient, rawExchange, waitUntil

T = 10.0


class Poller:
    """
    A long-polling client written out request by request.
    """

    def __init__(self, port: int, path: str = "/app") -> None:
        self.base = f"http://127.0.0.1:{port}{path}"
        self.agent = Agent(reactor)
        self.n = 0
        self.sid = self.secret = None

    async def post(self, kind: str, body, headers: dict | None = None, raw: bytes | None = None):
        """
        @return: (status, JSON body, response headers).
        """
        self.n += 1
        data = raw if raw is not None else json.dumps(body).encode()
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        allHeaders = {b"content-type": [b"text/plain"]}
        for k, v in (headers or {}).items():
            allHeaders[k.encode()] = [v.encode()]
        d = self.agent.request(b"POST", f"{self.base}?txgw={kind}&n={self.n}".encode(),
                               Headers(allHeaders), FileBodyProducer(BytesIO(data)))
        response = await d.addTimeout(T, reactor)
        text = await readBody(response)
        return response.code, json.loads(text), response.headers

    async def open(self, hello=None):
        """
        Open (or resume) a session; remember its id and secret.
        """
        status, body, _ = await self.post("open", hello or {"t": "hello", "v": 1})
        assert status == 200, body
        welcome = body["packets"][0]
        assert welcome["t"] == "welcome"
        self.sid, self.secret = welcome["sid"], welcome["secret"]
        return body["packets"]

    async def send(self, *packets):
        """
        Send packets; @return: (status, body).
        """
        status, body, _ = await self.post("send", {"sid": self.sid, "secret": self.secret,
                                                   "packets": list(packets)})
        return status, body

    async def poll(self, ack: int):
        """
        One poll; @return: its packets.
        """
        status, body, _ = await self.post("poll", {"sid": self.sid, "secret": self.secret, "ack": ack})
        assert status == 200, body
        return body["packets"]


def data(seq, text):
    """
    A text data packet in JSON.
    """
    return {"t": "m", "s": seq, "d": text}


@pytest_twisted.ensureDeferred
async def test_open_send_poll(echo_backends, make_gateway):
    """
    Open gets a welcome; send is acknowledged once the messages reached the
    backend; a poll brings the echoes (text and binary) and the ack; with
    nothing to say, a poll is held for poll_timeout and answered empty.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(pollTimeout=0.3))
    poller = Poller(gateway.port)
    await poller.open()
    status, body = await poller.send(data(1, "héllo"), {"t": "m", "s": 2, "b": base64.b64encode(b"\x00\xff").decode()})
    assert status == 200 and body["packets"] == [{"t": "ack", "n": 2}]
    await waitUntil(lambda: backends[0].factory.messages == 2)
    packets = await poller.poll(0)
    messages = [p for p in packets if p["t"] == "m"]
    assert messages == [data(1, "héllo"), {"t": "m", "s": 2, "b": "AP8="}]
    assert {"t": "ack", "n": 2} in packets
    started = reactor.seconds()
    assert await poller.poll(2) == [{"t": "ack", "n": 2}]  # nothing new: held, then the ack
    assert reactor.seconds() - started >= 0.25


@pytest_twisted.ensureDeferred
async def test_responses_are_proxy_safe(echo_backends, make_gateway):
    """
    Answers carry Content-Length and no-cache headers, and an HTTP/1.0
    request (as an old proxy sends) is answered and closed.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    poller = Poller(gateway.port)
    status, body, headers = await poller.post("open", {"t": "hello", "v": 1})
    assert headers.getRawHeaders(b"cache-control") == [b"no-store, no-cache, must-revalidate"]
    assert headers.getRawHeaders(b"pragma") == [b"no-cache"]
    assert headers.getRawHeaders(b"expires") == [b"0"]
    request = json.dumps({"t": "hello", "v": 1}).encode()
    answer = await rawExchange(gateway.port, b"POST /app?txgw=open HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(request), request))
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
    assert b"Content-Length: " in answer and b'"welcome"' in answer


@pytest_twisted.ensureDeferred
async def test_newer_poll_answers_older_and_aborted_poll_loses_nothing(echo_backends, make_gateway):
    """
    A second poll answers the held one at once, empty; a poll whose client
    went away loses nothing: the next poll carries what it would have.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(pollTimeout=5))
    poller = Poller(gateway.port)
    await poller.open()
    first = Deferred.fromCoroutine(poller.poll(0))
    await waitUntil(lambda: gateway.service.sessions.sessions[poller.sid].transport._held is not None)
    second = Deferred.fromCoroutine(poller.poll(0))
    assert await first.addTimeout(T, reactor) == []
    [backend] = backends[0].factory.connections
    backend.sendMessage(b"for the second", False)
    assert data(1, "for the second") in await second.addTimeout(T, reactor)

    # An aborted poll: the request is cancelled while held.
    aborted = poller.agent.request(
        b"POST", f"{poller.base}?txgw=poll&n=x".encode(), Headers({}),
        _body({"sid": poller.sid, "secret": poller.secret, "ack": 0}))
    response = await aborted
    # The answer was already there (message 1 unacknowledged): read nothing, drop it.
    response.deliverBody(_Dropper())
    backend.sendMessage(b"after the drop", False)
    packets = await poller.poll(0)
    assert [p for p in packets if p["t"] == "m"] == [data(1, "for the second"), data(2, "after the drop")]


def _body(obj):
    from io import BytesIO

    from twisted.web.client import FileBodyProducer

    return FileBodyProducer(BytesIO(json.dumps(obj).encode()))


class _Dropper:
    """
    A body consumer that hangs up at once.
    """

    def makeConnection(self, transport):
        transport.stopProducing()

    def dataReceived(self, data):
        pass

    def connectionLost(self, reason):
        pass


@pytest_twisted.ensureDeferred
async def test_bad_requests(echo_backends, make_gateway):
    """
    Every kind of bad long-polling request gets a 4xx with a JSON body
    naming the problem and the session close code, and the session lives
    on: malformed JSON, wrong types, oversized bodies and batches, unknown
    sessions, wrong secrets, GET, unknown requests, a sequence gap; a
    replayed sequence number is simply not delivered twice.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(maxBodyBytes=2048, maxBatchMessages=3))
    poller = Poller(gateway.port)
    await poller.open()
    cases = [
        (await poller.post("send", None, raw=b"{not json"), 400, 4400),
        (await poller.post("poll", {"sid": poller.sid, "secret": poller.secret, "ack": "1"}), 400, 4400),
        (await poller.post("send", {"sid": poller.sid, "secret": poller.secret, "packets": "x"}), 400, 4400),
        (await poller.post("send", {"sid": 5, "secret": poller.secret, "packets": []}), 400, 4400),
        (await poller.post("poll", {"sid": "nope", "secret": "x", "ack": 0}), 404, 4404),
        (await poller.post("poll", {"sid": poller.sid, "secret": "wrong", "ack": 0}), 403, 4403),
        (await poller.post("whatever", {"sid": poller.sid}), 400, 4400),
        (await poller.post("send", {"sid": poller.sid, "secret": poller.secret,
                                    "packets": [data(i, "x") for i in range(1, 5)]}), 413, 1009),
        (await poller.post("send", {"sid": poller.sid, "secret": poller.secret,
                                    "packets": [{"t": "m", "s": 1, "b": "!!"}]}), 400, 4400),
        (await poller.post("open", {"t": "hello", "v": 2}), 400, 4400),
    ]
    for (status, body, _), expectedStatus, code in cases:
        assert (status, body["status"], body["code"]) == (expectedStatus, expectedStatus, code), body
        assert body["message"]
    huge = json.dumps({"sid": poller.sid, "secret": poller.secret, "packets": [data(1, "x" * 4000)]}).encode()
    answer = await rawExchange(gateway.port, b"POST /app?txgw=send HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(huge), huge))
    assert answer.startswith(b"HTTP/1.1 413")
    get = await rawExchange(gateway.port, b"GET /app?txgw=poll HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert get.startswith(b"HTTP/1.1 405")

    assert (await poller.send(data(1, "once")))[1]["packets"] == [{"t": "ack", "n": 1}]
    assert (await poller.send(data(1, "once")))[1]["packets"] == [{"t": "ack", "n": 1}]
    status, body = await poller.send(data(3, "gap"))
    assert (status, body["code"]) == (400, 4400)
    assert (await poller.send(data(2, "twice")))[1]["packets"] == [{"t": "ack", "n": 2}]
    await waitUntil(lambda: len(backends[0].factory.received) == 2)
    assert backends[0].factory.received == [b"once", b"twice"]


@pytest_twisted.ensureDeferred
async def test_cors(echo_backends, make_gateway):
    """
    An origin in cors_origins gets Access-Control-Allow-Origin (and Vary),
    preflights are answered with 204; another origin is refused with 403
    and code 4003, and gets Access-Control-Allow-Origin on that refusal
    alone, so that its page can read it.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(corsOrigins=("http://app.test",)))
    poller = Poller(gateway.port)
    _, _, headers = await poller.post("open", {"t": "hello", "v": 1}, headers={"Origin": "http://app.test"})
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"http://app.test"]
    assert headers.getRawHeaders(b"vary") == [b"Origin"]
    status, body, headers = await poller.post("open", {"t": "hello", "v": 1},
                                              headers={"Origin": "http://evil.test"})
    assert (status, body["code"]) == (403, 4003) and "packets" not in body
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"http://evil.test"]
    preflight = await rawExchange(gateway.port, b"OPTIONS /app?txgw=send HTTP/1.1\r\nHost: x\r\n"
                                  b"Origin: http://app.test\r\nConnection: close\r\n\r\n")
    assert preflight.startswith(b"HTTP/1.1 204")
    assert b"Access-Control-Allow-Methods: POST, OPTIONS" in preflight


@pytest_twisted.ensureDeferred
async def test_session_moves_between_websocket_and_polling(echo_backends, make_gateway):
    """
    A session opened on a WebSocket is not taken by a stray poll (answered
    "closed 4001"), is moved to long-polling by an explicit resume (the
    WebSocket is closed with 4001), and is resumed on a new WebSocket after
    a probe (which also answers the held poll), with no message lost or
    repeated across the moves; the backend saw one connection.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    ws = await connectClient(gateway.url, path="/app", protocols=[SUBPROTOCOL])
    ws.send(json.dumps({"t": "hello", "v": 1}))
    welcome = json.loads((await ws.receive())[0])
    ws.send("1:over websocket")
    assert (await ws.receive())[0] in (b'{"t":"ack","n":1}', b"1:over websocket")

    poller = Poller(gateway.port)
    poller.sid, poller.secret = welcome["sid"], welcome["secret"]
    assert await poller.poll(0) == [{"t": "closed", "code": 4001,
                                     "reason": "the session is on another connection"}]
    packets = await poller.open({"t": "hello", "v": 1, "sid": poller.sid, "secret": poller.secret,
                                 "recv": 0})
    assert packets[0]["resumed"] is True
    status, body = await poller.send(data(2, "over polling"))
    assert body["packets"] == [{"t": "ack", "n": 2}]
    assert (await ws.closed.addTimeout(T, reactor))[1] == 4001
    packets = await poller.poll(0)
    assert [p for p in packets if p["t"] == "m"] == [data(1, "over websocket"), data(2, "over polling")]

    held = Deferred.fromCoroutine(poller.poll(2))
    await waitUntil(lambda: gateway.service.sessions.sessions[poller.sid].transport._held is not None)
    back = await connectClient(gateway.url, path="/app", protocols=[SUBPROTOCOL])
    back.send(json.dumps({"t": "hello", "v": 1, "sid": poller.sid, "secret": poller.secret,
                          "recv": 2, "probe": True}))
    assert json.loads((await back.receive())[0]) == {"t": "probe"}
    assert [p for p in await held.addTimeout(T, reactor) if p["t"] == "m"] == []
    back.send(json.dumps({"t": "hello", "v": 1, "sid": poller.sid, "secret": poller.secret, "recv": 2}))
    again = json.loads((await back.receive())[0])
    assert again["t"] == "welcome" and again["resumed"] and again["recv"] == 2
    back.send("3:websocket again")
    payloads = []
    while len(payloads) < 1:
        payload, _ = await back.receive()
        if not payload.startswith(b"{"):
            payloads.append(payload)
    assert payloads == [b"3:websocket again"]
    assert backends[0].factory.received == [b"over websocket", b"over polling", b"websocket again"]
    assert backends[0].factory.opened == 1


@pytest_twisted.ensureDeferred
async def test_silent_poller_detached(echo_backends, make_gateway):
    """
    A polling session with no request for heartbeat_timeout is detached
    (its grace period starts); a poll within the grace period resumes it.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(heartbeat=0.1, heartbeatTimeout=0.3,
                                                                pollTimeout=0.2))
    poller = Poller(gateway.port)
    await poller.open()
    session = gateway.service.sessions.sessions[poller.sid]
    await waitUntil(lambda: session.state == "detached")
    await poller.poll(0)
    assert session.state == "attached"
