"""
Tests for L{gateway.workers.child}: what a worker is told, and the
configuration it runs.
"""

from __future__ import annotations

import pytest

from gateway.config import AdminConfig, GatewayConfig, SessionMapConfig
from gateway.workers.child import SETUP_VARIABLE, WorkerSetup, workerConfig, workerSetup


def test_setupRoundTrip() -> None:
    """
    A set-up encoded by the supervisor is read back by the worker.
    """
    setup = WorkerSetup(2, 5, ((4, "inet", "tcp:8080"), (5, "unix", "unix:/run/gw.sock")), "/x.sock")
    assert workerSetup({SETUP_VARIABLE: setup.encode()}) == setup


def test_notAWorker() -> None:
    """
    Without the variable, the process is not a worker.
    """
    assert workerSetup({}) is None


def test_unknownFamily() -> None:
    """
    A set-up naming an address family the worker cannot adopt is refused.
    """
    setup = WorkerSetup(0, 0, ((4, "bluetooth", "x"),))
    with pytest.raises(ValueError):
        workerSetup({SETUP_VARIABLE: setup.encode()})


def test_workerConfig() -> None:
    """
    A worker runs one process, its admin API on its private socket, and a
    Redis node id of its own when the file sets one.
    """
    config = GatewayConfig(
        workers=3,
        admin=AdminConfig(listen="tcp:9090", token="t" * 16),
        sessionMap=SessionMapConfig(type="redis", options=(("node_id", "edge"), ("url", "redis://x"))),
    )
    worker = workerConfig(config, WorkerSetup(2, 0, (), admin="/run/w.sock"))
    assert worker.workers == 1
    assert worker.admin == AdminConfig(listen="unix:/run/w.sock:mode=600", token="t" * 16)
    assert dict(worker.sessionMap.options) == {"node_id": "edge-w2", "url": "redis://x"}


def test_workerConfigWithoutNodeId() -> None:
    """
    Without a node id in the file, each worker draws its own (the map is
    left as it is), and without an admin API the worker has none.
    """
    config = GatewayConfig(workers=2, sessionMap=SessionMapConfig(type="redis"))
    worker = workerConfig(config, WorkerSetup(0, 0, ()))
    assert worker.sessionMap == config.sessionMap
    assert worker.admin is None
