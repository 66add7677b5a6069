"""
Tests for L{gateway.sessionmap._shared.SharedSessions} and its scripts
(L{gateway.sessionmap._scripts}), against a real C{redis-server}: a
session's record (its keys, creating, reading, attaching and detaching),
takeovers, and the fencing of an old owner's writes by the epoch.
"""

from __future__ import annotations

import json

import pytest_twisted

from gateway.wire.protocol import Data
from gateway.sessionmap._scripts import FENCED, GONE
from gateway.sessionmap._shared import SessionRecord
from tests.helpers import SESSION_FIELDS, SESSION_TTL, query, readHash, streamIds, within


# Creating and attaching.


@pytest_twisted.ensureDeferred
async def test_keyNames(redis_server, make_nodes):
    """
    A session's keys are C{P s:{sid}}, C{P s:{sid}:up} and
    C{P s:{sid}:down}; a node's channel is C{P node:{id}}, this node's by
    default.
    """
    (a,) = make_nodes(redis_server.url, "A")
    prefix = a.home.keyPrefix.encode()
    assert a.keys("s1") == (prefix + b"s:s1", prefix + b"s:s1:up", prefix + b"s:s1:down")
    assert a.channel() == f"{a.home.keyPrefix}node:A"
    assert a.channel("B") == f"{a.home.keyPrefix}node:B"


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
    assert await within(a.create("s1", SESSION_FIELDS)) == 1

    raw = await readHash(redis_server.port, a.keys("s1")[0])
    assert raw["secret"] == b"0042"
    assert raw["target"] == b"/chat?room=\xff\x00"
    assert json.loads(raw["headers"]) == SESSION_FIELDS["headers"]
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
    await within(b.create("s2", dict(SESSION_FIELDS, origin="")))
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
    await within(a.create("s1", SESSION_FIELDS))
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
    await within(a.create("s1", SESSION_FIELDS))
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
    await within(a.create("s1", SESSION_FIELDS))

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
    await within(a.create("s1", SESSION_FIELDS))
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
    owner at the next epoch, and names the owner it took over from.  The old owner's C{appendDown}, C{forwarded},
    C{closing}, C{end} and C{relinked} at its old epoch then give L{FENCED} and change
    nothing (record, mailboxes, notifications); the new owner's writes at
    its epoch succeed.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    record, up, down = a.keys("s1")
    await within(a.heartbeat({}))
    await within(a.create("s1", SESSION_FIELDS))
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
    assert status[2] == "A"
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
    await within(a.create("s1", SESSION_FIELDS))
    status = await within(a.takeOver("s1"))
    assert (status[0], status[1].owner, status[1].epoch, status[2]) == ("ok", "A", 1, "A")
    await within(a.heartbeat({}))
    status = await within(a.takeOver("s1"))
    assert (status[0], status[1].owner, status[1].epoch, status[2]) == ("ok", "A", 1, "A")
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
    await within(a.create("s1", SESSION_FIELDS))
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
