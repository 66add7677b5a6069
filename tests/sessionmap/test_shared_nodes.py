"""
Tests for L{gateway.sessionmap._shared.SharedSessions} against real
C{redis-server} processes: the liveness of nodes (heartbeats, leaving,
expiry), the expiry of every key written, and a flushed script cache.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from gateway.wire.protocol import Data
from tests.helpers import SESSION_FIELDS, SESSION_TTL, commandCounts, query, readHash, within


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
    prefix = a.home.keyPrefix
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

    await within(a.create("s1", SESSION_FIELDS))
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

    # Attaching, detaching and closing keep the expiry; taking over
    # refreshes it.
    for write in (lambda: b.attach("s1", "ws"), lambda: b.detach("s1"),
                  lambda: a.closing("s1", 1, 1000, "x")):
        await shorten()
        await within(write())
        assert all(0 < t <= 5000 for t in await expiries())
    await shorten()
    await within(a.takeOver("s1"))
    assert all(ttl - 5000 < t <= ttl for t in await expiries())

    (short,) = make_nodes(redis_server.url, "A", sessionTtl=0.3)
    await within(short.create("s2", SESSION_FIELDS))
    await within(short.appendDown("s2", 1, Data(1, b"d", False)))
    await within(short.appendUp("s2", [Data(1, b"u", False)]))

    async def gone() -> None:
        while await query(port, "EXISTS", *short.keys("s2")):
            pass

    await within(gone(), 5)


@pytest_twisted.ensureDeferred
async def test_writesRefreshOnlyWhenAsked(redis_server, make_nodes):
    """
    A write of a mailbox given C{refresh=False} leaves the keys' expiry as
    it is (C{forwarded}, C{acked}, C{appendUp}, C{appendDown}, alone or
    with what they fold in); with C{refresh=True} (the default) it
    refreshes all three.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    keys = a.keys("s1")
    ttl = SESSION_TTL * 1000
    await within(a.create("s1", SESSION_FIELDS))
    await within(a.appendDown("s1", 1, Data(1, b"d", False)))
    await within(b.appendUp("s1", [Data(1, b"u", False)]))
    for key in keys:
        await query(port, "PEXPIRE", key, "5000")

    writes = (lambda refresh: a.forwarded("s1", 1, 2, 1, [Data(2, b"u", False)], refresh=refresh),
              lambda refresh: b.acked("s1", 1, refresh=refresh),
              lambda refresh: b.appendUp("s1", [Data(3, b"u", False)], acked=1, refresh=refresh),
              lambda refresh: a.appendDown("s1", 1, Data(2, b"d", False), Data(3, b"d", False),
                                           acked=2, delivered=3, refresh=refresh))
    for write in writes:
        await within(write(False))
        assert all(0 < t <= 5000 for t in [await query(port, "PTTL", key) for key in keys])
    record = await readHash(port, keys[0])
    assert (record["upRecv"], record["upFwd"], record["downSent"], record["downAcked"]) == (
        b"3", b"3", b"3", b"2")
    assert await query(port, "XLEN", keys[1]) == 0 and await query(port, "XLEN", keys[2]) == 1
    await within(b.acked("s1", 3))
    assert all(ttl - 5000 < t <= ttl for t in [await query(port, "PTTL", key) for key in keys])


@pytest_twisted.ensureDeferred
async def test_mailboxMadeWithoutRefreshGetsAnExpiry(redis_server, make_nodes):
    """
    A mailbox made by a write that does not refresh (its first message)
    gets the keys' lifetime at once, never less than its record's: no key
    of a session ever lives without an expiry, and a session whose record
    is not refreshed leaves nothing behind.  Emptied, a mailbox stays
    made; written again (C{create}), it is made anew.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port
    ttl = SESSION_TTL * 1000
    record, up, down = a.keys("s1")
    await within(a.create("s1", SESSION_FIELDS))
    await query(port, "PEXPIRE", record, "5000")
    await within(a.appendDown("s1", 1, Data(1, b"d", False), Data(2, b"e", False), refresh=False))
    await within(b.appendUp("s1", [Data(1, b"u", False), Data(2, b"v", False)], refresh=False))
    for key in (up, down):
        assert ttl - 5000 < await query(port, "PTTL", key) <= ttl
        assert await query(port, "XLEN", key) == 2
    assert 0 < await query(port, "PTTL", record) <= 5000
    await within(a.forwarded("s1", 1, 2, 2, refresh=False))
    assert await query(port, "XLEN", up) == 0
    await query(port, "PEXPIRE", up, "5000")
    await within(a.forwarded("s1", 1, 3, 2, [Data(3, b"w", False)], refresh=False))
    assert 0 < await query(port, "PTTL", up) <= 5000 and await query(port, "XLEN", up) == 1

    await within(a.create("s1", SESSION_FIELDS))
    assert await query(port, "EXISTS", up, down) == 0
    await within(a.appendDown("s1", 1, Data(1, b"d", False), refresh=False))
    assert ttl - 5000 < await query(port, "PTTL", down) <= ttl

    (short,) = make_nodes(redis_server.url, "A", sessionTtl=0.3)
    await within(short.create("s2", SESSION_FIELDS))
    await within(short.forwarded("s2", 1, 1, 0, [Data(1, b"u", False)], refresh=False))
    await within(short.appendDown("s2", 1, Data(1, b"d", False), refresh=False))

    async def gone() -> None:
        while await query(port, "EXISTS", *short.keys("s2")):
            pass

    await within(gone(), 5)


@pytest_twisted.ensureDeferred
async def test_scriptsWriteOnlyWhatChanges(redis_server, make_nodes):
    """
    A message's writes run only the commands that change something: a
    count write that raises nothing reads the record and stops (no HSET
    of an unchanged count, no XTRIM of an up mailbox already trimmed), the
    fields a write changes go in one HSET (a new record's too), nothing
    refreshes the expiry unless asked, and a mailbox made by a write that
    does not refresh costs an XADD and a PEXPIRE of its own.
    """
    a, b = make_nodes(redis_server.url, "A", "B")
    port = redis_server.port

    async def ran(write) -> dict[str, int]:
        before = await commandCounts(port)
        await within(write())
        after = await commandCounts(port)
        return {name: n - before.get(name, 0) for name, n in after.items()
                if n != before.get(name, 0) and name not in ("info", "quit", "select")}

    assert await ran(lambda: a.create("s1", SESSION_FIELDS)) == {
        "evalsha": 1, "del": 1, "hset": 1, "pexpire": 1}
    # The first message makes the up mailbox (its first XADD was told not
    # to), with its expiry.
    assert await ran(lambda: a.forwarded("s1", 1, 1, 0, [Data(1, b"u", False)], refresh=False)) == {
        "evalsha": 1, "hmget": 1, "xadd": 2, "pexpire": 1, "hset": 1}

    # Accepted 2, the backend confirmed none more: upRecv alone changes.
    assert await ran(lambda: a.forwarded("s1", 1, 2, 0, [Data(2, b"v", False)], refresh=False)) == {
        "evalsha": 1, "hmget": 1, "xadd": 1, "hset": 1}
    # Nothing new: the record is read, nothing written.
    assert await ran(lambda: a.forwarded("s1", 1, 2, 0, refresh=False)) == {"evalsha": 1, "hmget": 1}
    # A backend message with the confirmed count and the client's ack.
    await within(a.appendDown("s1", 1, Data(1, b"d", False)))
    assert await ran(lambda: a.appendDown("s1", 1, Data(2, b"e", False), acked=1, delivered=2,
                                  refresh=False)) == {
        "evalsha": 1, "hmget": 1, "xadd": 1, "hset": 1, "xtrim": 2}
    assert await ran(lambda: b.appendUp("s1", [Data(1, b"u", False)], refresh=False)) == {
        "evalsha": 1, "hmget": 1}
    assert await ran(lambda: b.acked("s1", 1, refresh=False)) == {"evalsha": 1, "hmget": 1}
    assert await ran(lambda: b.acked("s1", 2)) == {"evalsha": 1, "hmget": 1, "hset": 1, "xtrim": 1,
                                           "pexpire": 3, "publish": 1}
    record = await readHash(port, a.keys("s1")[0])
    assert (record["upRecv"], record["upFwd"], record["downSent"], record["downAcked"]) == (
        b"2", b"2", b"2", b"2")


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
    await within(a.create("s1", SESSION_FIELDS))
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


@pytest_twisted.ensureDeferred
async def test_exchangeCountsPerLiveNode(redis_server, make_nodes):
    """
    C{exchangeCounts} publishes this node's connections per backend and
    answers with every other node's, by node: only nodes whose liveness key
    exists count (a node that died is left out as soon as its sessions may
    be taken over, even while its entry in the node set lasts), and never
    this node's own.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    for node in (a, b, c):
        await within(node.heartbeat({}))
    assert await within(a.exchangeCounts({"p/b1": 2})) == {}
    assert await within(b.exchangeCounts({"p/b1": 1, "p/b2": 3})) == {"A": {"p/b1": 2}}
    assert await within(c.exchangeCounts({})) == {"A": {"p/b1": 2}, "B": {"p/b1": 1, "p/b2": 3}}
    # A dies: its alive key is gone (as when it expires), its entry in the set stays.
    await query(redis_server.port, "DEL", f"{a.home.keyPrefix}alive:A")
    assert await within(c.exchangeCounts({})) == {"B": {"p/b1": 1, "p/b2": 3}}


@pytest_twisted.ensureDeferred
async def test_rebalanceTurns(redis_server, make_nodes):
    """
    C{rebalanceTurns} gives a pool's turn to one node at a time: the first
    that wants it takes it (C{P rebalance:{pool}}, expiring after
    C{nodeTtl}), another gets it only once the holder gives it up or its
    turn expires; one call covers every pool.
    """
    a, b = make_nodes(redis_server.url, "A", "B", nodeTtl=0.3)
    port = redis_server.port
    assert await within(a.rebalanceTurns({"p", "q"}, set())) == {"p", "q"}
    assert 0 < await query(port, "PTTL", f"{a.home.keyPrefix}rebalance:p") <= 300
    assert await within(b.rebalanceTurns({"p", "q"}, set())) == set()
    assert await within(a.rebalanceTurns({"q"}, {"p"})) == {"q"}  # renewed q, gave up p
    assert await within(b.rebalanceTurns({"p", "q"}, set())) == {"p"}
    assert await within(a.rebalanceTurns(set(), {"p"})) == set()  # not A's to give up
    assert await within(b.rebalanceTurns({"p"}, set())) == {"p"}

    async def expired():
        while await b.rebalanceTurns({"q"}, set()) != {"q"}:
            pass

    await within(expired(), 5)


@pytest_twisted.ensureDeferred
async def test_liveNodeInfo(redis_server, make_nodes):
    """
    C{liveNodeInfo} answers what each live node wrote at its last
    heartbeat, by id, at most C{limit} of them (the first by id), and
    nothing for a node that has left.
    """
    a, b, c = make_nodes(redis_server.url, "A", "B", "C")
    assert await within(a.liveNodeInfo()) == {}
    await within(a.heartbeat({"sessions": 2, "relayed": 0}))
    await within(b.heartbeat({"sessions": 5, "relayed": 1}))
    await within(c.heartbeat({}))
    assert await within(c.liveNodeInfo()) == {
        "A": {"sessions": 2, "relayed": 0}, "B": {"sessions": 5, "relayed": 1}, "C": {}}
    assert await within(c.liveNodeInfo(limit=2)) == {
        "A": {"sessions": 2, "relayed": 0}, "B": {"sessions": 5, "relayed": 1}}
    await within(b.leave())
    assert sorted(await within(a.liveNodeInfo())) == ["A", "C"]
