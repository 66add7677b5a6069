"""
Fakes and helpers that several test modules share: one place, so that no
test module imports another.
"""

from __future__ import annotations

import struct
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue, ensureDeferred
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from zope.interface import implementer

from gateway.backends.pool import Backend, Pool
from gateway.config import SessionConfig
from gateway.interfaces import IBackendLink, ISessionTransport
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.registry import SessionRegistry
from gateway.testing import rawExchange
from gateway.wire.protocol import CLOSE_UNAVAILABLE


@implementer(ISessionTransport)
class FakeTransport:
    """
    Records what the session sends.
    """

    kind = "ws"

    def __init__(self):
        self.session = None
        self.sent = []
        self.closed = None
        self.aborted = False
        self.released = 0

    def pushData(self, message):
        self.sent.append(message)

    def pushControl(self, packet):
        self.sent.append(packet)

    def closeTransport(self, code, reason):
        self.closed = (code, reason)

    def abortTransport(self):
        self.aborted = True

    def letGo(self):
        """
        As a WebSocket does: close with 4503.
        """
        self.closeTransport(CLOSE_UNAVAILABLE, "the session moved to another gateway node")

    def release(self):
        self.released += 1

    def pauseReading(self):
        pass

    def resumeReading(self):
        pass

    def registerFlow(self, producer):
        pass


@implementer(IBackendLink)
class FakeLink:
    """
    Records what the session hands the backend.
    """

    #: It cannot ask its backend for receipts: what it is handed counts as
    #: confirmed once written.
    confirmsReceipts = False

    def __init__(self):
        self.backend = Backend("b1", "127.0.0.1", 1)
        self.messages = []
        self.closed = None

    def bind(self, session, backend):
        self.backend = backend

    def sendMessage(self, payload, isBinary):
        self.messages.append((payload, isBinary))

    def requestReceipt(self, seq):
        pass

    def finishLink(self, code, reason):
        self.closeLink(code, reason)

    def closeLink(self, code, reason):
        self.closed = (code, reason)

    def pauseReading(self):
        pass

    def resumeReading(self):
        pass

    def registerFlow(self, producer):
        pass


#: The bound of every wait in these tests, in seconds.
WAIT = 10.0


def within(awaitable, seconds: float = WAIT) -> Deferred:
    """
    @return: a L{Deferred} of C{awaitable} that fails with
        L{twisted.internet.defer.TimeoutError} after C{seconds}.
    """
    return ensureDeferred(awaitable).addTimeout(seconds, reactor)


def encodeCommand(*args: bytes | str) -> bytes:
    """
    @return: a Redis command as a RESP array of bulk strings.
    """
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def parseReply(data: bytes):
    """
    @return: the first RESP reply in C{data} (a simple string, error, integer
        or bulk string; L{None} for a null bulk string).
    """
    kind, rest = data[:1], data[1:]
    line, _, body = rest.partition(b"\r\n")
    if kind == b"+":
        return line.decode()
    if kind == b"-":
        raise AssertionError(f"Redis error: {line.decode()}")
    if kind == b":":
        return int(line)
    if kind == b"$":
        length = int(line)
        return None if length < 0 else body[:length]
    raise AssertionError(f"unexpected reply {data[:40]!r}")


async def redisCommand(port: int, *args: bytes | str, password: str | None = None):
    """
    Run one command on the Redis server at C{port} on a connection of its
    own (not through the map under test).

    @return: the parsed reply.
    """
    payload = b""
    if password is not None:
        payload += encodeCommand("AUTH", password)
    payload += encodeCommand(*args) + encodeCommand("QUIT")
    answer = await rawExchange(port, payload, timeout=WAIT)
    if password is not None:
        assert answer.startswith(b"+OK\r\n"), answer
        answer = answer[len(b"+OK\r\n"):]
    return parseReply(answer)


async def commandCounts(port: int) -> dict[str, int]:
    """
    @return: how many times each command has run on the server at C{port}
        (C{INFO commandstats}).
    """
    text = (await redisCommand(port, "INFO", "commandstats")).decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[len("cmdstat_"):].partition(":")
            counts[name] = int(dict(f.split("=") for f in fields.split(","))["calls"])
    return counts


def newPrefix() -> str:
    """
    @return: a key prefix of its own, so tests sharing a server never meet.
    """
    return f"test-{uuid.uuid4().hex[:8]}:"


# The shared session state in Redis (tests/sessionmap/test_shared_*.py,
# test_subscription.py and their conftest.py).

#: The map's command timeout in the shared-session tests, in seconds.
MAP_TIMEOUT = 2.0

#: How long session keys live after a write in those tests, in seconds.
SESSION_TTL = 60.0

#: The fields a new session's record is written with (as
#: L{gateway.cluster.node.Cluster.register} gives them): a secret that looks
#: like a number, and a target that is not UTF-8.
SESSION_FIELDS: dict[str, Any] = {
    "secret": "0042",
    "pool": "chat",
    "backend": "backend-1",
    "target": b"/chat?room=\xff\x00",
    "headers": {"Cookie": "a=1; b=2", "X-Name": "b\u00e4r"},
    "origin": "https://example.com",
    "kind": "",
    "created": "1700000000.250",
}


# A RESP reader for direct inspection and a plain subscriber.


class _Incomplete(Exception):
    """
    The buffer does not hold a whole reply yet.
    """


class RedisReplyError(Exception):
    """
    Redis answered with an error.
    """


def parseRESP(data: bytes, pos: int = 0) -> tuple[Any, int]:
    """
    @return: the RESP reply at C{pos} in C{data} (arrays as lists, bulk
        strings as bytes, errors as L{RedisReplyError} instances) and the
        position after it.
    @raise _Incomplete: when C{data} ends before the reply does.
    """
    end = data.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete()
    kind, line, pos = data[pos:pos + 1], data[pos + 1:end], end + 2
    if kind == b"+":
        return line.decode(), pos
    if kind == b"-":
        return RedisReplyError(line.decode()), pos
    if kind == b":":
        return int(line), pos
    if kind == b"$":
        length = int(line)
        if length < 0:
            return None, pos
        if len(data) < pos + length + 2:
            raise _Incomplete()
        return data[pos:pos + length], pos + length + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = parseRESP(data, pos)
            items.append(item)
        return items, pos
    raise AssertionError(f"unexpected reply {data[pos - 2:pos + 40]!r}")


async def query(port: int, *args: bytes | str) -> Any:
    """
    Run one command on its own connection to the server at C{port} (not
    through the map under test).

    @return: the parsed reply (arrays included).
    """
    answer = await rawExchange(port, encodeCommand(*args) + encodeCommand("QUIT"), timeout=WAIT)
    reply, _ = parseRESP(answer)
    if isinstance(reply, RedisReplyError):
        raise reply
    return reply


async def readHash(port: int, key: bytes) -> dict[str, bytes]:
    """
    @return: the hash at C{key}, field names decoded.
    """
    pairs = await query(port, "HGETALL", key)
    return {pairs[i].decode(): pairs[i + 1] for i in range(0, len(pairs), 2)}


async def streamIds(port: int, key: bytes) -> list[bytes]:
    """
    @return: the ids of the entries of the stream at C{key}.
    """
    return [entry[0] for entry in await query(port, "XRANGE", key, "-", "+")]


class RawSubscriber(Protocol):
    """
    A plain RESP subscriber to some channels, independent of the code under
    test.

    @ivar messages: L{DeferredQueue} of C{(channel, message)}, both bytes.
    @ivar ready: fires once every channel is subscribed.
    """

    def __init__(self, channels: list[str]) -> None:
        self.channels = channels
        self.buffer = b""
        self.subscribed = 0
        self.messages: DeferredQueue = DeferredQueue()
        self.ready: Deferred = Deferred()
        self.closed: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(encodeCommand("SUBSCRIBE", *self.channels))

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while True:
            try:
                reply, end = parseRESP(self.buffer)
            except _Incomplete:
                return
            self.buffer = self.buffer[end:]
            if reply[0] == b"subscribe":
                self.subscribed += 1
                if self.subscribed == len(self.channels):
                    self.ready.callback(self)
            elif reply[0] == b"message":
                self.messages.put((reply[1], reply[2]))

    def connectionLost(self, reason) -> None:
        self.closed.callback(None)

    async def nextMessage(self) -> tuple[bytes, bytes]:
        """
        @return: the next C{(channel, message)}, within L{WAIT} seconds.
        """
        return await self.messages.get().addTimeout(WAIT, reactor)

    async def nothingMoreOn(self, port: int, channel: str) -> None:
        """
        Check that nothing else was published to C{channel} so far: a marker
        published now is the next message there.
        """
        await query(port, "PUBLISH", channel, "marker")
        assert await self.nextMessage() == (channel.encode(), b"marker")


def makeSession(**config):
    """
    A registry on a Clock with one new session.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(**config), clock, MemorySessionMap(clock))
    link = FakeLink()
    registry.reserve()
    session = registry.create(registry.newId(), Pool("p", [link.backend], None), link)
    return clock, registry, session, link


def selfSignedCertificate(directory) -> tuple[str, str, bytes]:
    """
    Write a self-signed certificate for "localhost" and its key.

    @return: (key path, certificate path, certificate PEM).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    certPath.write_bytes(pem)
    return str(keyPath), str(certPath), pem


def unframe(frame: bytes) -> tuple[int, int, bytes | None, bytes]:
    """
    Read one frame: (first byte, payload length, masking key or None,
    unmasked payload); the whole frame must be used.
    """
    first, second = frame[0], frame[1]
    n, at = second & 0x7F, 2
    if n == 126:
        n, at = struct.unpack("!H", frame[2:4])[0], 4
    elif n == 127:
        n, at = struct.unpack("!Q", frame[2:10])[0], 10
    key = None
    if second & 0x80:
        key, at = frame[at:at + 4], at + 4
    payload = frame[at:]
    assert len(payload) == n
    if key is not None:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return first, n, key, payload
