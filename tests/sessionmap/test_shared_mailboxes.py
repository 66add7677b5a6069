"""
Tests for L{gateway.sessionmap._shared.SharedSessions} and its scripts
(L{gateway.sessionmap._scripts}), against a real C{redis-server}: a
session's two mailboxes (client messages up, backend messages down), its
closing and ending, and the notifications each write publishes (read by a
plain RESP subscriber of the test's own).
"""

from __future__ import annotations

import pytest_twisted

from gateway.wire.protocol import Data
from gateway.sessionmap._scripts import FENCED, GAP, GONE
from tests.helpers import SESSION_FIELDS, SESSION_TTL, query, readHash, streamIds, within


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
    await within(a.create("s1", SESSION_FIELDS))

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
    await within(a.create("s1", SESSION_FIELDS))
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



@pytest_twisted.ensureDeferred
async def test_forwardedKeepsWhatTheBackendHasNotConfirmed(redis_server, make_nodes):
    """
    C{forwarded} with a C{delivered} count below the accepted one appends
    the owner's own messages given with it after the last one in the up
    mailbox (those already there are not appended again), trims the
    mailbox only to C{delivered}, and never lowers the delivered count; a
    takeover then reads every message the backend has not confirmed.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    record, up, _ = a.keys("s1")
    await within(a.create("s1", SESSION_FIELDS))
    await within(b.appendUp("s1", UP[:2]))
    assert await within(a.forwarded("s1", 1, 4, 1, UP[1:4])) == 1
    assert await within(a.readUp("s1", 1)) == UP[1:4]
    assert await streamIds(port, up) == [b"0-2", b"0-3", b"0-4"]
    fields = await readHash(port, record)
    assert (fields["upFwd"], fields["upRecv"]) == (b"1", b"4")
    assert await within(b.appendUp("s1", UP[2:5])) == (1, 5)  # 3 and 4 are duplicates
    assert await within(a.forwarded("s1", 1, 5, 0, [])) == 1
    assert (await readHash(port, record))["upFwd"] == b"1"
    await within(a.leave())
    status = await within(b.takeOver("s1"))
    assert status[1].upFwd == 1
    assert await within(b.readUp("s1", status[1].upFwd)) == UP[1:5]
    assert await within(b.forwarded("s1", 2, 5, 5)) == 1
    assert await streamIds(port, up) == []
    # Messages 6 and 7 were confirmed before the write: 8 and 9 follow them.
    assert await within(b.forwarded("s1", 2, 9, 7, [Data(8, b"8", False), Data(9, b"9", False)])) == 1
    assert await within(a.readUp("s1", 7)) == [Data(8, b"8", False), Data(9, b"9", False)]


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
    await within(a.create("s1", SESSION_FIELDS))
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


@pytest_twisted.ensureDeferred
async def test_batchesAndFoldedAcks(redis_server, make_nodes, subscribe):
    """
    C{appendDown} writes several backend messages in one call, in order,
    each published to the client's node; with C{acked} (the owner's own
    client) it also records C{downAcked} and trims the mailbox, clamped to
    what was sent, telling no one.  C{appendUp} with C{acked} records the
    client's acknowledgement as C{acked} would, and tells the owner.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    subscriber = await subscribe(port, a.channel(), b.channel())
    record = a.keys("s1")[0]
    await within(a.create("s1", SESSION_FIELDS))
    await within(b.attach("s1", "ws"))
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"t|s1|B|1")
    down = [Data(1, b"one", False), Data(2, b"\xff|two", True), Data(3, b"3", False)]
    assert await within(a.appendDown("s1", 1, *down)) == 1
    for message in down:
        expected = b"d|s1|%d|%s|%s" % (message.seq, b"1" if message.isBinary else b"0", message.payload)
        assert await within(subscriber.nextMessage()) == (b.channel().encode(), expected)
    assert await within(b.readDown("s1", 0)) == down
    assert (await readHash(port, record))["downSent"] == b"3"

    assert await within(b.appendUp("s1", [Data(1, b"u", False)], acked=2)) == (1, 1)
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"u|s1|1|0|u")
    assert await within(subscriber.nextMessage()) == (a.channel().encode(), b"a|s1|2")
    assert (await readHash(port, record))["downAcked"] == b"2"
    assert await within(b.readDown("s1", 0)) == down[2:]

    await within(a.attach("s1", "ws"))  # the client is on its owner now
    await within(subscriber.nextMessage())
    assert await within(a.appendDown("s1", 1, Data(4, b"four", False), acked=9)) == 1
    fields = await readHash(port, record)
    assert (fields["downSent"], fields["downAcked"]) == (b"4", b"4")
    assert await within(b.readDown("s1", 0)) == []
    assert await within(a.appendDown("s1", 1, acked=4)) == 1  # an acknowledgement alone
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
    await within(a.create("s1", SESSION_FIELDS))
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
    await within(a.create("s1", SESSION_FIELDS))
    await within(b.takeOver("s1"))
    assert await within(a.end("s1", 1, 1000, "x")) == FENCED
    assert await within(a.end("s1", None, 1001, "x")) == 1
    assert await query(port, "EXISTS", *a.keys("s1")) == 0

    await within(a.create("s2", SESSION_FIELDS))
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
    await within(a.create("s1", SESSION_FIELDS))
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


@pytest_twisted.ensureDeferred
async def test_endLeavesATombstone(redis_server, make_nodes):
    """
    C{end} with a tombstone leaves C{P s:{sid}:ended} (C{code|reason},
    expiring after C{sessionTtl}) in place of the session's keys: a later
    C{attach} or C{takeOver} of the session, on any node, gives
    C{("ended", code, reason)}, and C{ended} reads it; an end without one
    (or a fenced end) leaves none, and the session is then C{("gone",)}.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    await within(a.create("s1", SESSION_FIELDS))
    assert await within(a.end("s1", 1, 4000, "bye", tombstone=(4410, "session ended: expired|x"))) == 1
    assert await query(port, "EXISTS", *a.keys("s1")) == 0
    tomb = a.keys("s1")[0] + b":ended"
    assert 0 < await query(port, "PTTL", tomb) <= SESSION_TTL * 1000
    expected = ("ended", 4410, "session ended: expired|x")
    assert await within(b.attach("s1", "ws")) == expected
    assert await within(b.attach("s1", "poll")) == expected
    assert await within(b.takeOver("s1")) == expected
    assert await within(b.ended("s1")) == (4410, "session ended: expired|x")

    await within(a.create("s2", SESSION_FIELDS))
    assert await within(a.end("s2", 1, 4000, "bye")) == 1
    assert await within(b.attach("s2", "ws")) == ("gone",)
    assert await within(b.ended("s2")) is None
    await within(a.create("s3", SESSION_FIELDS))
    await within(b.takeOver("s3"))
    assert await within(a.end("s3", 1, 4000, "bye", tombstone=(4410, "x"))) == FENCED
    assert await query(port, "EXISTS", a.keys("s3")[0] + b":ended") == 0
