"""
The options of the C{redis} session map (the C{[session_map]} table, less
C{type}), checked into a L{MapOptions}: one server (C{url}) or several
shards (C{shards}), and the settings every shard shares, TLS's among them
(L{TLSSettings}: the files are read by L{gateway.sessionmap._tls}).

Pure: no Redis, no reactor.  Each error is one line naming the option.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..config.values import (
    DEFAULT_REDIS_URL,
    RedisShard,
    SentinelAddress,
    parseRedisShards,
    parseRedisURL,
    shardName,
)
from ..errors import ConfigError

__all__ = ["MAX_POOL_SIZE", "OPTIONS", "TLS_OPTIONS", "MapOptions", "TLSSettings", "readOptions"]

#: The most connections C{pool_size} may ask for.
MAX_POOL_SIZE = 32

#: The options of TLS (for C{rediss://} and C{rediss+sentinel://} URLs).
TLS_OPTIONS = ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name", "tls_verify")

#: The options the map knows.
OPTIONS = ("url", "key_prefix", "timeout", "pool_size", "node_ttl", "node_id", "sentinel_password",
           "shards", *TLS_OPTIONS)

_SERVER_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z")


@dataclass(frozen=True)
class TLSSettings:
    """
    How the map's TLS connections (to every C{rediss://} shard, and to the
    Sentinels and the master of a C{rediss+sentinel://} one) verify the
    servers and present themselves.

    @ivar caFile: the PEM file of the certificate authorities trusted to
        sign the servers' certificates, or L{None} for the system's.
    @ivar certFile: the PEM file of the client certificate (mutual TLS),
        optionally followed by its intermediate certificates, or L{None}.
    @ivar keyFile: the unencrypted PEM file of its private key (given
        with C{certFile} and only then).
    @ivar serverName: the name to verify in the servers' certificates (and
        send as SNI) instead of the host connected to, or L{None}.
    @ivar verify: whether the servers' certificates are verified; L{False}
        only when asked for (C{tls_verify = false}), which is unsafe.
    """

    caFile: str | None = None
    certFile: str | None = None
    keyFile: str | None = None
    serverName: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class MapOptions:
    """
    The checked options.

    @ivar shards: the servers, the home shard first (one for C{url}).
    @ivar sharded: whether they were given as C{shards} (even one).
    """

    shards: tuple[RedisShard, ...]
    sharded: bool
    keyPrefix: str
    timeout: float
    poolSize: int
    nodeTtl: float
    nodeId: str | None
    tls: TLSSettings | None = None


def _seconds(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def readOptions(options: Mapping[str, object]) -> MapOptions:
    """
    @raise ConfigError: C{"session map 'redis': <option>...: <reason>"}.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for session map 'redis' (known: {', '.join(OPTIONS)})")
    if "shards" in options:
        if "url" in options:
            raise ConfigError("session map 'redis': give url (one server) or shards (several), not both")
        if "sentinel_password" in options:
            raise ConfigError("session map 'redis': with shards, give sentinel_password per shard")
        try:
            shards = parseRedisShards(options["shards"])
        except ConfigError as e:
            raise ConfigError(f"session map 'redis': {e}") from None
    else:
        try:
            address = parseRedisURL(options.get("url", DEFAULT_REDIS_URL))
        except ConfigError as e:
            raise ConfigError(f"session map 'redis': url: {e}") from None
        address = _withSentinelPassword(address, options.get("sentinel_password"))
        shards = (RedisShard(shardName(address), address),)
    prefix = options.get("key_prefix", "txgw:")
    if not isinstance(prefix, str):
        raise ConfigError(f"session map 'redis': key_prefix must be a string, not {prefix!r}")
    timeout = options.get("timeout", 1.0)
    if not _seconds(timeout) or timeout <= 0:
        raise ConfigError(
            f"session map 'redis': timeout must be a number of seconds > 0, not {timeout!r}")
    size = options.get("pool_size", 2)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_POOL_SIZE:
        raise ConfigError(
            f"session map 'redis': pool_size must be an integer from 1 to {MAX_POOL_SIZE}, not {size!r}")
    nodeTtl = options.get("node_ttl", 3.0)
    if not _seconds(nodeTtl) or not 0.3 <= nodeTtl <= 600:
        raise ConfigError(
            f"session map 'redis': node_ttl must be a number of seconds from 0.3 to 600, not {nodeTtl!r}")
    nodeId = options.get("node_id")
    if nodeId is not None and (
        not isinstance(nodeId, str) or not nodeId or len(nodeId) > 64
        or not all(c.isalnum() or c in "-_." for c in nodeId)
    ):
        raise ConfigError(
            f"session map 'redis': node_id must be 1 to 64 letters, digits, '-', '_' or '.', not {nodeId!r}")
    tls = _tlsSettings(options, shards)
    return MapOptions(shards, "shards" in options, prefix, float(timeout), size, float(nodeTtl), nodeId,
                      tls)


def _tlsSettings(options: Mapping[str, object], shards: tuple[RedisShard, ...]) -> TLSSettings | None:
    """
    @return: the C{tls_*} options, when a shard is TLS (L{None} when none
        is).
    @raise ConfigError: for a value of the wrong type, a certificate
        without its key (or the other way round), or C{tls_*} options and
        no TLS URL to use them on.
    """
    for name in ("tls_ca_file", "tls_cert_file", "tls_key_file", "tls_server_name"):
        value = options.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigError(f"session map 'redis': {name} must be a non-empty string, not {value!r}")
    verify = options.get("tls_verify", True)
    if not isinstance(verify, bool):
        raise ConfigError(f"session map 'redis': tls_verify must be true or false, not {verify!r}")
    given = sorted(set(options) & set(TLS_OPTIONS))
    if not any(shard.address.tls for shard in shards):
        if given:
            raise ConfigError(f"session map 'redis': {given[0]} needs a rediss:// or rediss+sentinel:// url"
                              " (TLS); the url is not one")
        return None
    certFile, keyFile = options.get("tls_cert_file"), options.get("tls_key_file")
    if certFile is not None and keyFile is None:
        raise ConfigError("session map 'redis': tls_cert_file needs tls_key_file (the certificate's"
                          " private key)")
    if keyFile is not None and certFile is None:
        raise ConfigError("session map 'redis': tls_key_file needs tls_cert_file (the certificate it"
                          " is the key of)")
    serverName = options.get("tls_server_name")
    if serverName is not None and not _isServerName(serverName):
        raise ConfigError(f"session map 'redis': tls_server_name must be a host name or an IP address,"
                          f" not {serverName!r}")
    return TLSSettings(options.get("tls_ca_file"), certFile, keyFile, serverName, verify)


def _isServerName(name: str) -> bool:
    """
    @return: whether C{name} is a DNS name (of ASCII labels; an
        internationalised one in its C{xn--} form) or an IP address.
    """
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return len(name) <= 253 and _SERVER_NAME.match(name) is not None


def _withSentinelPassword(address, password: object):
    """
    @return: C{address} with the C{sentinel_password} option's password
        (L{None}: the option is not given).
    @raise ConfigError: for a password that is not a non-empty string, on
        a URL that is not C{redis+sentinel://}, or given in the URL too.
    """
    if password is None:
        return address
    if not isinstance(password, str) or not password:
        raise ConfigError("session map 'redis': sentinel_password must be a non-empty string")
    if not isinstance(address, SentinelAddress):
        raise ConfigError("session map 'redis': sentinel_password needs a redis+sentinel:// url")
    if address.sentinelPassword is not None:
        raise ConfigError("session map 'redis': sentinel_password is given in the url too; keep one")
    return dataclasses.replace(address, sentinelPassword=password)
