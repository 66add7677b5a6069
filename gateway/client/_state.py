"""
The values a L{SessionClient <gateway.client._session.SessionClient>}
shows the application: its states (with the one table of the changes
allowed between them), what comes with a state change, its errors, and its
reconnect delays.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from ..errors import GatewayError, LimitExceeded
from ..wire.protocol import shortId

__all__ = [
    "ClientState",
    "StateDetail",
    "SessionClosed",
    "SessionLost",
    "SendBufferFull",
    "MessageTooLarge",
    "Backoff",
    "UPGRADE_DELAY",
    "MAX_UPGRADE_DELAY",
    "UPGRADE_JITTER",
    "shortId",
]

#: In auto mode on long-polling, the bound of the delay before the first try
#: to move back to a WebSocket (seconds); it doubles with every failed try,
#: up to L{MAX_UPGRADE_DELAY}, and each delay is drawn from the upper
#: L{UPGRADE_JITTER} of its bound: tries after 2.5-5 s, 5-10 s, 10-20 s, ...,
#: then every 150-300 s.  A WebSocket that works starts the schedule again.
UPGRADE_DELAY = 5.0
MAX_UPGRADE_DELAY = 300.0
UPGRADE_JITTER = 0.5


class ClientState(enum.Enum):
    """
    Where a L{SessionClient} is.  The values are the names shared with the
    JavaScript client.
    """

    #: Before the first session is open.
    connecting = "connecting"
    #: A session is open on a live connection.
    open = "open"
    #: The connection was lost; waiting to connect again, or connecting.
    reconnecting = "reconnecting"
    #: For good: the session ended, or could not be had.
    closed = "closed"

    def mayBecome(self, other: ClientState) -> bool:
        """
        @return: a client in this state may change to C{other} (see
            L{_TRANSITIONS}).
        """
        return other in _TRANSITIONS[self]


#: Every state change a client may make: C{open} and C{reconnecting} are
#: entered again (a move to another transport, another failed attempt);
#: nothing goes back to C{connecting}, nothing leaves C{closed}.
_TRANSITIONS: dict[ClientState, frozenset[ClientState]] = {
    ClientState.connecting: frozenset(
        {ClientState.open, ClientState.reconnecting, ClientState.closed}
    ),
    ClientState.open: frozenset({ClientState.open, ClientState.reconnecting, ClientState.closed}),
    ClientState.reconnecting: frozenset(
        {ClientState.open, ClientState.reconnecting, ClientState.closed}
    ),
    ClientState.closed: frozenset(),
}


@dataclass(frozen=True)
class StateDetail:
    """
    What came with a state change (the C{detail} of C{onState}).

    @ivar resumed: (open) the session survived a dropped connection.
    @ivar reset: (open, reconnecting) the session could not be resumed: a
        new one is started, or was.  The gateway's half of the old session
        is gone, and so are the C{dropped} messages of this side.
    @ivar dropped: messages passed to C{send} that will never be
        delivered: unacknowledged when the session was lost (reset) or
        ended (closed).
    @ivar code: the close code that caused the change: the WebSocket close
        code, or, when the gateway ended the session with a C{close}
        packet, the backend's close code.
    @ivar reason: the close reason that goes with C{code}.
    @ivar error: (reconnecting, closed) a one-line description of what went
        wrong, None for an orderly end.
    @ivar delay: (reconnecting) seconds until the next connection attempt.
    @ivar transport: C{"websocket"} or C{"polling"}: (open) the transport
        the session is now on; (reconnecting) the one the next attempt will
        use; (closed) the last one.
    """

    resumed: bool = False
    reset: bool = False
    dropped: int = 0
    code: int | None = None
    reason: str | None = None
    error: str | None = None
    delay: float | None = None
    transport: str | None = None


class SessionClosed(GatewayError):
    """
    The client is closed, or closing: nothing more can be sent.

    @ivar detail: the L{StateDetail} of the C{closed} state, when reached.
    """

    def __init__(self, message: str, detail: StateDetail | None = None) -> None:
        super().__init__(message)
        self.detail = detail


class SessionLost(GatewayError):
    """
    The session could not be resumed: the messages it had not acknowledged
    are dropped (a L{Deferred} from L{SessionClient.whenAcknowledged} fails
    with this), and a new session is started.

    @ivar dropped: how many messages were dropped.
    """

    def __init__(self, message: str, dropped: int) -> None:
        super().__init__(message)
        self.dropped = dropped


class SendBufferFull(LimitExceeded):
    """
    C{send} would take the unacknowledged messages past
    C{maxBufferMessages} or C{maxBufferBytes}; nothing was sent.  Wait for
    acknowledgements (L{SessionClient.whenAcknowledged}) and try again.
    """


class MessageTooLarge(LimitExceeded):
    """
    The message is larger than C{maxMessageBytes}; nothing was sent.
    """


class Backoff:
    """
    Exponential backoff with jitter: the n-th delay in a row (from 0) is
    drawn from C{uniform(bound * (1 - jitter), bound)}, where C{bound} is
    C{min(maxDelay, initialDelay * 2 ** n)}.  C{jitter=1} is full jitter
    (reconnects: many clients that lost the same gateway spread out);
    C{jitter=0.5} keeps each delay at least half its bound, so that delays
    never shrink from one to the next until the cap (upgrades: a failure is
    remembered).
    """

    def __init__(
        self,
        initialDelay: float,
        maxDelay: float,
        uniform: Callable[[float, float], float],
        jitter: float = 1.0,
    ) -> None:
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
        self.uniform = uniform
        self.jitter = jitter
        self.failures = 0

    def bound(self) -> float:
        """
        @return: the upper bound of the next delay.
        """
        return min(self.maxDelay, self.initialDelay * 2 ** min(self.failures, 64))

    def next(self) -> float:
        """
        @return: the next delay, and count one more failure.
        """
        bound = self.bound()
        delay = self.uniform(bound * (1 - self.jitter), bound)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """
        A connection succeeded: start again from C{initialDelay}.
        """
        self.failures = 0
