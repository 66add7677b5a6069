"""
The parsers of single values the configuration holds: backend URLs,
affinity key specs, route prefixes, origins and Redis URLs.

Pure (no sockets, no reactor), and each fails with a one-line
L{ConfigError} saying what is wrong with the value.  The loader checks the
file and the flags with them, and the parts that use the values parse them
with the same functions (the router its prefixes and key specs, the Redis
session map its URL), so that the file and the running gateway never
disagree.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from twisted.internet.interfaces import IStreamClientEndpoint

from ..errors import ConfigError
from .reader import configError

__all__ = [
    "parseBackendURL",
    "hostPort",
    "KEY_SOURCES",
    "KeySpec",
    "parseKeySpec",
    "parseRoutePrefix",
    "Origin",
    "parseOrigin",
    "parseOriginPattern",
    "DEFAULT_REDIS_URL",
    "RedisAddress",
    "SENTINEL_PORT",
    "SentinelAddress",
    "parseRedisURL",
    "MAX_SHARDS",
    "RedisShard",
    "parseRedisShards",
    "shardName",
    "MAX_WORKERS",
    "parseWorkers",
]

_DEFAULT_PORTS = {False: 80, True: 443}
_HOST_NAME = re.compile(r"[\w.-]+\Z")
_PORT = re.compile(r"[0-9]{1,5}\Z")


def hostPort(host: str, port: int) -> str:
    """
    @return: C{host:port}, with an IPv6 address in brackets.
    """
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parseBackendURL(url: str) -> tuple[bool, str, int]:
    """
    Split a backend URL.

    @return: C{(secure, host, port)}; the port defaults to 80 for C{ws} and
        443 for C{wss}, and an IPv6 host is returned without its brackets.
    @raise ConfigError: for anything but C{ws://host[:port]} or
        C{wss://host[:port]} (optionally followed by a lone C{/}) with no
        path, query, fragment or user information (the client's path and
        query are passed to the backend unchanged).
    """

    def bad(reason: str) -> ConfigError:
        """
        @return: the error for this URL, saying C{reason}.
        """
        return configError(f"backend URL {url!r} {reason}")

    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in ("ws", "wss"):
        raise bad("must start with ws:// or wss://")
    secure = scheme.lower() == "wss"
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    remainder = rest[len(authority) :]
    path = re.split(r"[?#]", remainder, maxsplit=1)[0]
    if path not in ("", "/"):
        raise bad("must not have a path: the client's path is passed on unchanged")
    if "?" in remainder.partition("#")[0]:
        raise bad("must not have a query: the client's query is passed on unchanged")
    if "#" in remainder:
        raise bad("must not have a fragment")
    if "@" in authority:
        raise bad("must not contain a user name or password")
    if not authority:
        raise bad("must name a host")

    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise bad("has an unclosed '[' around its host")
        host, afterHost = authority[1:end], authority[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise bad(f"has {host!r} in brackets, which is not an IPv6 address") from None
        if afterHost and not afterHost.startswith(":"):
            raise bad("must have only ':PORT' after the ']' of its host")
        portText = afterHost[1:] if afterHost else None
    else:
        if authority.count(":") > 1:
            raise bad("must put an IPv6 address in brackets, as in ws://[::1]:8765")
        host, colon, afterColon = authority.partition(":")
        portText = afterColon if colon else None
        if not _HOST_NAME.match(host):
            raise bad(f"has a bad host name {host!r}")

    if portText is None:
        return secure, host, _DEFAULT_PORTS[secure]
    if not _PORT.match(portText) or not 1 <= int(portText) <= 65535:
        raise bad(f"has a bad port {portText!r}: it must be a number from 1 to 65535")
    return secure, host, int(portText)


#: The places an affinity key can come from.
KEY_SOURCES = ("address", "cookie", "header", "query")

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True)
class KeySpec:
    """
    Where a request's affinity key comes from.

    @ivar source: one of L{KEY_SOURCES}.
    @ivar name: the cookie, header (lower case) or query parameter name;
        C{""} for C{"address"}.
    """

    source: str
    name: str = ""


def parseKeySpec(spec: str) -> KeySpec:
    """
    Parse an affinity key spec: C{"address"}, C{"cookie:NAME"},
    C{"header:NAME"} or C{"query:NAME"}.

    @raise ConfigError: for anything else (an unknown source, a missing or
        malformed name, a name after C{address}).
    """
    usage = "expected 'address', 'cookie:NAME', 'header:NAME' or 'query:NAME'"
    source, sep, name = spec.partition(":")
    if source == "address":
        if sep:
            raise ConfigError(f"bad affinity key {spec!r}: 'address' takes no name")
        return KeySpec("address")
    if source not in KEY_SOURCES:
        raise ConfigError(f"bad affinity key {spec!r}: {usage}")
    if not name:
        raise ConfigError(f"bad affinity key {spec!r}: {source} needs a name; {usage}")
    if source in ("cookie", "header") and not _TOKEN.match(name):
        raise ConfigError(f"bad affinity key {spec!r}: {name!r} is not a valid {source} name")
    if source == "query" and not name.isprintable():
        raise ConfigError(f"bad affinity key {spec!r}: query name must be printable")
    if source == "header":
        name = name.lower()
    return KeySpec(source, name)


_PREFIX_BAD = re.compile(r"[\x00-\x20\x7f?#]")


def parseRoutePrefix(prefix: str) -> bytes:
    """
    Check a route prefix, as L{gateway.backends.routing.Router} matches it.

    @return: C{prefix} as bytes without its trailing slashes.
    @raise ConfigError: for a prefix that does not start with C{/}, holds
        spaces, control characters, C{?}, C{#} or non-ASCII characters
        (write those percent-encoded, as clients send them).
    """
    if not prefix.startswith("/"):
        raise ConfigError(f"route prefix {prefix!r} must start with '/'")
    if not prefix.isascii() or _PREFIX_BAD.search(prefix):
        raise ConfigError(
            f"route prefix {prefix!r} must be a path of printable ASCII"
            " (percent-encode anything else), without '?' or '#'"
        )
    return prefix.rstrip("/").encode("ascii")


#: The port an origin has when it names none, by scheme.
_ORIGIN_PORTS = {"http": 80, "https": 443}
_ORIGIN = re.compile(
    r"([a-z][a-z0-9+.-]*)://"
    r"(\[[0-9a-f:.]+\]|[a-z0-9_-]+(?:\.[a-z0-9_-]+)*)"
    r"(?::([0-9]{1,5}))?\Z"
)
_ORIGIN_PATTERN = re.compile(
    r"([a-z][a-z0-9+.-]*)://"
    r"(\[[0-9a-f:.]+\]|(?:[a-z0-9_-]+|\*)(?:\.(?:[a-z0-9_-]+|\*))*)"
    r"(?::([0-9]{1,5}))?\Z"
)


@dataclass(frozen=True)
class Origin:
    """
    An origin (RFC 6454), in normal form: scheme and host lower-cased, the
    port filled in for C{http} (80) and C{https} (443), L{None} for another
    scheme that names none.  In a pattern, a host label may be C{*}.
    """

    scheme: str
    host: str
    port: int | None


def _origin(match: re.Match[str] | None) -> Origin | None:
    if match is None:
        return None
    scheme, host, port = match.groups()
    if port is None:
        number = _ORIGIN_PORTS.get(scheme)
    else:
        number = int(port)
        if not 0 < number < 65536:
            return None
    return Origin(scheme, host, number)


def parseOrigin(value: str) -> Origin | None:
    """
    Parse the value of an C{Origin} header (or a C{Host}, given a scheme
    as C{"http://" + host}).

    @return: the origin, or L{None} for anything but
        C{scheme://host[:port]} in printable ASCII (the opaque C{null} and
        any path, user information or stray character included).
    """
    if not value.isascii() or len(value) > 1024:
        return None
    return _origin(_ORIGIN.match(value.lower()))


def parseOriginPattern(pattern: str) -> Origin:
    """
    Parse one pattern of a route's C{allowed_origins}:
    C{scheme://host[:port]}, where a host label may be C{*} (any one
    label: C{https://*.example.com} matches C{https://app.example.com},
    not C{https://example.com} nor C{https://a.b.example.com}).

    @raise ConfigError: for anything else.
    """
    origin = _origin(_ORIGIN_PATTERN.match(pattern.lower())) if pattern.isascii() else None
    if origin is None:
        raise ConfigError(
            f"bad origin {pattern!r}: write scheme://host[:port] with no path, such as"
            " 'https://app.example' or 'https://*.example.com' ('*' for a whole host label)"
        )
    return origin


#: The Redis server used when the options name none.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RedisAddress:
    """
    Where a Redis server is, parsed from a URL by L{parseRedisURL}.

    @ivar host: the host name or address for TCP, or L{None} for a Unix
        socket.
    @ivar path: the Unix socket's path, or L{None} for TCP.
    @ivar db: the database number, selected on every connection.
    @ivar tls: whether the connections are TLS (C{rediss://}), with the
        session map's C{tls_*} options.
    """

    host: str | None
    port: int
    path: str | None
    db: int
    username: str | None
    password: str | None
    tls: bool = False

    def __str__(self) -> str:
        """
        The URL, with any password replaced by C{***}.
        """
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = f"{self.username or ''}{':***' if self.password is not None else ''}@"
        if self.path is not None:
            query = f"?db={self.db}" if self.db else ""
            return f"unix://{credentials}{self.path}{query}"
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"{'rediss' if self.tls else 'redis'}://{credentials}{host}:{self.port}/{self.db}"

    def endpoint(self, reactor, timeout: float) -> IStreamClientEndpoint:
        """
        @param reactor: provides L{IReactorTCP} or L{IReactorUNIX}.
        @param timeout: seconds a connect may take.
        @return: a client endpoint for the server, over TCP (the session
            map adds TLS on top for a C{rediss://} address).
        """
        from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint

        if self.path is not None:
            return UNIXClientEndpoint(reactor, self.path, timeout=timeout)
        return HostnameEndpoint(reactor, self.host, self.port, timeout=timeout)


#: The port of a Sentinel that the URL names without one.
SENTINEL_PORT = 26379

_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,128}\Z")


@dataclass(frozen=True)
class SentinelAddress:
    """
    A Redis master found through Redis Sentinel, parsed by
    L{parseRedisURL} from
    C{redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]}
    (or C{rediss+sentinel://}, the same over TLS).

    The Sentinels are asked which server is the master of C{service}
    before every connection (L{gateway.sessionmap._sentinel}); the user
    name, password and database are the master's.

    @ivar sentinels: the Sentinels' C{(host, port)}, in the URL's order.
    @ivar service: the name the Sentinels monitor the master under.
    @ivar sentinelPassword: the Sentinels' own password (C{requirepass}
        in their configuration), or L{None}.
    @ivar tls: whether the connections to the Sentinels and to the master
        are TLS (C{rediss+sentinel://}; both or neither, as a Redis set up
        with C{tls-port} and C{tls-replication yes} serves them).
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    sentinelPassword: str | None = None
    tls: bool = False

    def __str__(self) -> str:
        """
        The URL, with the passwords replaced by C{***}.
        """
        credentials = ""
        if self.username is not None or self.password is not None:
            credentials = f"{self.username or ''}{':***' if self.password is not None else ''}@"
        hosts = ",".join(hostPort(host, port) for host, port in self.sentinels)
        query = "?sentinel_password=***" if self.sentinelPassword is not None else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{credentials}{hosts}/{self.service}/{self.db}{query}"


def parseRedisURL(url: object) -> RedisAddress | SentinelAddress:
    """
    Parse C{redis://[[user]:password@]host[:port][/db]},
    C{unix://[[user]:password@]/path/to/redis.sock[?db=N]} or
    C{redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=P]}
    (L{SentinelAddress}; a Sentinel's port is 26379 by default).  User
    names and passwords are percent-decoded.  C{rediss://} and
    C{rediss+sentinel://} are the same over TLS (as redis-py and most
    clients spell a TLS Redis URL; a TLS port has no default, since
    deployments differ), with the session map's C{tls_*} options.

    @raise ConfigError: with a one-line reason that does not show the
        password (and does not name the option, which the caller does).
    """
    if not isinstance(url, str) or not url:
        raise ConfigError(f"must be a non-empty string such as {DEFAULT_REDIS_URL!r}")
    if url.partition("://")[0].lower() in ("redis+sentinel", "rediss+sentinel"):
        return _parseSentinelURL(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"not a valid Redis URL: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            "must start with redis://, rediss:// (TLS), unix://, redis+sentinel:// or"
            f" rediss+sentinel:// (as in {DEFAULT_REDIS_URL!r}, 'unix:///run/redis/redis.sock?db=0'"
            " or 'redis+sentinel://10.0.0.1,10.0.0.2,10.0.0.3/mymaster/0'),"
            f" not {_redacted(url)!r}"
        )
    if parts.fragment:
        raise ConfigError("must not have a #fragment")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qsl(parts.query, keep_blank_values=True)
    unknown = sorted({name for name, _ in query} - {"db"})
    if unknown:
        raise ConfigError(f"unknown query parameter {unknown[0]!r} (known: db)")
    queryDb = [value for name, value in query if name == "db"]
    if len(queryDb) > 1:
        raise ConfigError("gives db more than once")
    if scheme == "unix":
        if parts.hostname or port is not None:
            raise ConfigError(
                "a unix:// URL names a socket path and no host:"
                " unix:///path/to/redis.sock (three slashes)"
            )
        if not parts.path or parts.path == "/":
            raise ConfigError("a unix:// URL needs a socket path: unix:///path/to/redis.sock")
        db = _database(queryDb[0] if queryDb else "0")
        return RedisAddress(None, 0, unquote(parts.path), db, username, password)
    if not parts.hostname:
        raise ConfigError(f"a {scheme}:// URL needs a host: {scheme}://host[:port][/db]")
    if queryDb:
        raise ConfigError(f"a {scheme}:// URL gives the database as its path: {scheme}://host:port/db")
    path = parts.path.strip("/")
    db = _database(path or "0")
    return RedisAddress(parts.hostname, port or 6379, None, db, username, password,
                        tls=scheme == "rediss")


def _parseSentinelURL(url: str) -> SentinelAddress:
    """
    Parse a C{redis+sentinel://} or C{rediss+sentinel://} URL (see
    L{parseRedisURL}); C{urlsplit} cannot, for its several hosts.
    """
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if "#" in rest:
        raise ConfigError("must not have a #fragment")
    rest, _, queryText = rest.partition("?")
    # The user information ends at the last "@" (a service name has none),
    # so that a "/" in a password never shows in an error.
    userinfo, at, rest = rest.rpartition("@")
    hosts, _, path = rest.partition("/")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) if user else None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ConfigError(
            f"a {scheme}:// URL needs its Sentinels:"
            f" {scheme}://host[:port][,host[:port]...]/service[/db]")
    sentinels = []
    for item in hosts.split(","):
        sentinel = _sentinelHost(item)
        if sentinel in sentinels:
            raise ConfigError(f"names the Sentinel {hostPort(*sentinel)} more than once")
        sentinels.append(sentinel)
    service, _, dbText = path.partition("/")
    if not service:
        raise ConfigError(
            f"a {scheme}:// URL needs the service name after its Sentinels:"
            f" {scheme}://host[:port][,...]/service[/db]")
    if not _SERVICE.match(service):
        raise ConfigError(
            f"the service name must be 1 to 128 letters, digits, '.', '_' or '-', not {service!r}")
    if "/" in dbText.rstrip("/"):
        raise ConfigError(f"a {scheme}:// URL has nothing after /service/db")
    db = _database(dbText.rstrip("/") or "0")
    query = parse_qsl(queryText, keep_blank_values=True)
    unknown = sorted({name for name, _ in query} - {"sentinel_password"})
    if unknown:
        raise ConfigError(f"unknown query parameter {unknown[0]!r} (known: sentinel_password)")
    secrets = [value for name, value in query if name == "sentinel_password"]
    if len(secrets) > 1:
        raise ConfigError("gives sentinel_password more than once")
    return SentinelAddress(tuple(sentinels), service, db, username, password,
                           secrets[0] if secrets else None, tls=scheme == "rediss+sentinel")


def _sentinelHost(item: str) -> tuple[str, int]:
    """
    @return: the C{(host, port)} of one Sentinel, C{host[:port]} (IPv6 in
        brackets), the port 26379 by default.
    """
    if item.startswith("["):
        host, bracket, afterHost = item[1:].partition("]")
        if not bracket:
            raise ConfigError(f"the Sentinel {item!r} has an unclosed '['")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(f"the Sentinel {item!r} has {host!r} in brackets,"
                              " which is not an IPv6 address") from None
        if afterHost and not afterHost.startswith(":"):
            raise ConfigError(f"the Sentinel {item!r} must have only ':PORT' after its ']'")
        portText = afterHost[1:] if afterHost else None
    else:
        if item.count(":") > 1:
            raise ConfigError(f"the Sentinel {item!r} must put an IPv6 address in brackets")
        host, colon, portText = item.partition(":")
        if not colon:
            portText = None
        if not _HOST_NAME.match(host):
            raise ConfigError(f"the Sentinel {item!r} has a bad host name {host!r}")
    if portText is None:
        return host, SENTINEL_PORT
    if not _PORT.match(portText) or not 1 <= int(portText) <= 65535:
        raise ConfigError(
            f"the Sentinel {item!r} has a bad port {portText!r}: it must be a number from 1 to 65535")
    return host, int(portText)


def _database(text: str) -> int:
    """
    @return: the database number C{text} gives.
    @raise ConfigError: when it is not a non-negative integer.
    """
    if not text.isascii() or not text.isdigit():
        raise ConfigError(f"the database must be a number >= 0, not {text!r}")
    return int(text)


def _redacted(url: str) -> str:
    """
    @return: C{url} with anything between C{"://"} and C{"@"} hidden.
    """
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        return f"{head}://***@{tail.rpartition('@')[2]}"
    return url



#: The most Redis shards one session map spreads its sessions over.
MAX_SHARDS = 32

_SHARD_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")


@dataclass(frozen=True)
class RedisShard:
    """
    One Redis server (or Sentinel service) of a sharded session map.

    @ivar name: what the consistent-hash ring keys the shard by (so that
        placement does not depend on the list's order): given, or made
        from the address by L{shardName}.
    """

    name: str
    address: RedisAddress | SentinelAddress


def shardName(address: RedisAddress | SentinelAddress) -> str:
    """
    @return: the name of a shard given without one: C{host:port/db}, or
        C{unix:path/db}, or for Sentinel C{sentinel:service/db} (the
        service, not its Sentinels, which may change).  No credentials.
    """
    if isinstance(address, SentinelAddress):
        return f"sentinel:{address.service}/{address.db}"
    if address.path is not None:
        return f"unix:{address.path}/{address.db}"
    return f"{hostPort(address.host or '', address.port)}/{address.db}"


def parseRedisShards(value: object) -> tuple[RedisShard, ...]:
    """
    Parse the C{shards} of a Redis session map: an array of 1 to
    L{MAX_SHARDS} Redis URLs (L{parseRedisURL}), each a string or a table
    C{{url = "...", name = "...", sentinel_password = "..."}} (C{name} and
    C{sentinel_password} optional).  Names differ; so do the servers.

    @raise ConfigError: one line, C{"shards[2]: why"} (or C{"shards: why"}
        for the array itself).
    """
    if not isinstance(value, list) or not value:
        raise ConfigError("shards: must be a non-empty array of Redis URLs")
    if len(value) > MAX_SHARDS:
        raise ConfigError(f"shards: lists {len(value)} servers, more than {MAX_SHARDS}")
    shards: list[RedisShard] = []
    for index, item in enumerate(value):
        where = f"shards[{index}]"
        name = password = None
        if isinstance(item, dict):
            unknown = sorted(set(item) - {"url", "name", "sentinel_password"})
            if unknown:
                raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: url, name, sentinel_password)")
            if "url" not in item:
                raise ConfigError(f"{where}: a table needs its url")
            url, name, password = item["url"], item.get("name"), item.get("sentinel_password")
            if name is not None and (not isinstance(name, str) or not _SHARD_NAME.match(name)):
                raise ConfigError(f"{where}: name must be 1 to 64 letters, digits, '-', '_' or '.',"
                                  f" not {name!r}")
        else:
            url = item
        try:
            address = parseRedisURL(url)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        if password is not None:
            if not isinstance(password, str) or not password:
                raise ConfigError(f"{where}: sentinel_password must be a non-empty string")
            if not isinstance(address, SentinelAddress):
                raise ConfigError(f"{where}: sentinel_password needs a redis+sentinel:// url")
            if address.sentinelPassword is not None:
                raise ConfigError(f"{where}: sentinel_password is given in the url too; keep one")
            address = dataclasses.replace(address, sentinelPassword=password)
        shard = RedisShard(name or shardName(address), address)
        for earlier in shards:
            if earlier.name == shard.name:
                raise ConfigError(f"{where}: the shard name {shard.name!r} is taken by an earlier shard"
                                  " (give each a name of its own)")
            if shardName(earlier.address) == shardName(address) and not isinstance(address, SentinelAddress):
                raise ConfigError(f"{where}: {address} is an earlier shard's server too")
        shards.append(shard)
    return tuple(shards)

#: The most worker processes one gateway runs (C{workers}, C{--workers}).
MAX_WORKERS = 64


def cpuCount() -> int:
    """
    @return: the CPUs this process may run on (its affinity mask, which a
        container or C{taskset} narrows), at least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parseWorkers(value: object) -> int:
    """
    @param value: C{"auto"} (the number of CPUs, see L{cpuCount}), or an
        integer from 1 to L{MAX_WORKERS} (as an L{int} from the file, or as
        text from the command line).
    @return: the number of worker processes.
    @raise ConfigError: for anything else.
    """
    if value == "auto":
        return min(cpuCount(), MAX_WORKERS)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS:
        raise configError(
            f"must be \"auto\" or an integer from 1 to {MAX_WORKERS}, not {value!r}"
        )
    return value
