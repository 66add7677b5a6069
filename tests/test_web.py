"""
Tests for L{gateway.web}: the bounded request at its bound, the JSON
answers, the CORS check, the head of a twisted.web request and the static
files.
"""

from __future__ import annotations

import json

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from gateway.wire.protocol import CLOSE_TOO_BIG
from gateway.web import (
    BoundedRequest,
    BoundedSite,
    StaticFiles,
    corsHeaders,
    headFromRequest,
    respondJSON,
)


class Recorder(Resource):
    """
    Records the arguments and the body of the request it renders.
    """

    isLeaf = True
    args: dict | None = None
    body: bytes | None = None

    def render(self, request):
        self.args = dict(request.args)
        self.body = request.content.read()
        return b""


def boundedRequest(limit: int = 1024, corsOrigins=(), parseForms: bool = False,
                   resource: Resource | None = None):
    """
    @return: a resource, a channel of a L{BoundedSite} bounded at C{limit}
        bytes, and a request on it.
    """
    resource = resource if resource is not None else Recorder()
    site = BoundedSite(resource, maxBodyBytes=limit, corsOrigins=corsOrigins, parseForms=parseForms)
    channel = DummyChannel()
    channel.site = site
    return resource, channel, BoundedRequest(channel)


def test_bodyNotParsedAsForm():
    """
    A long-polling body is JSON: even a C{POST} that says it carries a form
    is not parsed into C{request.args} (only the query string is), and the
    body is left for the handler to read.
    """
    recorder, channel, request = boundedRequest()
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.gotLength(3)
    request.handleContentChunk(b"a=b")
    request.requestReceived(b"POST", b"/chat?txgw=send", b"HTTP/1.1")
    assert recorder.args == {b"txgw": [b"send"]}
    assert recorder.body == b"a=b"


def test_bodyParsedAsFormWhereTheSiteSays():
    """
    A site that parses forms (the admin API's) gets a form body in
    C{request.args}, as twisted.web does.
    """
    recorder, channel, request = boundedRequest(parseForms=True)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.gotLength(3)
    request.handleContentChunk(b"a=b")
    request.requestReceived(b"POST", b"/x", b"HTTP/1.1")
    assert recorder.args == {b"a": [b"b"]}


def test_localAddressAskedOnce():
    """
    The requests of one connection ask its socket for the local address
    once, not once per request, and all see it.
    """
    site = BoundedSite(Recorder(), maxBodyBytes=1024)
    channel = DummyChannel()
    channel.site = site
    asked = []
    getHost = channel.transport.getHost

    def counted():
        asked.append(True)
        return getHost()

    channel.transport.getHost = counted
    first, second = BoundedRequest(channel), BoundedRequest(channel)
    assert len(asked) == 1
    assert first.getHost() == second.getHost() == getHost()


def test_bodyAtTheBoundIsRead():
    """
    A body of exactly C{maxBodyBytes}, declared or not, is read and handed
    to the resource.
    """
    recorder, channel, request = boundedRequest(limit=8)
    request.gotLength(8)
    request.handleContentChunk(b"12345678")
    request.requestReceived(b"POST", b"/chat", b"HTTP/1.1")
    assert recorder.body == b"12345678"
    assert b" 413 " not in channel.transport.written.getvalue()


def test_declaredLengthOverTheBound():
    """
    A declared length one byte over the bound gets the 413 at once, before
    any body: a JSON error with the session protocol's code, the connection
    closed, and the request never processed.
    """
    recorder, channel, request = boundedRequest(limit=8)
    request.gotLength(9)
    written = channel.transport.written.getvalue()
    head, body = written.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 413 Content Too Large",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        b"Cache-Control: no-store",
        b"Connection: close",
    ]
    assert json.loads(body) == {"error": "Content Too Large", "status": 413,
                                "message": "the request body is larger than 8 bytes",
                                "code": CLOSE_TOO_BIG}
    assert channel.transport.disconnected
    request.handleContentChunk(b"123456789")
    request.requestReceived(b"POST", b"/chat", b"HTTP/1.1")
    assert recorder.body is None


def test_chunkedBodyOverTheBound():
    """
    A body without a declared length is refused once its bytes pass the
    bound; what follows is not kept.
    """
    recorder, channel, request = boundedRequest(limit=8)
    request.gotLength(None)
    request.handleContentChunk(b"12345678")
    assert channel.transport.written.getvalue() == b""
    request.handleContentChunk(b"9")
    assert channel.transport.written.getvalue().startswith(b"HTTP/1.1 413 ")
    assert channel.transport.disconnected
    request.handleContentChunk(b"more")
    request.requestReceived(b"POST", b"/chat", b"HTTP/1.1")
    assert recorder.body is None
    request.content.close()  # the channel would, as its connection ends


def test_tooLargeTellsAllowedOrigins():
    """
    The 413 carries the CORS headers for an allowed origin (so that a
    browser lets the page read it), and none for another.
    """
    _, channel, request = boundedRequest(limit=1, corsOrigins=("https://a.example",))
    request.requestHeaders.setRawHeaders(b"origin", [b"https://a.example"])
    request.gotLength(2)
    written = channel.transport.written.getvalue()
    assert b"\r\nAccess-Control-Allow-Origin: https://a.example\r\nVary: Origin\r\n\r\n" in written
    _, channel, request = boundedRequest(limit=1, corsOrigins=("https://a.example",))
    request.requestHeaders.setRawHeaders(b"origin", [b"https://b.example"])
    request.gotLength(2)
    assert b"Access-Control" not in channel.transport.written.getvalue()


def test_respondJSON():
    """
    L{respondJSON} sets the status, a JSON content type, no caching and the
    length, and returns the compact body.
    """
    request = DummyRequest([b""])
    body = respondJSON(request, 404, {"error": "Not Found", "status": 404})
    assert body == b'{"error": "Not Found", "status": 404}'
    assert request.responseCode == 404
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert headers.getRawHeaders(b"cache-control") == [b"no-store"]
    assert headers.getRawHeaders(b"content-length") == [b"%d" % len(body)]


def test_respondJSONWithAReasonPhrase():
    """
    A reason phrase given is the one sent.
    """
    request = DummyRequest([b""])
    respondJSON(request, 426, {}, reason=b"Upgrade Required")
    assert (request.responseCode, request.responseMessage) == (426, b"Upgrade Required")


def test_respondJSONIndented():
    """
    With C{indent}, the body is indented and ends with a newline (the admin
    API's answers).
    """
    request = DummyRequest([b""])
    body = respondJSON(request, 200, {"a": 1}, indent=2)
    assert body == b'{\n  "a": 1\n}\n'


def test_corsHeaders():
    """
    An allowed origin (or any, with C{"*"}) is told it may read the
    answer, which varies by origin; another origin, or none, is told
    nothing.
    """
    allowed = [(b"Access-Control-Allow-Origin", b"https://a.example"), (b"Vary", b"Origin")]
    assert corsHeaders(b"https://a.example", ("https://a.example",)) == allowed
    assert corsHeaders(b"https://a.example", ("*",)) == allowed
    assert corsHeaders(b"https://b.example", ("https://a.example",)) == []
    assert corsHeaders(None, ("*",)) == []


def test_headFromRequest():
    """
    The head of a twisted.web request keeps its method, target, version and
    every header value apart (two Cookie headers stay two).
    """
    request = DummyRequest([b"chat"])
    request.method = b"GET"
    request.uri = b"/chat?x=1"
    request.clientproto = b"HTTP/1.1"
    request.requestHeaders.setRawHeaders(b"cookie", [b"a=1", b"b=2"])
    head = headFromRequest(request)
    assert (head.method, head.target, head.path) == (b"GET", b"/chat?x=1", b"/chat")
    assert head.getAll(b"cookie") == [b"a=1", b"b=2"]


def test_staticFiles():
    """
    The JavaScript client is served for any origin and revalidated; the
    demo page as HTML; each file is read from the package once.
    """
    files = StaticFiles()
    request = DummyRequest([b""])
    script = files.script(request, "static/txgateway.js")
    assert script and files.read("static/txgateway.js") is script
    headers = request.responseHeaders
    assert headers.getRawHeaders(b"content-type") == [b"text/javascript; charset=utf-8"]
    assert headers.getRawHeaders(b"cache-control") == [b"no-cache"]
    assert headers.getRawHeaders(b"access-control-allow-origin") == [b"*"]
    request = DummyRequest([b""])
    page = files.page(request, "static/demo.html")
    assert page.lstrip().lower().startswith(b"<!doctype html")
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]


class Held(Resource):
    """
    Answers nothing until told (C{finish}), as a long poll does.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list = []

    def render(self, request):
        self.requests.append(request)
        return NOT_DONE_YET


def boundedChannel(resource: Resource, **kwargs):
    """
    @return: a L{BoundedChannel} of a L{BoundedSite} on a clock, connected
        to a L{StringTransport}, with the clock and the transport.
    """
    reactor = MemoryReactorClock()
    site = BoundedSite(resource, maxBodyBytes=1024, reactor=reactor, **kwargs)
    channel = site.buildProtocol(IPv4Address("TCP", "192.0.2.7", 50000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, reactor, transport


def test_headClockWhileAnswering():
    """
    While a request is answered, bytes of the next head wait and no
    deadline runs (a long poll may take its time); once the answer is
    done, the next head's clock starts at once.
    """
    resource = Held()
    channel, reactor, transport = boundedChannel(resource, headTimeout=2.0)
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\nGET /b HTTP/1.1\r\nX-Slow: ")
    reactor.advance(10)
    assert not transport.disconnecting
    [request] = resource.requests
    request.finish()
    transport.clear()
    reactor.advance(1.9)
    assert not transport.disconnecting
    reactor.advance(0.2)
    assert transport.value().startswith(b"HTTP/1.1 408 Request Timeout") and transport.disconnecting
    channel.connectionLost(None)


def test_noBodyNoBodyClock():
    """
    A request with no body leaves no deadline pending while it is answered.
    """
    channel, reactor, transport = boundedChannel(Held())
    channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n")
    pending = {call.func.__name__ for call in reactor.getDelayedCalls()}
    assert not pending & {"_bodyCheck", "_headLate"}
    channel.connectionLost(None)


def test_bodyAtTheRateIsRead():
    """
    A body that keeps to C{minBodyRate} is read whole and answered.
    """
    resource = Recorder()
    channel, reactor, transport = boundedChannel(resource, headTimeout=1.0, bodyTimeout=30.0,
                                                 minBodyRate=100)
    channel.dataReceived(b"POST /a HTTP/1.1\r\nHost: gw\r\nContent-Length: 500\r\n\r\n")
    for _ in range(10):
        reactor.advance(0.5)
        channel.dataReceived(b"x" * 50)
    assert resource.body == b"x" * 500
    assert transport.value().startswith(b"HTTP/1.1 200 OK")
    channel.connectionLost(None)
