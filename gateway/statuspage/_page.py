"""
The status page's files, served on the admin listener without the admin
token (L{gateway.admin.AdminSite} hands their paths here before the token is
checked).

Why without the token: a browser cannot send an C{Authorization} header when
it loads a page, and a token in the URL would end up in histories, logs and
C{Referer}s.  So the files hold no data at all: the page asks for the token,
keeps it in the tab's C{sessionStorage}, and its script reads the admin API
(C{/pools}, C{/sessions}, C{/nodes}, C{/metrics}) with the header, through
the same token check and rate limit as any other client of the API.

What keeps the page itself safe is a strict set of headers on every file
(L{SECURITY_HEADERS}): scripts only from the listener itself (no inline
script), nothing from elsewhere, no framing, no referrer, nothing cached;
the script writes every value it reads as text, never as HTML.
"""

from __future__ import annotations

from twisted.web.resource import Resource
from twisted.web.server import Request

from ..web import StaticFiles, respondJSON
from ..wire.http1 import errorPayload

__all__ = ["StatusPage", "FILES", "SECURITY_HEADERS"]

#: The page's paths (as twisted.web splits them) -> the file in the package
#: and its content type.  The page is at C{/} and C{/status}; its script and
#: style sheet are referred to by relative URLs, so that the page also works
#: behind a proxy that adds a prefix.
FILES: dict[tuple[bytes, ...], tuple[str, bytes]] = {
    (b"",): ("static/status.html", b"text/html; charset=utf-8"),
    (b"status",): ("static/status.html", b"text/html; charset=utf-8"),
    (b"status.js",): ("static/status.js", b"text/javascript; charset=utf-8"),
    (b"status.css",): ("static/status.css", b"text/css; charset=utf-8"),
    (b"status.svg",): ("static/status.svg", b"image/svg+xml"),
}

#: Paths answered here without a file: C{/status/} is sent to C{/status}
#: (the relative URLs of its files would not resolve under it), and
#: C{/favicon.ico}, which browsers ask for by themselves, gets a 404 rather
#: than the admin API's 401, which would count against the address's
#: failed authentications.
_REDIRECT = (b"status", b"")
_FAVICON = (b"favicon.ico",)

#: The headers of every file of the page.
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Security-Policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
     b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"X-Frame-Options", b"DENY"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"Cache-Control", b"no-store"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
    (b"Cross-Origin-Resource-Policy", b"same-origin"),
)


class StatusPage(Resource):
    """
    The page's files, each read once from the package.
    """

    isLeaf = True

    def __init__(self, static: StaticFiles | None = None) -> None:
        super().__init__()
        self.static = static if static is not None else StaticFiles()

    @staticmethod
    def serves(postpath: list[bytes]) -> bool:
        """
        @param postpath: a request's path segments.
        @return: whether the path is the page's (so answered without the
            token).
        """
        path = tuple(postpath)
        return path in FILES or path == _REDIRECT or path == _FAVICON

    def render(self, request: Request) -> bytes:
        """
        Answer C{GET} (and C{HEAD}) with the file and L{SECURITY_HEADERS};
        any other method gets 405.
        """
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return respondJSON(request, 405, errorPayload(405, "the status page is read with GET"))
        path = tuple(request.postpath)
        if path == _REDIRECT:
            request.setResponseCode(308)
            request.setHeader(b"Location", b"../status")
            request.setHeader(b"Content-Length", b"0")
            return b""
        if path == _FAVICON:
            return respondJSON(request, 404, errorPayload(404, "no icon here; the page's is status.svg"))
        name, contentType = FILES[path]
        body = self.static.read(name)
        request.setHeader(b"Content-Type", contentType)
        request.setHeader(b"Content-Length", b"%d" % len(body))
        return body
