"""
Tests for L{gateway.sessionmap._shared} and the scripts of
L{gateway.sessionmap._scripts}, against real C{redis-server} processes:
session records and their two mailboxes, attaching and takeovers, the
fencing of an old owner's writes by the epoch, the notifications each
write publishes (read by a plain RESP subscriber of the test's own), the
liveness of nodes, expiries, a flushed script cache, and a node's
subscription riding out a Redis restart.
"""

from __future__ import annotations

import json
from typing import Any

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.wire.protocol import Data
from gateway.sessionmap._scripts import FENCED, GAP, GONE
from gateway.sessionmap._shared import SessionRecord, SharedSessions, Subscription
from gateway.sessionmap.redis import RedisSessionMap, parseRedisURL
from gateway.testing import rawExchange, waitUntil
from tests.helpers import WAIT, commandCounts, encodeCommand, newPrefix, within

#: The map's command timeout in these tests, in seconds.
TIMEOUT = 2.0

#: How long session keys live after a write in these tests, in seconds.
SESSION_TTL = 60.0

#: The fields a new session's record is written with (as
#: L{gateway.cluster.node.Cluster.register} gives them): a secret that looks
#: like a number, and a target that is not UTF-8.
FIELDS: dict[str, Any] = {
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


@pytest_twisted.async_yield_fixture
async def subscribe():
    """
    C{await subscribe(port, channel, ...)}: a L{RawSubscriber}, subscribed;
    disconnected at the end of the test.
    """
    made: list[RawSubscriber] = []

    async def make(port: int, *channels: str) -> RawSubscriber:
        subscriber = RawSubscriber(list(channels))
        factory = Factory.forProtocol(lambda: subscriber)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT).connect(factory)
        made.append(subscriber)
        await subscriber.ready.addTimeout(WAIT, reactor)
        return subscriber

    yield make
    for subscriber in made:
        if subscriber.transport.connected:
            subscriber.transport.loseConnection()
            await within(subscriber.closed)


@pytest_twisted.async_yield_fixture
async def make_nodes():
    """
    C{make_nodes(url, "A", "B", ...)}: one L{RedisSessionMap} with a key
    prefix of its own, and a L{SharedSessions} on it for each node named;
    the map is closed at the end of the test.
    """
    maps: list[RedisSessionMap] = []

    def make(url: str, *nodes: str, timeout: float = TIMEOUT, sessionTtl: float = SESSION_TTL,
             nodeTtl: float = 3.0) -> list[SharedSessions]:
        sessionMap = RedisSessionMap(parseRedisURL(url), reactor, keyPrefix=newPrefix(),
                                     timeout=timeout, poolSize=2)
        maps.append(sessionMap)
        return [sessionMap.sharedSessions(node, sessionTtl=sessionTtl, nodeTtl=nodeTtl)
                for node in nodes]

    yield make
    for sessionMap in maps:
        await within(sessionMap.close())


@pytest_twisted.async_yield_fixture
async def subscriptions():
    """
    A list of L{Subscription}s to stop at the end of the test.
    """
    started: list[Subscription] = []
    yield started
    for subscription in started:
        await within(subscription.stop())


# Creating and attaching.


@pytest_twisted.ensureDeferred
async def test_keyNames(redis_server, make_nodes):
    """
    A session's keys are C{P s:{sid}}, C{P s:{sid}:up} and
    C{P s:{sid}:down}; a node's channel is C{P node:{id}}, this node's by
    default.
    """
    (a,) = make_nodes(redis_server.url, "A")
    prefix = a.map.keyPrefix.encode()
    assert a.keys("s1") == (prefix + b"s:s1", prefix + b"s:s1:up", prefix + b"s:s1:down")
    assert a.channel() == f"{a.map.keyPrefix}node:A"
    assert a.channel("B") == f"{a.map.keyPrefix}node:B"


@pytest_twisted.ensureDeferred
async def test_createThenAttach(redis_server, make_nodes):
    """
    C{create} writes the record as given (a secret that looks like a number
    stays a string, a target that is not UTF-8 stays bytes, headers as
    JSON), owned by and attached to its node at epoch 1 with every count 0,
    and with an expiry; C{attach} parses it into a L{SessionRecord}, with
    the attachment and kind it just took and C{attachSeq} counting the
    attachments.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    await within(a.heartbeat({}))
    assert await within(a.create("s1", FIELDS)) == 1

    raw = await readHash(redis_server.port, a.keys("s1")[0])
    assert raw["secret"] == b"0042"
    assert raw["target"] == b"/chat?room=\xff\x00"
    assert json.loads(raw["headers"]) == FIELDS["headers"]
    assert (raw["owner"], raw["epoch"], raw["attached"]) == (b"A", b"1", b"A")
    assert 0 < await query(redis_server.port, "PTTL", a.keys("s1")[0]) <= SESSION_TTL * 1000

    status = await within(a.attach("s1", "ws"))
    assert status[:2] == ("ok", True)
    assert status[2] == SessionRecord(
        sid="s1", secret="0042", pool="chat", backend="backend-1", target=b"/chat?room=\xff\x00",
        headers={"Cookie": "a=1; b=2", "X-Name": "b\u00e4r"}, origin="https://example.com",
        owner="A", epoch=1, attached="A", kind="ws", upRecv=0, upFwd=0, downSent=0,
        downAcked=0, closing=None, created=1700000000.25, attachSeq=1,
    )

    # Another node attaches: the owner (B has no heartbeat; A has) is alive.
    status = await within(b.attach("s1", "ws"))
    assert status[:2] == ("ok", True)
    record = status[2]
    assert (record.owner, record.attached, record.kind, record.attachSeq) == ("A", "B", "ws", 2)
    status = await within(a.attach("s1", "poll"))
    assert (status[2].attached, status[2].kind, status[2].attachSeq) == ("A", "poll", 3)

    # No origin reads as None; an owner without a heartbeat is not alive.
    await within(b.create("s2", dict(FIELDS, origin="")))
    status = await within(a.attach("s2", "ws"))
    assert status[:2] == ("ok", False)
    assert status[2].origin is None


@pytest_twisted.ensureDeferred
async def test_readAndOwnership(redis_server, make_nodes):
    """
    C{read} gives the record as C{attach} parses it without moving the
    attachment, and C{ownership} its owner and epoch; both give L{None}
    for a session that is not there.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    assert await within(a.read("nope")) is None
    assert await within(a.ownership("nope")) is None
    await within(a.create("s1", FIELDS))
    record = await within(b.read("s1"))
    assert (record.secret, record.owner, record.epoch, record.attached) == ("0042", "A", 1, "A")
    assert await within(b.ownership("s1")) == ("A", 1)
    await within(a.leave())
    await within(b.takeOver("s1"))
    assert await within(a.ownership("s1")) == ("B", 2)


@pytest_twisted.ensureDeferred
async def test_attachUnknown(redis_server, make_nodes):
    """
    Attaching a session that has no record gives C{("gone",)} and writes
    nothing.
    """
    (a,) = make_nodes(redis_server.url, "A")
    assert await within(a.attach("nope", "ws")) == ("gone",)
    assert await within(a.attach("nope", "poll")) == ("gone",)
    assert await query(redis_server.port, "EXISTS", *a.keys("nope")) == 0


@pytest_twisted.ensureDeferred
async def test_pollWhileWebSocketElsewhere(redis_server, make_nodes):
    """
    A poll attaching while a live other node holds the session on a
    WebSocket gives C{("elsewhere",)} and changes nothing; a WebSocket
    attaching takes it anyway, the node holding it may poll, and once that
    node's alive key is gone a poll takes it.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    await within(a.create("s1", FIELDS))
    await within(b.heartbeat({}))
    await within(b.attach("s1", "ws"))
    before = await readHash(redis_server.port, a.keys("s1")[0])

    assert await within(c.attach("s1", "poll")) == ("elsewhere",)
    assert await readHash(redis_server.port, a.keys("s1")[0]) == before

    # The node holding it may switch to polling itself.
    status = await within(b.attach("s1", "poll"))
    assert (status[0], status[2].attached, status[2].kind) == ("ok", "B", "poll")
    # A poll does not block another poll.
    status = await within(c.attach("s1", "poll"))
    assert (status[0], status[2].attached, status[2].kind) == ("ok", "C", "poll")

    # A WebSocket is taken over by another WebSocket while B lives.
    await within(b.attach("s1", "ws"))
    status = await within(c.attach("s1", "ws"))
    assert (status[0], status[2].attached, status[2].kind) == ("ok", "C", "ws")

    # C holds it on a WebSocket, but C has never said it lives.
    status = await within(b.attach("s1", "poll"))
    assert (status[0], status[2].attached, status[2].kind) == ("ok", "B", "poll")

    await within(b.attach("s1", "ws"))
    assert await within(c.attach("s1", "poll")) == ("elsewhere",)
    await within(b.leave())
    status = await within(c.attach("s1", "poll"))
    assert (status[0], status[2].attached, status[2].kind) == ("ok", "C", "poll")


@pytest_twisted.ensureDeferred
async def test_attachNotifies(redis_server, make_nodes, subscribe):
    """
    An attachment publishes C{t|sid|node|n} to the node the client leaves
    and to the owner (once when they are the same node), never to the
    attaching node itself.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel(), b.channel(), c.channel())
    await within(a.create("s1", FIELDS))

    # Attached to A, the owner: A is told once.
    await within(b.attach("s1", "ws"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"t|s1|B|1")
    await within(subscriber.nothingMoreOn(port, a.channel()))

    # From B to C: both B and the owner A are told.
    await within(c.attach("s1", "ws"))
    got = {await within(subscriber.nextMessage()), await within(subscriber.nextMessage())}
    assert got == {(a.channel().encode(), b"t|s1|C|2"), (b.channel().encode(), b"t|s1|C|2")}

    # Back to the owner: only C, which it leaves, is told.
    await within(a.attach("s1", "poll"))
    assert await within(subscriber.nextMessage()) == (c.channel().encode(), b"t|s1|A|3")
    # Attaching where it already is tells no one.
    await within(a.attach("s1", "ws"))
    for channel in (a.channel(), b.channel(), c.channel()):
        await within(subscriber.nothingMoreOn(port, channel))


@pytest_twisted.ensureDeferred
async def test_detach(redis_server, make_nodes, subscribe):
    """
    C{detach} clears the attachment only when the caller is the attached
    node (1, else 0 and nothing changes), and tells the owner
    C{x|sid|node} unless the owner is the caller; a session that is gone
    gives 0.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel())
    key = a.keys("s1")[0]
    await within(a.create("s1", FIELDS))
    await within(b.attach("s1", "ws"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"t|s1|B|1")

    assert await within(c.detach("s1")) == 0
    assert await within(a.detach("s1")) == 0
    assert (await readHash(port, key))["attached"] == b"B"
    await within(subscriber.nothingMoreOn(port, a.channel()))

    assert await within(b.detach("s1")) == 1
    assert (await readHash(port, key))["attached"] == b""
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"x|s1|B")
    assert await within(b.detach("s1")) == 0

    # The owner detaching itself tells no one.
    await within(a.attach("s1", "ws"))
    assert await within(a.detach("s1")) == 1
    assert (await readHash(port, key))["attached"] == b""
    await within(subscriber.nothingMoreOn(port, a.channel()))

    assert await within(a.detach("nope")) == 0
    assert await query(port, "EXISTS", a.keys("nope")[0]) == 0


# Takeovers and fencing.


@pytest_twisted.ensureDeferred
async def test_takeOverFencesOldOwner(redis_server, make_nodes, subscribe):
    """
    C{takeOver} while the owner lives gives C{("alive", owner)} and changes
    nothing; once the owner's alive key is gone it makes the caller the
    owner at the next epoch.  The old owner's C{appendDown}, C{forwarded},
    C{closing}, C{end} and C{relinked} at its old epoch then give L{FENCED} and change
    nothing (record, mailboxes, notifications); the new owner's writes at
    its epoch succeed.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    record, up, down = a.keys("s1")
    await within(a.heartbeat({}))
    await within(a.create("s1", FIELDS))
    await within(a.appendDown("s1", 1, Data(1, b"one", False)))
    await within(b.appendUp("s1", [Data(1, b"u1", False), Data(2, b"u2", True)]))
    await within(b.attach("s1", "ws"))
    before = await readHash(port, record)

    assert await within(b.takeOver("s1")) == ("alive", "A")
    assert await readHash(port, record) == before

    await within(a.leave())
    status = await within(b.takeOver("s1"))
    assert status[0] == "ok"
    taken = status[1]
    assert (taken.owner, taken.epoch, taken.attached, taken.downSent, taken.upRecv) == ("B", 2, "B", 1, 2)
    after = await readHash(port, record)
    assert (after["owner"], after["epoch"]) == (b"B", b"2")

    subscriber = await subscribe(port, b.channel())
    assert await within(a.appendDown("s1", 1, Data(2, b"two", False))) == FENCED
    assert await within(a.forwarded("s1", 1, 2)) == FENCED
    assert await within(a.closing("s1", 1, 4000, "gone")) == FENCED
    assert await within(a.end("s1", 1, 1000, "bye")) == FENCED
    assert await within(a.relinked("s1", 1, "elsewhere")) == FENCED
    assert await readHash(port, record) == after
    assert await streamIds(port, down) == [b"0-1"]
    assert await streamIds(port, up) == [b"0-1", b"0-2"]
    await within(subscriber.nothingMoreOn(port, b.channel()))

    # The new owner writes at its epoch.
    assert await within(b.relinked("s1", 2, "backend-2")) == 1
    assert (await readHash(port, record))["backend"] == b"backend-2"
    assert await within(b.appendDown("s1", 2, Data(2, b"two", False))) == 1
    assert await within(b.forwarded("s1", 2, 2)) == 1
    assert await streamIds(port, down) == [b"0-1", b"0-2"]
    assert await streamIds(port, up) == []


@pytest_twisted.ensureDeferred
async def test_takeOverByOwnerKeepsEpoch(redis_server, make_nodes):
    """
    The owner taking its own session over (alive or not) keeps the epoch;
    taking over a session with no record gives C{("gone",)}.
    """
    (a,) = make_nodes(redis_server.url, "A")
    await within(a.create("s1", FIELDS))
    status = await within(a.takeOver("s1"))
    assert (status[0], status[1].owner, status[1].epoch) == ("ok", "A", 1)
    await within(a.heartbeat({}))
    status = await within(a.takeOver("s1"))
    assert (status[0], status[1].owner, status[1].epoch) == ("ok", "A", 1)
    assert await within(a.appendDown("s1", 1, Data(1, b"x", False))) == 1
    assert await within(a.takeOver("nope")) == ("gone",)
    assert await query(redis_server.port, "EXISTS", a.keys("nope")[0]) == 0


@pytest_twisted.ensureDeferred
async def test_takeOversRaiseEpoch(redis_server, make_nodes):
    """
    Each takeover from a dead owner raises the epoch by one, so that every
    earlier owner is fenced.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    await within(a.create("s1", FIELDS))
    assert (await within(b.takeOver("s1")))[1].epoch == 2
    assert (await within(c.takeOver("s1")))[1].epoch == 3
    assert (await within(a.takeOver("s1")))[1].epoch == 4
    assert await within(b.appendDown("s1", 2, Data(1, b"x", False))) == FENCED
    assert await within(c.appendDown("s1", 3, Data(1, b"x", False))) == FENCED
    assert await within(a.appendDown("s1", 4, Data(1, b"x", False))) == 1


@pytest_twisted.ensureDeferred
async def test_writesToGoneSession(redis_server, make_nodes):
    """
    Every fenced write, C{acked} and C{appendUp} on a session with no
    record give L{GONE} and create no key.
    """
    (a,) = make_nodes(redis_server.url, "A")
    assert await within(a.appendDown("nope", 1, Data(1, b"x", False))) == GONE
    assert await within(a.forwarded("nope", 1, 1)) == GONE
    assert await within(a.closing("nope", 1, 1000, "x")) == GONE
    assert await within(a.end("nope", 1, 1000, "x")) == GONE
    assert await within(a.end("nope", None, 1000, "x")) == GONE
    assert await within(a.acked("nope", 1)) == GONE
    assert await within(a.appendUp("nope", [Data(1, b"x", False)])) == (GONE, 0)
    assert await query(redis_server.port, "EXISTS", *a.keys("nope")) == 0


# The up mailbox.

#: Client messages: binary and not UTF-8, text with the separator, a text
#: that looks like a number, an empty one.
UP = [
    Data(1, b"\xff\x00|\x80bin", True),
    Data(2, "h\u00e9llo | w\u00f6rld".encode(), False),
    Data(3, b"0042", False),
    Data(4, b"", True),
    Data(5, b"five", False),
    Data(6, b"six", False),
]


@pytest_twisted.ensureDeferred
async def test_appendUpBatches(redis_server, make_nodes, subscribe):
    """
    C{appendUp} appends a batch in order, skips the messages already
    accepted, and stops at a gap: L{GAP} with the count accepted, only the
    messages before the gap appended.  Each appended message is published
    to the owner as C{u|sid|seq|binary|payload}, bytes intact; C{readUp}
    gives exactly the messages appended after a count.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel())
    await within(a.create("s1", FIELDS))

    assert await within(b.appendUp("s1", UP[:2])) == (1, 2)
    assert await within(b.appendUp("s1", UP[1:3])) == (1, 3)
    # A gap before 5: nothing appended.
    assert await within(b.appendUp("s1", UP[4:6])) == (GAP, 3)
    # Duplicates, one new message, then a gap: only 4 is appended.
    assert await within(b.appendUp("s1", [UP[0], UP[3], UP[5]])) == (GAP, 4)
    assert (await readHash(port, a.keys("s1")[0]))["upRecv"] == b"4"

    assert await within(b.readUp("s1", 0)) == UP[:4]
    assert await within(b.readUp("s1", 2)) == UP[2:4]
    assert await within(a.readUp("s1", 4)) == []
    assert await within(a.readUp("nope", 0)) == []

    for message in UP[:4]:
        expected = b"u|s1|%d|%s|%s" % (message.seq, b"1" if message.isBinary else b"0", message.payload)
        assert await within(subscriber.nextMessage()) == (a.channel().encode(), expected)
    await within(subscriber.nothingMoreOn(port, a.channel()))

    assert await within(b.appendUp("s1", UP[4:])) == (1, 6)
    assert await within(b.readUp("s1", 3)) == UP[3:]
    assert await within(b.appendUp("s1", [])) == (1, 6)


@pytest_twisted.ensureDeferred
async def test_forwardedTrimsUp(redis_server, make_nodes):
    """
    C{forwarded} records the count handed to the backend, trims the up
    mailbox to the messages after it, and raises the accepted count when it
    is higher (messages the owner accepted itself): later appends of those
    are duplicates.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    record, up, _ = a.keys("s1")
    await within(a.create("s1", FIELDS))
    await within(b.appendUp("s1", UP[:4]))

    assert await within(a.forwarded("s1", 1, 2)) == 1
    assert await within(a.readUp("s1", 0)) == UP[2:4]
    fields = await readHash(port, record)
    assert (fields["upFwd"], fields["upRecv"]) == (b"2", b"4")

    assert await within(a.forwarded("s1", 1, 6)) == 1
    assert await streamIds(port, up) == []
    fields = await readHash(port, record)
    assert (fields["upFwd"], fields["upRecv"]) == (b"6", b"6")
    assert await within(b.appendUp("s1", UP[4:6])) == (1, 6)
    assert await within(b.readUp("s1", 0)) == []
    assert await within(b.appendUp("s1", [Data(7, b"seven", False)])) == (1, 7)
    assert await within(b.readUp("s1", 0)) == [Data(7, b"seven", False)]


# The down mailbox.


@pytest_twisted.ensureDeferred
async def test_appendDownAndAcked(redis_server, make_nodes, subscribe):
    """
    C{appendDown} appends a backend message, records C{downSent}, and
    publishes C{d|sid|seq|binary|payload} to the attached node when it is
    not the owner; C{readDown} gives the messages after a count, bytes
    intact.  C{acked} records C{downAcked} (never beyond C{downSent}, never
    backwards), trims the mailbox, and publishes C{a|sid|count} to the
    owner when it is another node and the count rose.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel(), b.channel())
    record = a.keys("s1")[0]
    await within(a.create("s1", FIELDS))
    down = [Data(1, b"\xfe\xff|x", True), Data(2, "z\u00fcrich|".encode(), False),
            Data(3, b"7", False)]

    # Attached to its owner: nothing is published.
    assert await within(a.appendDown("s1", 1, down[0])) == 1
    await within(subscriber.nothingMoreOn(port, a.channel()))

    await within(b.attach("s1", "ws"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"t|s1|B|1")
    for message in down[1:]:
        assert await within(a.appendDown("s1", 1, message)) == 1
        expected = b"d|s1|%d|%s|%s" % (message.seq, b"1" if message.isBinary else b"0", message.payload)
        assert await within(subscriber.nextMessage()) == (b.channel().encode(), expected)
    assert (await readHash(port, record))["downSent"] == b"3"
    assert await within(b.readDown("s1", 0)) == down
    assert await within(b.readDown("s1", 1)) == down[1:]
    assert await within(b.readDown("s1", 3)) == []

    assert await within(b.acked("s1", 2)) == 1
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"a|s1|2")
    assert (await readHash(port, record))["downAcked"] == b"2"
    assert await within(b.readDown("s1", 0)) == down[2:]

    # Not backwards, and no news.
    assert await within(b.acked("s1", 1)) == 1
    assert (await readHash(port, record))["downAcked"] == b"2"
    await within(subscriber.nothingMoreOn(port, a.channel()))

    # Clamped to what was sent.
    assert await within(b.acked("s1", 10)) == 1
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"a|s1|3")
    fields = await readHash(port, record)
    assert (fields["downSent"], fields["downAcked"]) == (b"3", b"3")
    assert await within(b.readDown("s1", 0)) == []

    # The owner's own ack tells no one.
    assert await within(a.appendDown("s1", 1, Data(4, b"four", False))) == 1
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"d|s1|4|0|four")
    assert await within(a.acked("s1", 4)) == 1
    assert (await readHash(port, record))["downAcked"] == b"4"
    for channel in (a.channel(), b.channel()):
        await within(subscriber.nothingMoreOn(port, channel))


# Closing and ending.


@pytest_twisted.ensureDeferred
async def test_closingThenEnd(redis_server, make_nodes, subscribe):
    """
    C{closing} records C{code|reason} (read back as a tuple) and tells the
    attached node C{c|sid|code|reason}; C{end} deletes the record and both
    mailboxes and tells the attached node C{e|sid|code|reason}; ending again
    gives L{GONE}.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, b.channel())
    await within(a.create("s1", FIELDS))
    await within(b.attach("s1", "ws"))
    await within(a.appendDown("s1", 1, Data(1, b"d", False)))
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"d|s1|1|0|d")
    await within(b.appendUp("s1", [Data(1, b"u", False)]))
    assert await query(port, "EXISTS", *a.keys("s1")) == 3

    assert await within(a.closing("s1", 1, 4000, "bye | now")) == 1
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"c|s1|4000|bye | now")
    status = await within(b.attach("s1", "ws"))
    assert status[2].closing == (4000, "bye | now")

    assert await within(a.end("s1", 1, 1000, "done|x")) == 1
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"e|s1|1000|done|x")
    assert await query(port, "EXISTS", *a.keys("s1")) == 0
    assert await within(a.end("s1", 1, 1000, "done")) == GONE
    assert await within(b.attach("s1", "ws")) == ("gone",)
    await within(subscriber.nothingMoreOn(port, b.channel()))


@pytest_twisted.ensureDeferred
async def test_endWithoutEpoch(redis_server, make_nodes, subscribe):
    """
    C{end} with no epoch ends the session whoever owns it; ending a session
    attached to the caller itself, or to no node, tells no one.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel(), b.channel())
    await within(a.create("s1", FIELDS))
    await within(b.takeOver("s1"))
    assert await within(a.end("s1", 1, 1000, "x")) == FENCED
    assert await within(a.end("s1", None, 1001, "x")) == 1
    assert await query(port, "EXISTS", *a.keys("s1")) == 0

    await within(a.create("s2", FIELDS))
    await within(a.detach("s2"))
    assert await within(a.closing("s2", 1, 1000, "x")) == 1
    assert await within(a.end("s2", 1, 1000, "x")) == 1
    for channel in (a.channel(), b.channel()):
        await within(subscriber.nothingMoreOn(port, channel))


@pytest_twisted.ensureDeferred
async def test_notifyAndPublish(redis_server, make_nodes, subscribe):
    """
    C{notify} publishes to the session's owner or attached node and gives
    the number of subscribers reached (0 when there is no such node or no
    record); C{publish} publishes to a node's channel.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel(), b.channel())
    await within(a.create("s1", FIELDS))
    await within(b.attach("s1", "poll"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"t|s1|B|1")

    assert await within(a.notify("s1", "attached", b"r|s1")) == 1
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"r|s1")
    assert await within(b.notify("s1", "owner", b"k|s1")) == 1
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"k|s1")
    assert await within(b.notify("nope", "owner", b"k|nope")) == 0
    await within(b.detach("s1"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"x|s1|B")
    assert await within(a.notify("s1", "attached", b"r|s1")) == 0

    assert await within(a.publish("B", b"\xff|raw")) == 1
    assert await within(subscriber.nextMessage()) == (b.channel().encode(), b"\xff|raw")
    assert await within(a.publish("C", b"nobody")) == 0
    for channel in (a.channel(), b.channel()):
        await within(subscriber.nothingMoreOn(port, channel))


# Nodes and expiries.


@pytest_twisted.ensureDeferred
async def test_nodes(redis_server, make_nodes):
    """
    C{heartbeat} writes C{P alive:{node}} (its info as JSON, expiring after
    C{nodeTtl}) and the node's expiry in C{P nodes}; C{nodeAlive} and
    C{liveNodes} see it; C{leave} removes both at once.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    prefix = a.map.keyPrefix
    assert await within(a.nodeAlive("A")) is False
    assert await within(a.liveNodes()) == []

    await within(a.heartbeat({"sessions": 2, "relayed": 0}))
    await within(b.heartbeat({}))
    alive = f"{prefix}alive:A"
    assert json.loads(await query(port, "GET", alive)) == {"sessions": 2, "relayed": 0}
    assert 0 < await query(port, "PTTL", alive) <= 3000
    assert await within(b.nodeAlive("A")) is True
    assert await within(a.nodeAlive("C")) is False
    assert await within(a.liveNodes()) == ["A", "B"]

    await within(b.leave())
    assert await within(a.nodeAlive("B")) is False
    assert await within(a.liveNodes()) == ["A"]
    assert await query(port, "ZRANGE", f"{prefix}nodes", "0", "-1") == [b"A"]
    assert await query(port, "EXISTS", f"{prefix}alive:B") == 0


@pytest_twisted.ensureDeferred
async def test_nodeExpires(redis_server, make_nodes):
    """
    A node that stops beating is no longer alive nor listed once
    C{nodeTtl} has passed.
    """
    (a,) = make_nodes(redis_server.url, "A", nodeTtl=0.3)
    started = reactor.seconds()
    await within(a.heartbeat({}))
    assert await within(a.nodeAlive("A")) is True
    assert await within(a.liveNodes()) == ["A"]

    async def gone() -> None:
        while await a.nodeAlive("A") or await a.liveNodes():
            pass

    await within(gone(), 5)
    assert reactor.seconds() - started >= 0.3


@pytest_twisted.ensureDeferred
async def test_writesSetExpiry(redis_server, make_nodes):
    """
    Every key a write makes or changes has an expiry of at most
    C{sessionTtl}: the record after C{create}, the down mailbox after
    C{appendDown}, the up mailbox after C{appendUp}, and all three after
    C{forwarded}, C{acked} and C{touch}; the session's keys expire by
    themselves.
    """
    a, b = make_nodes(redis_server.url, "A", "B", sessionTtl=SESSION_TTL)
    port = redis_server.port
    keys = a.keys("s1")
    ttl = SESSION_TTL * 1000

    async def expiries() -> list[int]:
        return [await query(port, "PTTL", key) for key in keys]

    async def shorten() -> None:
        for key in keys:
            await query(port, "PEXPIRE", key, "5000")

    await within(a.create("s1", FIELDS))
    assert 0 < (await expiries())[0] <= ttl
    await within(a.appendDown("s1", 1, Data(1, b"d", False)))
    assert 0 < (await expiries())[2] <= ttl
    await within(b.appendUp("s1", [Data(1, b"u", False)]))
    assert all(ttl - 5000 < t <= ttl for t in await expiries())

    for write in (lambda: a.forwarded("s1", 1, 0), lambda: b.acked("s1", 0), lambda: a.touch("s1"),
                  lambda: b.appendUp("s1", [Data(1, b"u", False)]),
                  lambda: a.appendDown("s1", 1, Data(2, b"d", False))):
        await shorten()
        assert all(0 < t <= 5000 for t in await expiries())
        await within(write())
        assert all(ttl - 5000 < t <= ttl for t in await expiries())

    # Attaching, detaching, closing and taking over keep the expiry.
    for write in (lambda: b.attach("s1", "ws"), lambda: b.detach("s1"),
                  lambda: a.closing("s1", 1, 1000, "x"), lambda: a.takeOver("s1")):
        await within(write())
        assert all(0 < t <= ttl for t in await expiries())

    (short,) = make_nodes(redis_server.url, "A", sessionTtl=0.3)
    await within(short.create("s2", FIELDS))
    await within(short.appendDown("s2", 1, Data(1, b"d", False)))
    await within(short.appendUp("s2", [Data(1, b"u", False)]))

    async def gone() -> None:
        while await query(port, "EXISTS", *short.keys("s2")):
            pass

    await within(gone(), 5)


# The script cache.


@pytest_twisted.ensureDeferred
async def test_scriptCacheFlushed(make_redis_server, make_nodes):
    """
    After the server's script cache is emptied (as by a restart), a script
    call still works: its C{EVALSHA} is refused with C{NOSCRIPT} and the
    script is sent whole once with C{EVAL}, after which C{EVALSHA} works
    again.
    """
    server = make_redis_server()
    (a,) = make_nodes(server.url, "A")
    await within(a.create("s1", FIELDS))
    assert (await within(a.attach("s1", "ws")))[0] == "ok"

    assert await query(server.port, "SCRIPT", "FLUSH") == "OK"
    before = await within(commandCounts(server.port))
    status = await within(a.attach("s1", "poll"))
    assert (status[0], status[2].kind, status[2].attachSeq) == ("ok", "poll", 2)
    after = await within(commandCounts(server.port))
    assert after.get("eval", 0) - before.get("eval", 0) == 1

    assert await within(a.attach("s1", "ws")) != ("gone",)
    assert await within(a.appendDown("s1", 1, Data(1, b"x", False))) == 1
    final = await within(commandCounts(server.port))
    # One EVAL more: the first call of "down" since the flush; "attach" is
    # known again.
    assert final.get("eval", 0) == after.get("eval", 0) + 1


# The subscription.


@pytest_twisted.ensureDeferred
async def test_subscription(redis_server, make_nodes, subscriptions, subscribe):
    """
    A started L{Subscription} subscribes to its node's channel, calls
    C{onSubscribed} once and is healthy; notifications reach the listener
    as bytes (not UTF-8, or looking like a number, intact); C{check}
    publishes C{p|nonce} to the channel, which the listener never sees, and
    the subscription stays healthy.
    """
    (a,) = make_nodes(redis_server.url, "A")
    port = redis_server.port
    notices: list[bytes] = []
    subscribed: list[None] = []
    subscription = Subscription(a, notices.append, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    assert not subscription.healthy
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))
    assert len(subscribed) == 1

    for message in (b"\xff|bin", b"0042", "\u00e9|".encode()):
        assert await within(a.publish("A", message)) == 1
    await within(waitUntil(lambda: len(notices) == 3, WAIT))
    assert notices == [b"\xff|bin", b"0042", "\u00e9|".encode()]

    watcher = await subscribe(port, a.channel())
    subscription.check()
    channel, nonce = await within(watcher.nextMessage())
    assert (channel, nonce[:2], len(nonce)) == (a.channel().encode(), b"p|", 18)
    # Heard back: the next check publishes a new nonce.
    await within(a.publish("A", b"after"))
    await within(waitUntil(lambda: notices[-1:] == [b"after"], WAIT))
    assert await within(watcher.nextMessage()) == (a.channel().encode(), b"after")
    subscription.check()
    assert (await within(watcher.nextMessage()))[1] != nonce
    assert subscription.healthy
    assert notices == [b"\xff|bin", b"0042", "\u00e9|".encode(), b"after"]
    assert len(subscribed) == 1


@pytest_twisted.ensureDeferred
async def test_subscriptionWedged(redis_server, make_nodes, subscriptions):
    """
    A check that finds its previous nonce unheard for the map's timeout
    marks the subscription wedged (not healthy) and drops its connection;
    it reconnects and subscribes again by itself (C{onSubscribed} again),
    and is healthy again.
    """
    (a,) = make_nodes(redis_server.url, "A", timeout=0.5)
    subscribed: list[None] = []
    subscription = Subscription(a, lambda data: None, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))

    # A nonce that was never published, sent a timeout ago.
    subscription._nonce = b"unheard"
    subscription._nonceSent = reactor.seconds() - 0.5
    subscription.check()
    assert subscription.wedged and not subscription.healthy
    await within(waitUntil(lambda: len(subscribed) == 2 and subscription.healthy, WAIT))
    assert not subscription.wedged


@pytest_twisted.ensureDeferred
async def test_subscriptionSurvivesRestart(make_redis_server, make_nodes, subscriptions):
    """
    When Redis dies the subscription is no longer healthy; once Redis is
    back on its port it reconnects and subscribes again by itself
    (C{onSubscribed} called again), and notifications reach the listener
    again.
    """
    server = make_redis_server()
    (a,) = make_nodes(server.url, "A")
    notices: list[bytes] = []
    subscribed: list[None] = []
    subscription = Subscription(a, notices.append, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))
    assert len(subscribed) == 1

    server.kill()
    await within(waitUntil(lambda: not subscription.healthy, WAIT))
    server.start()
    await within(waitUntil(lambda: subscription.healthy, 20), 25)
    assert len(subscribed) == 2
    assert await within(a.publish("A", b"again")) == 1
    await within(waitUntil(lambda: notices == [b"again"], WAIT))
