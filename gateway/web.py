"""
What the gateway's two twisted.web sites share: the gateway's own port
(L{gateway.site}) and the admin API (L{gateway.admin}).

  - L{BoundedRequest} and L{BoundedSite}: twisted.web buffers a whole request
    body with no limit, so every request of ours is bounded before its body
    arrives, and one that is too large gets its site's 413 and the
    connection is closed without reading the rest;
  - L{BoundedChannel}: twisted.web bounds a slow request only by an idle
    timer that every byte restarts, so each head and body of ours has a
    total deadline, and each body a minimum rate;
  - L{StrictChannel}: the gateway port's channel, which holds every request
    head of a connection to the front door's parser and checks
    (L{headRefusal}), and reads the session protocol's long-polling
    requests without twisted.web's C{Request} (L{LeanRequest});
  - L{respondJSON}: the JSON responses of both sites' resources (error
    bodies are L{gateway.wire.http1.errorPayload});
  - L{corsHeaders}: the CORS check of cross-origin requests to routed paths
    (from L{gateway.wire.http1}, where it now lives);
  - L{headFromRequest}: a request as the L{RequestHead} that routing reads
    (from L{gateway.edge.exchange}, where the long-polling front end, below
    this module, reads it too);
  - L{StaticFiles}: the package's C{static} folder (the JavaScript client and
    the demo page), each file read once;
  - L{SiteListener}: the listener of an operator's site (the admin API, the
    metrics of their own), bound with the gateway's listeners.
"""

from __future__ import annotations

import json
from importlib import resources as importlib_resources
from typing import Any, Callable, Iterable

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

from .backends.routing import hasDotSegments
from .edge.exchange import LeanRequest, headFromRequest
from .errors import ConfigError, ProtocolError
from .tcp import hostAndPort, listenFailure
from .wire.http1 import (RequestHead, corsHeaders, errorResponse, parseRequestHead, plainBodyLength,
                         plainKeepAlive)
from .wire.protocol import CLOSE_TOO_BIG

__all__ = [
    "BoundedChannel",
    "BoundedRequest",
    "BoundedSite",
    "StrictChannel",
    "headRefusal",
    "respondJSON",
    "corsHeaders",
    "headFromRequest",
    "StaticFiles",
    "SiteListener",
]


class BoundedRequest(Request):
    """
    A request whose body may not exceed its site's C{maxBodyBytes}
    (L{BoundedSite}).  A larger one gets the site's 413
    (L{BoundedSite.tooLarge}) as soon as its length is known (or its bytes
    pass the bound), and the connection is closed without reading the rest.
    """

    _refused = False
    _received = 0

    def __init__(self, channel, *args, **kwargs) -> None:
        """
        A request whose body is parsed as a form only where its site says
        so (L{BoundedSite.parseForms}): long-polling bodies are JSON, and
        twisted.web would otherwise parse the C{Content-Type} of every
        C{POST} with the email package, a quarter of the cost of a
        long-polling request.
        """
        kwargs.setdefault("parsePOSTFormSubmission", channel.site.parseForms)
        _rememberHost(channel)
        super().__init__(channel, *args, **kwargs)

    def gotLength(self, length: int | None) -> None:
        """
        Refuse a declared length over the bound before any body arrives.
        """
        limit = self.channel.site.maxBodyBytes
        if length is not None and length > limit:
            self._refuse(limit)
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        """
        Count body bytes (chunked bodies have no declared length).
        """
        if self._refused:
            return
        self._received += len(data)
        limit = self.channel.site.maxBodyBytes
        if self._received > limit:
            self._refuse(limit)
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        """
        Nothing to process for a refused request.
        """
        if not self._refused:
            super().process()

    def _refuse(self, limit: int) -> None:
        self._refused = True
        channel = self.channel
        transport = channel.transport if channel is not None else None
        if transport is not None:
            transport.write(channel.site.tooLarge(self, limit))
            transport.loseConnection()


def _rememberHost(channel) -> None:
    """
    Make C{channel.getHost()} ask its socket once: twisted.web asks it for
    every request (a C{getsockname} call each time), and a connection's
    local address does not change.
    """
    if "getHost" not in vars(channel):
        host = channel.getHost()
        channel.getHost = lambda: host


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
    _bodyStart = 0.0
    _bodyBytes = 0
    #: A request read outside twisted.web: its head and answer while its
    #: body is read, the bytes still to read and those read.
    _leanHead: tuple[RequestHead, Callable[[LeanRequest], None]] | None = None
    _leanWanted = 0
    _leanParts: list[bytes] | None = None
    #: That request while it is answered.
    _lean: LeanRequest | None = None

    def dataReceived(self, data: bytes) -> None:
        """
        Start the head's clock at the first byte of a head.
        """
        if self._phase == "refused":
            return
        if self._phase == "idle" and data and not self._handlingRequest:
            self.headStarted()
        super().dataReceived(data)

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
        A request head has begun: start its clock, unless it runs already.
        """
        if self._phase == "idle":
            self._phase = "head"
            self._wake(self.site.headTimeout, self._headLate)

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
        self._wake(self._bodyDue() - self._bodyStart, self._bodyCheck)

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
        paused past twisted.web's bound on them), the idle timer is off.
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
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)
        self._handlingRequest = True
        (head, answer), self._leanHead = self._leanHead, None
        parts, self._leanParts = self._leanParts, None
        self._leanWanted = 0
        if rest:
            super().rawDataReceived(rest)  # kept for later (_handlingRequest)
        request = LeanRequest(head, parts[0] if len(parts) == 1 else b"".join(parts), self.transport,
                              self.isSecure(), bool(self.persistent), self._leanDone)
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
        if self._savedTimeOut:
            self.setTimeout(self._savedTimeOut)
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
        if len(lines) - 2 <= self.maxHeaders and self._size <= self.totalHeadersSize:
            answer = self.site.leanAnswer(head)
            if answer is not None:
                length, keepAlive = plainBodyLength(head), plainKeepAlive(head)
                if length is not None and keepAlive is not None and length <= self.site.maxBodyBytes:
                    self.persistent = keepAlive
                    self.readLean(head, length, answer)
                    return None
        self._head = head
        for each in lines:
            super().lineReceived(each)
            if self.transport is None or self.transport.disconnecting:
                break
        return None

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


class BoundedSite(Site):
    """
    A site of L{BoundedRequest}s on L{BoundedChannel}s that shows no
    tracebacks.

    @ivar maxBodyBytes: the largest request body read.
    @ivar corsOrigins: the origins allowed cross-origin requests (C{"*"}
        for any); the 413 says so to them too, so that a browser shows it.
    @ivar parseForms: whether form bodies are parsed into C{request.args}.
    @ivar headTimeout: seconds from a head's first byte to its end.
    @ivar bodyTimeout: seconds from a head's end to the end of its body.
    @ivar minBodyRate: bytes per second a body averages after
        C{headTimeout}; 0 for no bound.
    """

    requestFactory = BoundedRequest
    protocol = BoundedChannel
    displayTracebacks = False

    def __init__(self, resource, *, maxBodyBytes: int, corsOrigins: Iterable[str] = (),
                 parseForms: bool = True, headTimeout: float = 10.0, bodyTimeout: float = 30.0,
                 minBodyRate: int = 1024, **kwargs) -> None:
        super().__init__(resource, **kwargs)
        self.maxBodyBytes = maxBodyBytes
        self.corsOrigins = tuple(corsOrigins)
        self.parseForms = parseForms
        self.headTimeout = headTimeout
        self.bodyTimeout = bodyTimeout
        self.minBodyRate = minBodyRate

    def refused(self, status: int) -> None:
        """
        A channel refused a request (L{BoundedChannel.refuse}); a site that
        counts refusals says so here.
        """

    def leanAnswer(self, head: RequestHead) -> Callable[[LeanRequest], None] | None:
        """
        @return: how this site answers the request of C{head} without
            twisted.web's C{Request} (L{StrictChannel}), or L{None} for
            twisted.web to answer it (every request, by default).
        """
        return None

    def tooLarge(self, request: Request, limit: int) -> bytes:
        """
        @return: the whole response to a request whose body is over
            C{limit} bytes: 413 with a JSON body (its C{code} the session
            protocol's, for long-polling clients) and the connection closed.
        """
        origin = request.requestHeaders.getRawHeaders(b"origin", [None])[0]
        return errorResponse(413, f"the request body is larger than {limit} bytes",
                             corsHeaders(origin, self.corsOrigins), extra={"code": CLOSE_TOO_BIG})


def respondJSON(request: Request, status: int, payload: object, *, reason: bytes | None = None,
                indent: int | None = None) -> bytes:
    """
    Give C{request} the status C{status} and the headers of a JSON answer
    that is not cached.

    @param reason: the reason phrase, when not twisted.web's own.
    @param indent: indent the JSON by this much, with a final newline (the
        admin API's answers are read by people); compact by default.
    @return: the body, for a resource's C{render} to return.
    """
    if indent is None:
        body = json.dumps(payload).encode("utf-8")
    else:
        body = json.dumps(payload, indent=indent).encode("utf-8") + b"\n"
    request.setResponseCode(status, reason)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class StaticFiles:
    """
    The files of a package's C{static} folder, each read once.
    """

    def __init__(self, package: str = "gateway") -> None:
        self.package = package
        self._files: dict[str, bytes] = {}

    def read(self, name: str) -> bytes:
        """
        @param name: the path in the package, e.g. C{"static/demo.html"}.
        @return: the file's bytes.
        """
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = importlib_resources.files(self.package).joinpath(name).read_bytes()
        return data

    def script(self, request: Request, name: str) -> bytes:
        """
        @return: the JavaScript file C{name}, for any origin, revalidated on
            every use.
        """
        request.setHeader(b"content-type", b"text/javascript; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"access-control-allow-origin", b"*")
        return self.read(name)

    def page(self, request: Request, name: str) -> bytes:
        """
        @return: the HTML page C{name}, revalidated on every use.
        """
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self.read(name)


class SiteListener(Service):
    """
    The listener of one of the operator's sites, a child of the gateway
    service: bound with the gateway's listeners (before twistd drops
    privileges), closed when it stops; a listener that cannot be bound ends
    the gateway with one line under twistd.

    Subclasses say what the site is (C{what}, for the log) and what to warn
    of when it listens on every interface (C{everyInterface}, a format with
    C{{description}} and C{{port}}).

    @ivar port: the listening port, once listening.
    @ivar failure: one line saying why it could not be bound, or L{None}.
    """

    log = Logger()
    what = "listener"
    everyInterface = ""

    def __init__(self, gateway: Any, endpoint: Any, description: str, site: Site) -> None:
        """
        @param gateway: the node (its C{reactor} and C{exitOnListenFailure}).
        @param endpoint: the server endpoint to listen on.
        @param description: the endpoint string, for the log.
        """
        self.gateway = gateway
        self.endpoint = endpoint
        self.description = description
        self.site = site
        self.port: Any = None
        self.failure: str | None = None
        self._listening: Deferred | None = None
        self._waiting: list[Deferred] = []

    def _listen(self) -> None:
        if self._listening is None:
            self._listening = self.endpoint.listen(self.site)
            self._listening.addBoth(self._listened)

    def _listened(self, result: object) -> None:
        waiting, self._waiting = self._waiting, []
        if isinstance(result, Failure):
            self.failure = f"cannot listen on {self.description} ({self.what}): {listenFailure(result.value)}"
            self.log.critical("gateway: {failure}", failure=self.failure)
            for d in waiting:
                d.errback(ConfigError(self.failure))
            if self.running and self.gateway.exitOnListenFailure:
                self.gateway.reactor.stop()
            return None
        self.port = result
        host, port = hostAndPort(result.getHost())
        self.log.info("{what} listening on {host}:{port} ({description})",
                      what=self.what, host=host, port=port, description=self.description)
        if host in ("0.0.0.0", "::") and self.everyInterface:
            self.log.warn(self.everyInterface, description=self.description, port=port)
        for d in waiting:
            d.callback(result)
        return None

    def privilegedStartService(self) -> None:
        """
        Bind the listener (before twistd drops privileges).

        @raise SystemExit: under twistd, with one line, when it cannot be
            bound.
        """
        super().privilegedStartService()
        self._listen()
        if self.failure is not None and self.gateway.exitOnListenFailure:
            raise SystemExit(f"gateway: {self.failure}")

    def startService(self) -> None:
        """
        Bind the listener, unless already bound.
        """
        super().startService()
        self._listen()

    def whenListening(self) -> Deferred:
        """
        @return: L{Deferred} firing with the listening port, or failing with
            L{ConfigError} when it cannot be bound.
        """
        d: Deferred = Deferred()
        if self.port is not None:
            d.callback(self.port)
        elif self.failure is not None:
            d.errback(ConfigError(self.failure))
        else:
            self._waiting.append(d)
        return d

    def stopService(self) -> Deferred | None:
        """
        Stop listening (connections already open are left to finish).
        """
        super().stopService()
        port, self.port = self.port, None
        self._listening = None
        if port is not None:
            return port.stopListening()
        return None
