"""
Flow control's moving part (docs/protocol.md, "Flow control"): a L{Valve}
pauses one side of a session while any reason to holds.

A session has two, kept by its L{gateway.sessions.upstream.Upstream}:
reading from the backend pauses while the client connection's write buffer
is full or the replay buffer is past its high-water mark; reading from the
client pauses while the backend connection's write buffer is full or too
many of its messages are unconfirmed.  A valve knows nothing of sessions:
it is given what to call to pause and to resume.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

__all__ = ["Valve"]

_OPEN: frozenset[str] = frozenset()


@implementer(IPushProducer)
class Valve:
    """
    Pauses one side of a session while any reason to holds.

    Every session has two, for its whole life, and they are nearly always
    open: the reasons are a frozenset, the empty one shared by all.

    @ivar reasons: why it is closed (empty when open).
    @ivar pauses: how many times it closed.
    """

    __slots__ = ("_pause", "_resume", "reasons", "pauses")

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume
        self.reasons: frozenset[str] = _OPEN
        self.pauses = 0

    @property
    def closed(self) -> bool:
        """
        Whether any reason holds it closed.
        """
        return bool(self.reasons)

    def close(self, reason: str) -> None:
        """
        Pause, for C{reason}.
        """
        reasons = self.reasons
        if reason in reasons:
            return
        self.reasons = reasons | {reason}
        if not reasons:
            self.pauses += 1
            self._pause()

    def open(self, reason: str) -> None:
        """
        C{reason} no longer holds: resume when no other does.
        """
        if reason in self.reasons:
            self.reasons = self.reasons - {reason} or _OPEN
            if not self.reasons:
                self._resume()

    def producerFor(self, reason: str) -> IPushProducer:
        """
        @return: a streaming producer to register with a consumer (a
            transport), closing this valve for C{reason} while the
            consumer's write buffer is full.
        """
        return _BufferFull(self, reason)


@implementer(IPushProducer)
class _BufferFull:
    """
    A consumer's full write buffer, as a reason for a L{Valve} to close.
    """

    __slots__ = ("valve", "reason")

    def __init__(self, valve: Valve, reason: str) -> None:
        self.valve = valve
        self.reason = reason

    def pauseProducing(self) -> None:
        self.valve.close(self.reason)

    def resumeProducing(self) -> None:
        self.valve.open(self.reason)

    def stopProducing(self) -> None:
        self.valve.open(self.reason)
