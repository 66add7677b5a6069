"""
Tests for L{gateway.workers.backoff}: how soon a dead worker is started
again.
"""

from __future__ import annotations

from gateway.workers.backoff import INITIAL_DELAY, MAX_DELAY, STABLE_AFTER, RestartBackoff


def test_quickDeathsDouble() -> None:
    """
    Each death soon after a start doubles the delay, up to L{MAX_DELAY}.
    """
    backoff = RestartBackoff()
    delays = [backoff.exited(0.1) for _ in range(10)]
    assert delays[:4] == [INITIAL_DELAY, 2 * INITIAL_DELAY, 4 * INITIAL_DELAY, 8 * INITIAL_DELAY]
    assert delays[-1] == MAX_DELAY
    assert max(delays) == MAX_DELAY


def test_stableWorkerStartsOver() -> None:
    """
    A worker that lived L{STABLE_AFTER} seconds or more is restarted after
    L{INITIAL_DELAY}, however many quick deaths came before.
    """
    backoff = RestartBackoff()
    for _ in range(6):
        backoff.exited(1.0)
    assert backoff.exited(STABLE_AFTER) == INITIAL_DELAY
    assert backoff.exited(1.0) == 2 * INITIAL_DELAY


def test_settings() -> None:
    """
    The delays follow the given initial delay, bound and stable uptime.
    """
    backoff = RestartBackoff(initial=1, maximum=3, stable=5)
    assert [backoff.exited(0) for _ in range(4)] == [1, 2, 3, 3]
    assert backoff.exited(5) == 1
