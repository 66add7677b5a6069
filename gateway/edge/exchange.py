"""
A request answered without twisted.web's L{Request}: the session protocol's
long-polling requests, which are most of what a long-polling gateway reads.

twisted.web builds, for every request, a L{Request} with two header objects,
parses the head a second time line by line (the gateway's strict parser,
L{gateway.wire.http1.parseRequestHead}, has read it already), traverses the
resource tree and writes the answer's head from a header object: in a
profile of session long-polling, about three quarters of the gateway's time.
A L{LeanRequest} is made from the head as the gateway parsed it and the
body its channel read, and writes its whole answer at once
(L{gateway.tcp.writeNow}: sent there and then when the socket takes it,
rather than on the reactor's next turn).  It
has what the long-polling front end (L{gateway.transports.longpoll}) uses
of a request, under twisted.web's names (L{gateway.interfaces.IPollRequest}),
so that front end answers both kinds alike.

Which requests are read this way, and how their bodies, deadlines,
keep-alive and pipelining are kept as twisted.web keeps them, is the
channel's part (L{gateway.web.StrictChannel}); everything else on the
gateway's port goes through twisted.web as before.

L{headFromRequest} is the head of either kind of request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from io import BytesIO
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, datetimeToString
from zope.interface import implementer

from ..interfaces import IPollRequest
from ..tcp import writeNow
from ..wire.http1 import RequestHead, serializeResponse

__all__ = ["LeanRequest", "headFromRequest"]

#: Response header names as twisted.web writes them (capitalized words).
_NAMES: dict[bytes, bytes] = {}


def _wireName(lower: bytes) -> bytes:
    name = _NAMES.get(lower)
    if name is None:
        name = _NAMES[lower] = b"-".join(part.capitalize() for part in lower.split(b"-"))
    return name


class _Date:
    """
    The C{Date} header's value, formatted once a second (twisted.web formats
    it for every request).
    """

    second = -1
    value = b""

    @classmethod
    def now(cls) -> bytes:
        """
        @return: the current time as an HTTP date.
        """
        second = int(time.time())
        if second != cls.second:
            cls.value = datetimeToString(second)
            cls.second = second
        return cls.value


@implementer(IPollRequest)
class LeanRequest:
    """
    One request read by a channel, answered by one C{write} of the whole
    response when it is finished.

    Response headers are kept by lower-case name (a second C{setHeader}
    replaces the first's value in its place, as twisted.web's does), and
    written in twisted.web's order and capitalization: C{Connection: close}
    when the connection ends with the answer, C{Server}, C{Date}, then the
    others as set; the body always has its C{Content-Length}.

    @ivar gatewayHead: the head as the gateway's parser read it.
    @ivar content: the body.
    @ivar transport: the connection's transport.
    @ivar finished: whether the answer has been written.
    @ivar _disconnected: whether the connection was lost before the answer
        was written (twisted.web's name for it, read by
        L{gateway.tcp.requestLost}).
    """

    __slots__ = (
        "_body",
        "_code",
        "_disconnected",
        "_done",
        "_headers",
        "_notifications",
        "_secure",
        "content",
        "finished",
        "gatewayHead",
        "method",
        "path",
        "transport",
    )

    def __init__(self, head: RequestHead, body: bytes, transport: Any, secure: bool, keepAlive: bool,
                 done: Callable[[LeanRequest], None]) -> None:
        """
        @param keepAlive: whether the connection stays open after the
            answer (without, the answer says C{Connection: close}).
        @param done: called with the request once its answer is written.
        """
        self.gatewayHead = head
        self.method = head.method
        self.path = head.path
        self.content = BytesIO(body)
        self.transport = transport
        self.finished = False
        self._disconnected = False
        self._secure = secure
        self._code = 200
        headers: dict[bytes, tuple[bytes, bytes]] = {}
        if not keepAlive:
            headers[b"connection"] = (b"Connection", b"close")
        headers[b"server"] = (b"Server", b"txgateway")
        headers[b"date"] = (b"Date", _Date.now())
        self._headers = headers
        self._body: list[bytes] = []
        self._notifications: list[Deferred] | None = None
        self._done = done

    def isSecure(self) -> bool:
        """
        @return: whether the connection is TLS.
        """
        return self._secure

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """
        Set the answer's status (its reason phrase is always the standard
        one).
        """
        self._code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        """
        Set a response header, replacing any of the same name.
        """
        lower = name.lower()
        self._headers[lower] = (_wireName(lower), value)

    def write(self, data: bytes) -> None:
        """
        Add C{data} to the body (written at L{finish}).
        """
        if not self._disconnected:
            self._body.append(data)

    def notifyFinish(self) -> Deferred:
        """
        @return: L{Deferred} firing once the answer is written, or failing
            if the connection is lost first.
        """
        d: Deferred = Deferred()
        if self._notifications is None:
            self._notifications = []
        self._notifications.append(d)
        return d

    def finish(self) -> None:
        """
        Write the whole answer, then tell the channel.

        @raise RuntimeError: the connection was lost (as twisted.web's).
        """
        if self._disconnected:
            raise RuntimeError("finish called on a request whose connection was lost")
        if self.finished:
            return
        self.finished = True
        body = b"".join(self._body)
        headers = self._headers
        headers[b"content-length"] = (b"Content-Length", b"%d" % len(body))
        code = self._code
        writeNow(self.transport, serializeResponse(code, RESPONSES.get(code, b"Unknown Status"),
                                                   headers.values(), body))
        notifications, self._notifications = self._notifications, None
        self._done(self)
        for d in notifications or ():
            d.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        """
        The connection is gone before the answer was written.
        """
        if self.finished:
            return
        self._disconnected = True
        notifications, self._notifications = self._notifications, None
        for d in notifications or ():
            d.errback(reason)


def headFromRequest(request: Any) -> RequestHead:
    """
    @return: the head of a request, with its headers as they came (repeated
        headers kept apart, as a forwarded Cookie needs): the head the
        gateway's strict parser read, when its channel kept one
        (C{gatewayHead}: every L{LeanRequest}, and the twisted.web requests
        of L{gateway.web.StrictChannel}), or one built from a twisted.web
        request's headers.
    """
    head = getattr(request, "gatewayHead", None)
    if head is not None:
        return head
    headers = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:
            headers.append((name, value))
    return RequestHead(request.method, request.uri, request.clientproto, headers)
