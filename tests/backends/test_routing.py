"""
Tests for L{gateway.backends.routing}: prefix routing, affinity keys and
Origin checks.
"""

from __future__ import annotations

import pytest

from gateway.errors import ConfigError
from gateway.wire.http1 import RequestHead
from gateway.backends.routing import (
    KeySpec,
    OriginPolicy,
    RouteOrigins,
    Router,
    affinityKey,
    parseKeySpec,
)


def head(target=b"/", headers=()):
    """
    @return: a GET L{RequestHead} for C{target}.
    """
    return RequestHead(b"GET", target, b"HTTP/1.1", list(headers))


ROUTER = Router([("/", "root"), ("/chat", "chat"), ("/chat/admin/", "admin"), ("/api/v1", "v1")])


@pytest.mark.parametrize(
    "path,expected",
    [
        (b"/chat", "chat"),
        (b"/chat/", "chat"),
        (b"/chat/x", "chat"),
        (b"/chat/x/y", "chat"),
        (b"/chat?room=1", "chat"),
        (b"/chat/?room=1", "chat"),
        (b"/chatroom", "root"),
        (b"/chatroom/x", "root"),
        (b"/chat/admin", "admin"),
        (b"/chat/admin/", "admin"),
        (b"/chat/admin/x", "admin"),
        (b"/chat/administrator", "chat"),
        (b"/api/v1", "v1"),
        (b"/api/v1/x", "v1"),
        (b"/api", "root"),
        (b"/api/v10", "root"),
        (b"/", "root"),
        (b"/x?/chat", "root"),
        (b"/ch%61t", "root"),
    ],
)
def test_longestPrefix(path, expected):
    """
    The longest prefix that matches at a segment boundary wins; C{/chat}
    never matches C{/chatroom}; the query string is not part of the path;
    paths are not percent-decoded.
    """
    assert ROUTER.match(path) == expected


def test_noRoot():
    """
    Without a C{/} route, a path no prefix matches gives L{None}.
    """
    router = Router([("/chat", 1)])
    assert router.match(b"/chatroom") is None
    assert router.match(b"/") is None
    assert router.match(b"") is None
    assert router.match(b"/chat/1") == 1


def test_empty():
    """
    A router with no routes matches nothing.
    """
    assert Router([]).match(b"/") is None


def test_rootMatchesEverything():
    """
    C{/} matches every path.
    """
    router = Router([("/", "all")])
    for path in (b"/", b"/a", b"/a/b/c", b"/?q", b"//"):
        assert router.match(path) == "all"


@pytest.mark.parametrize(
    "prefixes",
    [["chat"], [""], ["/chat room"], ["/chat?x"], ["/caf\u00e9"], ["/chat", "/chat/"]],
)
def test_badPrefixes(prefixes):
    """
    A prefix that does not start with C{/}, holds spaces, C{?} or non-ASCII
    characters, or repeats another, is a L{ConfigError}.
    """
    with pytest.raises(ConfigError):
        Router([(p, None) for p in prefixes])


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("address", KeySpec("address", "")),
        ("cookie:sid", KeySpec("cookie", "sid")),
        ("header:X-User", KeySpec("header", "x-user")),
        ("query:room id", KeySpec("query", "room id")),
    ],
)
def test_parseKeySpec(spec, expected):
    """
    Key specs parse into a source and a name; header names are lower-cased.
    """
    assert parseKeySpec(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", "addr", "address:x", "cookie", "cookie:", "header:", "query:", "header:a b",
     "cookie:a;b", "body:x", "Cookie:sid", "query:\n"],
)
def test_badKeySpec(spec):
    """
    Anything but C{address} or C{cookie|header|query:NAME} with a valid name
    is a L{ConfigError} whose message repeats the spec.
    """
    with pytest.raises(ConfigError) as info:
        parseKeySpec(spec)
    assert repr(spec) in str(info.value)
    assert "\n" not in str(info.value).replace("\\n", "")


def test_keySpecFrozen():
    """
    L{KeySpec} is immutable (it is shared by every request of a pool).
    """
    with pytest.raises(AttributeError):
        parseKeySpec("address").source = "cookie"  # type: ignore[misc]


REQUEST = head(
    b"/chat?room=42&empty=&room=43",
    [
        (b"Cookie", b"theme=dark"),
        (b"Cookie", b"sid=abc123; other=1"),
        (b"X-User", b"alice"),
        (b"X-Empty", b""),
    ],
)


@pytest.mark.parametrize(
    "spec,expected",
    [
        (None, None),
        ("address", b"address:203.0.113.9"),
        ("cookie:sid", b"cookie:abc123"),
        ("cookie:theme", b"cookie:dark"),
        ("cookie:missing", None),
        ("header:x-user", b"header:alice"),
        ("header:X-USER", b"header:alice"),
        ("header:x-missing", None),
        ("header:x-empty", None),
        ("query:room", b"query:42"),
        ("query:empty", None),
        ("query:missing", None),
    ],
)
def test_affinityKey(spec, expected):
    """
    The key is the value from the spec's source, prefixed by the source;
    header names match in any case, repeated Cookie headers are all read,
    the first query value counts, and a missing or empty value gives
    L{None}.
    """
    keySpec = parseKeySpec(spec) if spec is not None else None
    assert affinityKey(keySpec, REQUEST, "203.0.113.9") == expected


def test_affinityKeySourcesDistinct():
    """
    The same value from different sources gives different keys.
    """
    request = head(b"/?id=x", [(b"Cookie", b"id=x"), (b"Id", b"x")])
    keys = {affinityKey(parseKeySpec(s), request, "x") for s in
            ("address", "cookie:id", "header:id", "query:id")}
    assert len(keys) == 4


def test_affinityKeyQueryDecoded():
    """
    Query values are percent-decoded, so C{a%20b} and C{a+b} are one key.
    """
    spec = parseKeySpec("query:k")
    assert affinityKey(spec, head(b"/?k=a%20b"), "") == affinityKey(spec, head(b"/?k=a+b"), "")


@pytest.mark.parametrize(
    "path, dotted",
    [
        (b"/chat/../admin", True),
        (b"/a/./b", True),
        (b"/%2E%2e/x", True),
        (b"/..", True),
        (b"/a..b", False),
        (b"/.well-known/x", False),
        (b"/a/b.", False),
        (b"/chat", False),
    ],
)
def test_hasDotSegments(path: bytes, dotted: bool) -> None:
    """
    Dot segments, plain or percent-encoded, are recognised (the front door
    refuses them, since a backend could resolve them outside the route);
    dots inside a segment are not dot segments.
    """
    from gateway.backends.routing import hasDotSegments

    assert hasDotSegments(path) is dotted


LISTED = OriginPolicy(["https://app.example", "https://*.example.com", "http://localhost:3000"])


@pytest.mark.parametrize(
    "origin, allowed",
    [
        (b"https://app.example", True),
        (b"HTTPS://APP.EXAMPLE", True),
        (b"https://app.example:443", True),
        (b"https://app.example:8443", False),
        (b"http://app.example", False),
        (b"https://a.example.com", True),
        (b"https://A.Example.COM", True),
        (b"https://example.com", False),
        (b"https://a.b.example.com", False),
        (b"https://a.example.com.evil.example", False),
        (b"https://evil-app.example", False),
        (b"http://localhost:3000", True),
        (b"http://localhost", False),
        (b"https://gw.example", True),  # the gateway's own origin
        (b"http://gw.example", False),  # not over TLS
        (b"null", False),
        (b"https://app.example/", False),
        (b"https://app.example\xff", False),
        (b"", False),
    ],
)
def test_originPolicy(origin: bytes, allowed: bool) -> None:
    """
    An origin passes when it is the gateway's own (scheme from the
    listener, host and port from C{Host}) or matches a pattern: scheme and
    host in any case, default ports filled in, C{*} one whole label;
    C{null} and malformed values never pass a list.
    """
    refusal = LISTED.refusal([origin], [b"gw.example"], True)
    assert (refusal is None) is allowed


def test_originPolicyWithoutOrigin() -> None:
    """
    A request without C{Origin} (not from a browser) always passes; one
    with two is refused.
    """
    assert LISTED.refusal([], [b"gw.example"], False) is None
    assert OriginPolicy().refusal([], [], False) is None
    assert OriginPolicy().refusal([b"http://gw", b"http://gw"], [b"gw"], False) == (
        "a request must not carry more than one Origin header")


def test_originPolicySameOrigin() -> None:
    """
    The gateway's own origin compares with C{Host} after normalising both
    (case, default port); without exactly one C{Host} there is none.
    """
    policy = OriginPolicy()
    assert policy.refusal([b"http://gw.example"], [b"GW.example:80"], False) is None
    assert policy.refusal([b"http://gw.example:8080"], [b"gw.example:8080"], False) is None
    assert policy.refusal([b"http://gw.example:8080"], [b"gw.example"], False) is not None
    assert policy.refusal([b"http://127.0.0.1:8080"], [b"127.0.0.1:8080"], False) is None
    assert policy.refusal([b"http://gw.example"], [], False) is not None
    assert policy.refusal([b"http://gw.example"], [b"gw.example", b"gw.example"], False) is not None
    assert policy.refusal([b"http://gw.example"], [b"gw.example/x"], False) is not None
    assert OriginPolicy(sameOrigin=False).refusal([b"http://gw.example"], [b"gw.example"],
                                                   False) is not None


def test_originPolicyAny() -> None:
    """
    C{["*"]} lets every origin through, C{null} included, but not a
    malformed value.
    """
    policy = OriginPolicy(["*"])
    assert policy.refusal([b"https://evil.example"], [b"gw"], False) is None
    assert policy.refusal([b"null"], [b"gw"], False) is None
    assert policy.refusal([b"evil example"], [b"gw"], False) == "the Origin header is not a valid origin"


def test_originPolicyExact() -> None:
    """
    Origins given as written (C{session.cors_origins}) pass byte for byte;
    C{"*"} among them passes any origin.
    """
    policy = OriginPolicy(exact=["https://app.example"])
    assert policy.refusal([b"https://app.example"], [b"gw"], True) is None
    assert policy.refusal([b"https://other.example"], [b"gw"], True) is not None
    assert OriginPolicy(exact=["*"]).refusal([b"https://other.example"], [b"gw"], True) is None


def test_routeOrigins() -> None:
    """
    Per route: transparent upgrades are checked only where the route sets
    a list; session upgrades and long-polling always (the gateway's own
    origin, the list and C{cors_origins}); a path of no route gets the
    defaults.
    """
    origins = RouteOrigins([("/open", None), ("/app", ("https://app.example",)), ("/none", ())],
                           corsOrigins=("https://cors.example",))
    evil, app, cors = [b"https://evil.example"], [b"https://app.example"], [b"https://cors.example"]
    host = [b"gw"]
    assert origins.refusal(b"/open/x", "tunnel", evil, host, True) is None
    assert origins.refusal(b"/open/x", "session", evil, host, True) is not None
    assert origins.refusal(b"/open/x", "poll", evil, host, True) is not None
    assert origins.refusal(b"/open/x", "poll", cors, host, True) is None
    assert origins.refusal(b"/open/x", "session", cors, host, True) is None
    assert origins.refusal(b"/open/x", "tunnel", cors, host, True) is None
    assert origins.refusal(b"/app", "tunnel", cors, host, True) is not None
    assert origins.refusal(b"/app", "tunnel", evil, host, True) is not None
    assert origins.refusal(b"/app", "tunnel", app, host, True) is None
    assert origins.refusal(b"/app", "session", app, host, True) is None
    assert origins.refusal(b"/app", "poll", app, host, True) is None
    assert origins.refusal(b"/none", "tunnel", app, host, True) is not None
    assert origins.refusal(b"/none", "tunnel", [b"https://gw"], host, True) is None
    assert origins.refusal(b"/elsewhere", "tunnel", evil, host, True) is None
    assert origins.refusal(b"/elsewhere", "session", evil, host, True) is not None
