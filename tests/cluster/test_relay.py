"""
L{gateway.cluster.relay.RelaySession} with a fake cluster and a Clock: its bounds
(messages waiting for Redis, how long a gap may last) and what happens at
them, without Redis.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from gateway.config import SessionConfig
from gateway.errors import LimitExceeded
from gateway.wire.protocol import CLOSE_UNAVAILABLE, Ack, Data, Welcome
from gateway.cluster.relay import GAP_PATIENCE, GAP_RETRY, RelaySession
from gateway.sessions.registry import SessionRegistry
from gateway.sessionmap._scripts import GAP
from gateway.sessionmap._shared import SessionRecord
from gateway.sessionmap.memory import MemorySessionMap
from tests.helpers import FakeTransport


class FakeShared:
    """
    The calls a relay makes to Redis: C{appendUp} answers what C{answer}
    says (a result, or a Deferred that never fires).
    """

    def __init__(self):
        self.appends: list[list[int]] = []
        #: The acknowledgements written: alone (C{("alone", n)}) or with
        #: an append (C{("append", n)}).
        self.acks: list[tuple[str, int]] = []
        self.answer = None
        self.detached = 0
        self.sessionTtl = 30.0
        #: Whether each append or acknowledgement refreshed the keys' expiry.
        self.refreshes: list[bool] = []

    def appendUp(self, sid, messages, acked=None, refresh=True):
        self.refreshes.append(refresh)
        self.appends.append([m.seq for m in messages])
        if acked is not None:
            self.acks.append(("append", acked))
        if self.answer is None:
            return Deferred()  # Redis is slow: never answers
        return succeed(self.answer(messages))

    def acked(self, sid, count, refresh=True):
        self.refreshes.append(refresh)
        self.acks.append(("alone", count))
        return succeed(1)

    def detach(self, sid):
        self.detached += 1
        return succeed(1)

    def readDown(self, sid, after):
        return succeed([])


class FakeCluster:
    def __init__(self, registry):
        self.registry = registry
        self.shared = FakeShared()
        self.relays = {}

    def writeFailed(self, failure):
        return None


def makeRelay(**config):
    """
    An attached relay of session C{s1} on a Clock.
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(**config), clock, MemorySessionMap(clock))
    cluster = FakeCluster(registry)
    record = SessionRecord(
        sid="s1", secret="x", pool="p", backend="b1", target=b"/", headers={}, origin=None,
        owner="A", epoch=1, attached="B", kind="ws", upRecv=0, upFwd=0, downSent=0,
        downAcked=0, closing=None, created=0.0)
    relay = RelaySession(cluster, "s1", "secret", record)
    cluster.relays["s1"] = relay
    transport = FakeTransport()
    relay.attach(transport, resumed=True)
    return clock, cluster, relay, transport


def test_messagesWaitingForRedisBounded():
    """
    While Redis has not answered, at most C{max_buffer_messages} client
    messages wait in the relay; one more is refused with L{LimitExceeded}
    (the transport closes the connection with 1009; the client resends what
    was not acknowledged when it resumes).
    """
    clock, cluster, relay, transport = makeRelay(maxBufferMessages=3)
    for seq in (1, 2, 3):
        relay.packetReceived(Data(seq, b"m", False))
    with pytest.raises(LimitExceeded):
        relay.packetReceived(Data(4, b"m", False))
    clock.advance(0)
    assert cluster.shared.appends == [[1, 2, 3]]  # one script call for the batch


def test_appendedAcknowledged():
    """
    Messages are acknowledged once Redis has them, duplicates skipped.
    """
    clock, cluster, relay, transport = makeRelay()
    cluster.shared.answer = lambda messages: (1, messages[-1].seq)
    relay.packetReceived(Data(1, b"a", False))
    relay.packetReceived(Data(2, b"b", False))
    clock.advance(0)
    clock.advance(0)
    assert relay.inbox.accepted == 2
    assert transport.sent[-1] == Ack(2)
    relay.packetReceived(Data(2, b"b", False))  # a resend
    clock.advance(0)
    assert cluster.shared.appends == [[1, 2]]


def test_gapRetriedThenClientResumes():
    """
    A gap (the message before is still being written through another node)
    is retried every L{GAP_RETRY} seconds; once it has lasted
    L{GAP_PATIENCE}, the client is told to resume with 4503 and the relay
    lets go of the session (nothing was acknowledged, so nothing is lost).
    """
    clock, cluster, relay, transport = makeRelay()
    cluster.shared.answer = lambda messages: (GAP, 0)
    relay.packetReceived(Data(2, b"b", False))
    clock.advance(0)
    retries = 0
    while transport.closed is None and clock.seconds() < GAP_PATIENCE * 2:
        clock.advance(GAP_RETRY)
        retries += 1
    assert transport.closed == (CLOSE_UNAVAILABLE, "messages went missing between gateway nodes; resume")
    assert GAP_PATIENCE <= clock.seconds() <= GAP_PATIENCE + 2 * GAP_RETRY
    assert len(cluster.shared.appends) == retries + 1
    assert relay.inbox.accepted == 0
    assert "s1" not in cluster.relays and cluster.shared.detached == 1


def test_gapFilledInTime():
    """
    A gap filled before L{GAP_PATIENCE} (the other node's write landed)
    goes through on a retry, and is acknowledged.
    """
    clock, cluster, relay, transport = makeRelay()
    answers = iter([(GAP, 0), (GAP, 1), (1, 2)])
    cluster.shared.answer = lambda messages: next(answers)
    relay.packetReceived(Data(2, b"b", False))
    clock.advance(0)
    clock.advance(GAP_RETRY)
    clock.advance(GAP_RETRY)
    clock.advance(0)
    assert transport.closed is None
    assert relay.inbox.accepted == 2
    assert transport.sent[0].__class__ is Welcome and transport.sent[-1] == Ack(2)


def test_relayFoldsTheAcknowledgement():
    """
    A relay's client acknowledgement rides on the append of the client
    messages of the same turn; one while an append is on its way goes
    with the next append, or alone once the appends are done.
    """
    clock, cluster, relay, _ = makeRelay()
    cluster.shared.answer = lambda messages: (1, messages[-1].seq)
    relay.downReceived(Data(1, b"d1", False))
    relay.downReceived(Data(2, b"d2", False))
    relay.packetReceived(Data(1, b"u1", False))
    relay.packetReceived(Ack(1))
    clock.advance(0)
    assert cluster.shared.appends == [[1]]
    assert cluster.shared.acks == [("append", 1)]
    relay.packetReceived(Ack(2))
    assert cluster.shared.acks == [("append", 1), ("alone", 2)]


def test_relayRefreshesTheExpiryWhenDue():
    """
    A relay keeps its own last refresh of the session's keys: its first
    write refreshes their expiry, the next ones not until a third of
    C{session_ttl} has passed; after an append that failed, the next
    write refreshes.
    """
    from gateway.cluster.expiry import REFRESH_EVERY
    from gateway.errors import SessionMapUnavailable
    from twisted.internet.defer import fail

    clock, cluster, relay, _ = makeRelay()
    shared = cluster.shared
    every = shared.sessionTtl * REFRESH_EVERY
    shared.answer = lambda messages: (1, messages[-1].seq)
    seq = 0
    for step in range(6):
        seq += 1
        relay.downReceived(Data(seq, b"d", False))
        relay.packetReceived(Data(seq, b"u", False))
        clock.advance(0)
        relay.packetReceived(Ack(seq))
        clock.advance(every / 2)
    assert shared.refreshes == [True, False, False, False, True, False, False, False, True,
                                False, False, False]

    appendUp = shared.appendUp
    shared.appendUp = lambda *args, **kwargs: fail(SessionMapUnavailable("away"))
    relay.packetReceived(Data(seq + 1, b"u", False))
    clock.advance(0)
    shared.appendUp = appendUp
    relay.downReceived(Data(seq + 1, b"d", False))
    relay.packetReceived(Ack(seq + 1))
    assert shared.refreshes[-1] is True
