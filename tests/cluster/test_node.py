"""
The strategies a session and the registry are given, with fakes and a
Clock: the cluster's L{Mirror} against the null L{NoMirror} (the same
contract, answered as a cluster and as a single node would), the
registry's L{Cluster} against L{SingleNode}, and every new implementation
of an interface checked with C{verifyObject}.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from types import SimpleNamespace
from zope.interface.verify import verifyObject

from gateway.backends.balancers import LeastConnections
from gateway.backends.link import BackendLink
from gateway.backends.pool import Backend, Pool
from gateway.cluster.mirror import Mirror
from gateway.cluster.node import Cluster
from gateway.config import GatewayConfig, SessionConfig
from gateway.errors import LimitExceeded, ResumeRefused
from gateway.interfaces import (
    IBackendLink,
    ISessionCluster,
    ISessionMirror,
    ISessionOpener,
    ISessionTransport,
    ISessionView,
)
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.local import NoMirror, SingleNode
from gateway.sessions.opener import SessionOpener
from gateway.sessions.registry import SessionRegistry
from gateway.transports.websocket import SessionWebSocket
from gateway.wire.protocol import CLOSE_UNKNOWN_SESSION, Data, Hello
from tests.helpers import FakeLink, FakeTransport

from .fakes import FakeCluster, FakeSessionMap, cutOffCluster, makeSession, mirrored


# verifyObject on every implementation.

def test_implementationsProvideTheirInterfaces():
    """
    The session, its strategies, the opener, the cluster and the real
    transports and link provide the interfaces they are driven through.
    """
    clock, registry, session, transport = makeSession()
    verifyObject(ISessionView, session)
    verifyObject(ISessionMirror, registry.noMirror)
    verifyObject(ISessionCluster, registry.cluster)
    verifyObject(ISessionMirror, Mirror(FakeCluster(registry, clock), session, 1))
    sessionMap = FakeSessionMap(clock)
    verifyObject(ISessionCluster, Cluster(registry, sessionMap, clock, nodeTtl=3.0, node="A"))
    verifyObject(ISessionOpener, SessionOpener(clock, GatewayConfig(), {}, sessionMap, None, {}))
    verifyObject(IBackendLink, BackendLink(clock))
    verifyObject(ISessionTransport, SessionWebSocket())
    verifyObject(ISessionTransport, FakeTransport())
    verifyObject(IBackendLink, FakeLink())


def test_registryStrategies():
    """
    A registry made without a cluster factory has the single-node
    strategy; with one, the strategy that factory made for it.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(), clock, MemorySessionMap(clock))
    assert isinstance(registry.cluster, SingleNode) and not registry.sharesSessions
    assert isinstance(registry.noMirror, NoMirror)
    shared = SessionRegistry(SessionConfig(), clock, FakeSessionMap(clock),
                             cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="A"))
    assert isinstance(shared.cluster, Cluster) and shared.sharesSessions
    assert shared.cluster.registry is shared


# The mirror contract: the null mirror.

def test_noMirrorAnswersAsASingleNode():
    """
    The null mirror lets everything accepted be acknowledged, keeps no
    message, knows of no other node, stamps no epoch, and writes nothing.
    """
    mirror = NoMirror(Clock())
    assert mirror.ackable(7) == 7
    assert mirror.holds(Data(9, b"x", False)) is False
    assert mirror.remote is None
    mirror.attachedTo("B")
    assert mirror.remote is None
    headers = {"X-Session-Id": "s"}
    mirror.stampEpoch(headers)
    assert headers == {"X-Session-Id": "s"}
    fired = []
    mirror.settled().addCallback(fired.append)
    mirror.forwarded().addCallback(fired.append)
    assert fired == [None, None]


def test_noMirrorAcksOnTheNextTurn():
    """
    On a single node a session's acks go out on the next turn of the
    reactor: one ack answers every message of a turn.
    """
    clock, registry, session, transport = makeSession()
    del transport.sent[:]
    session.packetReceived(Data(1, b"a", False))
    session.packetReceived(Data(2, b"b", False))
    assert transport.sent == []
    clock.advance(0)
    assert [p.count for p in transport.sent] == [2]


# The mirror contract: the cluster's Mirror.

def test_mirrorAcksOnlyWhatIsRecorded():
    """
    With a Mirror, the session acknowledges only the client messages whose
    count Redis has recorded: the ack waits for the write.
    """
    clock, cluster, session, transport = mirrored()
    del transport.sent[:]
    session.packetReceived(Data(1, b"a", False))
    assert session.ackCount == 0
    clock.advance(0)
    assert transport.sent == []
    assert ("forwarded", 1) in cluster.shared.writes
    cluster.shared.pending.pop(0).callback(1)
    assert session.ackCount == 1 and [p.count for p in transport.sent] == [1]


def test_mirrorHoldsWhatComesAheadOrWhileNotPumping():
    """
    A Mirror keeps a client message that comes after a gap (the ones before
    it went through another node) and every message while this node may
    not pump; in sequence, and pumping, it keeps none.
    """
    clock, cluster, session, transport = mirrored(maxBufferMessages=2)
    mirror = session.mirror
    assert mirror.holds(Data(1, b"a", False)) is False
    assert mirror.holds(Data(3, b"c", False)) is True
    cluster.pumping = False
    assert mirror.holds(Data(1, b"a", False)) is True
    with pytest.raises(LimitExceeded):
        mirror.holds(Data(4, b"d", False))


def test_mirrorRecordsWhatHappens():
    """
    A Mirror writes the session's backend messages, acks, relinks, close
    and end; it stamps the epoch on the next backend connection's headers;
    it remembers which node holds the client.
    """
    clock, cluster, session, transport = mirrored()
    mirror = session.mirror
    session.messageFromBackend(b"d1", False)
    session.packetReceived(Data(1, b"u", False))
    clock.advance(0)
    session.ackReceived(SimpleNamespace(count=1))
    mirror.relinked("b2")
    headers = {}
    mirror.stampEpoch(headers)
    assert headers == {"X-Session-Epoch": "3"}
    mirror.attachedTo("B")
    assert mirror.remote == "B"
    session.attachedElsewhere("B")
    assert transport.closed[0] == 4503
    mirror.attachedTo(None)
    assert mirror.remote is None
    session.end(1000, "done", CLOSE_UNKNOWN_SESSION)
    kinds = [w[0] for w in cluster.shared.writes]
    assert kinds[:2] == ["down", "forwarded"]
    assert {"acked", "relinked", "end"} <= set(kinds)


def test_fencedSessionFallsBackToTheNullMirror():
    """
    Once Redis refused a write (another node took the session), the
    session writes no more: its mirror is the registry's null one, and its
    end is not written.
    """
    clock, cluster, session, transport = mirrored()
    session.fenced(True)
    assert session.mirror is session.registry.noMirror
    assert "end" not in [w[0] for w in cluster.shared.writes]
    assert transport.closed[0] == 4001


# The registry's single-node strategy.

def test_singleNodeResumeOfAnUnknownSession():
    """
    On a single node, a resume, a send or a probe naming a session not held
    here is refused as unknown (4404), through the strategy, not a branch.
    """
    clock, registry, session, transport = makeSession()
    hello = Hello("nope", "x", 0)
    for attempt in (registry.resume(hello, "ws"), registry.sendTarget("nope", "x"), registry.probed(hello)):
        failures = []
        Deferred.fromCoroutine(attempt).addErrback(failures.append)
        assert failures[0].check(ResumeRefused) and failures[0].value.code == CLOSE_UNKNOWN_SESSION
    assert registry.here(session.sid) is session and not registry.mustResume(session.sid)
    assert registry.cluster.relayHere(session.sid) is None


def test_singleNodeNewSessionHeaders():
    """
    A new session's first backend headers: C{X-Session-Id} alone on a
    single node; with the epoch when nodes share sessions.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(), clock, MemorySessionMap(clock))
    assert registry.cluster.newSessionHeaders("s") == {"X-Session-Id": "s"}
    cluster = Cluster(registry, FakeSessionMap(clock), clock, nodeTtl=3.0, node="A")
    assert cluster.newSessionHeaders("s") == {"X-Session-Id": "s", "X-Session-Epoch": "1"}


def test_releasePollHereOrThroughTheCluster():
    """
    An upgrade's probe answers the session's held poll here when a poll
    holds it, and asks the cluster to have it answered otherwise.
    """
    clock, registry, session, transport = makeSession()
    probed = []
    registry.cluster.probe = probed.append
    registry.releasePoll(session)
    assert probed == [session.sid] and transport.released == 0
    transport.kind = "poll"
    registry.releasePoll(session)
    assert probed == [session.sid] and transport.released == 1


# Takeovers.

class FakeOpener:
    """
    The opener as a takeover uses it: the pool by name, and C{reopen},
    which records its call and answers with a new L{FakeLink}.
    """

    def __init__(self, pool):
        self.pools = {pool.name: pool}
        self.reopened = []

    def pool(self, name):
        return self.pools.get(name)

    async def reopen(self, pool, name, target, headers, origin):
        self.reopened.append((name, target, headers, origin))
        link = BoundLink()
        return pool.backend(name), link


class BoundLink(FakeLink):
    """
    A fake link that remembers what it was bound to.
    """

    bound = None

    def bind(self, session, backend):
        self.bound = (session, backend)
        self.backend = backend


def test_takeOverAdoptsTheSessionWithAMirrorOfThisCluster():
    """
    Taking a session over from a dead owner reopens its backend link (the
    same backend, with the resume headers and the new epoch), registers the
    session here with a L{Mirror} of this cluster at the record's epoch and
    origin, binds the link to it, and counts the takeover.
    """
    from gateway.sessionmap._shared import SessionRecord

    clock = Clock()
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    opener = FakeOpener(pool)
    registry = SessionRegistry(
        SessionConfig(), clock, FakeSessionMap(clock), opener=opener,
        cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B", opener=opener))
    cluster = registry.cluster
    record = SessionRecord(
        sid="s1", secret="h", pool="p", backend="b1", target=b"/chat", headers={"X-Session-Id": "s1"},
        origin=None, owner="A", epoch=4, attached="", kind="", upRecv=2, upFwd=2, downSent=3,
        downAcked=1, closing=None, created=0.0)
    shared = cluster.shared
    shared.takeOver = lambda sid: succeed(("ok", record, "A"))
    shared.readDown = lambda sid, after: succeed([Data(2, b"d2", False), Data(3, b"d3", False)])
    results = []
    Deferred.fromCoroutine(cluster.takeover.takeOver("s1", "secret", 1)).addBoth(results.append)
    session = results[0]
    assert registry.sessions["s1"] is session
    assert isinstance(session.mirror, Mirror) and session.mirror.cluster is cluster
    assert session.mirror.epoch == 4
    assert session.upstream.origin == (b"/chat", {"X-Session-Id": "s1"}, None)
    name, target, headers, origin = opener.reopened[0]
    assert (name, target) == ("b1", b"/chat")
    assert headers["X-Session-Resumed"] == "1" and headers["X-Session-Epoch"] == "4"
    assert session.link.bound == (session, pool.backends[0])
    assert [m.seq for m in session.outbox.unacknowledged()] == [2, 3]
    assert cluster.takeover.count == 1 and cluster.health()["takeovers"] == 1


def test_takeOverLogNamesThePreviousOwner():
    """
    The takeover's log line names the node taken over from (the previous
    owner the takeover script reports), not this node, which the record
    names as owner once the script has run.
    """
    from gateway.sessionmap._shared import SessionRecord

    clock = Clock()
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1)], LeastConnections())
    opener = FakeOpener(pool)
    registry = SessionRegistry(
        SessionConfig(), clock, FakeSessionMap(clock), opener=opener,
        cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B", opener=opener))
    cluster = registry.cluster
    record = SessionRecord(
        sid="s1", secret="h", pool="p", backend="b1", target=b"/", headers={}, origin=None,
        owner="B", epoch=3, attached="B", kind="ws", upRecv=0, upFwd=0, downSent=0, downAcked=0,
        closing=None, created=0.0)
    cluster.shared.takeOver = lambda sid: succeed(("ok", record, "A"))
    cluster.shared.readDown = lambda sid, after: succeed([])
    with capturedLogs() as events:
        Deferred.fromCoroutine(cluster.takeover.takeOver("s1", "secret", 0))
    [line] = [e for e in events if "took session" in e.get("log_format", "")]
    from twisted.logger import formatEvent
    assert formatEvent(line).endswith("(epoch 3) from A")


def test_mirrorEndLeavesWhatAResumeHears():
    """
    A Mirror's end asks Redis to keep what a later resume of the session
    should hear, as the registry remembers it for its own resumes (4410
    for an expired session), unless ended sessions are not remembered
    (C{max_ended = 0}).
    """
    clock, cluster, session, transport = mirrored(grace=1.0)
    session.detach(transport, "gone")
    clock.advance(1.0)
    [end] = [w for w in cluster.shared.writes if w[0] == "end"]
    assert end[2] == (4410, "session ended: client did not resume")
    clock, cluster, session, transport = mirrored(maxEnded=0)
    session.end(1000, "done", CLOSE_UNKNOWN_SESSION)
    [end] = [w for w in cluster.shared.writes if w[0] == "end"]
    assert end[2] is None


def test_resumeOfASessionEndedElsewhereHearsWhatItsOwnerRemembered():
    """
    A resume, a send or a probe naming a session that ended on another
    node is refused with what that node left in Redis (4410 for an expired
    one), not 4404.
    """
    clock = Clock()
    registry = SessionRegistry(
        SessionConfig(), clock, FakeSessionMap(clock),
        cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B"))
    shared = registry.cluster.shared
    shared.attach = lambda sid, kind: succeed(("ended", 4410, "session ended: client did not resume"))
    shared.read = lambda sid: succeed(None)
    shared.ended = lambda sid: succeed((4410, "session ended: client did not resume"))
    hello = Hello("s1", "x", 0)
    for attempt in (registry.resume(hello, "ws"), registry.sendTarget("s1", "x"), registry.probed(hello)):
        failures = []
        Deferred.fromCoroutine(attempt).addErrback(failures.append)
        assert failures[0].check(ResumeRefused)
        assert (failures[0].value.code, str(failures[0].value)) == (4410, "session ended: client did not resume")


def test_takeOverForgetsTheDeadOwnersConnections():
    """
    The connection counts learnt from a node at the last heartbeat are
    forgotten as soon as a session is taken over from it (it is dead): the
    session, now counted here, is not counted a second time as that
    node's, so the mover sees its backend as loaded by one session.
    """
    from gateway.sessionmap._shared import SessionRecord

    clock = Clock()
    pool = Pool("p", [Backend("b1", "127.0.0.1", 1), Backend("b2", "127.0.0.1", 2)], LeastConnections())
    opener = FakeOpener(pool)
    registry = SessionRegistry(
        SessionConfig(), clock, FakeSessionMap(clock), opener=opener,
        cluster=lambda r: Cluster(r, r.sessionMap, clock, nodeTtl=3.0, node="B", opener=opener))
    cluster = registry.cluster
    shared = cluster.shared
    shared.exchangeCounts = lambda counts: succeed({"A": {"p/b1": 1}, "C": {"p/b1": 2, "p/b2": 1}})
    Deferred.fromCoroutine(cluster.exchangeCounts())
    assert [b.remote for b in pool.backends] == [3, 1]
    record = SessionRecord(
        sid="s1", secret="h", pool="p", backend="b1", target=b"/", headers={}, origin=None,
        owner="B", epoch=2, attached="B", kind="ws", upRecv=0, upFwd=0, downSent=0, downAcked=0,
        closing=None, created=0.0)
    shared.takeOver = lambda sid: succeed(("ok", record, "A"))
    shared.readDown = lambda sid, after: succeed([])
    Deferred.fromCoroutine(cluster.takeover.takeOver("s1", "secret", 0))
    assert "s1" in registry.sessions
    assert [b.remote for b in pool.backends] == [2, 1]


class ReceiptLink(FakeLink):
    """
    A fake link whose backend confirms what it read when the test says so.
    """

    confirmsReceipts = True

    def __init__(self):
        super().__init__()
        self.receipts = []

    def requestReceipt(self, seq):
        self.receipts.append(seq)


def test_mirrorRecordsAsDeliveredOnlyWhatTheBackendConfirmed():
    """
    The count of client messages recorded as delivered is what the backend
    confirmed; the messages accepted here and not yet confirmed are written
    with it (into the up mailbox, for a takeover to hand on), once each,
    and the client's ack waits for that write.
    """
    clock, registry, session, transport = makeSession()
    link = session.upstream.link = ReceiptLink()
    cluster = FakeCluster(registry, clock)
    session.mirror = Mirror(cluster, session, 3)
    shared = cluster.shared
    del transport.sent[:]
    session.packetReceived(Data(1, b"a", False))
    session.packetReceived(Data(2, b"b", False))
    assert shared.counts == [(1, 0, [1])]
    shared.pending.pop(0).callback(1)
    assert shared.counts[1] == (2, 0, [2])
    shared.pending.pop(0).callback(1)
    assert session.ackCount == 2
    clock.advance(0.05)
    session.backendReceipt(link, link.receipts[-1])
    session.packetReceived(Data(3, b"c", False))
    assert shared.counts[2] == (3, 2, [3])


def test_mirrorKeepsMessagesAcceptedBetweenBackendsUndelivered():
    """
    Client messages accepted while the session is between backends (a
    failover under way) are acknowledged once written to Redis with their
    payloads, and are not counted as delivered: the owner may die before
    any backend has them.
    """
    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    session.upstream.opener = SimpleNamespace(relink=lambda *args, **kwargs: Deferred())  # never done
    session.upstream.backendClosed(None, None, session.upstream.link)
    assert session.switching == "failover"
    session.packetReceived(Data(1, b"a", False))
    assert shared.counts == [(1, 0, [1])]
    shared.pending.pop(0).callback(1)
    assert session.ackCount == 1


def test_mirrorDoesNotWriteAgainWhatCameFromTheMailbox():
    """
    Messages handed on from the up mailbox (accepted by another node) are
    in Redis already, their count too: nothing is written for them at
    once.  What the backend confirms of them rides on the next backend
    messages' write, or is written alone L{DELIVERED_DELAY} later.
    """
    from gateway.cluster.mirror import DELIVERED_DELAY

    clock, registry, session, transport = makeSession()
    link = session.upstream.link = ReceiptLink()
    cluster = FakeCluster(registry, clock)
    session.mirror = Mirror(cluster, session, 3)
    session.mirror.upNotice(Data(1, b"a", False))
    assert cluster.shared.counts == [] and session.mirror.upWritten == 1
    clock.advance(0.05)  # the receipt is asked for 50 ms after the message
    session.backendReceipt(link, link.receipts[-1])
    session.messageFromBackend(b"echo", False)
    clock.advance(0)
    assert cluster.shared.writes[-1] == ("down", 1)
    assert session.mirror.deliveredWritten == 1
    clock.advance(DELIVERED_DELAY)
    assert cluster.shared.counts == []  # carried: nothing more to write

    session.mirror.upNotice(Data(2, b"b", False))
    clock.advance(0.05)
    session.backendReceipt(link, link.receipts[-1])
    clock.advance(DELIVERED_DELAY)
    assert cluster.shared.counts == [(2, 2, [])]


def test_mirrorWritesConfirmationsWithTheHeartbeat():
    """
    Confirmations that came after the last write go to Redis with the
    owner's heartbeat (the up mailbox is trimmed), not one write each.
    """
    clock, registry, session, transport = makeSession()
    link = session.upstream.link = ReceiptLink()
    cluster = FakeCluster(registry, clock)
    session.mirror = Mirror(cluster, session, 3)
    shared = cluster.shared
    session.packetReceived(Data(1, b"a", False))
    shared.pending.pop(0).callback(1)
    clock.advance(0.05)
    session.backendReceipt(link, link.receipts[-1])
    assert len(shared.counts) == 1
    session.mirror.touch(clock.seconds())
    assert shared.counts[1] == (1, 1, [])


def test_cutOffNodeStopsOnceItsLeaseExpires():
    """
    A node cut off from Redis (its heartbeats fail) pumps its sessions
    until its lease runs out (C{node_ttl} after its last heartbeat); then
    it stops: each client is closed with 4503 (it resumes elsewhere, where
    the session is taken over), reading from the backend pauses, client
    messages are held, and a resume here is refused with 4503 until a
    heartbeat confirms the node still owns the session; then it pumps
    again.
    """
    clock, registry, cluster, session, transport = cutOffCluster()
    cluster.shared.down = True
    clock.advance(1.0)
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.mayPump() and transport.closed is None
    assert session.mirror.holds(Data(1, b"a", False)) is False
    clock.advance(2.0)
    assert not cluster.mayPump()
    assert transport.closed[0] == 4503
    assert session.upstream.backendValve.closed
    assert session.mirror.holds(Data(1, b"a", False)) is True
    assert registry.here("s1") is None and registry.mustResume("s1")
    failures = []
    Deferred.fromCoroutine(registry.resume(Hello("s1", session.secret, 0), "ws")).addErrback(failures.append)
    assert failures[0].check(ResumeRefused) and failures[0].value.code == 4503

    cluster.shared.down = False
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.mayPump()
    assert not session.upstream.backendValve.closed
    assert registry.here("s1") is session


def test_sessionNeverWrittenToRedisKeepsPumping():
    """
    A session whose record was never written (opened while Redis was
    away) cannot have been taken over by another node: it keeps flowing
    after the node's lease has run out.
    """
    clock, registry, cluster, session, transport = cutOffCluster()
    session.mirror.recorded = False
    cluster.shared.down = True
    clock.advance(3.0)
    assert not cluster.mayPump()
    assert transport.closed is None
    assert session.mirror.holds(Data(1, b"a", False)) is False


def test_mirrorAcksNothingRedisDidNotRecord():
    """
    A count write that Redis could not take acknowledges nothing (a node
    that then loses its lease tells its client to resume elsewhere, where
    only what Redis has counts); it is tried again with the heartbeat, and
    the ack follows once written.  A long-polling send's wait for the write
    ends when it was tried, written or not.
    """
    from gateway.errors import SessionMapUnavailable

    clock, cluster, session, transport = mirrored()
    shared = cluster.shared
    del transport.sent[:]
    session.packetReceived(Data(1, b"a", False))
    tried = []
    session.settled().addCallback(tried.append)
    shared.pending.pop(0).errback(SessionMapUnavailable("away"))
    assert session.ackCount == 0 and transport.sent == [] and tried == [0]
    session.mirror.touch(clock.seconds())
    assert shared.counts[-1] == (1, 1, [])
    shared.pending.pop(0).callback(1)
    assert session.ackCount == 1 and [p.count for p in transport.sent] == [1]


def test_rebalanceTurnsTakenAtTheHeartbeat():
    """
    A node may rebalance a pool only while it has the pool's turn: asking
    says it wants it, the next heartbeat takes it (one call for every
    pool), the heartbeat after one without asking gives it up, and a lease
    run out loses it.
    """
    clock, registry, cluster, session, transport = cutOffCluster()
    calls = []

    def rebalanceTurns(wanted, release):
        calls.append((set(wanted), set(release)))
        return succeed(set(wanted))

    cluster.shared.rebalanceTurns = rebalanceTurns
    assert cluster.mayRebalance("p") is False
    Deferred.fromCoroutine(cluster._heartbeat())
    assert calls == [({"p"}, set())]
    assert cluster.mayRebalance("p") is True
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.turns.held == {"p"}
    Deferred.fromCoroutine(cluster._heartbeat())  # not asked since the last one
    assert calls[-1] == (set(), {"p"}) and cluster.mayRebalance("p") is False
    Deferred.fromCoroutine(cluster._heartbeat())
    assert cluster.mayRebalance("p") is True
    cluster.shared.down = True
    clock.advance(3.0)
    assert cluster.mayRebalance("p") is False
    heartbeats = len(calls)
    Deferred.fromCoroutine(cluster._heartbeat())
    assert len(calls) == heartbeats  # no Redis: nothing asked



def test_unstartedNodeStopsQuietly():
    """
    A node that never started (its session map could not) says nothing to
    Redis when it stops, where a started one says that it is gone.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(), clock, FakeSessionMap(clock))
    cluster = Cluster(registry, registry.sessionMap, clock, nodeTtl=3.0, node="A")
    left = []
    cluster.shared.leave = lambda: left.append("A") or succeed(None)
    stopped = cluster.stop()
    assert stopped.called and left == []
    cluster._announced = True
    cluster.stop()
    assert left == ["A"]
