"""
What the gateway's two twisted.web sites share: the gateway's own port
(L{gateway.site}) and the admin API (L{gateway.admin}).

  - L{BoundedRequest} and L{BoundedSite}: twisted.web buffers a whole request
    body with no limit, so every request of ours is bounded before its body
    arrives, and one that is too large gets its site's 413 and the
    connection is closed without reading the rest;
  - L{BoundedChannel} and L{StrictChannel} (from
    L{gateway.transports.channel}): each head and body has a total
    deadline; every head of the gateway's port is read by the front door's
    parser, and its long-polling requests without twisted.web's C{Request}
    (L{LeanRequest});
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
from twisted.web.server import Request, Site

from .edge.exchange import LeanRequest, headFromRequest
from .errors import ConfigError
from .tcp import hostAndPort, listenFailure, stopWithStatus
from .transports.channel import BoundedChannel, StrictChannel, headRefusal
from .wire.http1 import RequestHead, corsHeaders, errorResponse
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
                stopWithStatus(self.gateway.reactor)
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
