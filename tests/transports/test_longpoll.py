"""
Tests for L{gateway.transports.longpoll}: how a long-polling answer is
written, and which acks answer a held poll.  (What a long-polling request
costs to read is tested with the bounded request, in tests/test_web.py.)
"""

from __future__ import annotations

import json
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from zope.interface.verify import verifyObject

from gateway.config import SessionConfig
from gateway.interfaces import ISessionTransport
from gateway.metrics import NoMetrics
from gateway.wire.protocol import Ack, Inbox, Outbox
from gateway.transports.longpoll import PollingTransport, _respond
from gateway.web import BoundedRequest, BoundedSite


def test_responseIsCompactJSON():
    """
    A long-polling answer is compact JSON, with its length.
    """
    site = BoundedSite(Resource(), maxBodyBytes=1024, parseForms=False)
    channel = DummyChannel()
    channel.site = site
    request = BoundedRequest(channel)
    request.method = b"POST"
    request.clientproto = b"HTTP/1.1"
    _respond(request, 200, {"packets": [{"t": "ack", "n": 3}]})
    written = channel.transport.written.getvalue()
    head, body = written.split(b"\r\n\r\n", 1)
    assert body == b'{"packets":[{"t":"ack","n":3}]}'
    assert b"Content-Length: %d" % len(body) in head


class FakeSession:
    """
    What a L{PollingTransport} reads of its session: the two counts.
    """

    def __init__(self) -> None:
        self.inbox = Inbox()
        self.outbox = Outbox(100, 1 << 20)


class FakePolling:
    """
    What a L{PollingTransport} reads of the long-polling front end.
    """

    def __init__(self, clock: Clock) -> None:
        self.factory = SimpleNamespace(reactor=clock, metrics=NoMetrics())
        self.config = SessionConfig()


def heldPoll():
    """
    @return: a clock, a polling transport with a poll held (nothing to
        send yet), and that poll's request.
    """
    clock = Clock()
    session = FakeSession()
    transport = PollingTransport(FakePolling(clock), session)
    request = DummyRequest([b""])
    request._disconnected = False  # as twisted.web's own requests have it
    transport.hold(request, 0)
    assert not request.finished
    return clock, session, transport, request


def test_ackInSendAnswerNotPolled():
    """
    When a send's answer tells the client the gateway's new count, the
    session's ack for those messages does not answer the held poll too:
    the poll waits for something new.
    """
    clock, session, transport, request = heldPoll()
    session.inbox.accepted = 3  # a send accepted 3 messages
    transport.ackAnswered(0)
    transport.pushControl(Ack(3))  # the session's ack, on the next turn
    clock.advance(0)
    assert not request.finished
    assert not transport.worthAnswering(0)


def test_heartbeatAckStillAnswersPoll():
    """
    After that, an ack with the same count (a heartbeat) answers the held
    poll, so that the client knows the gateway is alive.
    """
    clock, session, transport, request = heldPoll()
    session.inbox.accepted = 3
    transport.ackAnswered(0)
    transport.pushControl(Ack(3))
    transport.pushControl(Ack(3))  # heartbeat
    clock.advance(0)
    assert request.finished
    assert json.loads(b"".join(request.written)) == {"packets": [{"t": "ack", "n": 3}]}


def test_ackNotInSendAnswerPolled():
    """
    An ack whose count no send has answered (messages accepted otherwise)
    answers the held poll.
    """
    clock, session, transport, request = heldPoll()
    session.inbox.accepted = 2
    transport.pushControl(Ack(2))
    clock.advance(0)
    assert json.loads(b"".join(request.written)) == {"packets": [{"t": "ack", "n": 2}]}


def test_providesTheSessionTransport():
    """
    A polling transport is an L{ISessionTransport} of kind C{"poll"}:
    letting go of its session answers the held poll with nothing (a poll is
    no connection of its own), and registering a producer does nothing (it
    buffers nothing).
    """
    clock, session, transport, request = heldPoll()
    verifyObject(ISessionTransport, transport)
    assert transport.kind == "poll"
    transport.registerFlow(object())
    transport.letGo()
    assert transport.session is None and json.loads(request.written[-1]) == {"packets": []}


def test_sessionBoundIs503WithRetryAfter():
    """
    An C{open} refused at a session bound (a L{SessionLimit}, carrying
    its C{retryAfter}) is answered 503 with C{"code": 4503}, C{"retry_after"}
    and C{Retry-After}; any other L{LimitExceeded} stays 413 / 1009
    without Retry-After.
    """
    from twisted.python.failure import Failure

    from gateway.errors import LimitExceeded, SessionLimit
    from gateway.transports.longpoll import LongPolling

    polling = LongPolling.__new__(LongPolling)
    polling.factory = SimpleNamespace(metrics=NoMetrics())
    site = BoundedSite(Resource(), maxBodyBytes=1024, parseForms=False)

    def answer(error):
        channel = DummyChannel()
        channel.site = site
        request = BoundedRequest(channel)
        request.method = b"POST"
        request.clientproto = b"HTTP/1.1"
        polling._failed(Failure(error), request)
        head, body = channel.transport.written.getvalue().split(b"\r\n\r\n", 1)
        return head, json.loads(body)

    error = SessionLimit("this address holds its maximum of 2 sessions", 2)
    head, body = answer(error)
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 2" in head
    assert body["code"] == 4503 and body["retry_after"] == 2 and body["status"] == 503
    head, body = answer(LimitExceeded("too big"))
    assert head.startswith(b"HTTP/1.1 413 ") and b"Retry-After" not in head
    assert body["code"] == 1009
