"""
The node's instruments (L{gateway.metrics.Metrics}), its null object and
the event loop's lag, read back from their own registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.interfaces import IMetrics
from gateway.metrics import CLOSE_REASONS, MODES, LoopLag, Metrics, NoMetrics, Traffic


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
    """
    @return: every sample of C{registry}'s text exposition, by name and
        sorted labels.
    """
    text = generate_latest(registry).decode("utf-8")
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_bothProvideIMetrics() -> None:
    """
    The instruments and the null object both provide L{IMetrics}, with a
    L{Traffic} each.
    """
    for metrics in (Metrics(CollectorRegistry()), NoMetrics()):
        verifyObject(IMetrics, metrics)
        assert isinstance(metrics.traffic, Traffic)


def test_ownRegistryNotTheGlobalOne() -> None:
    """
    A L{Metrics} registers in the registry it is given (or a new one),
    never in C{prometheus_client}'s default: two nodes in one process do
    not collide.
    """
    before = set(REGISTRY._names_to_collectors)
    one, two = Metrics(), Metrics()
    assert one.registry is not two.registry
    assert set(REGISTRY._names_to_collectors) == before
    given = CollectorRegistry()
    assert Metrics(given).registry is given


def test_everyModeCountedFromZero() -> None:
    """
    Every mode and transport has its accepted counter and handshake
    histogram at zero before the first connection, so that dashboards and
    rates see the series from the start.
    """
    s = samples(Metrics(CollectorRegistry(), process=False).registry)
    for mode, transport in MODES:
        labels = (("mode", mode), ("transport", transport))
        assert s[("txgateway_connections_accepted_total", labels)] == 0
        assert s[("txgateway_handshake_duration_seconds_count", labels)] == 0


def test_eventsCounted() -> None:
    """
    Each event lands in its family, with the labels given.
    """
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.accepted("session", "longpoll")
    metrics.handshake("transparent", "websocket", 0.003)
    metrics.refused(503, "connection_limit")
    metrics.refused(431)
    metrics.sessionEvent("opened", "chat")
    metrics.sessionEvent("failover", "chat")
    metrics.sessionEvent("move", "chat")
    metrics.sessionEvent("takeover", "chat")
    metrics.resumed("websocket")
    metrics.connectFailed("chat", "b1")
    metrics.healthChecked("chat", "b1", True, 0.02)
    metrics.healthChecked("chat", "b1", False, 2.0)
    metrics.lagSampled(0.004)
    s = samples(metrics.registry)
    assert s[("txgateway_connections_accepted_total", (("mode", "session"), ("transport", "longpoll")))] == 1
    assert s[("txgateway_handshake_duration_seconds_sum",
              (("mode", "transparent"), ("transport", "websocket")))] == 0.003
    assert s[("txgateway_refusals_total", (("reason", "connection_limit"), ("status", "503")))] == 1
    assert s[("txgateway_refusals_total", (("reason", "head_too_large"), ("status", "431")))] == 1
    for name in ("sessions_opened", "session_failovers", "session_moves", "session_takeovers"):
        assert s[(f"txgateway_{name}_total", (("pool", "chat"),))] == 1
    assert s[("txgateway_session_resumes_total", (("transport", "websocket"),))] == 1
    assert s[("txgateway_session_resumes_total", (("transport", "longpoll"),))] == 0
    assert s[("txgateway_backend_connect_failures_total", (("backend", "b1"), ("pool", "chat")))] == 1
    assert s[("txgateway_health_checks_total", (("backend", "b1"), ("pool", "chat"), ("result", "pass")))] == 1
    assert s[("txgateway_health_checks_total", (("backend", "b1"), ("pool", "chat"), ("result", "fail")))] == 1
    assert s[("txgateway_health_check_duration_seconds_count", (("backend", "b1"), ("pool", "chat")))] == 2
    assert s[("txgateway_event_loop_lag_seconds_count", ())] == 1
    assert s[("txgateway_event_loop_lag_last_seconds", ())] == 0.004


def test_closeCodesBounded() -> None:
    """
    A close code of the gateway's own is counted with its word; any other
    is counted as C{other}, so the label's values stay a fixed set.
    """
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.closed("session", 4503)
    metrics.closed("session", 4999)
    metrics.closed("transparent", 1012)
    s = samples(metrics.registry)
    assert s[("txgateway_closes_total", (("code", "4503"), ("mode", "session"), ("reason", "unavailable")))] == 1
    assert s[("txgateway_closes_total", (("code", "other"), ("mode", "session"), ("reason", "other")))] == 1
    assert s[("txgateway_closes_total",
              (("code", "1012"), ("mode", "transparent"), ("reason", "backend_gone")))] == 1
    assert len(set(CLOSE_REASONS.values())) == len(CLOSE_REASONS)


def test_redisCommands() -> None:
    """
    Redis commands are counted by their upper-cased name (bounded in
    length) and shard, failures apart, with their latency (by command);
    session messages written to Redis by shard.
    """
    metrics = Metrics(CollectorRegistry(), process=False)
    metrics.redisCommand("evalsha", 0.001, False, "a")
    metrics.redisCommand("EVALSHA", 0.5, True, "a")
    metrics.redisCommand("EVALSHA", 0.5, False, "b")
    metrics.redisCommand("X" * 100, 0.001, False, "a")
    metrics.redisMessages("b", 3)
    s = samples(metrics.registry)
    assert s[("txgateway_redis_commands_total", (("command", "EVALSHA"), ("shard", "a")))] == 2
    assert s[("txgateway_redis_commands_total", (("command", "EVALSHA"), ("shard", "b")))] == 1
    assert s[("txgateway_redis_errors_total", (("command", "EVALSHA"), ("shard", "a")))] == 1
    assert s[("txgateway_redis_command_duration_seconds_count", (("command", "EVALSHA"),))] == 3
    assert s[("txgateway_redis_commands_total", (("command", "X" * 24), ("shard", "a")))] == 1
    assert s[("txgateway_redis_messages_total", (("shard", "b"),))] == 3


def test_processFamiliesPrefixed() -> None:
    """
    The process's own figures are exported under the gateway's prefix too,
    and every family's name starts with it.
    """
    s = samples(Metrics(CollectorRegistry()).registry)
    assert ("txgateway_process_open_fds", ()) in s
    assert all(name.startswith("txgateway_") for name, _ in s)


def test_trafficTunnelEnded() -> None:
    """
    A tunnel's totals are added when it ends.
    """
    traffic = Traffic()
    traffic.tunnelEnded(1, 10, 2, 20)
    traffic.tunnelEnded(3, 30, 4, 40)
    assert (traffic.tunnelUpMessages, traffic.tunnelUpBytes, traffic.tunnelDownMessages,
            traffic.tunnelDownBytes) == (4, 40, 6, 60)


def test_loopLagOnAClock() -> None:
    """
    L{LoopLag} samples every interval how late its timer ran: zero on
    time, the delay when the clock jumps past the due time; it stops
    with its service.
    """
    clock, seen = Clock(), []
    lag = LoopLag(clock, seen.append, interval=0.5)
    lag.startService()
    clock.advance(0.5)
    assert seen == [0.0]
    clock.advance(0.75)  # due at 1.0, ran at 1.25
    assert seen == [0.0, 0.25] and lag.last == 0.25
    clock.advance(0.5)  # due at 1.75
    assert seen == [0.0, 0.25, 0.0]
    lag.stopService()
    assert clock.getDelayedCalls() == []
    clock.advance(5)
    assert len(seen) == 3
