"""
The C{twistd gateway} command line: L{Options} and L{makeService}, found by
twistd through the drop-in C{twisted/plugins/gateway_plugin.py}.
"""

from __future__ import annotations

import os
from functools import partial
from typing import TYPE_CHECKING

from twisted.python import usage

from .config import loadConfig
from .errors import ConfigError

if TYPE_CHECKING:
    from twisted.application.service import IService

__all__ = ["Options", "makeService", "gatewayArguments"]


class Options(usage.Options):
    """
    Options of C{twistd gateway}.  Flags only collect values here: every
    check is made by L{gateway.config.loadConfig} in L{makeService}, so a
    mistake is reported as one line naming the option or the file's key.
    """

    synopsis = "[gateway options]"
    longdesc = (
        "Run a WebSocket gateway: each client connection is forwarded, with its "
        "path and query unchanged, to a backend of the pool its path is routed "
        "to.  Backends given with --backend form one pool, called 'default', "
        "that serves every path; for several pools, routes, health checks, "
        "affinity, limits and timeouts, write a TOML file and pass it with "
        "--config (see docs/operations.md and examples/gateway.toml).  "
        "--listen replaces the file's listen list (default tcp:8080).  "
        "--redis keeps affinity records in Redis, shared by every gateway node "
        "given the same URL (given again: shards the sessions are spread over).  "
        "--admin serves the admin API (JSON, bearer token "
        "from --admin-token-file) on its own listener.  --metrics serves "
        "/metrics for Prometheus (no token) on its own listener.  With --config, SIGHUP "
        "reloads the file's backends.  --workers N runs N worker processes on "
        "the same listeners, supervised by this one (SIGUSR2: rolling restart)."
    )
    examples = """
Examples:
  twistd -n gateway --backend ws://127.0.0.1:9001 --backend ws://127.0.0.1:9002
  twistd -n gateway --listen tcp:8080 --backend ws://10.0.0.5:8765 --balance hash
  twistd -n gateway --config /etc/txgateway/gateway.toml
  twistd -n gateway --config gateway.toml --redis redis://10.0.0.9:6379/0
  twistd -n gateway --config gateway.toml --redis redis://10.0.0.9:6379/0 --redis redis://10.0.0.10:6379/0
  twistd -n gateway --demo
  twistd -n gateway --config gateway.toml --redis redis://127.0.0.1:6379/0 --workers auto
  twistd -n gateway --config gateway.toml --admin tcp:9090:interface=127.0.0.1 --admin-token-file /etc/txgateway/admin-token
"""

    optFlags = [
        ["demo", None, "Serve demo echo backends; no other backend is needed."],
    ]
    optParameters = [
        ["config", None, None, "Read the configuration from this TOML file."],
        [
            "balance",
            None,
            None,
            "Balancer of the --backend pool (e.g. least_conn, round_robin, hash).",
        ],
        [
            "admin",
            None,
            None,
            "Serve the admin API on this Twisted endpoint, e.g. "
            "tcp:9090:interface=127.0.0.1 (needs a token).",
        ],
        [
            "admin-token-file",
            None,
            None,
            "Read the admin API's bearer token from this file.",
        ],
        [
            "metrics",
            None,
            None,
            "Serve /metrics (Prometheus, no token) on this Twisted endpoint, "
            "e.g. tcp:9108:interface=127.0.0.1.",
        ],
        [
            "workers",
            None,
            None,
            "Worker processes accepting on the listeners: a number, or auto "
            "(one per CPU); default 1, this process alone.  More than one "
            "needs a shared session map (--redis).",
        ],
    ]

    def __init__(self) -> None:
        """
        Start with no C{--listen} and no C{--backend} values.
        """
        super().__init__()
        self["listen"] = []
        self["backend"] = []
        self["redis"] = []

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint, e.g. tcp:8080 (repeatable)."""
        self["listen"].append(endpoint)

    def opt_backend(self, url: str) -> None:
        """Forward to this backend, ws://host[:port] or wss://host[:port] (repeatable)."""
        self["backend"].append(url)

    def opt_redis(self, url: str) -> None:
        """Keep affinity and session records in Redis, shared by several gateway nodes: redis://[:password@]host[:port][/db], unix:///path/to/redis.sock[?db=N] or redis+sentinel://host[:port][,host[:port]...]/service[/db], rediss:// and rediss+sentinel:// over TLS (repeatable: each is a shard the sessions are spread over, the first holding the node registry)."""
        self["redis"].append(url)

    def getUsage(self, width: int | None = None) -> str:
        """
        The usage Twisted builds, followed by L{examples} laid out as written
        (Twisted re-wraps C{longdesc} into one paragraph).
        """
        return super().getUsage(width) + self.examples

    def postOptions(self) -> None:
        """
        Freeze the repeated options; checking them is L{makeService}'s job.
        """
        self["listen"] = tuple(self["listen"])
        self["backend"] = tuple(self["backend"])
        self["redis"] = tuple(self["redis"])


def makeService(options: Options) -> IService:
    """
    Build the gateway service from parsed options.

    @raise SystemExit: with C{"gateway: <file or option>: <key>: <reason>"}
        for any configuration error, so twistd prints that one line (and no
        traceback) and exits with a non-zero status.
    """
    load = partial(
        loadConfig,
        options["config"],
        listen=options["listen"],
        backends=options["backend"],
        balance=options["balance"],
        demo=bool(options["demo"]),
        redis=options["redis"],
        admin=options["admin"],
        adminTokenFile=options["admin-token-file"],
        metrics=options["metrics"],
        workers=options["workers"],
    )
    try:
        config = load()
        from .workers.child import workerSetup

        setup = workerSetup(dict(os.environ))
        if setup is None and config.workers > 1:
            return _supervisor(config, options, load)
        from .service import GatewayService

        if setup is not None:
            from .workers.child import workerConfig

            load = _asWorker(load, setup)
            config = workerConfig(config, setup)
        service = GatewayService(config)
        if setup is not None:
            from twisted.internet import reactor

            from .workers.child import startWorker

            startWorker(service, setup, reactor)
    except ConfigError as error:
        raise SystemExit(f"gateway: {error}") from None
    # A listener that cannot start (port in use) ends the process.
    service.exitOnListenFailure = True
    # The process is the gateway's: its garbage collector is set up for it.
    service.tunesCollector = True
    # SIGHUP reloads the file (read with the same flags); a SIGTERM answered
    # by a clean stop ends the process with status 0.
    service.processSignals = True
    if options["config"] is not None:
        service.configLoader = load
    return service


def _asWorker(load, setup):
    """
    @return: C{load}, reading the configuration as worker C{setup} runs it.
    """
    from .workers.child import workerConfig

    return lambda: workerConfig(load(), setup)


def _supervisor(config, options: Options, load) -> IService:
    """
    Build the supervisor of C{config.workers} workers, each started with the
    gateway options given here.

    @raise ConfigError: as the service would, or for a session map the
        workers cannot share.
    """
    from .workers.supervisor import Supervisor, checkWorkers

    checkWorkers(config)
    supervisor = Supervisor(config, gatewayArguments(options))
    supervisor.exitOnListenFailure = True
    supervisor.processSignals = True
    if options["config"] is not None:
        supervisor.configLoader = load
    return supervisor


def gatewayArguments(options: Options) -> list[str]:
    """
    @return: the C{twistd gateway} options that give the configuration of
        C{options} (C{--workers} left out: a worker's set-up says it is one).
    """
    arguments: list[str] = []
    for name in ("config", "balance", "admin", "admin-token-file"):
        if options[name] is not None:
            arguments += [f"--{name}", options[name]]
    for url in options["redis"]:
        arguments += ["--redis", url]
    for endpoint in options["listen"]:
        arguments += ["--listen", endpoint]
    for url in options["backend"]:
        arguments += ["--backend", url]
    if options["demo"]:
        arguments.append("--demo")
    return arguments
