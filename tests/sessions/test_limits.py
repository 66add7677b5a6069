"""
L{gateway.sessions.registry}'s bounds per client address (sessions held,
new sessions a second) and L{gateway.sessions.session}'s deadline for a
session opened by long-polling and never polled, on a Clock.
"""

from __future__ import annotations

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from gateway.wire.http1 import parseRequestHead
from gateway.backends.pool import Pool
from gateway.config import SessionConfig
from gateway.errors import LimitExceeded, ResumeRefused
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.registry import FULL_RETRY_AFTER, SessionRegistry
from gateway.sessions.states import SessionState
from gateway.wire.protocol import Hello
from tests.helpers import FakeLink, FakeTransport


class _Opener:
    """
    An opener whose backend links open at once (or fail, given C{error}).
    """

    def __init__(self) -> None:
        self.error: Exception | None = None
        self.links: list[FakeLink] = []

    def open(self, route, headers):
        if self.error is not None:
            d: Deferred = Deferred()
            d.errback(self.error)
            return d
        link = FakeLink()
        self.links.append(link)
        return succeed((link.backend, link, (b"/", {}, None)))


class _Route:
    pool = Pool("p", [], None)
    head = parseRequestHead(b"GET /chat HTTP/1.1\r\nHost: gateway.test\r\n\r\n")


def _registry(**config) -> tuple[Clock, SessionRegistry, _Opener]:
    clock = Clock()
    opener = _Opener()
    registry = SessionRegistry(SessionConfig(**config), clock, MemorySessionMap(clock), opener=opener)
    return clock, registry, opener


def _open(registry: SessionRegistry, address: str | None):
    """
    @return: the session opened for C{address}, or the L{LimitExceeded}
        raised.
    """
    d = Deferred.fromCoroutine(registry.open(_Route(), address))
    outcome: list = []
    d.addCallbacks(outcome.append, lambda f: outcome.append(f.trap(LimitExceeded) and f.value))
    return outcome[0]


def test_sessions_per_address():
    """
    An address holding max_sessions_per_ip sessions gets LimitExceeded with
    a retryAfter of FULL_RETRY_AFTER; another address is served; once one
    of the first address's sessions ends, it may open again, and an
    address holding none has no entry.
    """
    clock, registry, opener = _registry(maxSessionsPerIp=2)
    first = [_open(registry, "10.0.0.1") for _ in range(2)]
    refused = _open(registry, "10.0.0.1")
    assert isinstance(refused, LimitExceeded)
    assert refused.retryAfter == FULL_RETRY_AFTER
    assert "maximum of 2 sessions" in str(refused)
    assert not isinstance(_open(registry, "10.0.0.2"), LimitExceeded)
    first[0].end(1000, "done", 4404)
    assert not isinstance(_open(registry, "10.0.0.1"), LimitExceeded)
    for session in list(registry.sessions.values()):
        session.end(1000, "done", 4404)
    assert registry.held == {}


def test_failed_open_releases_address():
    """
    A session that could not be opened (no backend) is not counted against
    its address.
    """
    clock, registry, opener = _registry(maxSessionsPerIp=1)
    opener.error = LimitExceeded("not this one")  # any failure of the opener
    _open(registry, "10.0.0.1")
    assert registry.held == {} and registry.opening == 0
    opener.error = None
    assert not isinstance(_open(registry, "10.0.0.1"), LimitExceeded)


def test_open_rate_per_address():
    """
    An address opens open_burst_per_ip sessions at once, then
    max_opens_per_ip a second: past it LimitExceeded with retryAfter the
    whole seconds (at least 1) until a token is back; refusals cost no
    token; other addresses are served meanwhile.
    """
    clock, registry, opener = _registry(maxOpensPerIp=2, openBurstPerIp=3)
    for _ in range(3):
        assert not isinstance(_open(registry, "10.0.0.1"), LimitExceeded)
    refused = _open(registry, "10.0.0.1")
    assert isinstance(refused, LimitExceeded) and refused.retryAfter == 1
    assert "more than 2 sessions a second" in str(refused)
    assert not isinstance(_open(registry, "10.0.0.2"), LimitExceeded)
    clock.advance(0.5)
    assert not isinstance(_open(registry, "10.0.0.1"), LimitExceeded)
    assert isinstance(_open(registry, "10.0.0.1"), LimitExceeded)


def test_slow_rate_retry_after():
    """
    With one new session a second, the Retry-After is the seconds until the
    next token, rounded up.
    """
    clock, registry, opener = _registry(maxOpensPerIp=1, openBurstPerIp=1)
    _open(registry, "a")
    clock.advance(0.25)
    assert _open(registry, "a").retryAfter == 1


def test_rate_table_bounded():
    """
    The rate table forgets addresses whose bucket has refilled (at sweep,
    or when it grows past max_sessions), and never holds more than
    max_sessions entries.
    """
    clock, registry, opener = _registry(maxSessions=3, maxOpensPerIp=1, openBurstPerIp=2)
    for n in range(3):
        session = _open(registry, f"10.0.0.{n}")
        session.end(1000, "done", 4404)
    assert len(registry.opens.buckets) == 3
    clock.advance(1)  # every bucket refills: entries go
    session = _open(registry, "10.0.1.1")
    session.end(1000, "done", 4404)
    assert list(registry.opens.buckets) == ["10.0.1.1"]
    clock.advance(2)
    registry.sweep()
    assert len(registry.opens.buckets) == 0
    for n in range(5):  # nobody refills: the oldest go
        _open(registry, f"10.0.2.{n}").end(1000, "done", 4404)
        assert len(registry.opens.buckets) <= 3


def test_no_address_counts_against_none():
    """
    A session opened with no address (L{None}) counts against max_sessions
    only.
    """
    clock, registry, opener = _registry(maxSessionsPerIp=1, openBurstPerIp=1)
    for _ in range(3):
        assert not isinstance(_open(registry, None), LimitExceeded)
    assert registry.held == {}


def test_max_sessions_retry_after():
    """
    At max_sessions the refusal carries retryAfter FULL_RETRY_AFTER, for
    every address.
    """
    clock, registry, opener = _registry(maxSessions=1)
    _open(registry, "a")
    refused = _open(registry, "b")
    assert refused.retryAfter == FULL_RETRY_AFTER
    assert "maximum of 1 sessions" in str(refused)


def test_never_polled_ends():
    """
    A session told to await its first poll ends after attach_timeout: its
    backend link closes with 1001 "client never polled", and a resume gets
    4410 (expired).
    """
    clock, registry, opener = _registry(attachTimeout=3.0)
    session = _open(registry, "a")
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.awaitFirstPoll()
    clock.advance(2.9)
    assert session.state is SessionState.ATTACHED
    clock.advance(0.1)
    assert session.state is SessionState.ENDED
    assert opener.links[0].closed == (1001, "client never polled")
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello(session.sid, session.secret, 0))
    assert caught.value.code == 4410
    assert registry.held == {}


def test_polled_cancels_deadline():
    """
    A poll (L{polled}) ends the deadline: the session lives on past
    attach_timeout; a detach later starts the ordinary grace period.
    """
    clock, registry, opener = _registry(attachTimeout=3.0, grace=30.0)
    session = _open(registry, "a")
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.awaitFirstPoll()
    clock.advance(1)
    session.polled()
    clock.advance(10)
    assert session.state is SessionState.ATTACHED
    session.detach(transport, "gone")
    clock.advance(29)
    assert session.state is SessionState.DETACHED
    clock.advance(1)
    assert session.state is SessionState.ENDED
    assert opener.links[0].closed == (1001, "client did not resume")


def test_detach_before_first_poll_starts_grace_once():
    """
    A never-polled session whose transport detaches (its client taken for
    dead) waits the grace period, with one timer: the deadline's timer is
    cancelled, not left to fire as well.
    """
    clock, registry, opener = _registry(attachTimeout=3.0, grace=30.0)
    session = _open(registry, "a")
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.awaitFirstPoll()
    session.detach(transport, "gone")
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(29)
    assert session.state is SessionState.DETACHED


class _Ends:
    """
    An access log that keeps its records.
    """

    def __init__(self) -> None:
        self.records: list[dict] = []

    def connectionEnded(self, record: dict) -> None:
        self.records.append(record)


def test_access_record():
    """
    A session that ends gives the registry's access log one record: the
    address it was opened from, its path, pool and backend, the transport
    that last carried it, its duration, payload bytes and messages each way
    (from the session's own counters) and the close code the client got.
    """
    from gateway.wire.protocol import Data

    clock = Clock()
    ends = _Ends()
    registry = SessionRegistry(SessionConfig(), clock, MemorySessionMap(clock), opener=_Opener(),
                               accessLog=ends)
    session = _open(registry, "203.0.113.7")
    session.attach(FakeTransport(), False)
    clock.advance(4.25)
    session.dataReceived(Data(1, b"hello", False))
    session.messageFromBackend(b"hi", False)
    session.messageFromBackend(b"there", False)
    session.closeReceived(None)
    assert ends.records == [{
        "event": "session", "client": "203.0.113.7", "path": "/chat", "pool": "p", "backend": "b1",
        "mode": "session", "transport": "websocket", "duration": 4.25,
        "bytes_from_client": 5, "bytes_to_client": 7, "messages_from_client": 1, "messages_to_client": 2,
        "close_code": 4000, "reason": "client closed the session",
    }]
