"""
What the gateway's two twisted.web sites share: the gateway's own port
(L{gateway.site}) and the admin API (L{gateway.admin}).

  - L{BoundedRequest} and L{BoundedSite}: twisted.web buffers a whole request
    body with no limit, so every request of ours is bounded before its body
    arrives, and one that is too large gets its site's 413 and the
    connection is closed without reading the rest;
  - L{respondJSON}: the JSON responses of both sites' resources (error
    bodies are L{gateway.wire.http1.errorPayload});
  - L{corsHeaders}: the CORS check of cross-origin requests to routed paths;
  - L{headFromRequest}: a twisted.web request as the L{RequestHead} that
    routing reads;
  - L{StaticFiles}: the package's C{static} folder (the JavaScript client and
    the demo page), each file read once.
"""

from __future__ import annotations

import json
from importlib import resources as importlib_resources
from typing import Iterable

from twisted.web.server import Request, Site

from .wire.http1 import RequestHead, errorResponse
from .wire.protocol import CLOSE_TOO_BIG

__all__ = [
    "BoundedRequest",
    "BoundedSite",
    "respondJSON",
    "corsHeaders",
    "headFromRequest",
    "StaticFiles",
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
    A site of L{BoundedRequest}s that shows no tracebacks.

    @ivar maxBodyBytes: the largest request body read.
    @ivar corsOrigins: the origins allowed cross-origin requests (C{"*"}
        for any); the 413 says so to them too, so that a browser shows it.
    @ivar parseForms: whether form bodies are parsed into C{request.args}.
    """

    requestFactory = BoundedRequest
    displayTracebacks = False

    def __init__(self, resource, *, maxBodyBytes: int, corsOrigins: Iterable[str] = (),
                 parseForms: bool = True, **kwargs) -> None:
        super().__init__(resource, **kwargs)
        self.maxBodyBytes = maxBodyBytes
        self.corsOrigins = tuple(corsOrigins)
        self.parseForms = parseForms

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
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


def corsHeaders(origin: bytes | None, allowed: Iterable[str]) -> list[tuple[bytes, bytes]]:
    """
    @param origin: the request's C{Origin}, if it has one.
    @param allowed: the origins allowed (C{"*"} for any).
    @return: the headers that let a browser read the answer from
        C{origin}: none unless it is allowed.
    """
    if origin is None:
        return []
    if "*" in allowed or origin.decode("latin-1") in allowed:
        return [(b"Access-Control-Allow-Origin", origin), (b"Vary", b"Origin")]
    return []


def headFromRequest(request: Request) -> RequestHead:
    """
    @return: the head of a twisted.web C{request}, with its headers as they
        came (repeated headers kept apart, as a forwarded Cookie needs): the
        head the gateway's strict parser read, when its channel kept one
        (C{request.gatewayHead}, see L{gateway.site.StrictChannel}).
    """
    head = getattr(request, "gatewayHead", None)
    if head is not None:
        return head
    headers = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        for value in values:
            headers.append((name, value))
    return RequestHead(request.method, request.uri, request.clientproto, headers)


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
