"""
L{gateway.sessions.session} with fakes and a Clock: the session's timers and
arithmetic, without sockets.
"""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from gateway.errors import ProtocolError, ResumeRefused
from gateway.interfaces import IBackendLink, ISessionTransport
from gateway.wire.protocol import Ack, Close, Data, Hello, Welcome
from tests.helpers import FakeLink, FakeTransport, makeSession


def test_fakes_provide_interfaces():
    """
    The fakes provide the interfaces the session uses (so the tests exercise
    the real contract).
    """
    verifyObject(ISessionTransport, FakeTransport())
    verifyObject(IBackendLink, FakeLink())


def test_attach_welcomes_and_replays():
    """
    Attaching sends Welcome with the accepted count, then every
    unacknowledged message in order.
    """
    clock, registry, session, link = makeSession()
    session.messageFromBackend(b"a", False)
    session.messageFromBackend(b"b", True)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    welcome = transport.sent[0]
    assert isinstance(welcome, Welcome) and welcome.received == 0 and welcome.sid == session.sid
    assert transport.sent[1:] == [Data(1, b"a", False), Data(2, b"b", True)]


def test_client_data_handed_to_backend_once_and_acked_per_turn():
    """
    A client message reaches the backend once (a resend is dropped) and the
    acknowledgements of one reactor turn are coalesced into one.
    """
    clock, registry, session, link = makeSession()
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.dataReceived(Data(1, b"x", False))
    session.dataReceived(Data(2, b"y", True))
    session.dataReceived(Data(1, b"x", False))
    assert link.messages == [(b"x", False), (b"y", True)]
    clock.advance(0)
    assert transport.sent[1:] == [Ack(2)]
    with pytest.raises(ProtocolError):
        session.dataReceived(Data(5, b"gap", False))


def test_heartbeat_ack_and_silent_client():
    """
    After `heartbeat` seconds of sending nothing the session sends an ack;
    after `heartbeat_timeout` seconds of hearing nothing it aborts the
    transport (and waits for a resume).
    """
    clock, registry, session, link = makeSession(heartbeat=1.0, heartbeatTimeout=2.5)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    clock.advance(1.0)
    registry.sweep()
    assert transport.sent[-1] == Ack(0)
    clock.advance(1.0)
    registry.sweep()
    assert not transport.aborted
    clock.advance(0.5)
    registry.sweep()
    assert transport.aborted
    session.detach(transport, "dead")
    assert session.state == "detached" and link.closed is None


def test_grace_expiry_and_remembered_end():
    """
    A detached session ends after the grace period (backend closed 1001);
    resuming it then is refused with 4410, and an id never seen with 4404.
    """
    clock, registry, session, link = makeSession(grace=5.0)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.detach(transport, "gone")
    clock.advance(4.9)
    assert link.closed is None
    clock.advance(0.1)
    assert link.closed == (1001, "client did not resume")
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello(session.sid, session.secret, 0))
    assert caught.value.code == 4410
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello("unknown", "x", 0))
    assert caught.value.code == 4404


def test_buffer_bound_ends_session():
    """
    One message past max_buffer_messages ends the session: backend closed
    with 1008; an attached client is closed with 4413.
    """
    clock, registry, session, link = makeSession(maxBufferMessages=2)
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.messageFromBackend(b"1", False)
    session.messageFromBackend(b"2", False)
    assert link.closed is None
    session.messageFromBackend(b"3", False)
    assert link.closed == (1008, "replay buffer limit exceeded")
    assert transport.closed == (4413, "replay buffer limit exceeded")
    assert session.sid not in registry.sessions


def test_backend_close_delivered_then_session_ends():
    """
    When the backend closes, the close packet follows what it sent; the
    session ends (4000) once the client has acknowledged everything.
    """
    clock, registry, session, link = makeSession()
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    session.messageFromBackend(b"bye", False)
    session.backendClosed(4100, "done")
    assert transport.sent[-2:] == [Data(1, b"bye", False), Close(4100, "done")]
    assert session.state == "ending"
    session.ackReceived(Ack(1))
    assert transport.closed == (4000, "done")
    assert session.sid not in registry.sessions
