"""
The gateway's HTTP/1.1 channels (twisted.web's C{HTTPChannel}, bounded and
made strict), re-exported by L{gateway.web}, where their sites are:

  - L{BoundedChannel}: twisted.web bounds a slow request only by an idle
    timer that every byte restarts, so each head and body has a total
    deadline, and each body a minimum rate; and a request may be read
    without twisted.web's C{Request} (L{BoundedChannel.readLean});
  - L{StrictChannel}: the gateway port's channel, which holds every request
    head of a connection to the front door's parser and checks
    (L{headRefusal}), and reads the session protocol's long-polling
    requests without twisted.web's C{Request}
    (L{gateway.edge.exchange.LeanRequest}).

They live with the transports, below the sites, because what they read is
the long-polling transport's traffic, and because they read nothing of a
site but the bounds and the one hook (C{leanAnswer}) its docstring names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.http import HTTPChannel

from ..backends.routing import hasDotSegments
from ..edge.exchange import LeanRequest
from ..errors import ProtocolError
from ..wire.http1 import (
    RequestHead,
    errorResponse,
    parseRequestHead,
    plainBodyLength,
    plainKeepAlive,
)

__all__ = ["BoundedChannel", "StrictChannel", "headRefusal"]


class BoundedChannel(HTTPChannel):
    """
    twisted.web's channel with total deadlines: a request head must arrive
    whole within its site's C{headTimeout} of its first byte, and a body
    within C{bodyTimeout} of the end of its head, averaging at least
    C{minBodyRate} bytes per second after an allowance of C{headTimeout}
    (the rule of Apache's mod_reqtimeout, with a cap).  Past either, the
    client gets 408 and the connection is closed.

    Between requests of a kept-alive connection, and while a request is
    answered, the site's idle timer alone applies, as in twisted.web.  One
    timer at most is pending per connection, and it wakes at most once per
    read of a body, so a body at the minimum rate costs no more than one at
    any other.

    A subclass may also read a request itself (L{readLean}): the body and
    its deadlines, the requests pipelined behind it, the idle timer and
    keep-alive are then kept as twisted.web keeps them for its own.
    """

    _phase = "idle"  # then "head", "body", "busy" (answering), "refused"
    _deadline: Any = None
    _reading = False  # within dataReceived: deadlines are armed at its end
    _headStart = 0.0
    _bodyStart = 0.0
    _bodyBytes = 0
    #: A request read outside twisted.web: its head and answer while its
    #: body is read, the bytes still to read and those read.
    _leanHead: tuple[RequestHead, Callable[[LeanRequest], None]] | None = None
    _leanWanted = 0
    _leanParts: list[bytes] | None = None
    #: That request while it is answered.
    _lean: LeanRequest | None = None
    _secure: bool | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Start the head's clock at the first byte of a head (unless
        L{wholeHead} reads it all at once); arm the clock that runs, once
        the bytes read are handled.
        """
        if self._phase == "refused":
            return
        outer, self._reading = self._reading, True
        try:
            if self._phase == "idle" and data and not self._handlingRequest:
                rest = self.wholeHead(data)
                if rest is None:
                    self.headStarted()
                else:
                    data = rest
            super().dataReceived(data)
        finally:
            self._reading = outer
        if not outer:
            self._arm()

    def wholeHead(self, data: bytes) -> bytes | None:
        """
        Read a request head that is whole at the front of C{data}, read
        while no request is under way, in one piece rather than line by
        line (a subclass's choice: none by default).

        @return: the bytes after it, for the channel to read next, or
            L{None} when the head is left to be read line by line.
        """
        return None

    def _arm(self) -> None:
        """
        Schedule the deadline of the head or body under way, if it has
        none yet: a head or body that ends within the read it began in
        never costs a timer.
        """
        if self._deadline is not None or self.transport is None:
            return
        if self._phase == "head":
            now = self.site.reactor.seconds()
            self._wake(self._headStart + self.site.headTimeout - now, self._headLate)
        elif self._phase == "body":
            self._wake(self._bodyDue() - self.site.reactor.seconds(), self._bodyCheck)

    def lineReceived(self, line: bytes):
        """
        Start the head's clock at a line replayed from what was read during
        the previous request.
        """
        if self._phase == "idle":
            self.headStarted()
        return super().lineReceived(line)

    def headStarted(self) -> None:
        """
        A request head has begun: start its clock, unless it runs already
        (its timer is armed once the read it began in is handled).
        """
        if self._phase == "idle":
            self._phase = "head"
            self._headStart = self.site.reactor.seconds()
            if not self._reading:
                self._arm()

    def allHeadersReceived(self) -> None:
        """
        Stop the head's clock; start the body's.
        """
        self._cancel()
        self._phase = "busy"
        super().allHeadersReceived()
        if self.length != 0 and self._phase == "busy":
            self._startBody()

    def _startBody(self) -> None:
        self._phase = "body"
        self._bodyStart = self.site.reactor.seconds()
        self._bodyBytes = 0
        if not self._reading:
            self._arm()

    def rawDataReceived(self, data: bytes) -> None:
        """
        Count a body's bytes; read those of a request read outside
        twisted.web (L{readLean}).
        """
        if self._phase == "body":
            self._bodyBytes += len(data)
        if self._leanHead is None:
            super().rawDataReceived(data)
            return
        wanted = self._leanWanted
        if len(data) < wanted:
            self._leanParts.append(data)
            self._leanWanted = wanted - len(data)
            return
        self._leanParts.append(data[:wanted] if wanted < len(data) else data)
        self._leanBodyRead(data[wanted:])

    def readLean(self, head: RequestHead, length: int, answer: Callable[[LeanRequest], None]) -> None:
        """
        Read a request without twisted.web, which has seen none of it: its
        head has been read; C{length} bytes of body follow (within the
        body's deadlines), and then C{answer} is given the request
        (L{LeanRequest}).  Until its answer is written, the connection is
        held as twisted.web holds it while it answers a request of its own:
        the requests pipelined behind it are read but kept (and reading
        paused past twisted.web's bound on them), the idle timer closes
        nothing (L{timeoutConnection}).
        Then, if the connection is kept alive (C{persistent}, which the
        caller sets), the next request is read; otherwise it is closed.
        """
        self._cancel()
        self._leanHead = (head, answer)
        self._leanParts = []
        self._leanWanted = length
        self.setRawMode()
        if length:
            self._startBody()
        else:
            self._leanBodyRead(b"")

    def _leanBodyRead(self, rest: bytes) -> None:
        self._cancel()
        self._phase = "busy"
        self._handlingRequest = True
        (head, answer), self._leanHead = self._leanHead, None
        parts, self._leanParts = self._leanParts, None
        self._leanWanted = 0
        if rest:
            super().rawDataReceived(rest)  # kept for later (_handlingRequest)
        secure = self._secure
        if secure is None:
            secure = self._secure = self.isSecure()  # a connection's, asked once
        request = LeanRequest(head, parts[0] if len(parts) == 1 else b"".join(parts), self.transport,
                              secure, bool(self.persistent), self._leanDone)
        self._lean = request
        answer(request)

    def _leanDone(self, request: LeanRequest) -> None:
        """
        The answer to a request read outside twisted.web is written: what
        twisted.web's C{requestDone} does, then L{requestDone}'s clock.
        """
        if request is not self._lean:
            return
        self._lean = None
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        self._phase = "idle"
        if not self.persistent:
            self.loseConnection()
            return
        self._handlingRequest = False
        self.resetTimeout()
        data = b"".join(self._dataBuffer)
        self._dataBuffer = []
        self.setLineMode(data)
        if data and self._phase == "idle" and self.persistent and self.transport is not None:
            self.headStarted()

    def allContentReceived(self) -> None:
        """
        Stop the body's clock.
        """
        self._cancel()
        self._phase = "busy"
        super().allContentReceived()

    def requestDone(self, request) -> None:
        """
        Back to waiting for a head; start its clock at once if bytes of it
        were read during this request.
        """
        pending = any(self._dataBuffer)
        self._phase = "idle"
        super().requestDone(request)
        if pending and self._phase == "idle" and self.persistent and self.transport is not None:
            self.headStarted()

    def timeoutConnection(self) -> None:
        """
        The idle timer: it runs on while a request read outside twisted.web
        is answered (rather than being stopped and started again for each,
        as twisted.web does for its own), and closes nothing then: it
        starts again, and again from the answer.
        """
        if self._lean is not None:
            self.setTimeout(self.timeOut)
            return
        super().timeoutConnection()

    def connectionLost(self, reason) -> None:
        """
        Stop any clock; tell a request read outside twisted.web.
        """
        self._cancel()
        self._leanHead = self._leanParts = None
        if self._lean is not None:
            lean, self._lean = self._lean, None
            lean.connectionLost(reason)
        super().connectionLost(reason)

    def _bodyDue(self) -> float:
        site = self.site
        cap = self._bodyStart + site.bodyTimeout
        if not site.minBodyRate:
            return cap
        return min(cap, self._bodyStart + site.headTimeout + self._bodyBytes / site.minBodyRate)

    def _bodyCheck(self) -> None:
        self._deadline = None
        now = self.site.reactor.seconds()
        due = self._bodyDue()
        if now >= due:
            self.refuse(408, "request body not received in time")
        else:
            self._wake(due - now, self._bodyCheck)

    def _headLate(self) -> None:
        self._deadline = None
        self.refuse(408, "request head not received in time")

    def _wake(self, delay: float, call) -> None:
        self._cancel()
        self._deadline = self.site.reactor.callLater(max(delay, 0.0), call)

    def _cancel(self) -> None:
        if self._deadline is not None:
            if self._deadline.active():
                self._deadline.cancel()
            self._deadline = None

    def refuse(self, status: int, message: str) -> None:
        """
        Answer C{status} with a JSON body and close the connection, reading
        nothing more.
        """
        self._cancel()
        self._phase = "refused"
        self.site.refused(status)
        if self.transport is not None:
            self.transport.write(errorResponse(status, message))
            self.transport.loseConnection()


def headRefusal(head: RequestHead) -> str | None:
    """
    The checks every well-formed request head passes, whatever its place on
    its connection (L{FrontDoor} reads the first, L{StrictChannel} every one).

    @return: why C{head} is refused with a 400, or L{None} when it is not:
        a C{.} or C{..} path segment (plain or percent-encoded), or a body on
        a WebSocket upgrade.
    """
    if hasDotSegments(head.path):
        return "the request path must not contain '.' or '..' segments"
    if head.isWebSocketUpgrade() and head.hasBody():
        return "a WebSocket upgrade must not have a body"
    return None


class StrictChannel(BoundedChannel):
    """
    twisted.web's channel on the gateway's port, which reads each request
    head of a kept-alive connection whole before twisted.web sees it, and
    passes it through the front door's parser (L{parseRequestHead}) and
    checks (L{headRefusal}): a head refused there gets the front door's JSON
    400 (431 past C{max_header_bytes}) and the connection is closed, so that
    a second request is held to what a first one is.  The head as parsed is
    kept on its request (C{gatewayHead}, read by L{headFromRequest}).

    A head its site answers itself (L{BoundedSite.leanAnswer}: the session
    protocol's long-polling requests) is not given to twisted.web at all,
    when twisted.web would read it the same way: a body framed by one
    plain C{Content-Length} within C{max_body_bytes}, no C{Expect},
    keep-alive said in one plain way (L{plainBodyLength},
    L{plainKeepAlive}), and within twisted.web's own bounds on headers.
    The channel reads its body (L{BoundedChannel.readLean}) and the site
    answers it through a L{LeanRequest}.  Any other head, those with a body
    too large included (their 413 is twisted.web's request's), goes to
    twisted.web as before.
    """

    _lines: list[bytes] | None = None
    _size = 0
    _blankSeen = False
    _head: RequestHead | None = None

    def lineReceived(self, line: bytes):
        """
        Collect a request head's lines; at its blank line, check it, then
        let twisted.web read it.
        """
        if self._phase == "refused":
            return None
        if self._lines is None:
            if not self.persistent:
                return super().lineReceived(line)
            if not line and not self._blankSeen:
                # One empty line before a request line is allowed (RFC 9112
                # 2.2): skipped here, so that twisted.web never sees one.
                self._blankSeen = True
                return None
            self._lines = []
            self._size = 0
            self.headStarted()
        self._lines.append(line)
        self._size += len(line) + 2
        limit = self.site.maxHeaderBytes
        if self._size > limit:
            return self.refuse(431, f"message head larger than {limit} bytes")
        if line:
            return None
        lines, self._lines = self._lines, None
        self._blankSeen = False
        try:
            head = parseRequestHead(b"\r\n".join(lines) + b"\r\n")
        except ProtocolError as e:
            return self.refuse(400, str(e))
        refusal = headRefusal(head)
        if refusal is not None:
            return self.refuse(400, refusal)
        self._headRead(head, lines, self._size)
        return None

    def wholeHead(self, data: bytes) -> bytes | None:
        """
        A head whole at the front of a read, with nothing before it, is
        parsed at once (its lines are not collected one by one); one that
        is not well-formed or is refused is left to the line-by-line
        reading, which refuses it.
        """
        if not self.line_mode or self._buffer or self._lines is not None or not self.persistent:
            return None
        end = data.find(b"\r\n\r\n", 0, self.site.maxHeaderBytes)
        if end <= 0:
            return None
        size = end + 4
        try:
            head = parseRequestHead(data[:size])
        except ProtocolError:
            return None
        if headRefusal(head) is not None:
            return None
        self._blankSeen = False
        if self._headRead(head, None, size, data[:end]):
            return b""  # twisted.web refused the head: read nothing more
        return data[size:]

    def _headRead(self, head: RequestHead, lines: list[bytes] | None, size: int, raw: bytes = b"") -> bool:
        """
        A head has been read and has passed the checks: read its request
        without twisted.web when its site answers it (L{leanAnswer}) and
        twisted.web would read it the same way, or else give twisted.web
        its C{lines} (or those of C{raw}, the head without its blank line).

        @return: whether the connection is being closed.
        """
        count = len(lines) - 2 if lines is not None else raw.count(b"\r\n")
        if count <= self.maxHeaders and size <= self.totalHeadersSize:
            answer = self.site.leanAnswer(head)
            if answer is not None:
                length, keepAlive = plainBodyLength(head), plainKeepAlive(head)
                if length is not None and keepAlive is not None and length <= self.site.maxBodyBytes:
                    self.persistent = keepAlive
                    self.readLean(head, length, answer)
                    return False
        self._head = head
        if lines is None:
            lines = raw.split(b"\r\n")
            lines.append(b"")
        for each in lines:
            super().lineReceived(each)
            if self.transport is None or self.transport.disconnecting:
                return True
        return False

    def allHeadersReceived(self) -> None:
        """
        Keep the head as the front door's parser read it on its request.
        """
        self.requests[-1].gatewayHead, self._head = self._head, None
        super().allHeadersReceived()

    def lineLengthExceeded(self, line: bytes):
        """
        A line longer than a whole head may be: 431, as for a head.
        """
        return self.refuse(431, f"message head larger than {self.site.maxHeaderBytes} bytes")

    def refuse(self, status: int, message: str) -> None:
        """
        Refuse the request (L{BoundedChannel.refuse}), dropping any head
        lines collected.
        """
        self._lines = None
        super().refuse(status, message)
