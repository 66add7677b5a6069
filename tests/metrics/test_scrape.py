"""
What is read at scrape time (L{StateCollector}), the C{/metrics} answer and
resource, and the counting wrappers of passive and active health checks,
with fakes for the node's parts and a L{Clock}.
"""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest
from zope.interface.verify import verifyObject

from gateway.backends.balancers import RoundRobin
from gateway.backends.pool import Backend, Pool
from gateway.config import SessionConfig
from gateway.engineio.engine import EngineState
from gateway.errors import HealthCheckFailed
from gateway.interfaces import IConnectObserver, IHealthCheck
from gateway.metrics import Metrics
from gateway.metrics.observers import CountingObserver, TimedHealthCheck
from gateway.metrics.scrape import MetricsResource, StateCollector, renderMetrics
from gateway.sessions.states import SessionState
from gateway.wire.frames import FrameTracker
from gateway.wire.protocol import Outbox


def fakeSession(pool, state, kind=None, replay=0, inflight=(0, 0), paused=False):
    """
    @return: what the collector reads of a session (L{ISessionView}).
    """
    outbox = Outbox(100, 1000)
    for _ in range(replay):
        outbox.add(b"x" * 10, False)
    transport = SimpleNamespace(kind=kind) if kind else None
    return SimpleNamespace(pool=pool, state=state, transport=transport, outbox=outbox, inflight=inflight,
                           paused=paused)


def fakeEngine(pool, backend, kind, state=EngineState.OPEN):
    """
    @return: what the collector reads of a Socket.IO session (L{IEngineView}).
    """
    return SimpleNamespace(pool=pool, backend=backend, kind=kind, state=state)


def fakeTunnel(up=(0, 0), down=(0, 0), closed=False):
    """
    @return: what the collector reads of a tunnel: each side's frame tracker
        and bytes.
    """
    def side(frames, nbytes):
        tracker = FrameTracker()
        tracker.dataFrames = frames
        return SimpleNamespace(tracker=tracker, received=nbytes)

    return SimpleNamespace(client=side(*up), backendSide=side(*down), closed=closed)


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    request = DummyRequest([b"metrics"])
    text = renderMetrics(request, registry).decode("utf-8")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def makeNode():
    """
    @return: metrics with a L{StateCollector} over a pool C{chat} of two
        backends, three sessions and two tunnels.
    """
    one, two = Backend("b1", "127.0.0.1", 1), Backend("b2", "127.0.0.1", 2, weight=3)
    pool = Pool("chat", [one, two], RoundRobin())
    two.healthy = False
    one.drain()
    one.reserve()
    sessions = {
        "a": fakeSession(pool, SessionState.ATTACHED, "ws", replay=3, inflight=(5, 50)),
        "b": fakeSession(pool, SessionState.ATTACHED, "poll", inflight=(1, 500), paused=True),
        "c": fakeSession(pool, SessionState.DETACHED, replay=1),
        "d": fakeSession(pool, SessionState.ENDED, "ws", replay=9),
    }
    tunnels = [fakeTunnel((2, 20), (3, 30)), fakeTunnel((7, 70), (7, 70), closed=True)]
    engines = {
        "e1": fakeEngine("chat", one, "polling"),
        "e2": fakeEngine("chat", one, "websocket"),
        "e3": fakeEngine("chat", one, "websocket"),
        "e4": fakeEngine("chat", two, "websocket", EngineState.CLOSED),
    }
    engineio = SimpleNamespace(sessions=engines, routes=[SimpleNamespace(pool="chat"),
                                                         SimpleNamespace(pool="gone")])
    edge = SimpleNamespace(openConnections=4, tunnels=tunnels, engineio=engineio,
                           dropped=SimpleNamespace(total={"max_connections": 2, "EMFILE": 1,
                                                          "[Errno 24] odd text": 1}))
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.traffic.tunnelEnded(1, 10, 1, 11)
    metrics.traffic.sessionUpMessages, metrics.traffic.sessionDownBytes = 5, 99
    metrics.traffic.socketioUpMessages, metrics.traffic.socketioDownBytes = 6, 77
    config = SessionConfig(maxBufferMessages=10, maxBufferBytes=1000, maxInflightMessages=10,
                           maxInflightBytes=1000)
    metrics.registry.register(StateCollector(pools={"chat": pool}, sessions=SimpleNamespace(sessions=sessions),
                                             edge=edge, traffic=metrics.traffic, config=config))
    return metrics


def test_stateReadAtScrapeTime() -> None:
    """
    Connections, sessions by pool and state, Socket.IO sessions by pool,
    backend and transport (every backend of a Socket.IO route's pool from
    zero), buffers and backends are read from the node's objects when
    scraped; ended sessions and closed tunnels are not counted as open.
    """
    s = scrape(makeNode().registry)
    assert s[("txgateway_client_connections_open", ())] == 4
    assert s[("txgateway_connections_dropped_total", (("reason", "max_connections"),))] == 2
    assert s[("txgateway_connections_dropped_total", (("reason", "EMFILE"),))] == 1
    assert s[("txgateway_connections_dropped_total", (("reason", "other"),))] == 1
    open_ = {labels: v for (name, labels), v in s.items() if name == "txgateway_connections_open"}
    assert open_ == {
        (("mode", "transparent"), ("transport", "websocket")): 1,
        (("mode", "session"), ("transport", "websocket")): 1,
        (("mode", "session"), ("transport", "longpoll")): 1,
        (("mode", "socketio"), ("transport", "websocket")): 2,
        (("mode", "socketio"), ("transport", "longpoll")): 1,
    }
    engines = {labels: v for (name, labels), v in s.items() if name == "txgateway_socketio_sessions"}
    assert engines == {
        (("backend", "b1"), ("pool", "chat"), ("transport", "longpoll")): 1,
        (("backend", "b1"), ("pool", "chat"), ("transport", "websocket")): 2,
        (("backend", "b2"), ("pool", "chat"), ("transport", "longpoll")): 0,
        (("backend", "b2"), ("pool", "chat"), ("transport", "websocket")): 0,
    }
    assert s[("txgateway_sessions", (("pool", "chat"), ("state", "attached")))] == 2
    assert s[("txgateway_sessions", (("pool", "chat"), ("state", "detached")))] == 1
    assert s[("txgateway_sessions", (("pool", "chat"), ("state", "ending")))] == 0
    assert s[("txgateway_sessions_paused", ())] == 1
    assert s[("txgateway_replay_buffer_messages", ())] == 4
    assert s[("txgateway_replay_buffer_bytes", ())] == 40
    assert s[("txgateway_replay_buffer_fullest_ratio", ())] == 0.3
    assert s[("txgateway_inflight_messages", ())] == 6
    assert s[("txgateway_inflight_bytes", ())] == 550
    assert s[("txgateway_inflight_fullest_ratio", ())] == 0.5
    b1, b2 = (("backend", "b1"), ("pool", "chat")), (("backend", "b2"), ("pool", "chat"))
    assert (s[("txgateway_backend_up", b1)], s[("txgateway_backend_up", b2)]) == (1, 0)
    assert (s[("txgateway_backend_draining", b1)], s[("txgateway_backend_draining", b2)]) == (1, 0)
    assert (s[("txgateway_backend_connections", b1)], s[("txgateway_backend_connections", b2)]) == (1, 0)
    assert s[("txgateway_backend_weight", b2)] == 3


def test_trafficLiveAndEnded() -> None:
    """
    Messages and bytes of transparent mode are those of tunnels that ended
    plus those of the tunnels open now (a closed one left in the set is
    already in the totals); session mode's and Socket.IO's are the plain
    counts.
    """
    s = scrape(makeNode().registry)
    def get(name, mode, direction):
        return s[(name, (("direction", direction), ("mode", mode)))]
    assert get("txgateway_messages_total", "transparent", "up") == 3
    assert get("txgateway_message_bytes_total", "transparent", "up") == 30
    assert get("txgateway_messages_total", "transparent", "down") == 4
    assert get("txgateway_message_bytes_total", "transparent", "down") == 41
    assert get("txgateway_messages_total", "session", "up") == 5
    assert get("txgateway_message_bytes_total", "session", "down") == 99
    assert get("txgateway_messages_total", "socketio", "up") == 6
    assert get("txgateway_message_bytes_total", "socketio", "down") == 77


def test_renderMetricsNegotiates() -> None:
    """
    C{/metrics} is Prometheus text by default and OpenMetrics when asked,
    never cached.
    """
    registry = makeNode().registry
    request = DummyRequest([b"metrics"])
    body = renderMetrics(request, registry)
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]
    assert b"# HELP txgateway_sessions " in body
    request = DummyRequest([b"metrics"])
    request.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text; version=1.0.0"])
    body = renderMetrics(request, registry)
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_resourceServesOnlyMetrics() -> None:
    """
    The metrics listener's resource answers C{GET /metrics}; a JSON 404
    elsewhere and a 405 for another method.
    """
    resource = MetricsResource(makeNode().registry)
    request = DummyRequest([b"metrics"])
    request.path = b"/metrics"
    assert b"txgateway_sessions" in resource.render(request)
    request = DummyRequest([b"admin"])
    request.path = b"/admin"
    assert b'"status": 404' in resource.render(request) and request.responseCode == 404
    request = DummyRequest([b"metrics"])
    request.path, request.method = b"/metrics", b"POST"
    resource.render(request)
    assert request.responseCode == 405


class Observer:
    def __init__(self):
        self.heard = []

    def connectFailed(self, pool, backend, reason):
        self.heard.append(("failed", backend.name, reason))

    def connectSucceeded(self, pool, backend):
        self.heard.append(("succeeded", backend.name))

    def answered(self, pool, backend, status):
        self.heard.append(("answered", backend.name, status))


def test_countingObserver() -> None:
    """
    Failed connects are counted by pool and backend, and every outcome
    (failed, succeeded, answered) is passed on to the observer wrapped
    (passive health).
    """
    metrics = Metrics(CollectorRegistry(), process=False)
    inner = Observer()
    observer = CountingObserver(inner, metrics)
    verifyObject(IConnectObserver, observer)
    pool, backend = SimpleNamespace(name="chat"), SimpleNamespace(name="b1")
    observer.connectFailed(pool, backend, "refused")
    observer.connectSucceeded(pool, backend)
    observer.answered(pool, backend, 503)
    assert inner.heard == [("failed", "b1", "refused"), ("succeeded", "b1"), ("answered", "b1", 503)]
    s = scrape(metrics.registry)
    assert s[("txgateway_backend_connect_failures_total", (("backend", "b1"), ("pool", "chat")))] == 1


class Probe:
    def __init__(self):
        self.answers = []

    def check(self, backend):
        return self.answers.pop(0)


def test_timedHealthCheck() -> None:
    """
    Each check is timed on the clock and counted by result; its outcome is
    passed on unchanged; a cancelled check (the monitor stopping) is not
    counted.
    """
    clock, metrics, probe = Clock(), Metrics(CollectorRegistry(), process=False), Probe()
    check = TimedHealthCheck(probe, "chat", metrics, clock)
    verifyObject(IHealthCheck, check)
    backend = SimpleNamespace(name="b1")
    slow: Deferred = Deferred()
    probe.answers = [slow, fail(HealthCheckFailed("refused")), Deferred()]
    d = check.check(backend)
    clock.advance(0.2)
    slow.callback(None)
    assert d.result is None
    failed = check.check(backend)
    failed.addErrback(lambda f: f.trap(HealthCheckFailed))
    check.check(backend).cancel()
    s = scrape(metrics.registry)
    labels = (("backend", "b1"), ("pool", "chat"))
    assert s[("txgateway_health_checks_total", labels + (("result", "pass"),))] == 1
    assert s[("txgateway_health_checks_total", labels + (("result", "fail"),))] == 1
    assert s[("txgateway_health_check_duration_seconds_count", labels)] == 2
    assert s[("txgateway_health_check_duration_seconds_sum", labels)] == 0.2
    assert succeed(None)
