"""
Tests for L{gateway.transports.longpoll}: what a long-polling request costs.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyChannel

from gateway.transports.longpoll import BoundedRequest, _respond


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


def test_bodyNotParsedAsForm():
    """
    A long-polling body is JSON: even a C{POST} that says it carries a form
    is not parsed into C{request.args} (only the query string is), and the
    body is left for the handler to read.
    """
    recorder = Recorder()
    site = Site(recorder)
    site.maxBodyBytes = 1024
    site.corsOrigins = ()
    channel = DummyChannel()
    channel.site = site
    request = BoundedRequest(channel)
    request.requestHeaders.setRawHeaders(b"content-type", [b"application/x-www-form-urlencoded"])
    request.gotLength(3)
    request.handleContentChunk(b"a=b")
    request.requestReceived(b"POST", b"/chat?txgw=send", b"HTTP/1.1")
    assert recorder.args == {b"txgw": [b"send"]}
    assert recorder.body == b"a=b"


def test_localAddressAskedOnce():
    """
    The requests of one connection ask its socket for the local address
    once, not once per request, and all see it.
    """
    site = Site(Recorder())
    site.maxBodyBytes = 1024
    site.corsOrigins = ()
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


def test_responseIsCompactJSON():
    """
    A long-polling answer is compact JSON, with its length.
    """
    recorder = Recorder()
    site = Site(recorder)
    site.maxBodyBytes = 1024
    site.corsOrigins = ()
    channel = DummyChannel()
    channel.site = site
    request = BoundedRequest(channel)
    request.method = b"POST"
    request.clientproto = b"HTTP/1.1"
    _respond(request, 200, {"packets": [{"t": "ack", "n": 3}]})
    written = channel.transport.written.getvalue()
    head, body = written.split(b"\r\n\r\n", 1)
    assert body == b'{"packets":[{"t":"ack","n":3}]}'
    assert b"Content-Length: %d" % len(body) in head
