"""
Tests for L{gateway.statuspage}: the status page's files on the admin
listener, served without the token and with strict headers; what the files
may contain (no inline script, nothing from elsewhere, no HTML built from
strings); and the admin API's C{GET /nodes}, which the page reads.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from importlib import resources

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from gateway.admin import AdminResource, AdminSite
from gateway.config import AdminConfig, BackendConfig, GatewayConfig, PoolConfig, RouteConfig
from gateway.interfaces import ISessionCluster
from gateway.service import GatewayService
from gateway.sessions.local import SingleNode
from gateway.statuspage import FILES, SECURITY_HEADERS, StatusPage
from gateway.testing import rawExchange

TOKEN = "status-page-token-0123456789"


def static(name: str) -> bytes:
    """
    @return: the bytes of C{gateway/static/NAME}.
    """
    return resources.files("gateway").joinpath("static", name).read_bytes()


def makeService(reactor=None) -> GatewayService:
    """
    @return: a gateway with one pool and the admin API on port 0 of
        127.0.0.1, built and not started.
    """
    backend = BackendConfig(name="b1", url="ws://127.0.0.1:1", host="127.0.0.1", port=1, secure=False)
    config = GatewayConfig(
        listen=("tcp:0:interface=127.0.0.1",),
        pools=(PoolConfig(name="chat", backends=(backend,)),),
        routes=(RouteConfig(prefix="/", pool="chat"),),
        admin=AdminConfig(listen="tcp:0:interface=127.0.0.1", token=TOKEN),
    )
    return GatewayService(config, reactor if reactor is not None else MemoryReactorClock())


def render(page: StatusPage, path: str, method: bytes = b"GET") -> tuple[DummyRequest, bytes]:
    """
    @return: the request and the body the page answered C{path} with.
    """
    request = DummyRequest([s.encode() for s in path.lstrip("/").split("/")])
    request.method = method
    body = page.render(request)
    return request, body


def header(request: DummyRequest, name: bytes) -> bytes | None:
    values = request.responseHeaders.getRawHeaders(name)
    return values[0] if values else None


# -- the files


@pytest.mark.parametrize("path, name, contentType", [
    ("/", "status.html", b"text/html; charset=utf-8"),
    ("/status", "status.html", b"text/html; charset=utf-8"),
    ("/status.js", "status.js", b"text/javascript; charset=utf-8"),
    ("/status.css", "status.css", b"text/css; charset=utf-8"),
    ("/status.svg", "status.svg", b"image/svg+xml"),
])
def test_files(path: str, name: str, contentType: bytes) -> None:
    """
    Each file of the page is answered with its content type, its length
    and every header of L{SECURITY_HEADERS}: scripts, styles, images and
    requests only from the listener itself, no framing, no referrer, no
    caching, no sniffing.
    """
    request, body = render(StatusPage(), path)
    assert request.responseCode in (None, 200)
    assert body == static(name)
    assert header(request, b"content-type") == contentType
    assert header(request, b"content-length") == b"%d" % len(body)
    for name_, value in SECURITY_HEADERS:
        assert header(request, name_) == value
    policy = dict(SECURITY_HEADERS)[b"Content-Security-Policy"].decode()
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["form-action"] == "'none'"
    assert "unsafe" not in policy
    assert header(request, b"x-frame-options") == b"DENY"
    assert header(request, b"x-content-type-options") == b"nosniff"
    assert header(request, b"referrer-policy") == b"no-referrer"
    assert header(request, b"cache-control") == b"no-store"


def test_otherPaths() -> None:
    """
    Only the page's own paths are the page's; C{/status/} is sent to
    C{../status} (relative, so that a prefix added by a proxy is kept);
    C{/favicon.ico} gets a JSON 404, not the admin API's 401; a method
    other than GET or HEAD gets 405.
    """
    assert StatusPage.serves([b""]) and StatusPage.serves([b"status"])
    assert StatusPage.serves([b"status", b""]) and StatusPage.serves([b"favicon.ico"])
    for path in ([b"pools"], [b"status", b"x"], [b"status.js", b""], [b"metrics"], [b"nodes"],
                 [b"static", b"status.js"], [b"..", b"status.js"]):
        assert not StatusPage.serves(path)
    assert set(FILES) == {(b"",), (b"status",), (b"status.js",), (b"status.css",), (b"status.svg",)}

    request, body = render(StatusPage(), "/status/")
    assert (request.responseCode, header(request, b"location"), body) == (308, b"../status", b"")
    request, body = render(StatusPage(), "/favicon.ico")
    assert request.responseCode == 404
    assert json.loads(body)["status"] == 404
    for method in (b"POST", b"PUT", b"DELETE"):
        request, body = render(StatusPage(), "/status", method)
        assert request.responseCode == 405
        assert header(request, b"allow") == b"GET, HEAD"
        assert json.loads(body)["error"] == "Method Not Allowed"
        assert header(request, b"content-security-policy") is not None


class _Elements(HTMLParser):
    """
    The start tags of a page, with their attributes, and the text inside
    each C{script} element.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scriptText: list[str] = []
        self._inScript = False

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))
        self._inScript = tag == "script"

    def handle_endtag(self, tag) -> None:
        if tag == "script":
            self._inScript = False

    def handle_data(self, data) -> None:
        if self._inScript:
            self.scriptText.append(data)


def test_pageHasNoInlineCodeNorData() -> None:
    """
    The HTML has no inline script, no event-handler attribute, no inline
    style, nothing from another origin (every C{src} and C{href} relative),
    and no figure of its own: what the policy would block is not there to
    begin with, and the page shows nothing until the API answers.
    """
    parser = _Elements()
    parser.feed(static("status.html").decode("utf-8"))
    assert "".join(parser.scriptText).strip() == ""
    scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
    assert scripts == [{"src": "status.js", "defer": None}]
    for tag, attrs in parser.tags:
        assert "style" not in attrs, tag
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)
        for key in ("src", "href", "action"):
            value = attrs.get(key)
            if value is not None:
                assert not re.match(r"^([a-z]+:|//)", value), (tag, key, value)
    assert [tag for tag, _ in parser.tags].count("style") == 0
    forms = [attrs for tag, attrs in parser.tags if tag == "form"]
    assert forms == [{"id": "login-form", "method": "post", "autocomplete": "off"}]
    token = [attrs for tag, attrs in parser.tags if tag == "input" and attrs.get("id") == "token"]
    assert token[0]["type"] == "password"


def test_scriptWritesTextOnly() -> None:
    """
    The script never turns a string into HTML or code (C{innerHTML},
    C{outerHTML}, C{insertAdjacentHTML}, C{document.write}, C{eval},
    C{Function}), keeps the token in C{sessionStorage} only, and sends it
    in the C{Authorization} header, never in a URL.
    """
    script = static("status.js").decode("utf-8")
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                      "new Function", "localStorage", "setAttribute(\"on", "javascript:"):
        assert forbidden not in script, forbidden
    assert "sessionStorage.setItem(TOKEN_KEY" in script
    assert '"Authorization": "Bearer " + state.token' in script
    assert "?token" not in script and "token=" not in script
    assert "credentials: \"omit\"" in script


def test_stylesAndIconSelfContained() -> None:
    """
    The style sheet imports nothing and loads no font or image from
    anywhere; the icon is plain SVG without script.
    """
    css = static("status.css").decode("utf-8")
    assert "@import" not in css and "url(" not in css
    svg = static("status.svg").decode("utf-8")
    assert "<script" not in svg and "href" not in svg


# -- on the admin listener


def test_siteServesThePageWithoutTheToken() -> None:
    """
    The admin site hands the page's paths to the page before any token is
    checked, so that loading it counts no failed authentication; every
    other path still goes to the admin resource.
    """
    service = makeService()
    site = service.admin.site
    assert isinstance(site, AdminSite)
    for path, expected in (([b"status"], site.statusPage), ([b""], site.statusPage),
                           ([b"status.js"], site.statusPage), ([b"pools"], service.admin.resource),
                           ([b"status", b"x"], service.admin.resource)):
        request = DummyRequest(path)
        request.prepath = []
        assert site.getResourceFor(request) is expected, path
    assert len(service.admin.resource.failures) == 0


@pytest_twisted.ensureDeferred
async def test_pageOnARealListener() -> None:
    """
    On a real admin listener: the page loads without a token (no failure
    counted), and the API next to it still answers 401 without one.
    """
    service = makeService(reactor)
    admin = service.admin
    admin.startService()
    try:
        port = (await admin.whenListening().addTimeout(10, reactor)).getHost().port
        for _ in range(3):
            answer = await rawExchange(port, b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"\r\nContent-Security-Policy: default-src 'none'; script-src 'self';" in head
            assert body == static("status.html")
        assert len(admin.resource.failures) == 0
        answer = await rawExchange(port, b"GET /pools HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 401 ")
        assert len(admin.resource.failures) == 1
    finally:
        await admin.stopService()


# -- GET /nodes


def adminCall(resource: AdminResource, method: str, path: str) -> tuple[int, dict]:
    request = DummyRequest([s.encode() for s in path.lstrip("/").split("/")])
    request.method = method.encode()
    request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {TOKEN}".encode()])
    body = resource.render(request)
    return request.responseCode, json.loads(body)


def test_nodesOfASingleNode() -> None:
    """
    C{GET /nodes} on a node that shares no sessions lists that node alone,
    with its sessions, and says so (C{shared} false); other methods get
    405; both strategies provide L{ISessionCluster} with C{nodes}.
    """
    service = makeService()
    resource = AdminResource(service, service.reactor)
    status, body = adminCall(resource, "GET", "/nodes")
    node = service.sessions.node
    assert (status, body) == (200, {"shared": False, "node": node, "age": None, "nodes": [
        {"node": node, "self": True, "sessions": 0, "relayed": 0}]})
    status, body = adminCall(resource, "POST", "/nodes")
    assert status == 405
    assert verifyObject(ISessionCluster, SingleNode(service.sessions))
