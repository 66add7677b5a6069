"""
C{python -m gateway.client URL}: a wscat-like debugging tool on
L{SessionClient}.

Each line of standard input is sent as a text message (a trailing CR is
dropped; bytes that are not UTF-8 are replaced).  Each message received is
written to standard output on a line of its own: text as it is, binary as
C{[binary, hex] } followed by its bytes in hexadecimal.  State changes go to
standard error.  The session survives dropped connections.  At the end of
the input, the tool waits until everything sent is acknowledged, closes the
session and exits 0; it exits 1 with a one-line message when the session
ends with an error (for instance, could not be created).  C{--transport}
chooses WebSocket, long-polling, or (the default) WebSocket with a fallback
to long-polling.

Backpressure: when the send buffer is full, reading standard input pauses
until the gateway has acknowledged what was sent.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, TextIO

from twisted.internet.defer import Deferred, race
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ._session import TRANSPORTS, SessionClient
from ._state import (
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClosed,
    StateDetail,
    shortId,
)

__all__ = ["main", "run", "LineSender", "formatMessage", "formatState", "parseArguments"]

PROG = "python -m gateway.client"


def parseArguments(argv: list[str]) -> argparse.Namespace:
    """
    @return: the parsed command line.
    @raise SystemExit: for a bad one (after printing the usage).
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Send stdin lines over a txgateway.v1 session, print what comes back.",
    )
    parser.add_argument("url", help="ws:// or wss:// (or http:// or https://) URL of a gateway route")
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="auto",
        help="auto: WebSocket, falling back to long-polling (and upgrading back when it"
        " can); websocket or polling: that transport only (default auto)",
    )
    parser.add_argument(
        "--max-delay",
        type=float,
        default=10.0,
        metavar="S",
        help="longest wait between reconnection attempts, in seconds (default 10)",
    )
    parser.add_argument(
        "--expect",
        type=int,
        default=0,
        metavar="N",
        help="at the end of input, also wait until N messages have been received"
        " (replies still on their way when the session is closed are not shown)",
    )
    args = parser.parse_args(argv)
    if args.expect < 0:
        parser.error("--expect must be 0 or more")
    if args.max_delay < 0.1:
        parser.error("--max-delay must be at least 0.1")
    return args


def formatMessage(payload: str | bytes, isBinary: bool) -> bytes:
    """
    @return: the output line of a received message: text as UTF-8, binary
        as C{[binary, hex] } and hexadecimal digits.
    """
    if isBinary:
        return b"[binary, hex] " + payload.hex().encode("ascii") + b"\n"
    return payload.encode("utf-8") + b"\n"


def formatState(state: ClientState, detail: StateDetail, sessionId: str | None) -> str:
    """
    @return: the line written to standard error for a state change, such as
        C{open: session 1a2b3c4d… resumed over polling} or
        C{reconnecting: connection lost; next attempt in 0.42 s}.
    """
    parts: list[str] = []
    if state is ClientState.open:
        if detail.reset:
            parts.append(
                f"new session {shortId(sessionId)}, the old one could not be resumed"
                f" ({detail.code}): {detail.dropped} unacknowledged messages lost"
            )
        elif detail.resumed:
            parts.append(f"session {shortId(sessionId)} resumed")
        else:
            parts.append(f"session {shortId(sessionId)}")
        if detail.transport is not None:
            parts[-1] += f" over {detail.transport}"
    elif state is ClientState.reconnecting:
        if detail.reset:
            parts.append(f"session lost, {detail.dropped} unacknowledged messages dropped")
        if detail.error:
            parts.append(detail.error.rstrip("."))
        if detail.delay is not None:
            parts.append(f"next attempt in {detail.delay:.2f} s")
    elif state is ClientState.closed:
        if detail.error:
            parts.append(detail.error)
        if detail.code is not None:
            parts.append(f"code {detail.code}" + (f" {detail.reason!r}" if detail.reason else ""))
        if detail.dropped:
            parts.append(f"{detail.dropped} messages not delivered")
    return f"{PROG}: {state.value}" + (": " + "; ".join(parts) if parts else "") + "\n"


def formatUpgrade(delay: float, why: str | None) -> str:
    """
    @return: the line written to standard error when, on long-polling, the
        next try to move to a WebSocket is scheduled, such as C{on
        long-polling: WebSocket unavailable (the gateway answered HTTP 403);
        next try in 4.2 s}.
    """
    return (f"{PROG}: on long-polling: WebSocket unavailable" + (f" ({why})" if why else "")
            + f"; next try in {delay:.1f} s\n")


@implementer(IHalfCloseableProtocol)
class LineSender(LineReceiver):
    """
    Sends the lines of standard input through a L{SessionClient}, and
    writes what the client receives to standard output.

    @ivar ended: fires with None at the end of the input (once every line
        is in the client's send buffer), or with a one-line error.
    @ivar lost: fires when standard output is closed (everything written).
    """

    delimiter = b"\n"
    log = Logger()

    def __init__(
        self, client: Any, maxLineBytes: int, report: Callable[[str], object], expect: int = 0
    ) -> None:
        """
        @param client: a L{SessionClient} (or anything with C{send} and
            C{whenAcknowledged}).
        @param maxLineBytes: the longest line accepted.
        @param report: writes a line to standard error.
        @param expect: messages to have received before ending.
        """
        self.expect = expect
        self.received = 0
        self.client = client
        self.MAX_LENGTH = maxLineBytes
        self.report = report
        self.ended: Deferred[str | None] = Deferred()
        self.lost: Deferred[None] = Deferred()
        self._held: str | None = None
        self._inputEnded = False

    def messageReceived(self, payload: str | bytes, isBinary: bool) -> None:
        """
        Write a received message to standard output (an C{onMessage}
        callback).
        """
        if self.transport is not None:
            self.transport.write(formatMessage(payload, isBinary))
        self.received += 1
        if self._inputEnded and self.received == self.expect:
            self._maybeEnded()

    def lineReceived(self, line: bytes) -> None:
        """
        Send one line.
        """
        if line.endswith(b"\r"):
            line = line[:-1]
        self._offer(line.decode("utf-8", "replace"))

    def _offer(self, text: str) -> None:
        try:
            self.client.send(text)
        except SendBufferFull:
            self._held = text
            self.pauseProducing()
            d = self.client.whenAcknowledged()
            d.addCallbacks(self._drained, self._notDrained)
            d.addErrback(self._logFailure)
        except MessageTooLarge as e:
            self.report(f"{PROG}: line not sent: {e}\n")
        except SessionClosed:
            self._end("the session ended before the end of the input")

    def _drained(self, _: object) -> None:
        text, self._held = self._held, None
        if text is not None:
            self._offer(text)
        if self._held is None and not self.ended.called:
            self.resumeProducing()
            self._maybeEnded()

    def _notDrained(self, failure: Failure) -> None:
        # SessionLost: the held line goes to the new session; SessionClosed:
        # the tool is ending anyway.
        if failure.check(SessionClosed):
            self._held = None
            return
        self._drained(None)

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        A line longer than the largest message: stop with an error.
        """
        self._end(f"an input line is longer than {self.MAX_LENGTH} bytes")

    def readConnectionLost(self) -> None:
        """
        End of input: once every line is sent, L{ended} fires.
        """
        self._inputEnded = True
        self._maybeEnded()

    def writeConnectionLost(self) -> None:
        """
        Standard output was closed: received messages are no longer shown.
        """

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Standard input and output are both closed.
        """
        self._end(None)
        if not self.lost.called:
            self.lost.callback(None)

    def _maybeEnded(self) -> None:
        if not self._inputEnded or self.paused or self._held is not None:
            return
        if self.received < self.expect:
            return
        rest = self.clearLineBuffer()
        if rest:
            self.lineReceived(rest)  # the last line, without a newline
            if self._held is not None:
                return
        self._end(None)

    def _end(self, error: str | None) -> None:
        if not self.ended.called:
            self.ended.callback(error)

    def _logFailure(self, failure: Failure) -> None:
        self.log.failure("sending standard input failed", failure)


async def run(
    reactor: Any,
    args: argparse.Namespace,
    stdin: int = 0,
    stdout: int = 1,
    stderr: TextIO | None = None,
) -> None:
    """
    Run the tool until the session is over.

    @raise SystemExit: with a one-line message when it ends with an error.
    """
    from twisted.internet.stdio import StandardIO

    err = stderr if stderr is not None else sys.stderr

    def report(line: str) -> None:
        err.write(line)
        err.flush()

    try:
        client = SessionClient(
            args.url, reactor=reactor, maxDelay=args.max_delay, transport=args.transport
        )
    except ValueError as e:
        raise SystemExit(f"{PROG}: {e}") from None
    sender = LineSender(client, client.maxMessageBytes, report, args.expect)
    client.onMessage(sender.messageReceived)

    def reportState(state: ClientState, detail: StateDetail) -> None:
        if state is not ClientState.closed or not detail.error:  # else: the exit message
            report(formatState(state, detail, client.sessionId))

    client.onState(reportState)
    client.onUpgradeScheduled(lambda delay, why: report(formatUpgrade(delay, why)))
    closed = client.nextState(ClientState.closed)
    client.connect().addErrback(lambda failure: None)  # reported by the closed state
    stdio = StandardIO(sender, stdin=stdin, stdout=stdout, reactor=reactor)

    index, result = await race([sender.ended, closed])
    error: str | None
    if index == 0:
        error = result
        detail = await (client.close() if error is None else _abort(client))
        error = error or detail.error
    else:
        _state, detail = result
        error = detail.error
    stdio.loseConnection()  # flush standard output
    await sender.lost
    if error:
        raise SystemExit(f"{PROG}: {error}")


def _abort(client: SessionClient) -> Deferred[StateDetail]:
    d = client.close()
    client.abort()
    return d


def main(reactor: Any, *argv: str) -> Deferred[None]:
    """
    The entry point for L{twisted.internet.task.react}.
    """
    args = parseArguments(list(argv))
    return Deferred.fromCoroutine(run(reactor, args))
