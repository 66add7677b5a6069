"""
Fakes of the shared-session store and of a session map that offers it,
shared by the cluster's tests.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from gateway.sessionmap._ring import HashRing
from gateway.sessionmap.memory import MemorySessionMap


def fakeShard(name: str = "fake") -> SimpleNamespace:
    """
    What the cluster reads of one shard's map: its name, clock, timeout,
    counts of commands and master changes.
    """
    return SimpleNamespace(name=name, reactor=Clock(), timeout=1.0, commandsIssued=0, masterChanges=0)


class FakeShared:
    """
    The shared-session store as a mirror writes to it: each write is
    recorded, and the count writes (C{forwarded}) wait for the test.
    """

    def __init__(self):
        self.writes = []
        #: Each count write: (accepted, delivered, seqs of the messages written with it).
        self.counts = []
        self.pending: list[Deferred] = []
        self.maps = (fakeShard(),)
        self.ring = HashRing(["fake"])
        self.sessionTtl = 30.0

    def shardOf(self, sid):
        return 0

    def _write(self, *call):
        self.writes.append(call)
        return succeed(1)

    def appendDown(self, sid, epoch, message):
        return self._write("down", message.seq)

    def forwarded(self, sid, epoch, count, delivered=None, messages=()):
        self.writes.append(("forwarded", count))
        self.counts.append((count, delivered, [m.seq for m in messages]))
        d = Deferred()
        self.pending.append(d)
        return d

    def detach(self, sid):
        return self._write("detach")

    def acked(self, sid, count):
        return self._write("acked", count)

    def relinked(self, sid, epoch, backend):
        return self._write("relinked", backend)

    def closing(self, sid, epoch, code, reason):
        return self._write("closing", code)

    def end(self, sid, epoch, code, reason, tombstone=None):
        return self._write("end", code, tombstone)

    def liveNodeInfo(self, limit=256):
        return succeed({})

    def readUp(self, sid, after):
        return succeed([])

    def liveNodeInfo(self, limit=256):
        return succeed({})


class FakeSessionMap(MemorySessionMap):
    """
    A memory map that also offers shared sessions, as the Redis map does.
    """

    nodeTtl = 3.0
    nodeId = "A"
    masterChanges = 0

    def sharedSessions(self, node, sessionTtl, nodeTtl):
        return FakeShared()
