"""
Fewer Redis round trips per message, with fakes and a Clock: the owner's
L{Mirror} writes a reactor turn's backend messages in one script call,
the client's acknowledgement folded in, in bounded runs, and in order
with its other writes.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred

from gateway.cluster.mirror import BATCH_BYTES, BATCH_MESSAGES
from gateway.wire.protocol import Data

from .fakes import mirrored


def test_turnsBackendMessagesInOneCall():
    """
    Backend messages numbered in one reactor turn are written in one call
    once the turn is over, with the client's acknowledgement of that turn.
    """
    clock, cluster, session, transport = mirrored()
    for payload in (b"a", b"b", b"c"):
        session.messageFromBackend(payload, False)
    session.ackReceived(SimpleNamespace(count=2))
    assert cluster.shared.writes == []
    clock.advance(0)
    assert cluster.shared.writes == [("down", 1, 2, 3, ("acked", 2))]
    assert [m.seq for m in transport.sent if isinstance(m, Data)] == [1, 2, 3]  # at once


def test_acknowledgementAlone():
    """
    An acknowledgement in a turn without backend messages is written
    alone, one write at a time: one that comes while it is on its way is
    written once it is done.
    """
    clock, cluster, session, _ = mirrored()
    session.messageFromBackend(b"a", False)
    session.messageFromBackend(b"b", False)
    clock.advance(0)
    pending: list[tuple[int, Deferred]] = []

    def acked(sid, count, refresh=True):
        d: Deferred = Deferred()
        pending.append((count, d))
        return d

    cluster.shared.acked = acked
    session.ackReceived(SimpleNamespace(count=1))
    clock.advance(0)
    session.ackReceived(SimpleNamespace(count=2))
    clock.advance(0)
    assert [count for count, _ in pending] == [1]
    pending[0][1].callback(1)
    clock.advance(0)
    assert [count for count, _ in pending] == [1, 2]


def test_runsBounded():
    """
    A turn's messages go in runs of at most L{BATCH_MESSAGES} messages and
    L{BATCH_BYTES} bytes, in order, the acknowledgement with the last.
    """
    clock, cluster, session, _ = mirrored(maxBufferMessages=1000, maxBufferBytes=10 * BATCH_BYTES)
    for _ in range(BATCH_MESSAGES * 2 + 1):
        session.messageFromBackend(b"x", False)
    session.ackReceived(SimpleNamespace(count=3))
    clock.advance(0)
    runs = cluster.shared.writes
    assert [len([s for s in w[1:] if isinstance(s, int)]) for w in runs] == [BATCH_MESSAGES, BATCH_MESSAGES, 1]
    assert [w[-1] for w in runs][-1] == ("acked", 3) and not any(isinstance(w[-1], tuple) for w in runs[:-1])
    del cluster.shared.writes[:]
    big = b"y" * (BATCH_BYTES // 2 + 1)
    for _ in range(3):
        session.messageFromBackend(big, False)
    clock.advance(0)
    assert [w[1:] for w in cluster.shared.writes] == [(130,), (131,), (132,)]


def test_otherWritesKeepTheirPlace():
    """
    Any other write first writes what the turn has gathered: Redis sees
    the backend messages before the close that followed them.
    """
    clock, cluster, session, _ = mirrored()
    session.messageFromBackend(b"a", False)
    session.messageFromBackend(b"b", False)
    session.mirror.closing(1000, "bye")
    assert [w[0] for w in cluster.shared.writes] == ["down", "closing"]
    assert cluster.shared.writes[0] == ("down", 1, 2)
    clock.advance(0)
    assert len(cluster.shared.writes) == 2


def test_fencedWritesNoBatch():
    """
    A session fenced in the turn its messages came writes none of them.
    """
    clock, cluster, session, _ = mirrored()
    session.messageFromBackend(b"a", False)
    session.fenced(True)
    clock.advance(0)
    assert [w for w in cluster.shared.writes if w[0] == "down"] == []
