"""
Which pool serves a request, and which affinity key it carries.  Pure: a
request head and a client address in, values out.

Paths are matched as the client sent them, without percent-decoding or
removing dot segments: the backend receives the same bytes.

The affinity key spec and the route prefix are parsed by
L{gateway.config.values}, the same parsers that check the configuration
file; L{KeySpec} and L{parseKeySpec} are re-exported here.
"""

from __future__ import annotations

import re
from typing import Generic, Sequence, TypeVar

from ..config.values import KEY_SOURCES, KeySpec, parseKeySpec, parseRoutePrefix
from ..errors import ConfigError
from ..wire.http1 import RequestHead

__all__ = ["Router", "hasDotSegments", "KeySpec", "parseKeySpec", "affinityKey", "KEY_SOURCES"]

T = TypeVar("T")


class Router(Generic[T]):
    """
    Longest-prefix routing on path segments.

    A prefix matches a path equal to it or continuing it with C{/}:
    C{"/chat"} matches C{/chat}, C{/chat/} and C{/chat/x} but not
    C{/chatroom}; C{"/"} matches every path.  A trailing C{/} on a prefix is
    ignored (C{"/chat/"} is C{"/chat"}).  The query string is not part of
    the path.
    """

    def __init__(self, routes: Sequence[tuple[str, T]]) -> None:
        """
        @param routes: C{(prefix, value)} pairs, in any order.
        @raise ConfigError: for a prefix that does not start with C{/}, holds
            spaces, control characters, C{?}, C{#} or non-ASCII characters
            (write those percent-encoded, as clients send them), or appears
            twice.
        """
        self._table: dict[bytes, T] = {}
        for prefix, value in routes:
            key = parseRoutePrefix(prefix)
            if key in self._table:
                raise ConfigError(f"route prefix {prefix!r} is given twice")
            self._table[key] = value

    def match(self, path: bytes) -> T | None:
        """
        @param path: the request path (a query string, if present, is
            ignored).
        @return: the value of the longest prefix matching C{path}, or
            L{None}.
        """
        path = path.split(b"?", 1)[0].split(b"#", 1)[0]
        table = self._table
        while True:
            if path in table:
                return table[path]
            cut = path.rfind(b"/")
            if cut < 0:
                return None
            path = path[:cut]


_DOT_SEGMENT = re.compile(rb"(?:^|/)(?:\.|%2e){1,2}(?:/|$)", re.IGNORECASE)


def hasDotSegments(path: bytes) -> bool:
    """
    @return: whether C{path} has a C{.} or C{..} segment (plain or
        percent-encoded), which a backend may resolve to a path outside the
        route that matched: such requests are refused rather than routed.
    """
    return _DOT_SEGMENT.search(path) is not None


def affinityKey(
    spec: KeySpec | None, head: RequestHead, clientAddress: str
) -> bytes | None:
    """
    Extract a request's affinity key.

    The key is prefixed by its source (C{b"cookie:" + value},
    C{b"address:203.0.113.9"}), so that values from different sources never
    collide in a session map.  Header names match in any case; with a
    repeated header or query parameter, the first value counts.

    @param spec: the pool's key spec, or L{None} for none.
    @param head: the client's request head.
    @param clientAddress: the client's address (after trusted-proxy
        processing).
    @return: the key, or L{None} when there is no spec or the request lacks
        the value (or it is empty): callers then balance without affinity.
    """
    if spec is None:
        return None
    value: bytes | None
    if spec.source == "address":
        value = clientAddress.encode("utf-8")
    elif spec.source == "cookie":
        value = head.cookie(spec.name.encode("ascii"))
    elif spec.source == "header":
        value = head.get(spec.name.encode("ascii"))
    elif spec.source == "query":
        value = head.queryValue(spec.name.encode("utf-8"))
    else:  # pragma: no cover - parseKeySpec admits no other source
        raise ValueError(f"unknown key source {spec.source!r}")
    if not value:
        return None
    return spec.source.encode("ascii") + b":" + value
