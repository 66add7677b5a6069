"""
Loading a gateway node's configuration: the TOML file (or none) and the
command-line flags turned into one L{GatewayConfig}, checked on the way;
and L{restartNeeded}, what a reload from one configuration to another cannot
apply.

Every error is a L{ConfigError} whose message is one line naming the file
(or option), the key and the reason.  The tables of the file are read by
L{gateway.config.tables}; here they are put together, the flags applied
(they win over the file) and what needs more than one table checked (that
every route names a pool, that there is a pool at all).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError
from ..wire.proxyheader import LISTENER_PREFIX, proxiedEndpoint
from .model import (
    AdminConfig,
    BackendConfig,
    GatewayConfig,
    MetricsConfig,
    PoolConfig,
    RouteConfig,
    SessionMapConfig,
)
from .reader import Reader, configError, keyPath, show
from .tables import (
    readAccessLog,
    readAdmin,
    readLimits,
    readMetrics,
    readPool,
    readRoutes,
    readSession,
    readSessionMap,
    readTimeouts,
    readTokenFile,
    readTrustedProxies,
)
from .values import (
    hostPort,
    parseBackendURL,
    parseRedisShards,
    parseRedisURL,
    parseWorkers,
)

__all__ = ["loadConfig", "restartNeeded"]

_DEFAULT_LISTEN = GatewayConfig.listen
_OPTIONS_SOURCE = "<options>"
_FLAG_POOL = "default"

_TOP_KEYS = (
    "listen",
    "trusted_proxies",
    "timeouts",
    "limits",
    "session",
    "session_map",
    "route",
    "pool",
    "admin",
    "proxy_protocol_from",
    "access_log",
    "metrics",
    "workers",
)


def _readDocument(path: str) -> dict[str, Any]:
    """
    Read and parse a TOML file.

    @raise ConfigError: when it cannot be read, is not UTF-8 or is not TOML.
    """
    try:
        with open(path, "rb") as stream:
            data = stream.read()
    except OSError as error:
        raise configError(
            f"{path}: cannot read the file: {error.strerror or error}"
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise configError(
            f"{path}: not UTF-8 text: bad byte at offset {error.start}"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise configError(f"{path}: not valid TOML: {error}") from None


def _admin(
    fileReader: Reader,
    fromFile: tuple[str | None, str | None, str | None] | None,
    listenFlag: str | None,
    tokenFileFlag: str | None,
) -> AdminConfig | None:
    """
    Combine the file's C{[admin]} table with C{--admin} and
    C{--admin-token-file} (the flags win).
    """
    listen, token, tokenFile = fromFile or (None, None, None)
    if listenFlag is not None:
        if not listenFlag:
            Reader("--admin").fail("", "must not be empty")
        listen = listenFlag
    if tokenFileFlag is not None:
        if fromFile is None and listenFlag is None:
            raise configError(
                "--admin-token-file goes with --admin LISTEN or an [admin] table"
            )
        if not tokenFileFlag:
            Reader("--admin-token-file").fail("", "must not be empty")
        token = readTokenFile(Reader("--admin-token-file"), "", tokenFileFlag)
        tokenFile = tokenFileFlag
    if fromFile is None and listenFlag is None:
        return None
    if listen is None:
        fileReader.fail("admin.listen", "is required (or give --admin LISTEN)")
    if token is None:
        if fromFile is None:
            Reader("--admin").fail(
                "", "needs a token: give --admin-token-file PATH (or token_file in [admin])"
            )
        fileReader.fail("admin", "needs token or token_file (or --admin-token-file PATH)")
    return AdminConfig(listen=listen, token=token, tokenFile=tokenFile)


def _flagPool(backends: Sequence[str], balance: str | None) -> PoolConfig:
    """
    Build the pool called C{default} from C{--backend} and C{--balance}.
    """
    reader = Reader("--backend")
    members = []
    for url in backends:
        try:
            secure, host, port = parseBackendURL(url)
        except ConfigError as error:
            reader.fail("", str(error))
        members.append(
            BackendConfig(
                name=hostPort(host, port), url=url, host=host, port=port, secure=secure
            )
        )
    names = [backend.name for backend in members]
    for name in names:
        if names.count(name) > 1:
            reader.fail("", f"{name} is given more than once")
    pool = PoolConfig(name=_FLAG_POOL, backends=tuple(members))
    if balance is not None:
        if not balance:
            Reader("--balance").fail("", "must not be empty")
        pool = dataclasses.replace(pool, balance=balance)
    return pool


def _flagSessionMap(urls: Sequence[str], fromFile: SessionMapConfig) -> SessionMapConfig:
    """
    Apply C{--redis URL} (given once or more) to the file's
    C{[session_map]}: type C{redis} on C{url}, or on C{shards} when given
    several times (the first is the home shard), keeping the file's other
    options when it named C{redis} too.
    """
    reader = Reader("--redis")
    for url in urls:
        try:
            parseRedisURL(url)
        except ConfigError as error:
            reader.fail("", str(error))
    options = dict(fromFile.options) if fromFile.type == "redis" else {}
    options.pop("url", None)
    options.pop("shards", None)
    if len(urls) == 1:
        options["url"] = urls[0]
    else:
        try:
            parseRedisShards(list(urls))
        except ConfigError as error:
            reader.fail("", str(error))
        if "sentinel_password" in options:
            reader.fail("", "given several times (shards), it cannot use the file's sentinel_password:"
                        " put ?sentinel_password= in each redis+sentinel:// URL")
        options["shards"] = list(urls)
    return SessionMapConfig(type="redis", options=tuple(sorted(options.items())))


def loadConfig(
    path: str | None,
    *,
    listen: Sequence[str] = (),
    backends: Sequence[str] = (),
    balance: str | None = None,
    demo: bool = False,
    redis: str | Sequence[str] | None = None,
    admin: str | None = None,
    adminTokenFile: str | None = None,
    metrics: str | None = None,
    workers: str | None = None,
) -> GatewayConfig:
    """
    Read a TOML configuration file (or none) and apply the command-line
    flags.

    @param path: the file, or L{None} for flags only.
    @param listen: C{--listen} endpoint strings; when given they replace the
        file's C{listen}.
    @param backends: C{--backend} URLs; they make a pool called C{default}
        served on C{/}, and cannot be combined with pools in the file.
    @param balance: C{--balance}: the balancer of that C{default} pool.
    @param demo: C{--demo}: the service adds demo echo backends, so no pool is
        required.
    @param redis: C{--redis}: a Redis URL, or several (the option given
        again): the session map becomes C{redis} on it, or on those shards
        (the first is the home shard).  The file's other C{[session_map]}
        options are kept when its type is C{redis} too, and dropped
        otherwise.
    @param admin: C{--admin}: the admin API's endpoint string; replaces the
        file's C{admin.listen}.
    @param adminTokenFile: C{--admin-token-file}: the file holding the
        admin API's token; replaces the file's C{admin.token} or
        C{admin.token_file}.
    @param metrics: C{--metrics}: the metrics listener's endpoint string;
        replaces the file's C{metrics.listen}.
    @param workers: C{--workers}: C{"auto"} or a number of worker
        processes; replaces the file's C{workers}.
    @raise ConfigError: with a one-line message naming the file (or option),
        the key and the reason.  Balancer names, session map types and
        endpoint strings are not checked here but by the service, which
        knows the plugins.
    """
    config = GatewayConfig(demo=demo)
    pools: list[PoolConfig] = []
    routes: list[RouteConfig] | None = None
    fileReader = Reader(_OPTIONS_SOURCE)
    adminFromFile = None

    if path is not None:
        path = os.fspath(path)
        fileReader = Reader(path)
        document = fileReader.table(_readDocument(path), "", _TOP_KEYS)
        fileListen = fileReader.strings(document, "", "listen")
        if fileListen is not None and not fileListen:
            fileReader.fail("listen", "must list at least one endpoint")
        config = dataclasses.replace(
            config,
            listen=tuple(fileListen or _DEFAULT_LISTEN),
            trustedProxies=readTrustedProxies(fileReader, document),
            proxyProtocolFrom=readTrustedProxies(fileReader, document, "proxy_protocol_from"),
            source=path,
        )
        if "access_log" in document:
            config = dataclasses.replace(config, accessLog=readAccessLog(fileReader, document["access_log"]))
        if "timeouts" in document:
            timeouts = readTimeouts(fileReader, document["timeouts"])
            config = dataclasses.replace(config, timeouts=timeouts)
        if "limits" in document:
            limits = readLimits(fileReader, document["limits"])
            config = dataclasses.replace(config, limits=limits)
        if "session" in document:
            session = readSession(fileReader, document["session"])
            config = dataclasses.replace(config, session=session)
        if "session_map" in document:
            sessionMap = readSessionMap(fileReader, document["session_map"])
            config = dataclasses.replace(config, sessionMap=sessionMap)
        poolTables = fileReader.table(document.get("pool", {}), "pool", None)
        pools = [readPool(fileReader, name, item) for name, item in poolTables.items()]
        if "route" in document:
            routes = readRoutes(fileReader, document)
        if "metrics" in document:
            config = dataclasses.replace(config, metrics=readMetrics(fileReader, document["metrics"]))
        if "workers" in document:
            try:
                count = parseWorkers(document["workers"])
            except ConfigError as error:
                fileReader.fail("workers", str(error))
            config = dataclasses.replace(config, workers=count)
        if "admin" in document:
            adminFromFile = readAdmin(
                fileReader, document["admin"], os.path.dirname(os.path.abspath(path))
            )

    if listen:
        for endpoint in listen:
            if not endpoint:
                Reader("--listen").fail("", "must not be empty")
        config = dataclasses.replace(config, listen=tuple(listen))
    if metrics is not None:
        if not metrics:
            Reader("--metrics").fail("", "must not be empty")
        config = dataclasses.replace(config, metrics=MetricsConfig(listen=metrics))
    _checkProxied(config, fileReader, bool(listen))
    if workers is not None:
        try:
            config = dataclasses.replace(config, workers=parseWorkers(workers))
        except ConfigError as error:
            Reader("--workers").fail("", str(error))
    if isinstance(redis, str):
        redis = (redis,)
    if redis:
        config = dataclasses.replace(config, sessionMap=_flagSessionMap(redis, config.sessionMap))
    config = dataclasses.replace(
        config, admin=_admin(fileReader, adminFromFile, admin, adminTokenFile)
    )
    if balance is not None and not backends:
        raise configError(
            "--balance goes with --backend; set balance in a [pool.NAME] table instead"
        )
    if backends:
        if pools:
            raise configError(
                f"--backend cannot be combined with pools defined in {path}"
            )
        pools = [_flagPool(backends, balance)]

    poolNames = [pool.name for pool in pools]
    if routes:
        for index, route in enumerate(routes):
            if route.pool not in poolNames:
                known = ", ".join(poolNames) or "none"
                fileReader.fail(
                    f"route[{index}].pool",
                    f"no pool named {show(route.pool)}; pools: {known}",
                )
    elif len(pools) == 1:
        routes = [RouteConfig(prefix="/", pool=pools[0].name)]
    elif len(pools) > 1:
        fileReader.fail(
            "route",
            f"several pools ({', '.join(poolNames)}) and no [[route]] tables; "
            "add a [[route]] with a prefix and a pool for each",
        )
    if not pools and not demo:
        if path is None:
            raise configError("no backends: give --backend URL, --config FILE or --demo")
        raise configError(
            f"{path}: no backends: add a [pool.NAME] table with "
            "[[pool.NAME.backend]] tables, or give --backend URL or --demo"
        )
    return dataclasses.replace(config, pools=tuple(pools), routes=tuple(routes or ()))


def _checkProxied(config: GatewayConfig, fileReader: Reader, fromFlags: bool) -> None:
    """
    A C{haproxy:} listener needs C{proxy_protocol_from}: the networks whose
    PROXY headers it believes.
    """
    for index, description in enumerate(config.listen):
        inner = proxiedEndpoint(description)
        if inner is None:
            continue
        where = Reader("--listen") if fromFlags else fileReader
        path = "" if fromFlags else f"listen[{index}]"
        if not inner or proxiedEndpoint(inner) is not None:
            where.fail(path, f"{description!r}: {LISTENER_PREFIX}: must be followed by an endpoint "
                             "(once: tcp:, ssl:, unix:...)")
        if not config.proxyProtocolFrom:
            where.fail(path, f"{description!r} reads PROXY protocol headers, but proxy_protocol_from "
                             "(in the --config file) lists no network that may send them")


def restartNeeded(running: GatewayConfig, new: GatewayConfig) -> list[str]:
    """
    What a reload from C{running} to C{new} cannot apply: everything but the
    backends of existing pools, their C{balance}, C{affinity_ttl},
    C{fail_timeout} and C{connect_attempts}, and the admin token.

    @return: the key paths, as written in the file, whose new values take
        effect only after a restart (empty when the reload applies all).
    """
    paths: list[str] = []
    for key, attribute in (
        ("listen", "listen"),
        ("trusted_proxies", "trustedProxies"),
        ("proxy_protocol_from", "proxyProtocolFrom"),
        ("access_log", "accessLog"),
        ("timeouts", "timeouts"),
        ("limits", "limits"),
        ("session", "session"),
        ("session_map", "sessionMap"),
        ("route", "routes"),
        ("metrics", "metrics"),
        ("workers", "workers"),
    ):
        if getattr(running, attribute) != getattr(new, attribute):
            paths.append(key)
    if (running.admin is None) != (new.admin is None):
        paths.append("admin")
    elif running.admin is not None and new.admin is not None:
        if running.admin.listen != new.admin.listen:
            paths.append("admin.listen")
    runningPools = {pool.name: pool for pool in running.pools}
    newPools = {pool.name: pool for pool in new.pools}
    for name, pool in newPools.items():
        old = runningPools.get(name)
        if old is None:
            paths.append(f"{keyPath('pool', name)} (a new pool)")
            continue
        if old.affinity != pool.affinity:
            paths.append(keyPath(keyPath("pool", name), "affinity"))
        if old.health != pool.health:
            paths.append(keyPath(keyPath("pool", name), "health"))
    for name in runningPools:
        if name not in newPools:
            paths.append(f"{keyPath('pool', name)} (a pool removed)")
    return paths
