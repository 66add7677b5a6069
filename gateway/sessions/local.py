"""
What a single gateway node does where a cluster of nodes would share:
null-object strategies for a session's mirror (L{NoMirror}) and for the
registry's cluster (L{SingleNode}).

With them, a session and the registry never test whether sessions are
shared: they ask their strategy, and on a single node the answer is what a
lone node would say (every message accepted may be acknowledged, every
session is here, the record is the session map's).  The cluster's own
strategies live in L{gateway.cluster}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..interfaces import ISessionCluster, ISessionMirror
from ..wire.protocol import CLOSE_UNKNOWN_SESSION

__all__ = ["NoMirror", "SingleNode"]


@implementer(ISessionMirror)
class NoMirror:
    """
    The mirror of a session no other node knows of: it writes nothing.
    One serves every session of a registry (it keeps no state).
    """

    #: Nobody else ever holds the client.
    remote = None

    def __init__(self, clock) -> None:
        self.clock = clock

    def ackable(self, accepted: int) -> int:
        """
        @return: C{accepted}: everything accepted may be acknowledged.
        """
        return accepted

    def whenRecorded(self) -> Deferred:
        """
        @return: L{Deferred} firing on the next turn of the reactor, so that
            one ack answers all the messages of a turn.
        """
        d: Deferred = Deferred()
        self.clock.callLater(0, d.callback, None)
        return d

    def settled(self) -> Deferred:
        """
        @return: a fired L{Deferred}: nothing is waiting.
        """
        return succeed(None)

    def holds(self, message) -> bool:
        """
        @return: L{False}: a single node hands every message on at once.
        """
        return False

    def attachedTo(self, node: str | None) -> None:
        """
        Nothing to record.
        """

    def detached(self) -> None:
        """
        Nothing to record.
        """

    def forwarded(self) -> Deferred:
        """
        @return: a fired L{Deferred}: nothing to write.
        """
        return succeed(None)

    def acked(self, count: int) -> None:
        """
        Nothing to record.
        """

    def down(self, message) -> None:
        """
        Nothing to record.
        """

    def relinked(self, backend: str) -> None:
        """
        Nothing to record.
        """

    def closing(self, code: int, reason: str) -> None:
        """
        Nothing to record.
        """

    def end(self, code: int, reason: str) -> None:
        """
        Nothing to record.
        """

    def stampEpoch(self, headers: dict[str, str]) -> None:
        """
        No epoch: only one node ever owns the session.
        """


@implementer(ISessionCluster)
class SingleNode:
    """
    The registry's strategy when no other node shares its sessions: every
    session is held here, and its record (backend, state) is written to the
    session map.
    """

    sharesSessions = False

    #: Nothing outside this node to be in trouble.
    healthy = True

    def __init__(self, registry: Any) -> None:
        """
        @param registry: the node's L{gateway.sessions.registry.SessionRegistry}.
        """
        self.registry = registry

    def health(self) -> dict[str, Any]:
        """
        @return: this node's id: it is the whole cluster.
        """
        return {"node": self.registry.node}

    def nodes(self) -> dict[str, Any]:
        """
        @return: this node alone, with its sessions.
        """
        return {"shared": False, "node": self.registry.node, "age": None, "nodes": [
            {"node": self.registry.node, "self": True,
             "sessions": len(self.registry.sessions), "relayed": 0}]}

    def start(self) -> Deferred:
        """
        @return: a fired L{Deferred}: nothing to join.
        """
        return succeed(None)

    def stop(self) -> Deferred:
        """
        @return: a fired L{Deferred}: nothing to leave.
        """
        return succeed(None)

    def newSessionHeaders(self, sid: str) -> dict[str, str]:
        """
        @return: C{X-Session-Id}.
        """
        return {"X-Session-Id": sid}

    async def register(self, session: Any, target: bytes, headers: dict[str, str],
                       origin: str | None) -> None:
        """
        Nobody else needs to know of a new session.
        """

    async def attachHere(self, session: Any, kind: str) -> None:
        """
        Every session is attached here.
        """

    async def resume(self, hello, kind: str) -> Any:
        """
        A session not held here is unknown (or ended).

        @raise gateway.errors.ResumeRefused: always, as the registry's
            C{find} says.
        """
        return self.registry.find(hello)

    async def lookup(self, sid: str, secret: str) -> Any:
        """
        A session not held here is unknown (or ended).

        @raise gateway.errors.ResumeRefused: always, as the registry's
            C{authenticate} says.
        """
        return self.registry.authenticate(sid, secret)

    def relayHere(self, sid: str | None) -> None:
        """
        @return: L{None}: nothing is relayed.
        """
        return None

    def probe(self, sid: str) -> None:
        """
        No other node holds a poll.
        """

    def recordState(self, session: Any) -> None:
        """
        Write the session's record (backend, state, node) to the session map.
        """
        registry = self.registry
        backend = session.backend
        record = {
            "pool": session.pool.name,
            "backend": backend.name if backend is not None else None,
            "state": session.state.value,
            "node": registry.node,
            "created": session.created,
            "updated": registry.clock.seconds(),
        }
        registry.write(registry.sessionMap.putSession(session.sid, record, registry.config.grace * 2))

    def forget(self, session: Any) -> None:
        """
        Drop the session's record from the session map.
        """
        registry = self.registry
        registry.write(registry.sessionMap.forgetSession(session.sid))

    def sweep(self, now: float) -> None:
        """
        Nothing is relayed.
        """

    def shutDown(self) -> None:
        """
        End every session: backends closed with 1001, clients with 1001.
        """
        for session in list(self.registry.sessions.values()):
            session.end(1001, "gateway shutting down", CLOSE_UNKNOWN_SESSION, clientCode=1001)
