"""
Headers the gateway owns, sent by a client, against a real C{twistd -n
gateway} process and echo backends: the X-Session-* headers of the resume
contract and the forwarding headers, under any case and with C{_} for C{-},
and the headers named in C{Connection}, never reach a backend; a client
that knows a live session's id can neither read its messages nor fence it.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.testing import connectClient, rawExchange
from gateway.wire.frames import OP_TEXT, encodeClose, encodeFrame
from gateway.wire.protocol import SUBPROTOCOL, Ack, Data, Welcome, decodeMessage

T = 10.0

UPGRADE = (
    b"GET /chat HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)

#: Every owned header, in the spellings a client might try.
SPOOFED = [
    (b"X-Session-Id", b"spoofed-id"),
    (b"x-session-resumed", b"1"),
    (b"X_Session_Received", b"0"),
    (b"X-SESSION-DELIVERED", b"0"),
    (b"x_Session-Epoch", b"999"),
    (b"X-Forwarded-For", b"6.6.6.6"),
    (b"X_Forwarded_For", b"6.6.6.6"),
    (b"x-forwarded-proto", b"spoofed"),
    (b"X_FORWARDED_HOST", b"spoofed.test"),
    (b"Forwarded", b"for=6.6.6.6"),
    (b"X-Real-IP", b"6.6.6.6"),
    (b"x_real_ip", b"6.6.6.6"),
]


def within(d: Deferred, seconds: float = T) -> Deferred:
    """
    Bound a Deferred so that a hang fails the test.
    """
    return d.addTimeout(seconds, reactor)


def upgrade(marker: bytes, *headers: tuple[bytes, bytes], connection: bytes = b"Upgrade") -> bytes:
    """
    @return: a transparent WebSocket upgrade carrying C{X-Marker: marker}
        and C{headers}, then a masked text frame C{probe} and a close frame.
    """
    head = UPGRADE + b"Connection: " + connection + b"\r\nX-Marker: " + marker + b"\r\n"
    head += b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
    return head + encodeFrame(OP_TEXT, b"probe", mask=True) + encodeClose(1000, "", mask=True)


def frames(answer: bytes) -> tuple[int, list[bytes]]:
    """
    @return: the status of a raw 101 answer and the payloads of the
        (unmasked, short) frames after its head.
    """
    head, _, rest = answer.partition(b"\r\n\r\n")
    out = []
    while len(rest) >= 2:
        n = rest[1] & 0x7F
        out.append(rest[2:2 + n])
        rest = rest[2 + n:]
    return int(head.split(b" ", 2)[1]), out


def seenBy(backend, marker: bytes) -> list[bytes]:
    """
    @return: the header lines of the handshake C{backend} saw with C{marker}.
    """
    [handshake] = [h for h in backend.factory.handshakes if b"X-Marker: " + marker in h]
    return handshake.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]


def names(lines: list[bytes]) -> list[bytes]:
    """
    @return: the header names of C{lines}, as the owned-header rule reads them.
    """
    return [line.split(b":", 1)[0].lower().replace(b"_", b"-") for line in lines]


class Session:
    """
    A session-protocol client (C{txgateway.v1}).
    """

    def __init__(self, client, welcome: Welcome) -> None:
        self.client, self.welcome = client, welcome

    @classmethod
    async def open(cls, url: str, headers: dict | None = None) -> Session:
        """
        Connect, say hello and wait for the welcome.
        """
        client = await connectClient(url, path="/chat", protocols=[SUBPROTOCOL], headers=headers)
        client.send(json.dumps({"t": "hello", "v": 1}))
        welcome = decodeMessage(*await client.receive(T))
        assert isinstance(welcome, Welcome)
        return cls(client, welcome)

    async def echo(self, seq: int, text: str) -> Data:
        """
        Send data packet C{seq} and return the next data packet.
        """
        self.client.send(f"{seq}:{text}")
        while True:
            packet = decodeMessage(*await self.client.receive(T))
            if not isinstance(packet, Ack):
                return packet


@pytest.fixture
def started(echo_backends, gateway_process):
    """
    C{await started()}: one echo backend behind a C{twistd -n gateway}
    process; returns both.
    """
    async def start():
        [backend] = await echo_backends(1)
        gateway = await gateway_process("--backend", backend.url)
        return backend, gateway
    return start


@pytest_twisted.ensureDeferred
async def test_transparent_client_owned_headers_dropped(started):
    """
    A transparent client sending every owned header (any case, C{_} for
    C{-}) and a header it named in Connection: the backend sees none of the
    client's values, only the gateway's forwarding headers, once each; the
    client's other headers pass; the client is served.
    """
    backend, gateway = await started()
    answer = await rawExchange(gateway.port, upgrade(
        b"1", *SPOOFED, (b"X-Hop", b"secret"), (b"X-Kept", b"yes"),
        connection=b"Upgrade, X_Hop"))
    status, payloads = frames(answer)
    assert (status, payloads[0]) == (101, b"probe")
    lines = seenBy(backend, b"1")
    seen = names(lines)
    assert not any(n.startswith(b"x-session-") for n in seen)
    assert b"x-real-ip" not in seen and b"x-hop" not in seen
    for name in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"):
        assert seen.count(name) == 1
    assert b"X-Forwarded-For: 127.0.0.1" in lines and b"X-Forwarded-Proto: http" in lines
    assert b"X-Kept: yes" in lines
    assert not any(b"spoofed" in line or b"6.6.6.6" in line or b"999" in line or b"secret" in line
                   for line in lines)


@pytest_twisted.ensureDeferred
async def test_spoofed_session_id_gets_no_messages_and_fences_nothing(started):
    """
    A transparent client that knows a live session's id and sends it with
    the resume headers is not sent that session's messages (its first
    message back is its own echo); one that sends it with
    C{X-Session-Epoch: 999} does not fence the session, whose next message
    still arrives; a normal client is served afterwards.
    """
    backend, gateway = await started()
    victim = await Session.open(gateway.url)
    sid = victim.welcome.sid.encode()
    assert await victim.echo(1, "private-1") == Data(1, b"private-1", False)

    answer = await rawExchange(gateway.port, upgrade(
        b"read", (b"X-Session-Id", sid), (b"X-Session-Resumed", b"1"),
        (b"X-Session-Received", b"0"), (b"X-Session-Delivered", b"0")))
    status, payloads = frames(answer)
    assert status == 101 and payloads[0] == b"probe"
    assert not any(b"private" in p for p in payloads)

    for spelling in (b"X-Session-Epoch", b"x_session_epoch"):
        answer = await rawExchange(gateway.port, upgrade(
            b"fence-" + spelling, (b"X-Session-Id", sid), (spelling, b"999")))
        assert frames(answer)[0] == 101
    assert await victim.echo(2, "private-2") == Data(2, b"private-2", False)
    assert backend.factory.fenced == 0

    other = await connectClient(gateway.url, path="/chat")
    other.send("hello")
    assert await other.receive(T) == (b"hello", False)
    await within(other.close())
    await within(victim.client.close())


@pytest_twisted.ensureDeferred
async def test_session_client_owned_headers_not_copied(started):
    """
    Session mode: a client's own X-Session-Id, X-Session-Epoch and
    forwarding headers (any spelling) do not reach its backend connection,
    which carries the gateway's session id; the live session they name is
    not fenced.
    """
    backend, gateway = await started()
    victim = await Session.open(gateway.url)
    spoofer = await Session.open(gateway.url, headers={
        "X-Session-Id": victim.welcome.sid, "X_Session_Epoch": "999", "X-Session-Resumed": "1",
        "X-Session-Received": "0", "X_Forwarded_For": "6.6.6.6", "X-Real-IP": "6.6.6.6",
    })
    assert await spoofer.echo(1, "mine") == Data(1, b"mine", False)
    [handshake] = [h for h in backend.factory.handshakes if spoofer.welcome.sid.encode() in h]
    lines = handshake.split(b"\r\n\r\n")[0].split(b"\r\n")[1:]
    assert f"X-Session-Id: {spoofer.welcome.sid}".encode() in lines
    assert names(lines).count(b"x-session-id") == 1
    assert b"x-session-epoch" not in names(lines) and b"x-session-resumed" not in names(lines)
    assert b"x-real-ip" not in names(lines)
    assert not any(b"6.6.6.6" in line or victim.welcome.sid.encode() in line for line in lines)
    assert await victim.echo(1, "still") == Data(1, b"still", False)
    assert backend.factory.fenced == 0
    await within(spoofer.client.close())
    await within(victim.client.close())
