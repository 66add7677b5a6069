"""
Tests for L{gateway.workers.supervisor}: starting, restarting, stopping and
rolling restarts, with fake worker processes on a L{Clock} (no listener:
the sockets are the integration tests' business).
"""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from gateway.config import GatewayConfig, Timeouts
from gateway.service import STOP_MARGIN
from gateway.workers.backoff import INITIAL_DELAY
from gateway.workers.supervisor import KILL_AFTER, READY_TIMEOUT, RollingRestartRunning, Supervisor

from .fakes import Spawner, die, ready

#: The drain of the workers replaced, in seconds.
DRAIN = 3.0


def supervisor(count: int = 2) -> tuple[Supervisor, Spawner, Clock]:
    clock = Clock()
    spawner = Spawner(clock)
    config = GatewayConfig(listen=(), workers=count, timeouts=Timeouts(shutdown=2.0, drain=DRAIN))
    service = Supervisor(config, ["--backend", "ws://a:1"], reactor=clock, spawn=spawner)
    service.startService()
    return service, spawner, clock


def test_startsEveryWorker() -> None:
    """
    Starting the supervisor starts one worker per number; it is ready once
    every worker says it listens.
    """
    service, spawner, _ = supervisor(3)
    assert spawner.events == [("start", 0, 0), ("start", 1, 0), ("start", 2, 0)]
    readiness = service.whenReady()
    for worker in spawner.workers:
        ready(worker)
    assert readiness.result == 3


def test_deadWorkerRestartedWithBackoff() -> None:
    """
    A worker that dies is started again after a delay that doubles while it
    keeps dying soon after each start, and is back to the first delay once
    one lived long enough.
    """
    service, spawner, clock = supervisor(2)
    for worker in spawner.workers:
        ready(worker)
    die(spawner.current(1, 0), sig=9)
    assert service.workers[1] is None
    clock.advance(INITIAL_DELAY - 0.01)
    assert spawner.events[-1] == ("start", 1, 0)
    clock.advance(0.01)
    assert spawner.events[-1] == ("start", 1, 1)
    assert service.restarts == [0, 1]
    die(spawner.current(1, 1), code=1)
    clock.advance(2 * INITIAL_DELAY - 0.01)
    assert spawner.events[-1] == ("start", 1, 1)
    clock.advance(0.01)
    assert spawner.events[-1] == ("start", 1, 2)
    clock.advance(60)
    die(spawner.current(1, 2), code=1)
    clock.advance(INITIAL_DELAY)
    assert spawner.events[-1] == ("start", 1, 3)
    assert service.restarts == [0, 3]
    assert service.workers[0] is spawner.current(0, 0)


def test_crashLoopBounded() -> None:
    """
    A worker that dies at once every time is started at most once every
    30 seconds after a few tries: in ten minutes, fewer than 30 starts.
    """
    service, spawner, clock = supervisor(1)
    for _ in range(600):
        worker = service.workers[0]
        if worker is not None and worker.exit is None:
            die(worker, code=1)
        clock.advance(1)
    assert 15 < len(spawner.workers) < 30


def test_stopTermsThenKills() -> None:
    """
    Stopping sends SIGTERM to every worker, waits for them, SIGKILLs one
    still running past its deadline, starts none again, and cancels a
    pending restart.
    """
    service, spawner, clock = supervisor(3)
    for worker in spawner.workers:
        ready(worker)
    die(spawner.current(2, 0), sig=9)  # its restart is pending
    stopping = service.stopService()
    assert [e for e in spawner.events if e[0] == "signal"] == [
        ("signal", 0, 0, "SIGTERM"), ("signal", 1, 0, "SIGTERM")] or \
        sorted(e for e in spawner.events if e[0] == "signal") == [
        ("signal", 0, 0, "SIGTERM"), ("signal", 1, 0, "SIGTERM")]
    die(spawner.current(0, 0))
    assert not stopping.called
    clock.advance(2.0 + STOP_MARGIN + KILL_AFTER)
    assert ("signal", 1, 0, "SIGKILL") in spawner.events
    die(spawner.current(1, 0), sig=9)
    assert stopping.called
    clock.advance(60)
    assert [e for e in spawner.events if e[0] == "start"] == [
        ("start", 0, 0), ("start", 1, 0), ("start", 2, 0)]
    assert service.stoppedCleanly is False


def test_stopClean() -> None:
    """
    Workers that all end by themselves make a clean stop.
    """
    service, spawner, _ = supervisor(2)
    stopping = service.stopService()
    for worker in spawner.workers:
        die(worker)
    assert stopping.called
    assert service.stoppedCleanly is True


def test_rollingOrder() -> None:
    """
    A rolling restart replaces the workers in number order, one at a time:
    the replacement starts, and only once it listens is the old worker told
    to stop accepting, then, C{timeouts.drain} later, to stop; the next number
    waits until the old worker has ended.  The
    old workers' ends are not deaths.
    """
    service, spawner, clock = supervisor(2)
    for worker in spawner.workers:
        ready(worker)
    del spawner.events[:]
    rolling = service.rollingRestart()
    assert service.rolling
    assert spawner.events == [("start", 0, 1)]
    ready(spawner.current(0, 1))
    assert spawner.events == [("start", 0, 1), ("write", 0, 0, b"drain\n")]
    clock.advance(DRAIN)
    assert spawner.events[2:] == [("signal", 0, 0, "SIGTERM")]
    clock.advance(1)
    assert len(spawner.events) == 3
    die(spawner.current(0, 0))
    assert spawner.events[3:] == [("start", 1, 1)]
    ready(spawner.current(1, 1))
    clock.advance(DRAIN)
    assert spawner.events[4:] == [("write", 1, 0, b"drain\n"), ("signal", 1, 0, "SIGTERM")]
    die(spawner.current(1, 0))
    assert rolling.result == 2
    assert not service.rolling
    clock.advance(60)
    assert service.restarts == [0, 0]
    assert service.workers == [spawner.current(0, 1), spawner.current(1, 1)]
    assert len(spawner.workers) == 4


def test_rollingOneAtATime() -> None:
    """
    A second rolling restart while one is under way is refused.
    """
    service, spawner, _ = supervisor(2)
    service.rollingRestart()
    with pytest.raises(RollingRestartRunning):
        service.rollingRestart()


def test_rollingReplacementFails() -> None:
    """
    A replacement that ends before it listens stops the rolling restart:
    the old worker keeps its number and serving, and the next number is
    not touched.
    """
    service, spawner, clock = supervisor(2)
    for worker in spawner.workers:
        ready(worker)
    rolling = service.rollingRestart()
    failures: list = []
    rolling.addErrback(failures.append)
    die(spawner.current(0, 1), code=1)
    assert failures
    assert service.workers[0] is spawner.current(0, 0)
    assert ("signal", 0, 0, "SIGTERM") not in spawner.events
    clock.advance(60)
    assert [e for e in spawner.events if e[0] == "start"] == [
        ("start", 0, 0), ("start", 1, 0), ("start", 0, 1)]
    assert not service.rolling


def test_rollingReplacementTimesOut() -> None:
    """
    A replacement that does not listen within L{READY_TIMEOUT} is killed and
    the old worker kept.
    """
    service, spawner, clock = supervisor(1)
    ready(spawner.current(0, 0))
    rolling = service.rollingRestart()
    rolling.addErrback(lambda f: None)
    clock.advance(READY_TIMEOUT)
    assert ("signal", 0, 1, "SIGKILL") in spawner.events
    die(spawner.current(0, 1), sig=9)
    assert service.workers[0] is spawner.current(0, 0)
    clock.advance(60)
    assert len(spawner.workers) == 2


def test_rollingStartsDeadSlot() -> None:
    """
    A number whose worker is dead and waiting to start again gets its
    replacement at once (the pending restart is cancelled).
    """
    service, spawner, clock = supervisor(1)
    ready(spawner.current(0, 0))
    die(spawner.current(0, 0), sig=9)
    rolling = service.rollingRestart()
    assert spawner.events[-1] == ("start", 0, 1)
    ready(spawner.current(0, 1))
    assert rolling.result == 1
    assert not [e for e in spawner.events if e[0] == "write"]
    clock.advance(60)
    assert len(spawner.workers) == 2


def test_reloadSignalsReadyWorkers() -> None:
    """
    A reload sends SIGHUP to every worker that listens (one still starting
    has no handler for it yet).
    """
    service, spawner, _ = supervisor(2)
    ready(spawner.current(0, 0))
    service.reload()
    assert [e for e in spawner.events if e[0] == "signal"] == [("signal", 0, 0, "SIGHUP")]


def test_rollingFailsOnDeadSlot() -> None:
    """
    A number whose worker was dead: when its replacement fails too, it is
    started again after the usual delay (the number is not left empty).
    """
    service, spawner, clock = supervisor(1)
    ready(spawner.current(0, 0))
    die(spawner.current(0, 0), sig=9)
    rolling = service.rollingRestart()
    rolling.addErrback(lambda f: None)
    die(spawner.current(0, 1), code=1)
    assert not service.rolling
    clock.advance(60)
    assert spawner.events[-1] == ("start", 0, 2)
    assert service.workers[0] is spawner.current(0, 2)
