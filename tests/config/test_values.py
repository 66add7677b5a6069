"""
Tests for L{gateway.config.values}: backend URLs, and the affinity key specs
and route prefixes of the file checked with the parsers the router uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, parseBackendURL
from gateway.config.values import Origin, parseOrigin, parseOriginPattern

from .helpers import POOL, configError, writeConfig


@pytest.mark.parametrize(
    "key, value",
    [
        ("affinity", "cookie"),
        ("affinity", "cookie:"),
        ("affinity", "path:x"),
        ("affinity", "address:x"),
        ("affinity", "header:a b"),
    ],
)
def test_badAffinity(tmp_path: Path, key: str, value: str) -> None:
    """
    An affinity spec that L{gateway.config.values.parseKeySpec} rejects is one
    line naming the file, the key and the spec, with the parser's reason.
    """
    path = writeConfig(
        tmp_path,
        f'[pool.chat]\n{key} = "{value}"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
    )
    message = configError(path)
    assert message.startswith(f"{path}: pool.chat.{key}: bad affinity key {value!r}")


@pytest.mark.parametrize("prefix", ["chat", "", "/a?b", "/a#b", "/a b", "/caf\u00e9"])
def test_badRoutePrefix(tmp_path: Path, prefix: str) -> None:
    """
    A route prefix that L{gateway.config.values.parseRoutePrefix} rejects (not starting with
    C{/}, with a query, fragment, space or non-ASCII character) is one line
    naming the file, the route and the prefix.
    """
    path = writeConfig(
        tmp_path, f"[[route]]\nprefix = {prefix!r}\npool = 'chat'\n" + POOL
    )
    message = configError(path)
    if prefix:
        assert message.startswith(f"{path}: route[0].prefix: route prefix {prefix!r} ")
    else:
        assert message == f"{path}: route[0].prefix: must not be empty"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ws://example.com", (False, "example.com", 80)),
        ("wss://example.com", (True, "example.com", 443)),
        ("ws://127.0.0.1:8765", (False, "127.0.0.1", 8765)),
        ("wss://h:1/", (True, "h", 1)),
        ("ws://h:65535", (False, "h", 65535)),
        ("ws://[::1]:8765", (False, "::1", 8765)),
        ("wss://[2001:db8::1]", (True, "2001:db8::1", 443)),
        ("ws://[::1]/", (False, "::1", 80)),
        ("WS://Host:8", (False, "Host", 8)),
    ],
)
def test_parseBackendURL(url: str, expected: tuple[bool, str, int]) -> None:
    """
    C{ws://} and C{wss://} URLs give C{(secure, host, port)}, with default
    ports 80 and 443 and IPv6 hosts out of their brackets.
    """
    assert parseBackendURL(url) == expected


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://x", "must start with ws:// or wss://"),
        ("x", "must start with ws:// or wss://"),
        ("ws:/x", "must start with ws:// or wss://"),
        ("ws://h/app", "must not have a path: the client's path is passed on unchanged"),
        ("ws://h//", "must not have a path: the client's path is passed on unchanged"),
        ("ws://h?a=1", "must not have a query: the client's query is passed on unchanged"),
        ("ws://h/?a=1", "must not have a query: the client's query is passed on unchanged"),
        ("ws://h#top", "must not have a fragment"),
        ("ws://u:p@h", "must not contain a user name or password"),
        ("ws://", "must name a host"),
        ("ws://:80", "has a bad host name ''"),
        ("ws://a b", "has a bad host name 'a b'"),
        ("ws://h:0", "has a bad port '0': it must be a number from 1 to 65535"),
        ("ws://h:65536", "has a bad port '65536': it must be a number from 1 to 65535"),
        ("ws://h:", "has a bad port '': it must be a number from 1 to 65535"),
        ("ws://h:x", "has a bad port 'x': it must be a number from 1 to 65535"),
        ("ws://h:-1", "has a bad port '-1': it must be a number from 1 to 65535"),
        ("ws://::1:80", "must put an IPv6 address in brackets, as in ws://[::1]:8765"),
        ("ws://[::1", "has an unclosed '[' around its host"),
        ("ws://[nope]", "has 'nope' in brackets, which is not an IPv6 address"),
        ("ws://[::1]80", "must have only ':PORT' after the ']' of its host"),
        ("ws://[::1]:0", "has a bad port '0': it must be a number from 1 to 65535"),
    ],
)
def test_parseBackendURLErrors(url: str, reason: str) -> None:
    """
    Anything but C{ws[s]://host[:port]} is a one-line L{ConfigError} quoting
    the URL and saying what is wrong with it.
    """
    with pytest.raises(ConfigError) as caught:
        parseBackendURL(url)
    assert str(caught.value) == f"backend URL {url!r} {reason}"


def test_partsParseWithTheSameFunctions() -> None:
    """
    The router, the pools and the Redis session map use the very parsers
    and bounds that check the file (re-exported where they used to live), so
    the file and the running gateway never disagree.
    """
    from gateway.backends import pool, routing
    from gateway.config import model, values
    from gateway.sessionmap import redis

    assert routing.parseKeySpec is values.parseKeySpec
    assert routing.KeySpec is values.KeySpec
    assert routing.KEY_SOURCES is values.KEY_SOURCES
    assert redis.parseRedisURL is values.parseRedisURL
    assert redis.RedisAddress is values.RedisAddress
    assert redis.DEFAULT_URL == values.DEFAULT_REDIS_URL
    assert pool.MAX_WEIGHT == model.MAX_WEIGHT


def test_routePrefixAsTheRouterKeysIt() -> None:
    """
    L{parseRoutePrefix} gives the prefix the router matches on: bytes,
    without trailing slashes, C{"/"} becoming C{b""}; a bad one is a
    L{ConfigError} quoting it.
    """
    from gateway.config.values import parseRoutePrefix

    assert parseRoutePrefix("/chat/") == b"/chat"
    assert parseRoutePrefix("/") == b""
    with pytest.raises(ConfigError) as caught:
        parseRoutePrefix("chat")
    assert str(caught.value) == "route prefix 'chat' must start with '/'"


def test_configImportsNothingAbove() -> None:
    """
    Importing the configuration loads no module of the parts above it
    (backends, session maps): it sits below them.
    """
    import subprocess
    import sys

    code = (
        "import sys, gateway.config\n"
        "above = sorted(m for m in sys.modules"
        " if m.startswith(('gateway.backends', 'gateway.sessionmap')))\n"
        "assert not above, above\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("https://app.example", Origin("https", "app.example", 443)),
        ("HTTPS://App.Example:443", Origin("https", "app.example", 443)),
        ("http://127.0.0.1:8080", Origin("http", "127.0.0.1", 8080)),
        ("http://[::1]", Origin("http", "[::1]", 80)),
        ("chrome-extension://abcdef", Origin("chrome-extension", "abcdef", None)),
        ("null", None),
        ("", None),
        ("https://", None),
        ("https://app.example/", None),
        ("https://app.example/path", None),
        ("https://user@app.example", None),
        ("https://app.example:0", None),
        ("https://app.example:65536", None),
        ("https://app..example", None),
        ("https://app.example.", None),
        ("https://*.example", None),
        ("https://app.example, https://b.example", None),
        ("https://app.ex\u00e4mple", None),
        ("app.example", None),
    ],
)
def test_parseOrigin(value: str, expected: Origin | None) -> None:
    """
    An Origin value is C{scheme://host[:port]} in ASCII, normalised (lower
    case, default ports for http and https); anything else, C{null}
    included, parses to L{None}.
    """
    assert parseOrigin(value) == expected


def test_parseOriginPattern() -> None:
    """
    A pattern parses as an origin does, with C{*} allowed as a whole host
    label; anything else is a one-line L{ConfigError}.
    """
    assert parseOriginPattern("https://*.Example.com") == Origin("https", "*.example.com", 443)
    assert parseOriginPattern("http://*:8080") == Origin("http", "*", 8080)
    for bad in ("*", "https://a*.example", "https://app.example/", "null", "app.example", "https://[::*]"):
        with pytest.raises(ConfigError) as caught:
            parseOriginPattern(bad)
        assert "\n" not in str(caught.value)


def test_parseRedisShards() -> None:
    """
    C{shards}: URLs as strings or tables; a shard given without a name is
    named after its address (without credentials; a Sentinel service by
    its name, not its Sentinels), and a table's C{sentinel_password} is
    the Sentinels'.
    """
    from gateway.config.values import RedisShard, parseRedisShards, parseRedisURL

    shards = parseRedisShards([
        "redis://:pw@10.0.0.1:6380/2",
        {"url": "redis://10.0.0.2"},
        {"url": "redis+sentinel://s1,s2/main/1", "sentinel_password": "sp"},
        {"url": "unix:///run/redis.sock?db=3", "name": "local"},
    ])
    assert [s.name for s in shards] == ["10.0.0.1:6380/2", "10.0.0.2:6379/0", "sentinel:main/1", "local"]
    assert shards[0] == RedisShard("10.0.0.1:6380/2", parseRedisURL("redis://:pw@10.0.0.1:6380/2"))
    assert shards[2].address.sentinelPassword == "sp"
    with pytest.raises(ConfigError) as caught:
        parseRedisShards(["redis://a"] * 33)
    assert str(caught.value) == "shards: lists 33 servers, more than 32"
