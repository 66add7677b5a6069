"""
The instruments of one gateway node: the counters and histograms its parts
increment as things happen (L{Metrics}, which provides
L{gateway.interfaces.IMetrics}), the plain counts the hot paths add to
(L{Traffic}), and the null object a part gets when it is given no metrics
(L{NoMetrics}).

Everything is registered in the L{CollectorRegistry} a L{Metrics} is given
(or makes), never in C{prometheus_client}'s global default registry: a node
is an object that can be built twice in one process (the tests do), and a
later supervisor of several worker processes can hold one registry per
worker, or label and merge what it scrapes from each (docs/operations.md,
"Metrics").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.process_collector import ProcessCollector
from zope.interface import implementer

from ..interfaces import IMetrics
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_BUFFER_FULL,
    CLOSE_ENDED,
    CLOSE_EXPIRED,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_REFUSED,
    CLOSE_RESUME_FAILED,
    CLOSE_SLOW,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
)

__all__ = [
    "Metrics",
    "NoMetrics",
    "Traffic",
    "PREFIX",
    "MODES",
    "CLOSE_REASONS",
    "STATUS_REASONS",
    "LATENCY_BUCKETS",
    "REDIS_BUCKETS",
]

#: Every family's name starts with this.
PREFIX = "txgateway"

#: The client modes and their transports, each counted from the start (so
#: that every series exists, at zero, before the first connection):
#: C{socketio} is a Socket.IO client's Engine.IO session, over WebSocket or
#: long-polling.
MODES = (
    ("transparent", "websocket"),
    ("session", "websocket"),
    ("session", "longpoll"),
    ("socketio", "websocket"),
    ("socketio", "longpoll"),
)

#: The close codes the gateway sends, by the word that is their C{reason}
#: label; any other code is counted as C{code="other"}.
CLOSE_REASONS = {
    1001: "going_away",
    1002: "websocket_protocol_error",
    1007: "invalid_payload",
    1008: "policy",
    1012: "backend_gone",
    CLOSE_TOO_BIG: "too_big",
    CLOSE_ENDED: "ended",
    CLOSE_SUPERSEDED: "superseded",
    CLOSE_SLOW: "slow",
    CLOSE_ORIGIN_REFUSED: "origin_refused",
    CLOSE_PROTOCOL_ERROR: "protocol_error",
    CLOSE_BAD_SECRET: "bad_secret",
    CLOSE_UNKNOWN_SESSION: "unknown_session",
    CLOSE_RESUME_FAILED: "resume_failed",
    CLOSE_EXPIRED: "expired",
    CLOSE_BUFFER_FULL: "buffer_full",
    CLOSE_REFUSED: "backend_refused",
    CLOSE_UNAVAILABLE: "unavailable",
}

#: The C{reason} label of an HTTP refusal counted without one of its own.
STATUS_REASONS = {
    400: "bad_request",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    413: "body_too_large",
    426: "upgrade_required",
    429: "too_many_requests",
    431: "head_too_large",
    502: "backend_failed",
    503: "unavailable",
    504: "backend_timeout",
}

#: Buckets (seconds) of handshakes and health checks.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets (seconds) of Redis commands.
REDIS_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Buckets (seconds) of the event loop's lag.
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: The longest Redis command name kept as a label value (the gateway's own
#: commands are all shorter; this only bounds a mistake).
_COMMAND_LENGTH = 24


class Traffic:
    """
    Messages and bytes relayed each way, as plain integers: the session
    layer and the Socket.IO sessions' server sides add to them per message,
    tunnels add their totals when they end (a live tunnel's counts are read
    from it at scrape time).  "Up" is client to backend, "down" backend to
    client.  One reactor thread writes
    them, so no lock is needed, and an addition costs what an attribute
    update costs.
    """

    __slots__ = (
        "sessionUpMessages", "sessionUpBytes", "sessionDownMessages", "sessionDownBytes",
        "tunnelUpMessages", "tunnelUpBytes", "tunnelDownMessages", "tunnelDownBytes",
        "socketioUpMessages", "socketioUpBytes", "socketioDownMessages", "socketioDownBytes",
    )

    def __init__(self) -> None:
        self.sessionUpMessages = self.sessionUpBytes = 0
        self.sessionDownMessages = self.sessionDownBytes = 0
        self.tunnelUpMessages = self.tunnelUpBytes = 0
        self.tunnelDownMessages = self.tunnelDownBytes = 0
        self.socketioUpMessages = self.socketioUpBytes = 0
        self.socketioDownMessages = self.socketioDownBytes = 0

    def tunnelEnded(self, upMessages: int, upBytes: int, downMessages: int, downBytes: int) -> None:
        """
        Add the totals of a tunnel that has ended.
        """
        self.tunnelUpMessages += upMessages
        self.tunnelUpBytes += upBytes
        self.tunnelDownMessages += downMessages
        self.tunnelDownBytes += downBytes


@implementer(IMetrics)
class NoMetrics:
    """
    The null L{IMetrics}: what a part records to when it was given no
    metrics (unit tests, embedding).  Its L{Traffic} counts, unread.
    """

    def __init__(self) -> None:
        self.traffic = Traffic()

    def accepted(self, mode: str, transport: str) -> None:
        """Nothing."""

    def handshake(self, mode: str, transport: str, seconds: float) -> None:
        """Nothing."""

    def refused(self, status: int, reason: str | None = None) -> None:
        """Nothing."""

    def closed(self, mode: str, code: int) -> None:
        """Nothing."""

    def sessionEvent(self, event: str, pool: str | None) -> None:
        """Nothing."""

    def resumed(self, transport: str) -> None:
        """Nothing."""

    def connectFailed(self, pool: str, backend: str) -> None:
        """Nothing."""

    def healthChecked(self, pool: str, backend: str, passed: bool, seconds: float) -> None:
        """Nothing."""

    def redisCommand(self, command: str, seconds: float, failed: bool, shard: str = "") -> None:
        """Nothing."""

    def redisMessages(self, shard: str, count: int) -> None:
        """Nothing."""


@implementer(IMetrics)
class Metrics:
    """
    The instruments of one node, in one registry.

    @ivar registry: the L{CollectorRegistry} every family of the node is in
        (the scrape-time collector of L{gateway.metrics.scrape} is added to
        it by the composition root).
    @ivar traffic: the L{Traffic} counts.
    """

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        """
        @param registry: where to register; a new one by default.
        @param process: also export the process's CPU, memory and file
            descriptors (C{txgateway_process_*}, from C{prometheus_client}).
        """
        self.registry = registry = registry if registry is not None else CollectorRegistry()
        self.traffic = Traffic()
        self._accepted = Counter(
            f"{PREFIX}_connections_accepted", "Client connections handed to a mode, by mode and transport "
            "(a long-polling connection is a session attached over long-polling).",
            ["mode", "transport"], registry=registry)
        self._handshake = Histogram(
            f"{PREFIX}_handshake_duration_seconds", "Time from a client connection being handed over to it "
            "being usable: spliced to a backend (transparent), or its session opened or resumed (session).",
            ["mode", "transport"], buckets=LATENCY_BUCKETS, registry=registry)
        for mode, transport in MODES:
            self._accepted.labels(mode, transport)
            self._handshake.labels(mode, transport)
        self._refused = Counter(
            f"{PREFIX}_refusals", "HTTP requests the gateway answered itself with a 4xx or 5xx, by status "
            "and reason.", ["status", "reason"], registry=registry)
        self._closed = Counter(
            f"{PREFIX}_closes", "Close codes the gateway sent to clients, by mode, code and reason.",
            ["mode", "code", "reason"], registry=registry)
        self._opened = Counter(f"{PREFIX}_sessions_opened", "Sessions opened, by pool.", ["pool"],
                               registry=registry)
        self._resumed = Counter(f"{PREFIX}_session_resumes", "Sessions resumed by a client, by the "
                                "transport it resumed over.", ["transport"], registry=registry)
        for transport in ("websocket", "longpoll"):
            self._resumed.labels(transport)
        self._failovers = Counter(f"{PREFIX}_session_failovers",
                                  "Sessions whose backend connection failed over to a new one, by pool.",
                                  ["pool"], registry=registry)
        self._moves = Counter(f"{PREFIX}_session_moves",
                              "Sessions moved to another backend on purpose (drain, rebalance), by pool.",
                              ["pool"], registry=registry)
        self._takeovers = Counter(f"{PREFIX}_session_takeovers",
                                  "Sessions this node took over from a dead node, by pool.", ["pool"],
                                  registry=registry)
        self._events = {"opened": self._opened, "failover": self._failovers,
                        "move": self._moves, "takeover": self._takeovers}
        self._connectFailures = Counter(
            f"{PREFIX}_backend_connect_failures", "Connects or handshakes to a backend that failed, by pool "
            "and backend.", ["pool", "backend"], registry=registry)
        self._checks = Counter(
            f"{PREFIX}_health_checks", "Active health checks, by pool, backend and result (pass, fail).",
            ["pool", "backend", "result"], registry=registry)
        self._checkTime = Histogram(
            f"{PREFIX}_health_check_duration_seconds", "Time active health checks took, by pool and backend.",
            ["pool", "backend"], buckets=LATENCY_BUCKETS, registry=registry)
        self._redis = Counter(f"{PREFIX}_redis_commands", "Redis commands answered or failed, by command "
                              "and shard.", ["command", "shard"], registry=registry)
        self._redisErrors = Counter(
            f"{PREFIX}_redis_errors", "Redis commands that failed (error reply, lost connection, timeout), "
            "by command and shard.", ["command", "shard"], registry=registry)
        self._redisMessages = Counter(
            f"{PREFIX}_redis_messages", "Session messages written to Redis mailboxes (client and backend "
            "messages of shared sessions), by shard: the commands divided by these are what a message "
            "costs.", ["shard"], registry=registry)
        self._redisTime = Histogram(
            f"{PREFIX}_redis_command_duration_seconds", "Time Redis commands took, by command.",
            ["command"], buckets=REDIS_BUCKETS, registry=registry)
        self._lag = Histogram(
            f"{PREFIX}_event_loop_lag_seconds", "How late the reactor ran a timer that was due, sampled "
            "at a fixed interval.", buckets=LAG_BUCKETS, registry=registry)
        self._lastLag = Gauge(f"{PREFIX}_event_loop_lag_last_seconds",
                             "The event loop's lag at its last sample.", registry=registry)
        if process:
            ProcessCollector(namespace=PREFIX, registry=registry)

    def lagSampled(self, seconds: float) -> None:
        """
        Record a sample of the event loop's lag (L{gateway.metrics.lag.LoopLag}
        calls this).
        """
        self._lag.observe(seconds)
        self._lastLag.set(seconds)

    def accepted(self, mode: str, transport: str) -> None:
        """
        Count a client connection handed to C{mode} over C{transport}.
        """
        self._accepted.labels(mode, transport).inc()

    def handshake(self, mode: str, transport: str, seconds: float) -> None:
        """
        Observe how long a client connection took to become usable.
        """
        self._handshake.labels(mode, transport).observe(seconds)

    def refused(self, status: int, reason: str | None = None) -> None:
        """
        Count an HTTP refusal the gateway answered itself (its C{reason} by
        default L{STATUS_REASONS}'s word for C{status}).
        """
        self._refused.labels(str(status), reason or STATUS_REASONS.get(status, "other")).inc()

    def closed(self, mode: str, code: int) -> None:
        """
        Count a close code sent to a client (L{CLOSE_REASONS}).
        """
        reason = CLOSE_REASONS.get(code)
        self._closed.labels(mode, str(code) if reason else "other", reason or "other").inc()

    def sessionEvent(self, event: str, pool: str | None) -> None:
        """
        Count a session's opening, failover, move or takeover.
        """
        self._events[event].labels(pool or "").inc()

    def resumed(self, transport: str) -> None:
        """
        Count a resume over C{transport}.
        """
        self._resumed.labels(transport).inc()

    def connectFailed(self, pool: str, backend: str) -> None:
        """
        Count a failed connect or handshake to a backend.
        """
        self._connectFailures.labels(pool, backend).inc()

    def healthChecked(self, pool: str, backend: str, passed: bool, seconds: float) -> None:
        """
        Count an active health check and observe how long it took.
        """
        self._checks.labels(pool, backend, "pass" if passed else "fail").inc()
        self._checkTime.labels(pool, backend).observe(seconds)

    def redisCommand(self, command: str, seconds: float, failed: bool, shard: str = "") -> None:
        """
        Count a Redis command of C{shard} and observe how long it took.
        """
        name = command.upper()[:_COMMAND_LENGTH]
        self._redis.labels(name, shard).inc()
        if failed:
            self._redisErrors.labels(name, shard).inc()
        self._redisTime.labels(name).observe(seconds)

    def redisMessages(self, shard: str, count: int) -> None:
        """
        Count session messages written to C{shard}'s mailboxes.
        """
        self._redisMessages.labels(shard).inc(count)
