"""
The timers that keep a session's WebSocket honest in both directions
(docs/protocol.md, "Heartbeats"): the coalesced ack of what was received,
an ack after C{heartbeat} seconds of the client's silence, and the
detection of a gateway silent for C{2 * heartbeat + 1} seconds.

A L{Heartbeat} belongs to the session driver (L{gateway.client._driver}),
which starts it on a C{welcome} and stops it with the connection; what
to send and the deadlines are the engine's, read through it.  On
long-polling the outstanding poll carries the ack and is the heartbeat, so
only the immediate ack is used there.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from ..wire.protocol import Ack
from ._engine import SessionEngine
from ._state import shortId

__all__ = ["Heartbeat"]


class Heartbeat:
    """
    See the module docstring.
    """

    log = Logger()

    def __init__(
        self,
        engine: SessionEngine,
        clock: IReactorTime,
        send: Callable[[Ack], None],
        dead: Callable[[str], None],
    ) -> None:
        """
        @param send: sends an ack on the current connection.
        @param dead: gives the current connection up, with a one-line
            reason.
        """
        self._engine = engine
        self._clock = clock
        self._send = send
        self._dead = dead
        self._ackCall: IDelayedCall | None = None
        self._idleCall: IDelayedCall | None = None
        self._deadCall: IDelayedCall | None = None

    def start(self) -> None:
        """
        A session is open on a WebSocket: check for silence both ways.
        """
        heartbeat = self._engine.heartbeat
        if heartbeat > 0:
            self._idleCall = self._clock.callLater(heartbeat, self._idleCheck)
            self._deadCall = self._clock.callLater(self._engine.deadTimeout(), self._deadCheck)

    def stop(self) -> None:
        """
        The connection is gone: no timer is left.
        """
        for call in (self._ackCall, self._idleCall, self._deadCall):
            if call is not None and call.active():
                call.cancel()
        self._ackCall = self._idleCall = self._deadCall = None

    def scheduleAck(self) -> None:
        """
        Acknowledge at the end of this reactor turn (one ack for every
        message that arrives in it).
        """
        if self._ackCall is None:
            self._ackCall = self._clock.callLater(0, self._ackDue)

    def sendAck(self) -> None:
        """
        Acknowledge now, if the session is open on this connection.
        """
        call, self._ackCall = self._ackCall, None
        if call is not None and call.active():
            call.cancel()
        ack = self._engine.ack()
        if ack is not None:
            self._send(ack)

    def _ackDue(self) -> None:
        self._ackCall = None
        self.sendAck()

    def _idleCheck(self) -> None:
        engine = self._engine
        remaining = engine.lastSent + engine.heartbeat - self._clock.seconds()
        if remaining <= 0:
            self.sendAck()
            remaining = engine.heartbeat
        self._idleCall = self._clock.callLater(remaining, self._idleCheck)

    def _deadCheck(self) -> None:
        timeout = self._engine.deadTimeout()
        remaining = self._engine.lastReceived + timeout - self._clock.seconds()
        if remaining > 0:
            self._deadCall = self._clock.callLater(remaining, self._deadCheck)
            return
        self._deadCall = None
        self.log.warn(
            "nothing from the gateway for {timeout:g} s on session {sid}: reconnecting",
            timeout=timeout,
            sid=shortId(self._engine.sid),
        )
        self._dead(f"nothing received for {timeout:g} s")
