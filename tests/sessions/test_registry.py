"""
L{gateway.sessions.registry} with fakes and a Clock: the node's bound on
sessions, resumes and their refusals, the records in the session map and
the memory of ended sessions, without sockets.
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.backends.pool import Pool
from gateway.config import SessionConfig
from gateway.errors import ResumeRefused
from gateway.sessionmap.memory import MemorySessionMap
from gateway.sessions.registry import SessionRegistry
from gateway.wire.protocol import Close, Hello
from tests.helpers import FakeLink, FakeTransport, makeSession


def test_resume_checks():
    """
    A resume needs the right secret (4403) and a received count between
    what was acknowledged and what was sent (4409); a good one drops what
    the client has.
    """
    clock, registry, session, link = makeSession()
    for payload in (b"1", b"2", b"3"):
        session.messageFromBackend(payload, False)
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello(session.sid, "wrong", 0))
    assert caught.value.code == 4403
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello(session.sid, session.secret, 4))
    assert caught.value.code == 4409
    assert registry.find(Hello(session.sid, session.secret, 2)) is session
    assert [m.seq for m in session.outbox.unacknowledged()] == [3]
    with pytest.raises(ResumeRefused) as caught:
        registry.find(Hello(session.sid, session.secret, 1))
    assert caught.value.code == 4409


def test_max_sessions():
    """
    The registry refuses a reservation past max_sessions.
    """
    clock, registry, session, link = makeSession(maxSessions=1)
    with pytest.raises(Exception) as caught:
        registry.reserve()
    assert "maximum of 1 sessions" in str(caught.value)


def test_session_record_written():
    """
    The session map holds a record of each live session (pool, backend,
    state, node) and drops it when the session ends.
    """
    clock, registry, session, link = makeSession()
    transport = FakeTransport()
    session.attach(transport, resumed=False)
    record = registry.sessionMap.getSession(session.sid).result
    assert record["backend"] == "b1" and record["state"] == "attached" and record["pool"] == "p"
    assert record["created"] == 0 and record["updated"] == 0
    session.closeReceived(Close(1000, "bye"))
    assert registry.sessionMap.getSession(session.sid).result is None


def test_ended_sessions_remembered_within_bound():
    """
    Past max_ended the oldest ended session is forgotten: resuming it then
    gets 4404 (unknown) instead of 4410 (expired).
    """
    clock = Clock()
    registry = SessionRegistry(SessionConfig(maxEnded=1), clock, MemorySessionMap(clock))
    ended = []
    for _ in range(2):
        link = FakeLink()
        registry.reserve()
        session = registry.create(registry.newId(), Pool("p", [link.backend], None), link)
        session.end(1001, "client did not resume", 4410)
        ended.append(session.sid)
    codes = []
    for sid in ended:
        with pytest.raises(ResumeRefused) as caught:
            registry.find(Hello(sid, "x", 0))
        codes.append(caught.value.code)
    assert codes == [4404, 4410]
