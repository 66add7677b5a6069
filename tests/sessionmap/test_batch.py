"""
Tests for L{gateway.sessionmap._batch}: the script calls of one reactor
turn sent as one command, against a real C{redis-server} (order, answers,
a call failing alone, the bounds, a forgotten script cache), and its
bookkeeping on a L{Clock} with a fake connection.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.task import Clock

from gateway.errors import SessionMapUnavailable
from gateway.sessionmap._batch import BATCH_BYTES, BATCH_CALLS, ScriptBatches
from gateway.sessionmap._scripts import BATCH, FENCED, SCRIPTS
from gateway.wire.protocol import Data
from tests.helpers import SESSION_FIELDS, commandCounts, query, readHash, within


@pytest_twisted.ensureDeferred
async def test_oneTurnOneCommand(redis_server, make_nodes):
    """
    The writes of several sessions issued in one turn reach Redis as one
    C{EVALSHA} per connection, and each gets its own script's answer, as
    if sent alone: appends, a fenced one, an acknowledgement.
    """
    (a,) = make_nodes(redis_server.url, "A")
    sids = [f"b{i}" for i in range(5)]
    await within(gatherResults([a.create(sid, SESSION_FIELDS) for sid in sids]))
    sessionMap = a.maps[0]
    before = sessionMap.commandsIssued
    calls = await commandCounts(redis_server.port)

    answers = await within(gatherResults([
        *(a.appendDown(sid, 1, Data(1, b"to %s" % sid.encode(), False)) for sid in sids[:4]),
        a.appendDown(sids[4], 7, Data(1, b"stale", False)),
        a.acked(sids[0], 1),
    ]))

    assert answers == [1, 1, 1, 1, FENCED, 1]
    assert sessionMap.commandsIssued - before <= sessionMap.poolSize == 2
    after = await commandCounts(redis_server.port)
    assert after.get("evalsha", 0) - calls.get("evalsha", 0) == sessionMap.commandsIssued - before
    assert await within(a.readDown(sids[2], 0)) == [Data(1, b"to b2", False)]
    assert await within(a.readDown(sids[4], 0)) == []
    assert (await readHash(redis_server.port, a.keys(sids[0])[0]))["downAcked"] == b"1"


@pytest_twisted.ensureDeferred
async def test_callFailsAlone(redis_server, make_nodes):
    """
    A call whose script fails (its record is not a hash) fails with
    L{SessionMapUnavailable}, alone: the others in its batch are answered.
    """
    (a,) = make_nodes(redis_server.url, "A")
    await within(a.create("good", SESSION_FIELDS))
    await query(redis_server.port, "SET", a.keys("bad")[0], "not a hash")

    good = a.appendDown("good", 1, Data(1, b"x", False))
    bad = a.appendDown("bad", 1, Data(1, b"y", False))
    assert await within(good) == 1
    with pytest.raises(SessionMapUnavailable, match="WRONGTYPE"):
        await within(bad)


@pytest_twisted.ensureDeferred
async def test_plainCommandAfterQueued(redis_server, make_nodes):
    """
    A plain command on a key runs after the script calls queued before it
    in the same turn: a record created and then read at once is there.
    """
    (a,) = make_nodes(redis_server.url, "A")
    await within(a.create("warm", SESSION_FIELDS))  # the map started
    created = a.create("s1", SESSION_FIELDS)
    record = a.read("s1")
    assert await within(created) == 1
    assert (await within(record)) is not None


@pytest_twisted.ensureDeferred
async def test_bounds(redis_server, make_nodes):
    """
    A turn of more than L{BATCH_CALLS} calls, or more than L{BATCH_BYTES}
    of arguments, goes in several commands, every call answered.
    """
    (a,) = make_nodes(redis_server.url, "A")
    await within(a.create("s1", SESSION_FIELDS))
    sessionMap = a.maps[0]
    # One connection for every call: one session's key.
    before = sessionMap.commandsIssued
    answers = await within(gatherResults([a.touch("s1") for _ in range(2 * BATCH_CALLS + 1)]))
    assert answers == [1] * (2 * BATCH_CALLS + 1)
    assert sessionMap.commandsIssued == before + 3

    big = b"x" * (BATCH_BYTES // 2 + 1)
    before = sessionMap.commandsIssued
    answers = await within(gatherResults([
        a.appendDown("s1", 1, Data(seq, big, True)) for seq in (1, 2, 3)]))
    assert answers == [1, 1, 1]
    assert sessionMap.commandsIssued == before + 3
    assert [m.seq for m in await within(a.readDown("s1", 0))] == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_scriptCacheFlushed(redis_server, make_nodes):
    """
    After Redis forgot its scripts (a restart, C{SCRIPT FLUSH}), a batch is
    sent once more whole, and answered.
    """
    (a,) = make_nodes(redis_server.url, "A")
    await within(gatherResults([a.create(sid, SESSION_FIELDS) for sid in ("f1", "f2")]))
    await query(redis_server.port, "SCRIPT", "FLUSH")
    answers = await within(gatherResults([a.touch("f1"), a.touch("f2")]))
    assert answers == [1, 1]


# The bookkeeping, on a Clock.


class FakeConnection:
    """
    What L{ScriptBatches} sees of a connection: C{drop}.
    """

    dropped = False

    def drop(self) -> None:
        self.dropped = True


def batches(answer=None):
    """
    @return: a L{ScriptBatches} on a L{Clock} whose sends are recorded (and
        answered by C{answer(args)}, or left waiting), the clock, and the
        list of sends.
    """
    clock = Clock()
    sent: list[tuple] = []

    def send(connection, command, args):
        sent.append((connection, command, args))
        return succeed(answer(args)) if answer is not None else Deferred()

    return ScriptBatches(clock, send), clock, sent


def test_sentAtTurnEnd():
    """
    Calls are sent when the turn ends, each connection's in one command, in
    the order they were queued; a lone call as its own script.
    """
    queue, clock, sent = batches()
    one, two = FakeConnection(), FakeConnection()
    queue.queue(one, SCRIPTS["touch"], (b"k1", b"k2", b"k3"), ("10",))
    queue.queue(two, SCRIPTS["acked"], (b"k4",), ("1", "2"))
    queue.queue(one, SCRIPTS["touch"], (b"k5", b"k6", b"k7"), ("20",))
    assert sent == []
    clock.advance(0)
    assert sent == [
        (one, "EVALSHA", (BATCH.sha, "6", b"k1", b"k2", b"k3", b"k5", b"k6", b"k7",
                          "touch", "3", "1", "10", "touch", "3", "1", "20")),
        (two, "EVALSHA", (SCRIPTS["acked"].sha, "1", b"k4", "1", "2")),
    ]


def test_sendNow():
    """
    L{ScriptBatches.sendNow} sends a connection's calls at once (before a
    plain command), and the turn's end sends nothing more.
    """
    queue, clock, sent = batches()
    connection = FakeConnection()
    queue.queue(connection, SCRIPTS["touch"], (b"k",), ("1",))
    queue.sendNow(connection)
    assert len(sent) == 1
    queue.sendNow(connection)
    clock.advance(0)
    assert len(sent) == 1


def test_answers():
    """
    Each call gets its answer; an error answer fails its call alone, and a
    C{READONLY} one drops the connection too.
    """
    readOnly = Exception("READONLY You can't write against a read only replica.")
    queue, clock, sent = batches(lambda args: [1, readOnly, None])
    connection = FakeConnection()
    waiters = [queue.queue(connection, SCRIPTS["touch"], (b"k",), ("1",)) for _ in range(3)]
    results: list = []
    for waiter in waiters:
        waiter.addBoth(results.append)
    clock.advance(0)
    assert results[0] == 1 and results[2] is None
    assert results[1].value is readOnly
    assert connection.dropped


def test_answerOfWrongShape():
    """
    A batch answered with anything but one answer per call fails every
    call, saying so.
    """
    queue, clock, sent = batches(lambda args: [1])
    connection = FakeConnection()
    waiters = [queue.queue(connection, SCRIPTS["touch"], (b"k",), ("1",)) for _ in range(2)]
    failures: list = []
    for waiter in waiters:
        waiter.addErrback(failures.append)
    clock.advance(0)
    assert [str(f.value) for f in failures] == ["a batch of 2 script calls was answered with [1]"] * 2


def test_batchFails():
    """
    A batch that fails whole (no answer, a lost connection) fails each of
    its calls with that error.
    """
    clock = Clock()
    pending: Deferred = Deferred()
    queue = ScriptBatches(clock, lambda connection, command, args: pending)
    waiters = [queue.queue(FakeConnection, SCRIPTS["touch"], (b"k",), ("1",)) for _ in range(2)]
    failures: list = []
    for waiter in waiters:
        waiter.addErrback(failures.append)
    clock.advance(0)
    pending.errback(SessionMapUnavailable("no answer"))
    assert [str(f.value) for f in failures] == ["no answer", "no answer"]


def test_cancel():
    """
    L{ScriptBatches.cancel} (the map closing) sends what is queued and
    leaves no timer behind.
    """
    queue, clock, sent = batches()
    queue.queue(FakeConnection(), SCRIPTS["touch"], (b"k",), ("1",))
    queue.cancel()
    assert len(sent) == 1
    assert clock.getDelayedCalls() == []
