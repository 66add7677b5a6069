"""
What is read at scrape time, and where C{/metrics} is served.

  - L{StateCollector}: a C{prometheus_client} collector that reads the
    node's live state when scraped, instead of updating gauges on every
    event: the client connections open, the sessions by pool and state,
    their replay and in-flight buffers, the Socket.IO sessions by pool,
    backend and transport, each backend's state, and the messages and bytes
    relayed (the L{gateway.metrics.Traffic} counts plus those of the tunnels
    still open).
  - L{renderMetrics}: the answer to a C{GET /metrics}, in the text format
    (or OpenMetrics when the scraper asks for it), for the admin API and
    for the listener of its own.
  - L{MetricsService}: that listener (C{[metrics] listen}, C{--metrics}),
    which serves C{/metrics} only, without a token.

This module sits with the admin API, above the parts it reads; the
instruments the parts record to are in L{gateway.metrics} below them.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request

from ..engineio.engine import EngineState
from ..sessions.states import SessionState
from ..web import BoundedSite, SiteListener, respondJSON
from ..wire.http1 import errorPayload
from ._instruments import PREFIX, Traffic

if TYPE_CHECKING:
    from ..backends.pool import Pool
    from ..config import SessionConfig
    from ..interfaces import IEngineView, IOperator
    from ..sessions.registry import SessionRegistry

__all__ = ["StateCollector", "renderMetrics", "MetricsResource", "MetricsService", "MAX_BODY_BYTES",
           "IDLE_TIMEOUT"]

#: The largest request body the metrics listener reads (a scrape has none).
MAX_BODY_BYTES = 1024
#: Seconds a metrics connection may stay idle before it is closed.
IDLE_TIMEOUT = 60.0

#: A session transport's C{kind}, as the C{transport} label says it.
_TRANSPORTS = {"ws": "websocket", "poll": "longpoll"}
#: An Engine.IO transport's C{kind}, as the C{transport} label says it.
_ENGINE_TRANSPORTS = {"websocket": "websocket", "polling": "longpoll"}
#: A reason a connection was dropped, as a label: C{max_connections},
#: C{max_connections_per_ip} or an errno's name (anything else is counted as C{other}).
_ERRNO = re.compile(r"(max_connections|max_connections_per_ip|E[A-Z]{2,15})\Z")
#: The states a live session can be counted in.
_STATES = (SessionState.ATTACHED, SessionState.DETACHED, SessionState.ENDING)


class StateCollector(Collector):
    """
    Reads the node's state when scraped.  The objects it reads are the
    composition root's own (the pools mapping, the session registry, the
    front door), so pools and backends added later are found; nothing
    here changes them.
    """

    def __init__(self, *, pools: Mapping[str, Pool], sessions: SessionRegistry, edge: Any,
                 traffic: Traffic, config: SessionConfig) -> None:
        """
        @param edge: the front door (L{gateway.site.GatewayFactory}): its
            C{openConnections}, live C{tunnels} and Socket.IO sessions
            (C{engineio.sessions}, each an L{IEngineView}).
        @param config: the session settings (the buffers' bounds).
        """
        self.pools = pools
        self.sessions = sessions
        self.edge = edge
        self.traffic = traffic
        self.config = config

    def describe(self) -> list[Metric]:
        """
        Nothing to describe ahead (the registry then does not call
        L{collect} at registration).
        """
        return []

    def collect(self) -> Iterator[Metric]:
        """
        @return: every family read from the state, now.
        """
        yield from self._connections()
        yield from self._traffic()
        yield from self._sessions()
        yield from self._engines()
        yield from self._backends()

    def _connections(self) -> Iterator[Metric]:
        edge = self.edge
        total = GaugeMetricFamily(f"{PREFIX}_client_connections_open",
                                  "Client TCP connections open on the gateway's port (any request; the "
                                  "number limits.max_connections bounds).")
        total.add_metric([], edge.openConnections)
        yield total
        dropped = CounterMetricFamily(f"{PREFIX}_connections_dropped",
                                      "Client connections dropped at a bound (also answered 503): "
                                      "limits.max_connections or max_connections_per_ip, or when one "
                                      "could not be accepted (the process out of file descriptors: "
                                      "EMFILE, ...).", labels=["reason"])
        for reason, n in sorted(edge.dropped.total.items()):
            dropped.add_metric([reason if _ERRNO.match(reason) else "other"], n)
        yield dropped
        open_ = GaugeMetricFamily(f"{PREFIX}_connections_open",
                                  "Client connections open by mode and transport: tunnels (transparent), "
                                  "sessions attached over each transport (session).",
                                  labels=["mode", "transport"])
        byKind = {"websocket": 0, "longpoll": 0}
        for session in self.sessions.sessions.values():
            transport = session.transport
            if transport is not None and session.state is not SessionState.ENDED:
                byKind[_TRANSPORTS.get(transport.kind, "websocket")] += 1
        open_.add_metric(["transparent", "websocket"], sum(1 for t in edge.tunnels if not t.closed))
        open_.add_metric(["session", "websocket"], byKind["websocket"])
        open_.add_metric(["session", "longpoll"], byKind["longpoll"])
        engines = {"websocket": 0, "longpoll": 0}
        for engine in self._liveEngines():
            engines[_ENGINE_TRANSPORTS[engine.kind]] += 1
        open_.add_metric(["socketio", "websocket"], engines["websocket"])
        open_.add_metric(["socketio", "longpoll"], engines["longpoll"])
        yield open_

    def _liveEngines(self) -> Iterator[IEngineView]:
        """
        @return: the node's Socket.IO sessions that have not closed.
        """
        for engine in self.edge.engineio.sessions.values():
            if engine.state is not EngineState.CLOSED:
                yield engine

    def _traffic(self) -> Iterator[Metric]:
        t = self.traffic
        upMessages, upBytes = t.tunnelUpMessages, t.tunnelUpBytes
        downMessages, downBytes = t.tunnelDownMessages, t.tunnelDownBytes
        for tunnel in self.edge.tunnels:
            if tunnel.closed:
                continue  # its counts are in the totals already
            up, down = tunnel.client, tunnel.backendSide
            upMessages += up.tracker.dataFrames
            upBytes += up.received
            if down is not None:
                downMessages += down.tracker.dataFrames
                downBytes += down.received
        messages = CounterMetricFamily(
            f"{PREFIX}_messages", "Messages relayed, by mode and direction (up: client to backend). In "
            "transparent mode, data frames (each fragment of a fragmented message counts).",
            labels=["mode", "direction"])
        size = CounterMetricFamily(
            f"{PREFIX}_message_bytes", "Bytes relayed, by mode and direction: payloads in session mode, "
            "whole frames (headers included) in transparent mode.", labels=["mode", "direction"])
        for mode, direction, count, nbytes in (
            ("transparent", "up", upMessages, upBytes),
            ("transparent", "down", downMessages, downBytes),
            ("session", "up", t.sessionUpMessages, t.sessionUpBytes),
            ("session", "down", t.sessionDownMessages, t.sessionDownBytes),
            ("socketio", "up", t.socketioUpMessages, t.socketioUpBytes),
            ("socketio", "down", t.socketioDownMessages, t.socketioDownBytes),
        ):
            messages.add_metric([mode, direction], count)
            size.add_metric([mode, direction], nbytes)
        yield messages
        yield size

    def _sessions(self) -> Iterator[Metric]:
        config = self.config
        counts: dict[tuple[str, str], int] = {}
        for pool in self.pools:
            for state in _STATES:
                counts[(pool, state.value)] = 0
        replay = replayBytes = inflight = inflightBytes = paused = 0
        replayFullest = inflightFullest = 0.0
        for session in self.sessions.sessions.values():
            if session.state is SessionState.ENDED:
                continue
            key = (session.pool.name if session.pool is not None else "", session.state.value)
            counts[key] = counts.get(key, 0) + 1
            outbox = session.outbox
            n, b = len(outbox), outbox.pendingBytes
            replay += n
            replayBytes += b
            replayFullest = max(replayFullest, n / config.maxBufferMessages, b / config.maxBufferBytes)
            n, b = session.inflight
            inflight += n
            inflightBytes += b
            inflightFullest = max(inflightFullest, n / config.maxInflightMessages,
                                  b / config.maxInflightBytes)
            paused += session.paused
        family = GaugeMetricFamily(f"{PREFIX}_sessions", "Sessions held by this node, by pool and state "
                                   "(attached, detached, ending).", labels=["pool", "state"])
        for (pool, state), n in sorted(counts.items()):
            family.add_metric([pool, state], n)
        yield family
        yield _gauge("sessions_paused", "Sessions whose client or backend side flow control holds now.",
                     paused)
        yield _gauge("replay_buffer_messages", "Messages in the sessions' replay buffers (sent to the "
                     "client, not yet acknowledged), summed over sessions.", replay)
        yield _gauge("replay_buffer_bytes", "Bytes in the sessions' replay buffers, summed.", replayBytes)
        yield _gauge("replay_buffer_fullest_ratio", "The fullest replay buffer's occupancy, as a share of "
                     "session.max_buffer_messages or max_buffer_bytes (whichever is nearer); 1 ends it.",
                     replayFullest)
        yield _gauge("inflight_messages", "Client messages handed to backends and not yet confirmed, "
                     "summed over sessions.", inflight)
        yield _gauge("inflight_bytes", "Bytes of those messages, summed.", inflightBytes)
        yield _gauge("inflight_fullest_ratio", "The fullest in-flight window's occupancy, as a share of "
                     "session.max_inflight_messages or max_inflight_bytes; at 1 the client is paused.",
                     inflightFullest)

    def _engines(self) -> Iterator[Metric]:
        """
        @return: C{txgateway_socketio_sessions}: the node's Socket.IO
            sessions by pool, backend and transport, every backend of the
            pools of C{socket.io} routes counted from zero.
        """
        counts: dict[tuple[str, str, str], int] = {}
        engineio = self.edge.engineio
        for pool in {route.pool for route in engineio.routes}:
            if pool in self.pools:
                for backend in self.pools[pool].backends:
                    for transport in ("websocket", "longpoll"):
                        counts[(pool, backend.name, transport)] = 0
        for engine in self._liveEngines():
            backend = engine.backend
            key = (engine.pool or "", backend.name if backend is not None else "",
                   _ENGINE_TRANSPORTS[engine.kind])
            counts[key] = counts.get(key, 0) + 1
        family = GaugeMetricFamily(f"{PREFIX}_socketio_sessions", "Socket.IO (Engine.IO) sessions held by "
                                   "this node, by pool, backend (their Socket.IO server) and the transport "
                                   "carrying them now (websocket, longpoll).",
                                   labels=["pool", "backend", "transport"])
        for labels, n in sorted(counts.items()):
            family.add_metric(list(labels), n)
        yield family

    def _backends(self) -> Iterator[Metric]:
        labels = ["pool", "backend"]
        up = GaugeMetricFamily(f"{PREFIX}_backend_up", "1 while a backend is healthy, 0 while its health "
                               "checks hold it down.", labels=labels)
        draining = GaugeMetricFamily(f"{PREFIX}_backend_draining", "1 while a backend is drained (no "
                                     "new connections), 0 otherwise.", labels=labels)
        connections = GaugeMetricFamily(f"{PREFIX}_backend_connections", "Connections this node has "
                                        "open (or opening) to a backend, tunnels and sessions.",
                                        labels=labels)
        weight = GaugeMetricFamily(f"{PREFIX}_backend_weight", "A backend's balancing weight.",
                                   labels=labels)
        for pool in list(self.pools.values()):
            for backend in pool.backends:
                names = [pool.name, backend.name]
                up.add_metric(names, 1 if backend.healthy else 0)
                draining.add_metric(names, 1 if backend.draining else 0)
                connections.add_metric(names, backend.connections)
                weight.add_metric(names, backend.weight)
        yield from (up, draining, connections, weight)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
    family.add_metric([], value)
    return family


def renderMetrics(request: Request, registry: CollectorRegistry) -> bytes:
    """
    Answer C{request} with every family of C{registry}: the Prometheus text
    format, or OpenMetrics when its C{Accept} asks for it
    (C{prometheus_client}'s own encoders).
    """
    encoder, contentType = choose_encoder(request.getHeader(b"accept") and
                                          request.getHeader(b"accept").decode("latin-1"))
    body = encoder(registry)
    request.setResponseCode(200)
    request.setHeader(b"content-type", contentType.encode("ascii"))
    request.setHeader(b"cache-control", b"no-store")
    return body


class MetricsResource(Resource):
    """
    The metrics listener's only resource: C{GET /metrics} (and C{HEAD});
    405 for another method, a JSON 404 elsewhere.
    """

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render(self, request: Request) -> bytes:
        """
        Answer C{/metrics}, refuse the rest.
        """
        if request.path != b"/metrics":
            return respondJSON(request, 404, errorPayload(404, "no such resource; metrics are at /metrics"))
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return respondJSON(request, 405, errorPayload(405, "use GET here"))
        return renderMetrics(request, self.registry)


class _MetricsSite(BoundedSite):
    """
    The metrics listener's site: bodies bounded, idle connections closed,
    no access log (a scrape every few seconds would fill it).
    """

    noisy = False

    def log(self, request: Request) -> None:
        """
        No access log.
        """


class MetricsService(SiteListener):
    """
    The listener of C{/metrics} of its own (C{[metrics] listen}), a child of
    the gateway service: bound with the gateway's listeners, closed when it
    stops.  Unlike the admin API it asks for no token, so it belongs on a
    private interface.
    """

    log = Logger()
    what = "metrics"
    everyInterface = (
        "metrics: {description} listens on every interface and asks for no token, so anyone "
        "who can reach port {port} reads the pools, backends and traffic; unless a firewall "
        "keeps it private, add interface=127.0.0.1 (or a private address)"
    )

    def __init__(self, gateway: IOperator, endpoint: Any, description: str,
                 registry: CollectorRegistry) -> None:
        """
        @param gateway: the node (its C{reactor} and C{exitOnListenFailure}).
        @param endpoint: the server endpoint to listen on.
        @param description: the endpoint string, for the log.
        """
        super().__init__(gateway, endpoint, description,
                         _MetricsSite(MetricsResource(registry), maxBodyBytes=MAX_BODY_BYTES,
                                      timeout=IDLE_TIMEOUT, reactor=gateway.reactor))
