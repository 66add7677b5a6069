"""
When the writers of a shared session refresh the expiry of its keys
(L{gateway.cluster.expiry}): an L{Expiry} on a Clock, and the owner's
L{Mirror} and its heartbeat writing to a fake store, which records
whether each write refreshed.  (A relay's: tests/cluster/test_relay.py.)
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from gateway.cluster.expiry import REFRESH_EVERY, Expiry
from gateway.cluster.mirror import Mirror
from gateway.errors import SessionMapUnavailable
from gateway.sessionmap._scripts import GONE
from gateway.wire.protocol import Data

from .fakes import cutOffCluster, mirrored

#: The fake store's C{sessionTtl}, and how often a writer refreshes.
TTL = 30.0
EVERY = TTL * REFRESH_EVERY


def test_expiryDueOncePerThirdOfTheLifetime():
    """
    A writer's first write refreshes (it does not know of any refresh);
    then none until a third of C{session_ttl} has passed since the last
    refresh was sent; forgotten (L{Expiry.doubt}), the next write
    refreshes again.  A refresh known from elsewhere (the write that made
    or took the session) counts as the last.
    """
    clock = Clock()
    expiry = Expiry(clock, TTL)
    assert expiry.due() is True
    clock.advance(EVERY - 0.001)
    assert expiry.due() is False
    clock.advance(0.001)
    assert expiry.due() is True
    clock.advance(1)
    assert expiry.due() is False
    expiry.doubt()
    assert expiry.due() is True
    expiry.refreshed(clock.seconds() + 1)
    clock.advance(EVERY)
    assert expiry.due() is False
    assert expiry.due(clock.seconds() + 1) is True


def test_busySessionRefreshesOncePerThird():
    """
    A session that writes all the time refreshes its keys' expiry with one
    write in each third of C{session_ttl} (whichever write comes first:
    backend messages, counts, acknowledgements); the others pass C{''}.
    """
    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    for _ in range(4 * 3):
        session.messageFromBackend(b"x", False)
        clock.advance(0)
        session.ackReceived(SimpleNamespace(count=session.outbox.sent))
        clock.advance(0)
        clock.advance(EVERY / 4)
    kinds = [kind for kind, _ in shared.refreshes]
    assert kinds == ["down", "acked"] * 12
    refreshed = [i for i, (_, refresh) in enumerate(shared.refreshes) if refresh]
    # The first write, then the first one at or after each third.
    assert refreshed == [0, 8, 16]


def test_heartbeatRefreshesAnIdleSession():
    """
    The heartbeat refreshes an idle session's keys once a third of
    C{session_ttl} has passed since the last refresh, by a write or by an
    earlier heartbeat, and not before.
    """
    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    session.messageFromBackend(b"x", False)
    clock.advance(0)
    assert shared.refreshes == [("down", True)]
    for _ in range(3):
        clock.advance(1)
        session.mirror.touch(clock.seconds())
    assert shared.refreshes == [("down", True)]
    clock.advance(EVERY - 3)
    session.mirror.touch(clock.seconds())
    assert shared.refreshes[-1] == ("touch", True)
    session.mirror.touch(clock.seconds())
    session.messageFromBackend(b"y", False)
    clock.advance(0)
    assert shared.refreshes[1:] == [("touch", True), ("down", False)]


def test_takenOverSessionRefreshedByTheTakeover():
    """
    A mirror made for a session taken over (whose takeover refreshed the
    keys) does not refresh with its first write; one made for a new
    session's record does once it knows nothing of a refresh.
    """
    clock, cluster, session, transport = mirrored()
    session.mirror = Mirror(cluster, session, 4, refreshed=clock.seconds())
    session.messageFromBackend(b"x", False)
    clock.advance(0)
    assert cluster.shared.refreshes == [("down", False)]


def test_failedWriteRefreshesNext():
    """
    After a write that failed (Redis may or may not have run it, or may
    have restarted since), the next write refreshes, due or not; and so
    after a record found gone, before it is written again.
    """
    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    session.packetReceived(Data(1, b"a", False))
    assert shared.refreshes == [("forwarded", True)]
    shared.pending.pop(0).errback(SessionMapUnavailable("away"))
    clock.advance(1)
    session.mirror.touch(clock.seconds())  # the count write again
    assert shared.refreshes[-1] == ("forwarded", True)
    shared.pending.pop(0).callback(1)
    session.messageFromBackend(b"x", False)
    clock.advance(0)
    assert shared.refreshes[-1] == ("down", False)

    # The record is gone (Redis restarted empty): the session is written
    # again, and every write until that is done refreshes.
    shared.appendDown = lambda *messages, **kwargs: (
        shared.refreshes.append(("down", kwargs.get("refresh", True))), succeed(GONE))[1]
    session.messageFromBackend(b"y", False)
    clock.advance(0)
    assert cluster.registered == [3]
    assert shared.refreshes[-2:] == [("down", False), ("down", True)]


def test_expiryInDoubtRefreshesAtTheHeartbeat():
    """
    When the owner checks its sessions again (Redis came back or changed
    master), each one's expiry is in doubt: the heartbeat refreshes it at
    once, however recent its last refresh.
    """
    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    session.mirror.touch(clock.seconds())
    assert shared.refreshes == [("touch", True)]
    clock.advance(1)
    session.mirror.touch(clock.seconds())
    assert len(shared.refreshes) == 1
    session.mirror.expiryInDoubt()
    session.mirror.touch(clock.seconds())
    assert shared.refreshes == [("touch", True), ("touch", True)]


def beat(cluster, clock, seconds: float = 1.0) -> None:
    """
    Heartbeats every second (C{node_ttl / 3}) for C{seconds}.
    """
    for _ in range(int(seconds)):
        clock.advance(1.0)
        Deferred.fromCoroutine(cluster._heartbeat())


def test_heartbeatAfterRedisWasAwayRefreshes():
    """
    The heartbeat that finds Redis back after an outage checks the owned
    sessions again and refreshes each one's keys at once (Redis may have
    restarted from an older copy of them), however recent the last
    refresh; the heartbeats after it do not until it is due.
    """
    clock, registry, cluster, session, transport = cutOffCluster()
    shared = cluster.shared
    assert shared.refreshes == [("touch", True)]  # a mirror that knows of no refresh
    beat(cluster, clock)
    assert shared.refreshes == [("touch", True)]
    shared.down = True
    beat(cluster, clock)
    shared.down = False
    beat(cluster, clock)
    assert shared.refreshes == [("touch", True)] * 2
    beat(cluster, clock)
    assert len(shared.refreshes) == 2


def test_recordWrittenRefreshes():
    """
    Writing a session's record (a new session, or one written again)
    refreshes its keys: the heartbeat after it does not; a record that
    could not be written leaves the expiry unknown, and the next write
    refreshes.
    """
    clock, registry, cluster, session, transport = cutOffCluster()
    shared = cluster.shared
    beat(cluster, clock, EVERY)
    assert shared.refreshes == [("touch", True)] * 2
    Deferred.fromCoroutine(cluster.register(session, b"/", {}, None))
    assert shared.writes[-1] == ("create", None)
    beat(cluster, clock, EVERY - 1)
    assert len(shared.refreshes) == 2

    shared.create = lambda sid, fields: fail(SessionMapUnavailable("away"))
    Deferred.fromCoroutine(cluster.register(session, b"/", {}, None))
    assert session.mirror.recorded is False
    beat(cluster, clock)
    assert shared.refreshes[-1] == ("touch", True)
