"""
Which pool serves a request, which affinity key it carries, and whether
its C{Origin} may use the route.  Pure: a request head and a client
address in, values out.

Paths are matched as the client sent them, without percent-decoding or
removing dot segments: the backend receives the same bytes.

The affinity key spec and the route prefix are parsed by
L{gateway.config.values}, the same parsers that check the configuration
file; L{KeySpec} and L{parseKeySpec} are re-exported here.
"""

from __future__ import annotations

import re
from typing import Generic, Sequence, TypeVar

from ..config.values import (
    KEY_SOURCES,
    KeySpec,
    Origin,
    parseKeySpec,
    parseOrigin,
    parseOriginPattern,
    parseRoutePrefix,
)
from ..errors import ConfigError
from ..wire.http1 import RequestHead

__all__ = [
    "Router",
    "hasDotSegments",
    "KeySpec",
    "parseKeySpec",
    "affinityKey",
    "KEY_SOURCES",
    "OriginPolicy",
    "RouteOrigins",
]

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


def _hostMatches(pattern: str, host: str) -> bool:
    """
    @return: whether C{host} matches C{pattern}, label by label, a C{*}
        label matching any one label.
    """
    if pattern == host:
        return True
    if "*" not in pattern:
        return False
    wanted, labels = pattern.split("."), host.split(".")
    if len(wanted) != len(labels) or host.startswith("["):
        return False
    return all(w == "*" or w == label for w, label in zip(wanted, labels))


class OriginPolicy:
    """
    Which C{Origin} values may use a route: requests without one, the
    gateway's own origin (when C{sameOrigin}), the origins C{exact} names
    as written and those the patterns match; or any origin at all (the
    pattern list C{["*"]}).
    """

    def __init__(self, patterns: Sequence[str] = (), *, sameOrigin: bool = True,
                 exact: Sequence[str] = ()) -> None:
        """
        @param patterns: origin patterns (see
            L{gateway.config.values.parseOriginPattern}), or C{["*"]}.
        @param exact: origins let through as written, byte for byte
            (C{session.cors_origins}); C{"*"} among them lets any through.
        @raise ConfigError: for a bad pattern.
        """
        self.anyOrigin = "*" in patterns or "*" in exact
        self.patterns: tuple[Origin, ...] = tuple(parseOriginPattern(p) for p in patterns if p != "*")
        self.sameOrigin = sameOrigin
        self.exact = frozenset(o.encode("latin-1") for o in exact)

    def refusal(self, origins: Sequence[bytes], hosts: Sequence[bytes], secure: bool) -> str | None:
        """
        @param origins: every C{Origin} value of the request.
        @param hosts: every C{Host} value of the request.
        @param secure: whether the request came over TLS (the scheme of the
            gateway's own origin).
        @return: L{None} when the request may go on, else why it may not
            (the message of its 403).
        """
        if not origins:
            return None
        if len(origins) > 1:
            return "a request must not carry more than one Origin header"
        value = origins[0]
        if value in self.exact:
            return None
        origin = parseOrigin(value.decode("latin-1"))
        if origin is None:
            if value.lower() == b"null" and self.anyOrigin:
                return None
            return "the Origin header is not a valid origin"
        if self.anyOrigin:
            return None
        if self.sameOrigin and len(hosts) == 1:
            scheme = "https" if secure else "http"
            own = parseOrigin(f"{scheme}://" + hosts[0].decode("latin-1"))
            if own == origin:
                return None
        for pattern in self.patterns:
            if (pattern.scheme == origin.scheme and pattern.port == origin.port
                    and _hostMatches(pattern.host, origin.host)):
                return None
        return "pages from this origin may not connect to this path"


class RouteOrigins:
    """
    The Origin checks of every route, by path: for transparent WebSocket
    upgrades (none unless the route sets C{allowed_origins}), and for the
    session protocol, over a WebSocket or long-polling (the gateway's own
    origin, the route's list and C{session.cors_origins}, the pages allowed
    to use sessions across origins).
    """

    def __init__(self, routes: Sequence[tuple[str, Sequence[str] | None]],
                 corsOrigins: Sequence[str] = ()) -> None:
        """
        @param routes: C{(prefix, allowedOrigins)} pairs, L{None} for a
            route that sets no list.
        @param corsOrigins: the origins that may use sessions across
            origins (C{session.cors_origins}).
        """
        self._default = (None, OriginPolicy(exact=corsOrigins))
        self._router: Router[tuple[OriginPolicy | None, OriginPolicy]] = Router([
            (prefix, (
                None if allowed is None else OriginPolicy(allowed),
                OriginPolicy(allowed or (), exact=corsOrigins),
            ))
            for prefix, allowed in routes
        ])

    def refusal(self, path: bytes, mode: str, origins: Sequence[bytes],
                hosts: Sequence[bytes], secure: bool) -> str | None:
        """
        @param mode: C{"tunnel"} (a transparent upgrade), C{"session"} (a
            session upgrade) or C{"poll"} (a long-polling request).
        @return: as L{OriginPolicy.refusal}; L{None} when the route does
            not check this mode.
        """
        tunnel, session = self._router.match(path) or self._default
        policy = tunnel if mode == "tunnel" else session
        if policy is None:
            return None
        return policy.refusal(origins, hosts, secure)
