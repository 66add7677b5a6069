"""
The session layer over real sockets, driven at the packet level: resume on
the same backend connection, duplicates, refusals with their close codes,
the grace period, the replay buffer bound, heartbeats, and the end of a
session from either side.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.config import SessionConfig
from gateway.wire.protocol import SUBPROTOCOL, Ack, Close, Data, Welcome, decodeMessage
from gateway.testing import connectClient, waitUntil

T = 10.0


def within(d: Deferred, seconds: float = T) -> Deferred:
    """
    Bound a Deferred so that a hang fails the test.
    """
    return d.addTimeout(seconds, reactor)


class Raw:
    """
    A session-protocol client written out packet by packet.
    """

    def __init__(self, client) -> None:
        self.client = client

    @classmethod
    async def open(cls, url: str, resume: Welcome | None = None, received: int = 0,
                   path: str = "/app?room=1") -> tuple[Raw, object]:
        """
        Connect and say hello (new, or resuming C{resume}).

        @return: the client and the first packet the gateway answered.
        """
        client = await connectClient(url, path=path, protocols=[SUBPROTOCOL])
        raw = cls(client)
        hello = {"t": "hello", "v": 1}
        if resume is not None:
            hello.update(sid=resume.sid, secret=resume.secret, recv=received)
        client.send(json.dumps(hello))
        return raw, await raw.next()

    async def next(self):
        """
        @return: the next packet from the gateway.
        """
        payload, isBinary = await self.client.receive(T)
        return decodeMessage(payload, isBinary)

    async def nextData(self) -> Data:
        """
        @return: the next data packet, skipping acks.
        """
        while True:
            packet = await self.next()
            if not isinstance(packet, Ack):
                return packet

    def data(self, seq: int, payload: bytes | str) -> None:
        """
        Send data packet C{seq}.
        """
        if isinstance(payload, str):
            self.client.send(f"{seq}:{payload}")
        else:
            self.client.send(b"%d:%s" % (seq, payload), True)

    def ack(self, count: int) -> None:
        """
        Acknowledge C{count} messages.
        """
        self.client.send(json.dumps({"t": "ack", "n": count}))

    def drop(self) -> Deferred:
        """
        Cut the connection without a close handshake.
        """
        self.client.protocol.dropConnection(abort=True)
        return within(self.client.closed)


async def closeCode(raw: Raw) -> tuple[int, str]:
    """
    @return: the close code and reason the gateway closed C{raw} with.
    """
    wasClean, code, reason = await within(raw.client.closed)
    return code, reason


@pytest_twisted.ensureDeferred
async def test_new_session_and_backend_sees_session_id(echo_backends, make_gateway):
    """
    A new session is welcomed with an id and a secret; its backend
    WebSocket carries the id in X-Session-Id, the client's path and query
    and the forwarding headers; data flows both ways and is acknowledged.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    assert isinstance(welcome, Welcome) and not welcome.resumed
    assert len(welcome.sid) >= 22 and len(welcome.secret) >= 40
    handshake = backends[0].factory.handshakes[0]
    assert handshake.startswith(b"GET /app?room=1 HTTP/1.1\r\n")
    assert f"X-Session-Id: {welcome.sid}".encode() in handshake
    assert b"X-Forwarded-For: 127.0.0.1" in handshake
    raw.data(1, "hello")
    raw.data(2, b"\x00\xff")
    assert await raw.nextData() == Data(1, b"hello", False)
    assert await raw.nextData() == Data(2, b"\x00\xff", True)
    assert backends[0].factory.messages == 2


@pytest_twisted.ensureDeferred
async def test_resume_same_backend_connection_redelivers_and_dedupes(echo_backends, make_gateway):
    """
    After a drop, a resume reaches the same session and backend connection
    (the backend saw one connection): messages the backend sent meanwhile
    arrive in order, the gateway says how many client messages it had, and
    a client message sent again is not delivered twice.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    raw.data(1, "one")
    assert await raw.nextData() == Data(1, b"one", False)
    await raw.drop()
    [backend] = backends[0].factory.connections
    for i in range(3):
        backend.sendMessage(f"while away {i}".encode(), False)
    await waitUntil(lambda: gateway.service.sessions.sessions[welcome.sid].outbox.sent == 4)

    raw, again = await Raw.open(gateway.url, resume=welcome, received=1)
    assert isinstance(again, Welcome) and again.resumed and again.received == 1
    assert [await raw.nextData() for _ in range(3)] == [
        Data(i + 2, f"while away {i}".encode(), False) for i in range(3)
    ]
    raw.data(1, "one")  # already accepted: dropped
    raw.data(2, "two")
    assert await raw.nextData() == Data(5, b"two", False)
    assert backends[0].factory.opened == 1
    assert backends[0].factory.messages == 2


@pytest_twisted.ensureDeferred
async def test_attached_connection_keeps_little(echo_backends, make_gateway):
    """
    An attached session's client WebSocket keeps neither its route (the
    request head) nor what Autobahn kept of its handshake, and reads its
    options from its class; its backend link is the project's own, with
    slots only.  (What a session costs in memory rests on these.)
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    session = gateway.service.sessions.sessions[welcome.sid]
    protocol = session.transport
    assert protocol.route is None and protocol.http_headers is None and protocol.http_request_data is None
    assert "maxMessagePayloadSize" not in vars(protocol)
    assert protocol.maxMessagePayloadSize == gateway.service.config.session.maxMessageBytes + 21
    assert not hasattr(session.link, "__dict__") and not hasattr(session, "__dict__")
    raw.data(1, "still works")
    assert await raw.nextData() == Data(1, b"still works", False)


@pytest_twisted.ensureDeferred
async def test_refused_resumes_have_distinct_codes(echo_backends, make_gateway):
    """
    A wrong secret gets 4403, an unknown id 4404, and a received count the
    gateway cannot honour 4409; the session itself is untouched.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    await raw.drop()
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, "sid": welcome.sid, "secret": "x" * 43, "recv": 0}))
    assert (await within(client.closed))[1] == 4403
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, "sid": "nope", "secret": "x", "recv": 0}))
    assert (await within(client.closed))[1] == 4404
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, "sid": welcome.sid, "secret": welcome.secret, "recv": 7}))
    assert (await within(client.closed))[1] == 4409
    raw, again = await Raw.open(gateway.url, resume=welcome)
    assert isinstance(again, Welcome) and again.resumed


@pytest_twisted.ensureDeferred
async def test_grace_period_expiry(echo_backends, make_gateway):
    """
    A session not resumed within the grace period ends: its backend gets
    1001 "client did not resume", and a late resume gets 4410 (expired).
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(grace=0.3))
    raw, welcome = await Raw.open(gateway.url)
    closed = backends[0].factory.nextClose()
    await raw.drop()
    assert (await within(closed))[1:] == (1001, "client did not resume")
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, "sid": welcome.sid, "secret": welcome.secret, "recv": 0}))
    assert (await within(client.closed))[1] == 4410


@pytest_twisted.ensureDeferred
async def test_buffer_bound_while_detached_and_attached(echo_backends, make_gateway):
    """
    Past max_buffer_messages unacknowledged messages the session ends with
    1008 to the backend: while detached a later resume gets 4410; while
    attached (a client that never acknowledges) the client gets 4413.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(maxBufferMessages=5))
    raw, welcome = await Raw.open(gateway.url)
    await raw.drop()
    closed = backends[0].factory.nextClose()
    [backend] = backends[0].factory.connections
    for i in range(6):
        backend.sendMessage(b"x", True)
    assert (await within(closed))[1:] == (1008, "replay buffer limit exceeded")
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send(json.dumps({"t": "hello", "v": 1, "sid": welcome.sid, "secret": welcome.secret, "recv": 0}))
    assert (await within(client.closed))[1] == 4410

    raw, welcome = await Raw.open(gateway.url)
    closed = backends[0].factory.nextClose()
    [backend] = backends[0].factory.connections
    for i in range(6):
        backend.sendMessage(b"y", True)
    assert (await closeCode(raw))[0] == 4413
    assert (await within(closed))[1] == 1008


@pytest_twisted.ensureDeferred
async def test_heartbeats_and_silent_client(echo_backends, make_gateway):
    """
    The gateway sends an ack when it has sent nothing for `heartbeat`
    seconds, and detaches (does not end) a session whose client has been
    silent for `heartbeat_timeout`.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(heartbeat=0.1, heartbeatTimeout=0.4))
    raw, welcome = await Raw.open(gateway.url)
    assert await raw.next() == Ack(0)
    assert await raw.next() == Ack(0)
    code, reason = await closeCode(raw)  # the client never sends anything
    assert code is None  # dropped: a dead peer gets no close frame
    session = gateway.service.sessions.sessions[welcome.sid]
    assert session.state == "detached"
    assert backends[0].factory.closes == []


@pytest_twisted.ensureDeferred
async def test_backend_closes_while_detached(echo_backends, make_gateway):
    """
    A backend that sends a message and then closes while the client is
    away: the resume delivers the message, then the close packet with the
    backend's code and reason; once acknowledged the session ends (4000).
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    await raw.drop()
    [backend] = backends[0].factory.connections
    backend.sendMessage(b"last words", False)
    backend.sendClose(4321, "backend done")
    await waitUntil(lambda: gateway.service.sessions.sessions[welcome.sid].state == "ending")
    raw, again = await Raw.open(gateway.url, resume=welcome)
    assert await raw.nextData() == Data(1, b"last words", False)
    assert await raw.nextData() == Close(4321, "backend done")
    raw.ack(1)
    assert (await closeCode(raw))[0] == 4000
    assert welcome.sid not in gateway.service.sessions.sessions


@pytest_twisted.ensureDeferred
async def test_client_ends_session(echo_backends, make_gateway):
    """
    A client's close packet ends the session: the backend gets 1000 and the
    client's WebSocket is closed with 4000 (a packet the client sent after
    its close is ignored, not a protocol error).
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    closed = backends[0].factory.nextClose()
    raw.client.send(json.dumps({"t": "close", "code": 1000, "reason": "bye"}))
    raw.ack(0)
    assert (await closeCode(raw))[0] == 4000
    assert (await within(closed))[1:] == (1000, "client closed the session")


@pytest_twisted.ensureDeferred
async def test_protocol_errors_and_unavailable(echo_backends, make_gateway):
    """
    Garbage instead of hello, or a gap in sequence numbers, closes with
    4400; a new session when no backend can be had, or past max_sessions,
    gets 4503.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends, session=SessionConfig(maxSessions=1))
    client = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    client.send("not a packet")
    assert (await within(client.closed))[1] == 4400
    raw, welcome = await Raw.open(gateway.url)
    raw.data(2, "skipped one")
    assert (await closeCode(raw))[0] == 4400
    second = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    second.send(json.dumps({"t": "hello", "v": 1}))
    wasClean, code, reason = await within(second.closed)
    assert code == 4503 and "maximum" in reason

    await backends[0].stop()
    gateway = await make_gateway(backends)
    third = await connectClient(gateway.url, protocols=[SUBPROTOCOL])
    third.send(json.dumps({"t": "hello", "v": 1}))
    wasClean, code, reason = await within(third.closed)
    assert code == 4503 and "could be reached" in reason


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_sessions(echo_backends, make_gateway):
    """
    Stopping the gateway closes session clients and their backends with
    1001.
    """
    backends = await echo_backends(1)
    gateway = await make_gateway(backends)
    raw, welcome = await Raw.open(gateway.url)
    closed = backends[0].factory.nextClose()
    await within(gateway.service.stopService())
    assert (await closeCode(raw))[0] == 1001
    assert (await within(closed))[1] == 1001


@pytest_twisted.ensureDeferred
async def test_message_over_max_message_bytes(echo_backends, make_gateway):
    """
    A data message over max_message_bytes closes that client connection
    with 1009; the session is detached, not ended (the backend keeps its
    connection and never sees the message), and one at the limit passes.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, session=SessionConfig(maxMessageBytes=1024))
    raw, welcome = await Raw.open(gateway.url)
    raw.data(1, b"x" * 1024)
    assert await raw.nextData() == Data(1, b"x" * 1024, True)
    raw.data(2, b"y" * 1025)
    assert (await closeCode(raw))[0] == 1009
    session = gateway.service.sessions.sessions[welcome.sid]
    await waitUntil(lambda: session.state == "detached")
    assert backends[0].factory.received == [b"x" * 1024]
    assert backends[0].factory.closes == []
