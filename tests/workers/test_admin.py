"""
Tests for L{gateway.workers.admin}: how the workers' answers are merged.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gateway.workers.admin import mergeAnswers, mergeMetrics


def test_countsSummed() -> None:
    """
    Connection and session counts are added up across workers, key by key
    and element by element; other values are the first worker's.
    """
    one = {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 3, "draining": False, "limit": 10},
    ]}], "sessions": 4, "attached": 1, "mover": {"moving": 0}}
    two = {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 5, "draining": False, "limit": 10},
    ]}], "sessions": 1, "attached": 1, "mover": {"moving": 7}}
    assert mergeAnswers([one, two]) == {"pools": [{"name": "chat", "backends": [
        {"name": "a", "weight": 2, "connections": 8, "draining": False, "limit": 10},
    ]}], "sessions": 5, "attached": 2, "mover": {"moving": 0}}


def test_socketIOMerged() -> None:
    """
    Socket.IO counts are added up, a pool or backend only one worker has
    sessions of is kept (every worker's keys, the first worker's first),
    and the listings are joined, one worker's after the other.
    """
    one = {"sessions": 0, "socketio": {"sessions": 1, "polling": 1, "websocket": 0, "upgrading": 0,
                                       "pools": {"app": {"sessions": 1, "polling": 1, "websocket": 0,
                                                         "backends": {"a": {"sessions": 1}}}}}}
    two = {"sessions": 2, "socketio": {"sessions": 2, "polling": 0, "websocket": 2, "upgrading": 1,
                                       "pools": {"app": {"sessions": 1, "polling": 0, "websocket": 1,
                                                         "backends": {"b": {"sessions": 1}}},
                                                 "game": {"sessions": 1, "polling": 0, "websocket": 1,
                                                          "backends": {}}}}}
    assert mergeAnswers([one, two]) == {"sessions": 2, "socketio": {
        "sessions": 3, "polling": 1, "websocket": 2, "upgrading": 1,
        "pools": {"app": {"sessions": 2, "polling": 1, "websocket": 1,
                          "backends": {"a": {"sessions": 1}, "b": {"sessions": 1}}},
                  "game": {"sessions": 1, "polling": 0, "websocket": 1, "backends": {}}}}}
    first = {"count": 2, "listed": 1, "sessions": [{"sid": "a", "node": "w0"}]}
    second = {"count": 1, "listed": 1, "sessions": [{"sid": "b", "node": "w1"}]}
    assert mergeAnswers([first, second]) == {"count": 3, "listed": 2, "sessions": [
        {"sid": "a", "node": "w0"}, {"sid": "b", "node": "w1"}]}


def test_unlikeShapes() -> None:
    """
    Arrays of different lengths, and values of different types, are the
    first worker's; booleans are never added up.
    """
    assert mergeAnswers([[1, 2], [1]]) == [1, 2]
    assert mergeAnswers([{"connections": True}, {"connections": True}]) == {"connections": True}
    assert mergeAnswers([{"connections": 1}, {"connections": "x"}]) == {"connections": 1}
    assert mergeAnswers([{"sessions": 1}]) == {"sessions": 1}


def test_metricsLabelledByWorker() -> None:
    """
    Every worker's series come out once each, with its C{worker} label, and
    each family's HELP and TYPE once.
    """
    texts = []
    for n in range(2):
        registry = CollectorRegistry()
        Counter("txgateway_things", "Things.", ["mode"], registry=registry).labels("session").inc(n + 1)
        Histogram("txgateway_wait_seconds", "Waits.", registry=registry, buckets=(1,)).observe(0.5)
        texts.append((n, generate_latest(registry).decode()))
    merged = mergeMetrics(texts).decode()
    assert merged.count("# HELP txgateway_things_total Things.") == 1
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    things = {(s.labels["worker"], s.value) for s in families["txgateway_things"].samples
              if s.name == "txgateway_things_total"}
    assert things == {("0", 1.0), ("1", 2.0)}
    counts = [s for s in families["txgateway_wait_seconds"].samples if s.name.endswith("_count")]
    assert sorted(s.labels["worker"] for s in counts) == ["0", "1"]
