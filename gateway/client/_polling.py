"""
The client's long-polling adapter (docs/protocol.md, "Long-polling"): one
L{PollingLink} is one long-polling "connection" of a session, from its
C{txgw=open} request to the first request that fails.

A link has at most one poll outstanding (it carries the client's ack) and
at most one send in flight; packets written while a send is in flight wait
and go together in the next one, up to C{maxBatchMessages} packets and
C{maxBodyBytes} bytes.  Every request is a C{POST} with a JSON body sent as
C{text/plain}, through a L{twisted.web.client.Agent} whose persistent
connections the session's pool keeps.  Answers are read up to
C{maxAnswerBytes}.

The link only translates.  It reports to its owner, an L{IPollingOwner
<gateway.interfaces.IPollingOwner>} (the session's driver): the packets of
every answer (C{pollAnswered}), an HTTP error (C{pollRefused}), its end
(C{pollLost}, with the session close code of a C{closed} packet or a one-line
error), and that it has gone quiet after L{PollingLink.pause}
(C{pollIdle}).  Once it has failed or been stopped it reports nothing more.
"""

from __future__ import annotations

import json
import random
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from zope.interface import implementer

from .. import __version__
from ..errors import GatewayError, ProtocolError
from ..interfaces import IPollingOwner
from ..wire.protocol import (
    CLOSE_TOO_BIG,
    Ack,
    Close,
    Data,
    Hello,
    Packet,
    controlToJSON,
    dataToJSON,
    packetFromJSON,
)

__all__ = ["PollingLink", "Closed", "Refused", "AnswerTooLarge", "pollingURL", "decodeAnswer"]


@dataclass(frozen=True, slots=True)
class Closed:
    """
    The gateway's C{{"t":"closed"}} packet: it closed this transport with
    C{code}, as a WebSocket close with that code would.
    """

    code: int
    reason: str


class Refused(GatewayError):
    """
    The gateway answered a long-polling request with an HTTP error.

    @ivar status: the HTTP status.
    @ivar code: the session close code in the JSON body, or None when the
        body has none (not the gateway's session layer, or not JSON).
    @ivar reason: the body's C{message}, when there is one.
    """

    def __init__(self, status: int, code: int | None, reason: str | None) -> None:
        super().__init__(f"HTTP {status}" + (f" ({code})" if code is not None else ""))
        self.status = status
        self.code = code
        self.reason = reason


class AnswerTooLarge(GatewayError):
    """
    An answer's body is larger than C{maxAnswerBytes}.
    """


def pollingURL(url: str) -> str:
    """
    @return: the C{http://} or C{https://} URL of the same route as the
        C{ws://} or C{wss://} C{url} (other schemes unchanged).
    """
    scheme, sep, rest = url.partition("://")
    scheme = {"ws": "http", "wss": "https"}.get(scheme.lower(), scheme)
    return scheme + sep + rest


def decodeAnswer(body: bytes) -> list[Packet | Closed]:
    """
    Decode the body of a successful answer, C{{"packets": [...]}}.

    @raise ProtocolError: for anything else.
    """
    try:
        obj = json.loads(body)
    except ValueError:
        raise ProtocolError("the answer is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("packets"), list):
        raise ProtocolError("the answer has no list of packets")
    packets: list[Packet | Closed] = []
    for item in obj["packets"]:
        if isinstance(item, dict) and item.get("t") == "closed":
            code = item.get("code")
            reason = item.get("reason", "")
            if type(code) is not int or code < 0 or not isinstance(reason, str):
                raise ProtocolError("a closed packet needs an integer code")
            packets.append(Closed(code, reason[:1024]))
        else:
            packets.append(packetFromJSON(item))
    return packets


def _refusal(status: int, body: bytes) -> Refused:
    """
    @return: the L{Refused} for an HTTP error answer, with the session code
        of its JSON body when it has one.
    """
    code = reason = None
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        if type(obj.get("code")) is int and obj["code"] >= 0:
            code = obj["code"]
        if isinstance(obj.get("message"), str):
            reason = obj["message"][:1024]
    if code is None and status == 413:
        # A body too large, whoever says so (the gateway before reading it,
        # or a proxy): sending it again would fail again.
        code = CLOSE_TOO_BIG
    return Refused(status, code, reason)


@implementer(IBodyProducer)
class _BytesProducer:
    """
    A request body that is already in memory.
    """

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.length = len(body)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(self.body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _BoundedBody(Protocol):
    """
    Collects a response body of at most C{limit} bytes; past it, the
    connection is aborted and C{finished} fails with L{AnswerTooLarge}.
    """

    def __init__(self, finished: Deferred[bytes], limit: int) -> None:
        self.finished = finished
        self.limit = limit
        self.size = 0
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        if self.finished.called:
            return
        self.size += len(data)
        if self.size > self.limit:
            self.parts = []
            self.transport.stopProducing()
            self.finished.errback(AnswerTooLarge(f"an answer larger than {self.limit} bytes"))
            return
        self.parts.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.finished.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.finished.callback(b"".join(self.parts))
        else:
            self.finished.errback(reason)


def readBounded(response: Any, limit: int) -> Deferred[bytes]:
    """
    @return: a L{Deferred} for the body of C{response}, which fails with
        L{AnswerTooLarge} (before reading, when its length is announced)
        beyond C{limit} bytes; cancelling it aborts the connection.
    """
    if response.length is not UNKNOWN_LENGTH and response.length > limit:
        response.deliverBody(_Discard())
        return _failed(AnswerTooLarge(f"an answer of {response.length} bytes"))
    reader: _BoundedBody

    def cancel(d: Deferred) -> None:
        if reader.transport is not None:
            reader.transport.stopProducing()

    finished: Deferred[bytes] = Deferred(cancel)
    reader = _BoundedBody(finished, limit)
    response.deliverBody(reader)
    return finished


class _Discard(Protocol):
    """
    Drops a body it was decided not to read (and the connection with it).
    """

    def connectionMade(self) -> None:
        self.transport.stopProducing()


def _describe(failure: Failure) -> str:
    """
    @return: one line saying why a request failed (the first reason of
        the agent's wrapper exceptions, such as ResponseNeverReceived).
    """
    reasons = getattr(failure.value, "reasons", None)
    if reasons and isinstance(reasons[0], Failure):
        failure = reasons[0]
    message = " ".join(failure.getErrorMessage().split())
    return message or failure.type.__name__


def _failed(error: Exception) -> Deferred:
    d: Deferred = Deferred()
    d.errback(error)
    return d


class PollingLink:
    """
    One long-polling connection of a session: see the module docstring.

    @ivar owner: the L{IPollingOwner} this link reports to.
    @ivar stopped: the link failed or was stopped; it does nothing more.
    @ivar paused: no new poll or send is started (a transport upgrade
        waits for the link to go quiet).
    @ivar draining: no new poll is started; the link ends once what was
        written is sent (after the gateway's C{close} packet).
    """

    log = Logger()

    def __init__(
        self,
        owner: IPollingOwner,
        agent: Any,
        url: str,
        clock: IReactorTime,
        *,
        headers: dict[str, str] | None,
        ackCount: Callable[[], int],
        requestTimeout: Callable[[], float | None],
        maxBatchMessages: int,
        maxBodyBytes: int,
        maxAnswerBytes: int,
    ) -> None:
        """
        @param url: the C{http://} or C{https://} URL of the route.
        @param ackCount: how many data messages the client has received
            (what a poll acknowledges).
        @param requestTimeout: the bound on a poll or send (None: none).
        """
        self.owner = owner
        self._agent = agent
        self._url = url + ("&" if "?" in url else "?")
        self._clock = clock
        self._ackCount = ackCount
        self._requestTimeout = requestTimeout
        self._maxBatchMessages = maxBatchMessages
        self._maxBodyBytes = maxBodyBytes
        self._maxAnswerBytes = maxAnswerBytes
        self._headers = Headers({"Content-Type": ["text/plain"],
                                 "User-Agent": [f"txgateway.client/{__version__}"]})
        for name, value in (headers or {}).items():
            self._headers.setRawHeaders(name, [value])
        self._nonce = "%08x" % random.getrandbits(32)
        self._requests = 0
        self._credentials: bytes | None = None
        self._queue: deque[bytes] = deque()
        self._opening: Deferred | None = None
        self._polling: Deferred | None = None
        self._sending: Deferred | None = None
        self._flushCall: Any = None
        self._abortingPoll = False
        self.stopped = False
        self.paused = False
        self.draining = False

    # ------------------------------------------------------------------
    # What the owner does.

    def open(self, hello: Hello) -> None:
        """
        Send C{hello} with C{txgw=open}; the answer (welcome first) goes to
        the owner, which then calls L{start}.
        """
        body = json.dumps(controlToJSON(hello), separators=(",", ":")).encode("utf-8")
        d = self._opening = self._exchange("open", body, None)
        d.addCallbacks(self._opened, self._openFailed)
        d.addErrback(self._logFailure)

    def start(self, sid: str, secret: str) -> None:
        """
        The session is open on this link: poll, and send what was written.
        """
        prefix = json.dumps({"sid": sid, "secret": secret}, separators=(",", ":"))
        self._credentials = prefix[:-1].encode("utf-8")  # without its closing brace
        self._next()

    def write(self, packet: Data | Ack | Close) -> None:
        """
        Queue a packet for the next send.
        """
        if self.stopped:
            return
        obj = dataToJSON(packet) if isinstance(packet, Data) else controlToJSON(packet)
        self._queue.append(json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        if self._flushCall is None and self._sending is None:
            self._flushCall = self._clock.callLater(0, self._flushDue)

    def pause(self) -> None:
        """
        Start no new poll or send; the owner hears C{pollIdle} once
        nothing is outstanding.
        """
        self.paused = True
        self._next()

    def resume(self) -> None:
        """
        Undo L{pause}.
        """
        self.paused = False
        self._next()

    def drain(self) -> None:
        """
        Poll no more; end (C{pollLost} without a code) once everything
        written is sent.
        """
        self.draining = True
        self.paused = False
        self._next()

    def abortPoll(self) -> None:
        """
        Abort the outstanding poll, if any (an aborted poll loses nothing:
        its messages stay in the gateway's replay buffer).
        """
        if self._polling is not None:
            self._abortingPoll = True
            self._polling.cancel()

    @property
    def quiet(self) -> bool:
        """
        No request is outstanding.
        """
        return self._opening is None and self._polling is None and self._sending is None

    @property
    def sending(self) -> bool:
        """
        A send is in flight.
        """
        return self._sending is not None

    def stop(self) -> None:
        """
        Abort every request; report nothing more.
        """
        if self.stopped:
            return
        self.stopped = True
        if self._flushCall is not None:
            if self._flushCall.active():
                self._flushCall.cancel()
            self._flushCall = None
        for d in (self._opening, self._polling, self._sending):
            if d is not None:
                d.cancel()
        self._queue.clear()

    # ------------------------------------------------------------------
    # Requests.

    def _next(self) -> None:
        """
        Start what may be started now: a poll, a send; or tell the owner
        the link is quiet or drained.
        """
        if self.stopped or self._credentials is None:
            return
        if not self.paused:
            if self._polling is None and not self.draining:
                self._poll()
            if self._sending is None and self._queue and self._flushCall is None:
                self._send()
        if self.stopped:
            return
        if self.draining and self._sending is None and not self._queue and self._polling is None:
            self.stop()
            self.owner.pollLost(self, None, None, None)
        elif self.paused and self.quiet:
            self.owner.pollIdle(self)

    def _poll(self) -> None:
        body = self._credentials + b',"ack":%d}' % self._ackCount()
        d = self._polling = self._exchange("poll", body, self._requestTimeout())
        d.addCallbacks(self._polled, self._pollFailed)
        d.addErrback(self._logFailure)

    def _flushDue(self) -> None:
        self._flushCall = None
        self._next()

    def _send(self) -> None:
        queue = self._queue
        parts = [queue.popleft()]
        # The body: the credentials, ',"packets":[', the packets and
        # commas, ']}'.
        size = len(self._credentials) + 12 + len(parts[0]) + 2
        while queue and len(parts) < self._maxBatchMessages:
            size += len(queue[0]) + 1
            if size > self._maxBodyBytes:
                break
            parts.append(queue.popleft())
        body = self._credentials + b',"packets":[' + b",".join(parts) + b"]}"
        d = self._sending = self._exchange("send", body, self._requestTimeout())
        d.addCallbacks(self._sent, self._sendFailed)
        d.addErrback(self._logFailure)

    def _exchange(self, kind: str, body: bytes, timeout: float | None) -> Deferred[list]:
        self._requests += 1
        url = f"{self._url}txgw={kind}&n={self._nonce}{self._requests:x}"
        d = Deferred.fromCoroutine(self._request(url.encode("ascii"), body))
        if timeout is not None:
            d.addTimeout(timeout, self._clock)
        return d

    async def _request(self, url: bytes, body: bytes) -> list[Packet | Closed]:
        response = await self._agent.request(b"POST", url, self._headers, _BytesProducer(body))
        raw = await readBounded(response, self._maxAnswerBytes)
        if response.code != 200:
            raise _refusal(response.code, raw)
        return decodeAnswer(raw)

    # ------------------------------------------------------------------
    # Answers.

    def _opened(self, packets: list[Packet | Closed]) -> None:
        self._opening = None
        if self.stopped:
            return
        self.owner.pollAnswered(self, packets, True)

    def _polled(self, packets: list[Packet | Closed]) -> None:
        self._polling = None
        if self.stopped:
            return
        self.owner.pollAnswered(self, packets, False)
        self._next()

    def _pollFailed(self, failure: Failure) -> None:
        self._polling = None
        if self._abortingPoll:
            # (However the agent words it: a CancelledError, or one wrapped
            # in ResponseNeverReceived.)
            self._abortingPoll = False
            self._next()
            return
        self._failed(failure)

    def _openFailed(self, failure: Failure) -> None:
        self._opening = None
        self._failed(failure)

    def _sendFailed(self, failure: Failure) -> None:
        self._sending = None
        self._failed(failure)

    def _sent(self, packets: list[Packet | Closed]) -> None:
        self._sending = None
        if self.stopped:
            return
        self.owner.pollAnswered(self, packets, False)
        self._next()

    def _failed(self, failure: Failure) -> None:
        if self.stopped:
            return
        self.stop()
        error = failure.value
        if isinstance(error, Refused):
            self.owner.pollRefused(self, error)
        elif isinstance(error, AnswerTooLarge):
            self.owner.pollLost(
                self, CLOSE_TOO_BIG, None,
                f"an answer from the gateway was larger than {self._maxAnswerBytes} bytes (1009)",
            )
        elif isinstance(error, ProtocolError):
            self.owner.pollLost(self, None, None, f"protocol error: {error}")
        elif isinstance(error, TimeoutError):
            self.owner.pollLost(self, None, None, "no answer to a long-polling request in time")
        else:
            self.owner.pollLost(self, None, None, f"request failed: {_describe(failure)}")

    def _logFailure(self, failure: Failure) -> None:
        self.log.failure("unexpected error in a long-polling exchange", failure)
