"""
The options of the C{redis} session map (the C{[session_map]} table, less
C{type}), checked into a L{MapOptions}: one server (C{url}) or several
shards (C{shards}), and the settings every shard shares.

Pure: no Redis, no reactor.  Each error is one line naming the option.
"""

from __future__ import annotations

import dataclasses
import math
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

__all__ = ["MAX_POOL_SIZE", "OPTIONS", "MapOptions", "readOptions"]

#: The most connections C{pool_size} may ask for.
MAX_POOL_SIZE = 32

#: The options the map knows.
OPTIONS = ("url", "key_prefix", "timeout", "pool_size", "node_ttl", "node_id", "sentinel_password",
           "shards")


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
    return MapOptions(shards, "shards" in options, prefix, float(timeout), size, float(nodeTtl), nodeId)


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
