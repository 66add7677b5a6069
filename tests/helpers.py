"""
Fakes and helpers that several test modules share: one place, so that no
test module imports another.
"""

from __future__ import annotations

import uuid

from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from zope.interface import implementer

from gateway.backends.pool import Backend
from gateway.interfaces import IBackendLink, ISessionTransport
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
