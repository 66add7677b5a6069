"""
The session client's sans-IO engine: everything a L{SessionClient
<gateway.client.SessionClient>} decides that needs no reactor, no socket
and no timer.

A L{SessionEngine} keeps the session (its id and secret, the L{Inbox} of
what was received and the L{Outbox} of what is not acknowledged yet), the
client's L{ClientState} and the flags that say where the session is (opened
on this connection, closing, ended by the gateway), which transport the
next attempt uses, the two reconnect schedules (L{Backoff}): between
connection attempts, and between tries to move from long-polling back to a
WebSocket (with the reason the WebSocket is unavailable).  It turns
packets from the gateway into bookkeeping and answers (L{welcome},
L{dataReceived}, L{ackReceived}, L{closeReceived}), a lost connection into
a decision (L{lost}: L{Finish} or L{Retry}), and says what to send next
(L{hello}, L{message}, L{closeStep}).  Times come in as arguments; the
Twisted adapter (L{gateway.client._driver}) runs the timers and the
connections and tells the application.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from twisted.logger import Logger

from ..errors import ProtocolError
from ..wire.protocol import (
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_REFUSED,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    RESTART_CODES,
    Ack,
    Close,
    Data,
    Hello,
    Inbox,
    Outbox,
    Welcome,
)
from ._state import (
    UPGRADE_JITTER,
    Backoff,
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClosed,
    StateDetail,
    shortId,
)

__all__ = [
    "SessionEngine",
    "Finish",
    "Retry",
    "CloseStep",
    "WEBSOCKET",
    "POLLING",
    "TRANSPORTS",
    "closeError",
]

#: The transports, as C{SessionClient.transport} and C{StateDetail.transport}
#: name them.
WEBSOCKET = "websocket"
POLLING = "polling"
#: The values of the C{transport} keyword: C{auto} starts on WebSocket,
#: falls back to long-polling, and upgrades again when it can.
TRANSPORTS = ("auto", WEBSOCKET, POLLING)

#: HTTP answers to the opening handshake that retrying cannot fix: the
#: first session fails at once.  (408 and 429 are worth retrying.)
_RETRYABLE_HTTP = frozenset({408, 429})


@dataclass(frozen=True)
class Finish:
    """
    A decision of L{SessionEngine.lost}: stop for good, state C{closed}
    with C{detail}.
    """

    detail: StateDetail


@dataclass(frozen=True)
class Retry:
    """
    A decision of L{SessionEngine.lost}: connect again after a delay, state
    C{reconnecting} with C{detail} (None: "connection lost").

    @ivar dropped: when the session was lost with it (its messages
        dropped: the application's waiters fail), how many messages; else
        None.
    """

    detail: StateDetail | None
    dropped: int | None = None


class CloseStep:
    """
    What L{SessionEngine.closeStep} says a closing client does next.
    """

    #: Nothing yet (messages not acknowledged, no session open, or done).
    WAIT = "wait"
    #: No session to end: closed at once.
    FINISH = "finish"
    #: Send the close packet, and bound the wait for the gateway's end.
    SEND = "send"


def closeError(code: int | None, reason: str | None) -> str:
    """
    @return: the one-line error for a close by the gateway.
    """
    return f"closed by the gateway with {code}" + (f" ({reason})" if reason else "")


class SessionEngine:
    """
    See the module docstring.  Attributes are read by the adapter; only the
    engine's methods change them, except the two clocks' readings
    (C{lastSent}, C{lastReceived}) that the adapter notes as they happen.

    @ivar mode: the C{transport} keyword: C{auto}, C{websocket} or
        C{polling}.
    @ivar state: the current L{ClientState}; C{detail} its L{StateDetail}.
    @ivar started: the application called C{connect} (or C{close} with
        messages waiting): connections are being made.
    @ivar everOpened: some session was open once.
    @ivar closing: the application asked to close, or the client is closed.
    @ivar sid: the current session's id (None before the first welcome and
        while a lost session is being replaced); C{secret} its secret.
    @ivar inbox: what this session received; C{outbox} what it sent and
        the gateway has not acknowledged.
    @ivar heartbeat: the gateway's heartbeat (seconds; 0 for none).
    @ivar remoteClose: the gateway's C{close} packet, once received.
    @ivar transport: the transport of the current (or last) connection;
        C{nextTransport} the one of the next attempt.
    @ivar welcomed: the session is open on the current connection.
    @ivar upgrading: the current WebSocket came from an upgrade, and waits
        for welcome.
    @ivar closeSent: the close packet went out on the current connection.
    @ivar backoff: the reconnect delays; C{upgradeBackoff} the delays
        between upgrade attempts (L{UPGRADE_JITTER}: each at least half its
        bound), which only a WebSocket that works resets.
    @ivar webSocketError: in auto mode, why a WebSocket is unavailable: the
        failure of the WebSocket that made the client fall back to
        long-polling, then of the last upgrade; None once one works.
    """

    log = Logger()

    def __init__(
        self,
        mode: str,
        *,
        maxBufferMessages: int,
        maxBufferBytes: int,
        maxMessageBytes: int,
        connectTimeout: float,
        initialDelay: float,
        maxDelay: float,
        uniform: Callable[[float, float], float],
        upgradeDelay: float,
        maxUpgradeDelay: float,
    ) -> None:
        self.mode = mode
        self.maxBufferMessages = maxBufferMessages
        self.maxBufferBytes = maxBufferBytes
        self.maxMessageBytes = maxMessageBytes
        self.connectTimeout = connectTimeout
        self.backoff = Backoff(initialDelay, maxDelay, uniform)
        self.upgradeBackoff = Backoff(upgradeDelay, maxUpgradeDelay, uniform, UPGRADE_JITTER)
        self.webSocketError: str | None = None
        # When the next upgrade is due (the clock's seconds), once drawn: a
        # long-polling reconnect keeps it rather than draw a longer one.
        self._upgradeDue: float | None = None

        self.state = ClientState.connecting
        self.detail = StateDetail()
        self.started = False
        self.everOpened = False
        self.closing = False

        self.sid: str | None = None
        self.secret: str | None = None
        self.inbox = Inbox()
        self.outbox = Outbox(maxBufferMessages, maxBufferBytes)
        self.heartbeat = 0.0
        self._pendingReset: StateDetail | None = None
        self.remoteClose: Close | None = None

        # Whether long-polling ever opened a session.
        self.transport = POLLING if mode == POLLING else WEBSOCKET
        self.nextTransport = self.transport
        self._pollingWorked = False

        self.welcomed = False
        self.upgrading = False
        self.closeSent = False
        # A close packet went out on some connection: the session may be over
        # even if that connection died before the gateway's 4000 arrived.
        self._closePacketSent = False
        self.lastSent = 0.0
        self.lastReceived = 0.0

    # ------------------------------------------------------------------
    # States.

    def enter(self, state: ClientState, detail: StateDetail) -> StateDetail:
        """
        Change to C{state} (the transport in use fills C{detail.transport}
        when it has none).

        @return: the detail to report.
        """
        assert self.state.mayBecome(state), (self.state, state)
        if detail.transport is None:
            detail = replace(detail, transport=self.transport)
        self.state = state
        self.detail = detail
        return detail

    # ------------------------------------------------------------------
    # What to send.

    def hello(self, probe: bool = False) -> Hello:
        """
        @return: the hello that opens a new session, or resumes (or, with
            C{probe}, probes) the current one.
        """
        if self.sid is None:
            self.log.debug("asking for a new session")
            return Hello()
        if not probe:
            self.log.debug(
                "resuming session {sid} at {received}",
                sid=shortId(self.sid),
                received=self.inbox.accepted,
            )
        return Hello(self.sid, self.secret, self.inbox.accepted, probe)

    def message(self, payload: Any) -> Data:
        """
        Number an application message and keep it until acknowledged.

        @param payload: C{str} (text) or C{bytes} (binary).
        @return: its data packet, to send when the session is open.
        @raise TypeError: for any other payload.
        @raise SessionClosed: the client is closed or closing.
        @raise MessageTooLarge: the packet would exceed C{maxMessageBytes}.
        @raise SendBufferFull: the send buffer would exceed its bounds.
        """
        if isinstance(payload, str):
            data, isBinary = payload.encode("utf-8"), False
        elif isinstance(payload, (bytes, bytearray, memoryview)):
            data, isBinary = bytes(payload), True
        else:
            raise TypeError(f"send() takes str or bytes, not {type(payload).__name__}")
        if self.closing or self.remoteClose is not None or self.state is ClientState.closed:
            raise SessionClosed("the session is closed or closing", self.detail)
        size = len(data) + len(str(self.outbox.sent + 1)) + 1
        if size > self.maxMessageBytes:
            raise MessageTooLarge(
                f"a data packet of {size} bytes exceeds maxMessageBytes ({self.maxMessageBytes})"
            )
        if not self.outbox.room(len(data)):
            raise SendBufferFull(
                f"more than {self.maxBufferMessages} messages or "
                f"{self.maxBufferBytes} bytes would be unacknowledged"
            )
        return self.outbox.add(data, isBinary)

    def ack(self) -> Ack | None:
        """
        @return: the ack of everything received, when the session is open
            on the current connection.
        """
        return Ack(self.inbox.accepted) if self.welcomed else None

    def closeStep(self) -> str:
        """
        @return: what a closing client does now (a L{CloseStep}); C{SEND}
            counts the close packet as sent.
        """
        if not self.closing or self.closeSent or self.remoteClose is not None:
            return CloseStep.WAIT
        if self.state is ClientState.closed or len(self.outbox):
            return CloseStep.WAIT
        if self.sid is None:
            # No session to end (none yet, or a lost one not replaced yet).
            return CloseStep.FINISH
        if self.welcomed:
            self.closeSent = self._closePacketSent = True
            return CloseStep.SEND
        return CloseStep.WAIT

    # ------------------------------------------------------------------
    # Packets from the gateway.

    def resumes(self, welcome: Welcome) -> bool:
        """
        @return: C{welcome} resumes the session asked for.
        @raise ProtocolError: for a second welcome on one connection.
        """
        if self.welcomed:
            raise ProtocolError("second welcome")
        return self.sid is not None and welcome.resumed and welcome.sid == self.sid

    def welcome(self, welcome: Welcome, resumed: bool, polling: bool) -> StateDetail:
        """
        The session is open on the current connection (after L{resumes},
        and L{loseSession} when the gateway started a new one).

        @param polling: the connection is a long-polling link.
        @return: the detail of the C{open} state it brings.
        """
        self.outbox.ack(welcome.received)
        self.sid, self.secret = welcome.sid, welcome.secret
        self.heartbeat = welcome.heartbeat
        self.welcomed = True
        self.everOpened = True
        self.backoff.reset()
        self.log.info(
            "session {sid} {how} (heartbeat {heartbeat:g} s)",
            sid=shortId(self.sid),
            how="resumed" if resumed else "opened",
            heartbeat=welcome.heartbeat,
        )
        if polling:
            self._pollingWorked = True
        else:
            self.webSocketWorked()
        reset, self._pendingReset = self._pendingReset, None
        if reset is not None:
            detail = StateDetail(
                reset=True, dropped=reset.dropped, code=reset.code, reason=reset.reason
            )
        else:
            # An upgrade is no dropped connection: not "resumed", only a new
            # transport.
            detail = StateDetail(resumed=resumed and not self.upgrading)
        self.upgrading = False
        return detail

    def dataReceived(self, message: Data) -> Any:
        """
        @return: the payload of a fresh message (C{str} for text, C{bytes}
            for binary), now accepted; None for a duplicate (which is
            acknowledged all the same).
        @raise ProtocolError: for a message the gateway should not send.
        """
        if not self.welcomed:
            raise ProtocolError("data packet before welcome")
        if self.remoteClose is not None:
            raise ProtocolError("data packet after close")
        if not self.inbox.receive(message):
            return None
        self.inbox.accept()
        return message.payload if message.isBinary else message.payload.decode("utf-8")

    def ackReceived(self, ack: Ack) -> None:
        """
        @raise ProtocolError: before welcome, or beyond what was sent.
        """
        if not self.welcomed:
            raise ProtocolError("ack before welcome")
        self.outbox.ack(ack.count)

    def closeReceived(self, close: Close) -> None:
        """
        The backend ended the session: the client ends once it has
        acknowledged everything.

        @raise ProtocolError: before welcome.
        """
        if not self.welcomed:
            raise ProtocolError("close before welcome")
        self.log.info(
            "session {sid} ended by the backend ({code})", sid=shortId(self.sid), code=close.code
        )
        self.remoteClose = close

    # ------------------------------------------------------------------
    # Losing connections and sessions.

    def detached(self) -> None:
        """
        The current connection is forgotten.
        """
        self.welcomed = False
        self.upgrading = False
        self.closeSent = False

    def closedDetail(self, **fields: Any) -> StateDetail:
        """
        @return: the detail of a C{closed} state that drops what is not
            acknowledged.
        """
        return StateDetail(dropped=len(self.outbox), **fields)

    def handshakeRefusalIsFinal(self, status: int, polling: bool = False) -> bool:
        """
        @return: an HTTP C{status} answered to an opening handshake (or, with
            C{polling}, to a long-polling request) ends the client: a 4xx
            that retrying cannot fix, before any session was open; never
            for a WebSocket in auto mode (a proxy that refuses WebSockets may
            answer so: long-polling has the last word).
        """
        if not polling and self.mode == "auto":
            return False
        return not self.everOpened and 400 <= status < 500 and status not in _RETRYABLE_HTTP

    def lost(
        self,
        code: int | None,
        reason: str | None,
        error: str | None,
        localCode: int | None = None,
    ) -> Finish | Retry | None:
        """
        The connection is gone (already detached): decide, from how it
        ended, whether to resume, start a new session, or stop.

        @return: the decision; None when the client is closed already.
        """
        if self.state is ClientState.closed:
            return None
        self._chooseTransport(
            error or (closeError(code, reason) if code is not None else "connection closed")
        )
        dropped = len(self.outbox)
        if self.remoteClose is not None:
            close = self.remoteClose
            return Finish(StateDetail(dropped=dropped, code=close.code, reason=close.reason))
        if code == CLOSE_ENDED:
            return Finish(StateDetail(dropped=dropped, code=code, reason=reason))
        if code == CLOSE_TOO_BIG or localCode == CLOSE_TOO_BIG:
            who = "the gateway" if localCode == CLOSE_TOO_BIG else "this client"
            return Finish(
                StateDetail(
                    dropped=dropped,
                    code=CLOSE_TOO_BIG,
                    reason=reason,
                    error=error or f"a message was larger than {who} accepts (1009)",
                )
            )
        if code == CLOSE_SUPERSEDED:
            return Finish(
                StateDetail(
                    dropped=dropped,
                    code=code,
                    reason=reason,
                    error="the session was taken over by another connection (4001)",
                )
            )
        if code == CLOSE_REFUSED:
            # The backend refused the session: retrying gets the same answer.
            return Finish(StateDetail(dropped=dropped, code=code, reason=reason,
                                      error=reason or "the backend refused the session (4502)"))
        if code == CLOSE_ORIGIN_REFUSED:
            # This page's origin may not use the route: nor will it later.
            return Finish(StateDetail(dropped=dropped, code=code, reason=reason,
                                      error=reason or "this page's origin may not connect (4003)"))
        if code in RESTART_CODES or code == CLOSE_PROTOCOL_ERROR:
            if self.sid is None:
                return Retry(StateDetail(code=code, reason=reason, error=closeError(code, reason)))
            if self.closing:
                # After our close packet, "unknown" or "expired" means the
                # gateway did end the session as asked: no error.
                ended = self._closePacketSent and code in (CLOSE_UNKNOWN_SESSION, CLOSE_EXPIRED)
                return Finish(
                    StateDetail(
                        dropped=dropped, code=code, reason=reason,
                        error=None if ended else closeError(code, reason),
                    )
                )
            lostCount = self.loseSession(code, reason)
            return Retry(self._pendingReset, lostCount)
        if error is None:
            error = closeError(code, reason) if code is not None else "connection closed"
        if code == CLOSE_UNAVAILABLE:
            self.log.info("no backend available: trying again")
        return Retry(StateDetail(code=code, reason=reason, error=error))

    def _chooseTransport(self, why: str) -> None:
        """
        In auto mode, after a lost connection: a WebSocket that broke or
        never opened (C{why}, kept as C{webSocketError}) makes the next
        attempt use long-polling; a
        long-polling attempt that failed before long-polling ever worked
        makes it try WebSocket again (the gateway may not offer polling, or
        the network is down and either will do).
        """
        if self.mode != "auto":
            return
        if self.transport == WEBSOCKET:
            self.nextTransport = POLLING
            self.webSocketError = why
        elif not self._pollingWorked:
            self.nextTransport = WEBSOCKET

    def loseSession(self, code: int | None, reason: str | None) -> int:
        """
        The session cannot be resumed: drop what it did not acknowledge and
        start afresh (the next C{welcome} opens a new session).

        @return: how many messages were dropped.
        """
        dropped = len(self.outbox)
        self.log.info(
            "session {sid} lost ({code}): {dropped} unacknowledged messages dropped",
            sid=shortId(self.sid),
            code=code,
            dropped=dropped,
        )
        previous = self._pendingReset.dropped if self._pendingReset is not None else 0
        self._pendingReset = StateDetail(
            reset=True,
            dropped=previous + dropped,
            code=code,
            reason=reason,
            error=closeError(code, reason) if code is not None else reason,
        )
        self.sid = self.secret = None
        self.inbox = Inbox()
        self.outbox = Outbox(self.maxBufferMessages, self.maxBufferBytes)
        return dropped

    def reconnecting(self, detail: StateDetail | None, delay: float) -> StateDetail:
        """
        @return: the detail of the C{reconnecting} state of a retry after
            C{delay}.
        """
        return replace(detail or StateDetail(), delay=delay, transport=self.nextTransport)

    # ------------------------------------------------------------------
    # Timing (the adapter's timers ask).

    def deadTimeout(self) -> float:
        """
        @return: how long silence from the gateway may last on a WebSocket.
        """
        return 2 * self.heartbeat + 1

    def requestTimeout(self) -> float | None:
        """
        @return: the bound on a poll or a send: twice the heartbeat plus a
            round trip's allowance (C{connectTimeout}), as a poll may be
            held for the gateway's poll timeout (less than its heartbeat
            timeout); None when the gateway announced no heartbeat.
        """
        if self.heartbeat <= 0:
            return None
        return 2 * self.heartbeat + self.connectTimeout

    def upgradeDelay(self, now: float) -> float:
        """
        @param now: the clock's seconds.
        @return: seconds until the next try to move to a WebSocket: what is
            left of the delay drawn before (when long-polling reconnected
            meanwhile), or the upgrade backoff's next delay.
        """
        if self._upgradeDue is None:
            self._upgradeDue = now + self.upgradeBackoff.next()
        return max(0.0, self._upgradeDue - now)

    def upgradeStarted(self) -> None:
        """
        The try that was due has started: the next one gets a new delay.
        """
        self._upgradeDue = None

    def upgradeFailed(self, why: str) -> None:
        """
        The last try to move to a WebSocket failed (C{why}).
        """
        self.webSocketError = why

    def webSocketWorked(self) -> None:
        """
        A session is open on a WebSocket: the upgrade schedule starts again
        from its first delay.
        """
        self.upgradeBackoff.reset()
        self._upgradeDue = None
        self.webSocketError = None

    def upgradeWanted(self) -> bool:
        """
        @return: in auto mode, on an open session that is not ending, an
            upgrade to WebSocket is worth trying.
        """
        return (
            self.mode == "auto"
            and self.welcomed
            and not self.closing
            and self.remoteClose is None
        )
