"""
Just enough HTTP/1.1 to proxy a WebSocket handshake: parse a request or
response head, and write one back.  Sans-IO: bytes in, values out.

Header names keep the case they arrived in and repeated headers stay
separate, so that a proxy can forward them as they came (joining repeated
C{Cookie} headers with C{", "}, as a generic header API does, corrupts them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence
from urllib.parse import parse_qsl

from ..errors import LimitExceeded, ProtocolError

__all__ = [
    "RequestHead",
    "ResponseHead",
    "Headers",
    "findHeadEnd",
    "parseRequestHead",
    "parseResponseHead",
    "serializeRequestHead",
    "serializeResponseHead",
    "errorResponse",
    "HOP_BY_HOP",
    "REASONS",
    "errorPayload",
    "corsHeaders",
    "plainBodyLength",
    "plainKeepAlive",
    "serializeResponse",
]

Headers = list[tuple[bytes, bytes]]

# Matched with fullmatch: "$" would also match before a final "\n".
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_REQUEST_LINE = re.compile(rb"([A-Z]+) ([\x21-\x7e]+) (HTTP/1\.[01])")
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

#: Headers that describe one connection, never forwarded as they are.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    413: b"Content Too Large",
    403: b"Forbidden",
    404: b"Not Found",
    426: b"Upgrade Required",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class _HeadersMixin:
    headers: Headers

    def get(self, name: bytes) -> bytes | None:
        """
        @param name: a lower-case header name.
        @return: the first value of that header, or L{None}.
        """
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def getAll(self, name: bytes) -> list[bytes]:
        """
        @param name: a lower-case header name.
        @return: every value of that header, in order.
        """
        return [v for k, v in self.headers if k.lower() == name]

    def tokens(self, name: bytes) -> list[bytes]:
        """
        @param name: a lower-case header name.
        @return: the comma-separated, lower-cased, stripped tokens of every
            value of that header.
        """
        out = []
        for v in self.getAll(name):
            out.extend(t.strip().lower() for t in v.split(b",") if t.strip())
        return out


@dataclass(slots=True)
class RequestHead(_HeadersMixin):
    """
    A parsed HTTP/1.x request line and headers.
    """

    method: bytes
    target: bytes
    version: bytes
    headers: Headers
    #: The values of each header by lower-case name, built at the first
    #: lookup (a head's dozen lookups on the way in each scanned every
    #: header), with the list and length it was built from.
    _index: tuple[Headers, int, dict[bytes, list[bytes]]] | None = field(
        default=None, init=False, repr=False, compare=False)

    def _byName(self) -> dict[bytes, list[bytes]]:
        index = self._index
        headers = self.headers
        if index is None or index[0] is not headers or index[1] != len(headers):
            byName: dict[bytes, list[bytes]] = {}
            for k, v in headers:
                values = byName.get(k.lower())
                if values is None:
                    byName[k.lower()] = [v]
                else:
                    values.append(v)
            index = self._index = (headers, len(headers), byName)
        return index[2]

    def get(self, name: bytes) -> bytes | None:
        """
        @param name: a lower-case header name.
        @return: the first value of that header, or L{None}.
        """
        values = self._byName().get(name)
        return values[0] if values else None

    def getAll(self, name: bytes) -> list[bytes]:
        """
        @param name: a lower-case header name.
        @return: every value of that header, in order.
        """
        return list(self._byName().get(name, ()))

    @property
    def path(self) -> bytes:
        """
        The path part of the request target.
        """
        return self.target.split(b"?", 1)[0]

    @property
    def query(self) -> bytes:
        """
        The query string (without C{?}), or C{b""}.
        """
        parts = self.target.split(b"?", 1)
        return parts[1] if len(parts) == 2 else b""

    def queryValue(self, name: bytes) -> bytes | None:
        """
        @return: the first value of query parameter C{name}, or L{None}.
        """
        for k, v in parse_qsl(self.query, keep_blank_values=True):
            if k == name:
                return v
        return None

    def cookie(self, name: bytes) -> bytes | None:
        """
        @return: the value of cookie C{name} from any C{Cookie} header, or
            L{None}.
        """
        for header in self.getAll(b"cookie"):
            for pair in header.split(b";"):
                k, sep, v = pair.strip().partition(b"=")
                if sep and k == name:
                    return v.strip(b'"')
        return None

    def hasBody(self) -> bool:
        """
        @return: whether a body follows this head: a C{Transfer-Encoding},
            or a C{Content-Length} other than 0 (the head's framing is
            checked by L{parseRequestHead}).
        """
        if self.get(b"transfer-encoding") is not None:
            return True
        length = self.get(b"content-length")
        return length is not None and length.split(b",")[0].strip(b" \t").lstrip(b"0") != b""

    def isWebSocketUpgrade(self) -> bool:
        """
        @return: whether this is a WebSocket opening handshake (RFC 6455
            4.1): a GET with C{Upgrade: websocket} and C{Connection: upgrade}.
        """
        return (
            self.method == b"GET"
            and b"websocket" in self.tokens(b"upgrade")
            and b"upgrade" in self.tokens(b"connection")
        )


@dataclass(slots=True)
class ResponseHead(_HeadersMixin):
    """
    A parsed HTTP/1.x status line and headers.
    """

    version: bytes
    status: int
    reason: bytes
    headers: Headers


def findHeadEnd(buffer: bytes, limit: int) -> int:
    """
    Find where a message head ends.

    @return: the index just past the blank line that ends the head, or -1
        when more bytes are needed.
    @raise LimitExceeded: when no head ends within the first C{limit} bytes
        (blank line included), however the bytes were split on arrival.
    """
    end = buffer.find(b"\r\n\r\n", 0, limit)
    if end == -1:
        if len(buffer) >= limit:
            raise LimitExceeded(f"message head larger than {limit} bytes")
        return -1
    return end + 4


def _parseHeaders(lines: Sequence[bytes]) -> Headers:
    headers: Headers = []
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            raise ProtocolError("obsolete line folding in headers")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.fullmatch(name):
            raise ProtocolError("malformed header line")
        value = value.strip(b" \t")
        if _BAD_VALUE.search(value):
            raise ProtocolError(f"control character in header {name.decode('ascii')}")
        headers.append((name, value))
    return headers


def parseRequestHead(head: bytes) -> RequestHead:
    """
    Parse a request head (request line, headers, final blank line).

    @raise ProtocolError: when it is not well-formed HTTP/1.0 or 1.1.
    """
    lines = head.split(b"\r\n")
    match = _REQUEST_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed request line")
    method, target, version = match.groups()
    if not target.startswith(b"/"):
        raise ProtocolError("request target must be an absolute path")
    head = RequestHead(method, target, version, _parseHeaders(lines[1:]))
    _checkFraming(head)
    return head


_LENGTH = re.compile(rb"[0-9]{1,18}")


def _checkFraming(head: RequestHead) -> None:
    """
    Refuse a request whose framing two parsers could read two ways (RFC
    9112 6.3, 3.2): C{Content-Length} with C{Transfer-Encoding}, lengths
    that disagree or are not numbers, and more than one C{Host}.
    """
    lengths = [v.strip(b" \t") for value in head.getAll(b"content-length") for v in value.split(b",")]
    if lengths:
        if head.get(b"transfer-encoding") is not None:
            raise ProtocolError("Content-Length together with Transfer-Encoding")
        if not all(_LENGTH.fullmatch(v) for v in lengths):
            raise ProtocolError("malformed Content-Length")
        if len({int(v) for v in lengths}) > 1:
            raise ProtocolError("conflicting Content-Length values")
    if len(head.getAll(b"host")) > 1:
        raise ProtocolError("more than one Host header")


def parseResponseHead(head: bytes) -> ResponseHead:
    """
    Parse a response head (status line, headers, final blank line).

    @raise ProtocolError: when it is not well-formed HTTP/1.0 or 1.1.
    """
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError("malformed status line")
    version, status, reason = match.groups()
    return ResponseHead(version, int(status), reason or b"", _parseHeaders(lines[1:]))


def _serializeHeaders(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    return [b"%s: %s\r\n" % (k, v) for k, v in headers]


def serializeRequestHead(
    method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """
    @return: an HTTP/1.1 request head.
    """
    return b"".join(
        [b"%s %s HTTP/1.1\r\n" % (method, target), *_serializeHeaders(headers), b"\r\n"]
    )


def serializeResponseHead(
    status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]]
) -> bytes:
    """
    @return: an HTTP/1.1 response head.
    """
    return b"".join(
        [b"HTTP/1.1 %d %s\r\n" % (status, reason), *_serializeHeaders(headers), b"\r\n"]
    )


def errorPayload(status: int, message: str, extra: dict | None = None,
                 reasons: dict[int, bytes] = REASONS) -> dict:
    """
    @return: the JSON body of every error the gateway answers:
        C{{"error": REASON, "status": STATUS, "message": MESSAGE}} and any
        C{extra} fields, the reason phrase read from C{reasons}.
    """
    reason = reasons.get(status, b"Error").decode("ascii")
    return {"error": reason, "status": status, "message": message, **(extra or {})}


def errorResponse(
    status: int,
    message: str,
    headers: Iterable[tuple[bytes, bytes]] = (),
    extra: dict | None = None,
) -> bytes:
    """
    A complete response that closes the connection, with a JSON body
    (L{errorPayload}).
    """
    reason = REASONS.get(status, b"Error")
    body = json.dumps(errorPayload(status, message, extra)).encode("utf-8")
    return (
        serializeResponseHead(
            status,
            reason,
            [
                (b"Content-Type", b"application/json"),
                (b"Content-Length", b"%d" % len(body)),
                (b"Cache-Control", b"no-store"),
                (b"Connection", b"close"),
                *headers,
            ],
        )
        + body
    )


def plainBodyLength(head: RequestHead) -> int | None:
    """
    The length of a request's body when it is framed in the one spelling
    that every HTTP/1.1 parser reads the same way, for a reader of its own
    (L{gateway.web.StrictChannel}'s lean requests) that leaves every other
    spelling to the general parser.

    @return: the body's length: the one C{Content-Length}, all digits, or 0
        without one; L{None} when the head has a C{Transfer-Encoding}, an
        C{Expect}, more than one C{Content-Length} or a list in one.
    """
    if head.get(b"transfer-encoding") is not None or head.get(b"expect") is not None:
        return None
    lengths = head.getAll(b"content-length")
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit():
        return None
    return int(lengths[0])


def plainKeepAlive(head: RequestHead) -> bool | None:
    """
    Whether the connection stays open after the answer to an HTTP/1.1
    request, when its C{Connection} header says so in the one spelling that
    every reading agrees on (twisted.web's, for one, reads only the first
    C{Connection} header and splits it on spaces, not commas).

    @return: L{True} without a C{Connection} header or with one of a single
        token other than C{close}, L{False} with C{Connection: close};
        L{None} for an HTTP/1.0 request or any other C{Connection}.
    """
    if head.version != b"HTTP/1.1":
        return None
    values = head.getAll(b"connection")
    if not values:
        return True
    if len(values) > 1 or not _TOKEN.fullmatch(values[0]):
        return None
    return values[0].lower() != b"close"


def serializeResponse(status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes) -> bytes:
    """
    @return: a whole HTTP/1.1 response: status line, headers and C{body}
        (the headers give its framing).
    """
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    for k, v in headers:
        parts.append(b"%s: %s\r\n" % (k, v))
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


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
