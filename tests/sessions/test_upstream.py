"""
L{gateway.sessions.upstream} with fakes and a Clock: backend receipts, flow
control on both hops, failover and moves, without sockets.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.backends.balancers import LeastConnections
from gateway.config import SessionConfig
from gateway.errors import NoBackendAvailable
from gateway.sessions.upstream import RECEIPT_DELAY, RETRY_DELAY
from gateway.backends.pool import Backend, Pool
from gateway.wire.protocol import CLOSE_SLOW, Ack, Close, Data, Failover, Hello, Welcome
from gateway.interfaces import IBackendLink, ISessionTransport
from gateway.sessions.registry import SessionRegistry
from gateway.sessionmap.memory import MemorySessionMap
from tests.helpers import FakeLink as SessionFakeLink
from tests.helpers import FakeTransport as SessionFakeTransport


class FakeTransport(SessionFakeTransport):
    """
    Records what the session sends and how often it pauses reading.
    """

    def __init__(self):
        super().__init__()
        self.pauses = 0
        self.resumes = 0

    def pauseReading(self):
        self.pauses += 1

    def resumeReading(self):
        self.resumes += 1


class PlainLink(SessionFakeLink):
    """
    A backend link that cannot confirm what it reads (C{confirmsReceipts}
    is false).
    """

    def __init__(self, backend):
        super().__init__()
        self.backend = backend
        self.bound = None

    def bind(self, session, backend):
        self.bound = (session, backend)
        self.backend = backend


class FakeLink(PlainLink):
    """
    A backend link that asks for receipts, finishes with a closing
    handshake and can be paused; it records every call.
    """

    confirmsReceipts = True

    def __init__(self, backend):
        super().__init__(backend)
        self.receipts = []
        self.finished = None
        self.pauses = 0
        self.resumes = 0

    def requestReceipt(self, seq):
        self.receipts.append(seq)

    def finishLink(self, code, reason):
        self.finished = (code, reason)

    def pauseReading(self):
        self.pauses += 1

    def resumeReading(self):
        self.resumes += 1


class FakeOpener:
    """
    Stands in for the factory's C{relink}: records every call (with the
    session's resume headers at that moment) and answers with the next of
    C{outcomes} (a C{(backend, link)} pair or an exception) or, when there
    is none, waits for the test to fire the call's Deferred.
    """

    def __init__(self):
        self.calls = []
        self.outcomes = []

    async def relink(self, session, prefer, avoid, window, force=False):
        d = Deferred()
        self.calls.append({
            "prefer": prefer, "avoid": avoid, "window": window, "force": force,
            "headers": session.upstream.resumeHeaders(), "result": d,
        })
        if self.outcomes:
            outcome = self.outcomes.pop(0)
            if isinstance(outcome, Exception):
                d.errback(outcome)
            else:
                d.callback(outcome)
        return await d


def makeSession(failover="replay", link=None, **config):
    """
    A registry on a Clock, with a fake opener, and one new session in a
    pool of two backends (b1 and b2), connected to b1 through C{link} (by
    default a L{FakeLink}).
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(**config), clock, MemorySessionMap(clock), opener=FakeOpener())
    b1 = Backend("b1", "127.0.0.1", 1)
    b2 = Backend("b2", "127.0.0.1", 2)
    pool = Pool("p", [b1, b2], LeastConnections())
    pool.failover = failover
    if link is None:
        link = FakeLink(b1)
    registry.reserve()
    session = registry.create(registry.newId(), pool, link)
    return clock, registry, session, link


def attached(session):
    """
    Attach a new L{FakeTransport} to C{session}, forgetting its welcome.
    """
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    assert isinstance(transport.sent[0], Welcome)
    del transport.sent[:]
    return transport


def send(session, *seqs):
    """
    The client sends data messages C{seqs}, each with payload C{b"mSEQ"}.
    """
    for seq in seqs:
        session.packetReceived(Data(seq, b"m%d" % seq, False))


def payloads(*seqs):
    """
    @return: what a link records for the messages C{seqs} of L{send}.
    """
    return [(b"m%d" % seq, False) for seq in seqs]


def test_fakesProvideInterfaces():
    """
    The fakes provide the interfaces the session drives, so that the tests
    exercise the real contract.
    """
    verifyObject(ISessionTransport, FakeTransport())
    verifyObject(IBackendLink, FakeLink(Backend("b", "127.0.0.1", 1)))
    verifyObject(IBackendLink, PlainLink(Backend("b", "127.0.0.1", 1)))


# Receipts.

def test_receiptConfirmsAfterDelay():
    """
    A client message handed to the backend stays unconfirmed until the
    backend answers the receipt ping, which is asked for RECEIPT_DELAY after
    the message (not before), for the last message written.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    send(session, 1)
    assert link.messages == payloads(1)
    assert [m.seq for m in session.upstream.unconfirmed] == [1]
    clock.advance(RECEIPT_DELAY / 2)
    assert link.receipts == []
    send(session, 2)
    clock.advance(RECEIPT_DELAY / 2)
    assert link.receipts == [2]
    session.backendReceipt(link, 2)
    assert list(session.upstream.unconfirmed) == [] and session.upstream.unconfirmedBytes == 0
    assert session.upstream.confirmed == 2
    clock.advance(1)
    assert link.receipts == [2]  # nothing left to confirm: no more pings


def test_receiptAtOnceAtHalfInflight():
    """
    Once half of max_inflight_messages is unconfirmed, the receipt ping goes
    at once, without waiting for RECEIPT_DELAY.
    """
    clock, registry, session, link = makeSession(maxInflightMessages=4)
    attached(session)
    send(session, 1)
    assert link.receipts == []
    send(session, 2)
    assert link.receipts == [2]
    clock.advance(RECEIPT_DELAY)
    assert link.receipts == [2]  # the delayed ping was cancelled


def test_staleReceiptChangesNothing():
    """
    A receipt for another sequence number than the one asked for, or from
    another link than the session's, confirms nothing; the awaited one
    then still does.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    send(session, 1, 2)
    clock.advance(RECEIPT_DELAY)
    assert link.receipts == [2]
    session.backendReceipt(link, 1)
    session.backendReceipt(link, 3)
    session.backendReceipt(FakeLink(link.backend), 2)
    assert [m.seq for m in session.upstream.unconfirmed] == [1, 2] and session.upstream.confirmed == 0
    session.backendReceipt(link, 2)
    assert list(session.upstream.unconfirmed) == [] and session.upstream.confirmed == 2


def test_nextReceiptAfterAnswer():
    """
    Messages written while a receipt is awaited are confirmed by the next
    ping, asked for once the first one is answered.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    send(session, 1)
    clock.advance(RECEIPT_DELAY)
    send(session, 2, 3)
    clock.advance(RECEIPT_DELAY)
    assert link.receipts == [1]  # one ping awaited at a time
    session.backendReceipt(link, 1)
    assert [m.seq for m in session.upstream.unconfirmed] == [2, 3]
    clock.advance(RECEIPT_DELAY)
    assert link.receipts == [1, 3]
    session.backendReceipt(link, 3)
    assert list(session.upstream.unconfirmed) == []


def test_linkWithoutReceiptsConfirmsOnWrite():
    """
    A link that cannot ask for receipts confirms each message as it is
    written: nothing is kept to be sent again.
    """
    b1 = Backend("b1", "127.0.0.1", 1)
    clock, registry, session, link = makeSession(link=PlainLink(b1))
    attached(session)
    send(session, 1, 2)
    assert link.messages == payloads(1, 2)
    assert list(session.upstream.unconfirmed) == [] and session.upstream.unconfirmedBytes == 0
    assert session.upstream.confirmed == 2
    clock.advance(1)


# Flow control.

def test_inflightBoundPausesClient():
    """
    At max_inflight_messages unconfirmed, reading from the client pauses
    (valve reason "inflight"); a receipt confirming them resumes it.
    """
    clock, registry, session, link = makeSession(maxInflightMessages=4)
    transport = attached(session)
    send(session, 1, 2, 3)
    assert not session.upstream.clientValve.closed and transport.pauses == 0
    send(session, 4)
    assert session.upstream.clientValve.reasons == {"inflight"} and transport.pauses == 1
    session.backendReceipt(link, link.receipts[-1])
    clock.advance(RECEIPT_DELAY)
    session.backendReceipt(link, link.receipts[-1])
    assert list(session.upstream.unconfirmed) == []
    assert not session.upstream.clientValve.closed and transport.resumes == 1


def test_inflightResumesAtHalf():
    """
    Reading from the client resumes once half of the unconfirmed messages
    are confirmed: with max_inflight_messages = 4, the receipt for message
    2 (asked for at half) leaves 2 unconfirmed, and reading resumes.
    """
    clock, registry, session, link = makeSession(maxInflightMessages=4)
    transport = attached(session)
    send(session, 1, 2, 3, 4)
    assert link.receipts == [2] and transport.pauses == 1
    session.backendReceipt(link, 2)
    assert len(session.upstream.unconfirmed) == 2
    assert not session.upstream.clientValve.closed
    assert transport.resumes == 1


def test_inflightBytesBoundPausesClient():
    """
    max_inflight_bytes bounds the unconfirmed payload bytes as
    max_inflight_messages bounds the messages: at it, reading from the
    client pauses; once fewer than half are unconfirmed, it resumes.
    """
    clock, registry, session, link = makeSession(maxInflightBytes=100)
    transport = attached(session)
    session.packetReceived(Data(1, b"x" * 60, False))
    assert link.receipts == [1]  # past half the bytes: asked at once
    assert not session.upstream.clientValve.closed
    session.packetReceived(Data(2, b"y" * 40, True))
    assert session.upstream.unconfirmedBytes == 100
    assert session.upstream.clientValve.reasons == {"inflight"} and transport.pauses == 1
    session.backendReceipt(link, 1)
    assert session.upstream.unconfirmedBytes == 40
    assert not session.upstream.clientValve.closed and transport.resumes == 1
    clock.advance(RECEIPT_DELAY)
    assert link.receipts == [1, 2]
    session.backendReceipt(link, 2)
    assert session.upstream.unconfirmedBytes == 0 and list(session.upstream.unconfirmed) == []


def test_inflightBoundClosesUnderSlowClose():
    """
    Under slow = "close", reaching max_inflight_messages ends the session:
    the client is closed with 4008, the backend link with 1008.
    """
    clock, registry, session, link = makeSession(maxInflightMessages=3, slow="close")
    transport = attached(session)
    send(session, 1, 2)
    assert transport.closed is None
    send(session, 3)
    assert transport.closed is not None and transport.closed[0] == CLOSE_SLOW == 4008
    assert link.closed is not None and link.closed[0] == 1008
    assert session.state == "ended" and session.sid not in registry.sessions
    assert transport.pauses == 0


def test_outboxHighWaterPausesBackend():
    """
    At three quarters of max_buffer_messages unacknowledged, reading from
    the backend pauses (valve reason "outbox"); acknowledgements down to
    half resume it, not before.
    """
    clock, registry, session, link = makeSession(maxBufferMessages=8)
    transport = attached(session)
    for i in range(5):
        session.messageFromBackend(b"d%d" % i, False)
    assert not session.upstream.backendValve.closed and link.pauses == 0
    session.messageFromBackend(b"d5", False)
    assert session.upstream.backendValve.reasons == {"outbox"} and link.pauses == 1
    assert [m.seq for m in transport.sent] == [1, 2, 3, 4, 5, 6]
    session.packetReceived(Ack(1))
    assert session.upstream.backendValve.closed and link.resumes == 0
    session.packetReceived(Ack(2))
    assert not session.upstream.backendValve.closed and link.resumes == 1


def test_outboxHighWaterClosesUnderSlowClose():
    """
    Under slow = "close", an attached client that lets three quarters of
    max_buffer_messages go unacknowledged is closed with 4008; the backend
    link with 1008.
    """
    clock, registry, session, link = makeSession(maxBufferMessages=8, slow="close")
    transport = attached(session)
    for i in range(5):
        session.messageFromBackend(b"d%d" % i, False)
    assert transport.closed is None
    session.messageFromBackend(b"d5", False)
    assert transport.closed is not None and transport.closed[0] == CLOSE_SLOW
    assert link.closed is not None and link.closed[0] == 1008
    assert session.state == "ended" and link.pauses == 0


def test_resumeAcknowledgingAllResumesBackend():
    """
    A detached session whose replay buffer passed the high-water mark has
    stopped reading from the backend; a resume whose received count
    acknowledges everything empties the buffer, and reading resumes.
    """
    clock, registry, session, link = makeSession(maxBufferMessages=8)
    transport = attached(session)
    session.detach(transport, "gone")
    for i in range(6):
        session.messageFromBackend(b"d%d" % i, False)
    assert session.upstream.backendValve.reasons == {"outbox"} and link.pauses == 1
    assert registry.find(Hello(session.sid, session.secret, 6)) is session
    session.attach(FakeTransport(), resumed=True)
    assert len(session.outbox) == 0
    assert not session.upstream.backendValve.closed and link.resumes == 1


def test_pausedClientPausedOnAttach():
    """
    A transport attaching while reading from the client is paused is paused
    at once; the one it replaced is resumed.
    """
    clock, registry, session, link = makeSession(maxInflightMessages=2)
    first = attached(session)
    send(session, 1, 2)
    assert first.pauses == 1
    second = FakeTransport()
    session.attach(second, resumed=True)
    assert first.resumes == 1 and second.pauses == 1


# Failover.

def test_replayAfterDrop():
    """
    After a drop, the session fails over: client messages meanwhile are
    accepted and acknowledged but reach no link; once the new link is
    bound, it gets every unconfirmed message again, in order.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    b1, b2 = session.pool.backends
    send(session, 1, 2)
    clock.advance(RECEIPT_DELAY)
    session.backendReceipt(link, 2)
    send(session, 3)
    session.backendClosed(None, None, link)
    assert session.switching == "failover" and session.link is None
    assert session.failovers == 1
    send(session, 4, 5)
    clock.advance(0)
    assert transport.sent[-1] == Ack(5)
    assert link.messages == payloads(1, 2, 3)
    calls = registry.opener.calls
    assert len(calls) == 1
    newLink = FakeLink(None)
    calls[0]["result"].callback((b2, newLink))
    assert newLink.bound == (session, b2)
    assert session.link is newLink and session.switching is None
    assert newLink.messages == payloads(3, 4, 5)
    assert session.backend is b2
    clock.advance(RECEIPT_DELAY)
    assert newLink.receipts == [5]
    session.backendReceipt(newLink, 5)
    assert list(session.upstream.unconfirmed) == []
    assert transport.closed is None


def test_resumeHeaders():
    """
    The next backend connection's headers say it resumes the session: the
    client messages the backend had before those sent again, and the
    backend messages the gateway received.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    for payload in (b"a", b"b", b"c"):
        session.messageFromBackend(payload, False)
    send(session, 1, 2)
    clock.advance(RECEIPT_DELAY)
    session.backendReceipt(link, 2)
    send(session, 3, 4)
    session.backendClosed(1006, "", link)
    headers = registry.opener.calls[0]["headers"]
    assert headers["X-Session-Resumed"] == "1"
    assert headers["X-Session-Delivered"] == "2"
    assert headers["X-Session-Received"] == "3"
    assert session.upstream.resumeHeaders() == headers


def test_sameBackendFirstWithinWindow():
    """
    Within failover_window, each attempt goes to the backend that dropped
    (prefer, with the seconds left of the window); after it, anywhere
    (prefer None).  Attempts repeat every RETRY_DELAY while none succeeds,
    and a later success ends the failover.
    """
    clock, registry, session, link = makeSession()
    b1, b2 = session.pool.backends
    session.pool.failoverWindow = 0.5
    opener = registry.opener
    opener.outcomes = [NoBackendAvailable("down")] * 3
    session.backendClosed(None, None, link)
    assert [(c["prefer"], c["avoid"], c["window"]) for c in opener.calls] == [(b1, None, 0.5)]
    clock.advance(RETRY_DELAY)
    assert [(c["prefer"], c["window"]) for c in opener.calls[1:]] == [(b1, 0.25)]
    clock.advance(RETRY_DELAY)
    assert [(c["prefer"], c["window"]) for c in opener.calls[2:]] == [(None, None)]
    clock.advance(RETRY_DELAY / 2)
    assert len(opener.calls) == 3
    clock.advance(RETRY_DELAY / 2)
    assert len(opener.calls) == 4
    newLink = FakeLink(None)
    opener.calls[3]["result"].callback((b2, newLink))
    assert session.link is newLink and session.switching is None
    clock.advance(10 * RETRY_DELAY)
    assert len(opener.calls) == 4


def test_failoverTimeoutEndsSession():
    """
    When no backend can be had within failover_timeout, the session ends as
    if its backend had closed: the client gets a close packet with 1011
    (the connection dropped without a close code), then its connection ends.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    session.pool.failoverTimeout = 1.0
    opener = registry.opener
    opener.outcomes = [NoBackendAvailable("down")] * 100
    session.backendClosed(None, None, link)
    for _ in range(3):
        clock.advance(RETRY_DELAY)
    assert session.switching == "failover" and transport.closed is None
    assert len(opener.calls) == 4
    clock.advance(RETRY_DELAY)
    assert len(opener.calls) == 5
    assert session.switching is None
    assert transport.sent[-1] == Close(1011, "the backend went away")
    assert transport.closed is not None and transport.closed[0] == 4000
    assert session.sid not in registry.sessions
    clock.advance(10)
    assert len(opener.calls) == 5


def test_failoverTimeoutKeepsBackendCode():
    """
    A backend that went away with a failover code (here 1012, service
    restart) and never came back: the close packet carries its code and
    reason; the session waits in "ending" for the client's acknowledgements.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    session.messageFromBackend(b"last", False)
    session.pool.failoverTimeout = RETRY_DELAY
    registry.opener.outcomes = [NoBackendAvailable("down")] * 2
    session.backendClosed(1012, "restarting", link)
    clock.advance(RETRY_DELAY)
    assert transport.sent[-1] == Close(1012, "restarting")
    assert session.state == "ending" and transport.closed is None


@pytest.mark.parametrize("code", [1000, 4000])
def test_normalCloseDoesNotFailOver(code):
    """
    A backend closing with 1000 or 4000 ends the session: no failover, the
    session is "ending" until the client acknowledges what it was sent.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    session.messageFromBackend(b"bye", False)
    session.backendClosed(code, "done", link)
    assert session.switching is None and session.state == "ending"
    assert registry.opener.calls == []
    assert transport.sent[-1] == Close(code, "done")


def test_closePolicyDoesNotFailOver():
    """
    Under the pool's failover = "close", a drop ends the session like a
    backend close.
    """
    clock, registry, session, link = makeSession(failover="close")
    attached(session)
    session.messageFromBackend(b"x", False)
    session.backendClosed(None, None, link)
    assert session.switching is None and session.state == "ending"
    assert registry.opener.calls == []
    clock.advance(10)
    assert registry.opener.calls == []


def test_closeFromOldLinkIgnored():
    """
    A close reported by a link that no longer carries the session changes
    nothing.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    session.backendClosed(None, None, FakeLink(link.backend))
    assert session.link is link and session.switching is None
    assert registry.opener.calls == []


def test_endDuringFailoverStopsRetrying():
    """
    A session that ends while failing over (its client closed it) stops
    trying to reconnect.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    registry.opener.outcomes = [NoBackendAvailable("down")]
    session.backendClosed(None, None, link)
    session.packetReceived(Close(1000, "bye"))
    assert session.state == "ended" and transport.closed[0] == 4000
    clock.advance(10)
    assert len(registry.opener.calls) == 1


# The notify policy.

def test_notifyDoesNotResend():
    """
    Under failover = "notify", messages written to the dropped link and not
    confirmed are not sent again: the client gets a Failover packet naming
    them; messages accepted during the failover still go to the new link.
    """
    clock, registry, session, link = makeSession(failover="notify")
    transport = attached(session)
    b1, b2 = session.pool.backends
    send(session, 1)
    clock.advance(RECEIPT_DELAY)
    session.backendReceipt(link, 1)
    send(session, 2, 3)
    session.backendClosed(None, None, link)
    send(session, 4)
    headers = registry.opener.calls[0]["headers"]
    assert headers["X-Session-Delivered"] == "3"
    newLink = FakeLink(None)
    registry.opener.calls[0]["result"].callback((b2, newLink))
    assert newLink.messages == payloads(4)
    assert Failover(2, 3) in transport.sent
    assert [m.seq for m in session.upstream.unconfirmed] == [4]
    assert session.upstream.lost == 2


def test_notifyWaitsForAttach():
    """
    Under failover = "notify", a detached client gets the Failover packet
    when it attaches again, after its welcome.
    """
    clock, registry, session, link = makeSession(failover="notify")
    transport = attached(session)
    b1, b2 = session.pool.backends
    send(session, 1, 2)
    session.detach(transport, "gone")
    registry.opener.outcomes = [(b2, FakeLink(None))]
    session.backendClosed(None, None, link)
    assert session.switching is None
    assert session.upstream.pendingNotices == [Failover(1, 2)]
    assert Failover(1, 2) not in transport.sent
    again = FakeTransport()
    session.attach(again, resumed=True)
    assert isinstance(again.sent[0], Welcome)
    assert again.sent[1:] == [Failover(1, 2)]
    assert session.upstream.pendingNotices == []


# Moves.

def test_moveFinishesOldLinkThenRelinks():
    """
    move() closes the old link with 1001 through its closing handshake,
    still delivering what the backend sends; its clean close confirms every
    message written to it, and the next link is asked for at the target,
    avoiding the old backend.  Messages accepted meanwhile go to the new
    link.
    """
    clock, registry, session, link = makeSession()
    transport = attached(session)
    b1, b2 = session.pool.backends
    send(session, 1, 2)
    assert session.move(b2) is True
    assert session.switching == "move" and session.moves == 1
    assert link.finished is not None and link.finished[0] == 1001
    assert link.closed is None
    session.messageFromBackend(b"late", False)
    assert transport.sent[-1] == Data(1, b"late", False)
    send(session, 3)
    assert link.messages == payloads(1, 2)
    assert registry.opener.calls == []
    session.backendClosed(1001, "", link, clean=True)
    assert [m.seq for m in session.upstream.unconfirmed] == [3]
    calls = registry.opener.calls
    assert [(c["prefer"], c["avoid"], c["window"]) for c in calls] == [(b2, b1, None)]
    newLink = FakeLink(None)
    calls[0]["result"].callback((b2, newLink))
    assert newLink.bound == (session, b2) and newLink.messages == payloads(3)
    assert session.switching is None and session.state == "attached"


def test_moveFallsBackToOldBackend():
    """
    A move that finds no backend to go to goes back to the old one, even
    while it drains (force).
    """
    clock, registry, session, link = makeSession()
    attached(session)
    b1, b2 = session.pool.backends
    b1.drain()
    newLink = FakeLink(None)
    registry.opener.outcomes = [NoBackendAvailable("none"), (b1, newLink)]
    assert session.move(None)
    session.backendClosed(1001, "", link, clean=True)
    calls = registry.opener.calls
    assert [(c["prefer"], c["avoid"], c["force"]) for c in calls] == [(None, b1, False), (b1, None, True)]
    assert session.link is newLink and session.switching is None


def test_moveRefusedWhileSwitchingOrEnding():
    """
    move() starts nothing while the session is already between backends
    or is ending.
    """
    clock, registry, session, link = makeSession()
    attached(session)
    b1, b2 = session.pool.backends
    assert session.move(b2)
    assert session.move(b2) is False
    assert session.moves == 1 and registry.opener.calls == []

    clock, registry, session, link = makeSession()
    attached(session)
    session.backendClosed(None, None, link)
    assert session.move(b2) is False  # failing over

    clock, registry, session, link = makeSession()
    attached(session)
    session.messageFromBackend(b"x", False)
    session.backendEnded(4100, "done")
    assert session.state == "ending"
    session.link = link  # even with a link
    assert session.move(b2) is False
    assert link.finished is None
