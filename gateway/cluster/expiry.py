"""
When a writer of a shared session refreshes the expiry of the session's
keys in Redis (docs/architecture.md, "Several nodes").

A session's three keys live C{session_ttl} after their last refresh.
Refreshing them with every write cost three of the seven or so commands
each script ran; instead each writer keeps an L{Expiry}, the time of its
own last refresh of the session, and a write refreshes only when that is
older than L{REFRESH_EVERY} of C{session_ttl}, or unknown.  The owner's
L{gateway.cluster.mirror.Mirror} keeps one (its heartbeat refreshes an
idle session when due), and so does each
L{gateway.cluster.relay.RelaySession} of a node serving the client for
another owner: neither waits on the other's, so the keys live while either
writes, and the owner alone keeps an idle session's.  Writing the record
(a new session, or one written again) and taking a session over refresh
the keys too: the owner's last refresh is then that write's.

Whenever Redis may not hold what the writer last refreshed, the time is
forgotten and the next write refreshes: after a write that failed or
found the record gone, and when the owner checks its sessions again (Redis
came back or changed master, or the node was paused).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Expiry", "REFRESH_EVERY"]

#: The share of C{session_ttl} after which a writer refreshes the keys
#: with its next write, as the owner's heartbeat does for an idle session
#: (every C{node_ttl / 3}, at most C{session_ttl / 9}): the keys outlive
#: the owner's next refresh by more than half their lifetime.
REFRESH_EVERY = 1 / 3


class Expiry:
    """
    One writer's last refresh of one session's keys.

    @ivar at: when the last write that refreshed them was sent (by the
        writer's clock), or L{None} when unknown (the next write refreshes).
    """

    def __init__(self, clock: Any, sessionTtl: float, at: float | None = None) -> None:
        """
        @param clock: an L{IReactorTime}.
        @param sessionTtl: seconds the keys live after a refresh.
        @param at: when a write that refreshed them was sent, if known
            (the write that made the session, or took it over).
        """
        self.clock = clock
        self.every = sessionTtl * REFRESH_EVERY
        self.at = at

    def due(self, now: float | None = None) -> bool:
        """
        Whether the write about to be sent is to refresh the keys' expiry:
        if so, it counts as the last refresh from now on (until L{doubt}).
        The time is that of sending, before Redis runs it, so the keys
        live at least C{session_ttl} past it.

        @param now: the clock's time, if just read.
        """
        if now is None:
            now = self.clock.seconds()
        if self.at is not None and now - self.at < self.every:
            return False
        self.at = now
        return True

    def refreshed(self, at: float) -> None:
        """
        A write sent at C{at} refreshed the keys (it succeeded).
        """
        self.at = at

    def doubt(self) -> None:
        """
        Redis may not hold the last refresh (a write failed, or the record
        was gone, or Redis came back or changed master): the next write
        refreshes.
        """
        self.at = None
