"""
Tests for the values of L{gateway.client._state}: the reconnect backoff (and
its use by the client).
"""

from __future__ import annotations

import random

from gateway.client import ClientState
from gateway.client._state import Backoff
from tests.client.fakes import Harness


def test_backoffGrowsIsCappedAndResets() -> None:
    """
    Reconnect delays are jittered (uniform between 0 and a bound), the
    bound doubles from initialDelay up to maxDelay with each failure in a
    row, each next attempt starts exactly after its delay, and a welcome
    resets the bound.
    """
    h = Harness(jitter=0.5, maxDelay=1.0)
    gateway = h.open()
    h.drop(gateway)
    for _ in range(6):
        delay = h.states[-1][1].delay
        attempts = h.attempts
        h.reactor.advance(delay * 0.99)
        assert h.attempts == attempts
        h.reactor.advance(delay * 0.02)
        assert h.attempts == attempts + 1
        h.refuse()
    assert h.bounds == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert [d.delay for s, d in h.states[-7:]] == [b * 0.5 for b in h.bounds]
    assert "refused" in h.states[-1][1].error
    again = h.reconnect()
    again.welcome(resumed=True)
    h.flush()
    h.drop(again)
    assert h.bounds[-1] == 0.1



def test_backoffFullJitter() -> None:
    """
    Backoff draws each delay uniformly from 0 to the bound (full jitter).
    """
    rng = random.Random(7)
    backoff = Backoff(0.1, 10.0, rng.uniform)
    delays = [backoff.next() for _ in range(200)]
    assert all(0 <= d <= 10.0 for d in delays)
    assert delays[0] <= 0.1 and delays[3] <= 0.8
    assert len(set(delays[10:])) == len(delays[10:])  # jittered, not fixed
    assert max(delays[10:]) > 5 and min(delays[10:]) < 5



def test_stateTransitions() -> None:
    """
    open and reconnecting may be entered again, nothing goes back to
    connecting, and nothing leaves closed.
    """
    states = list(ClientState)
    for state in states:
        assert not state.mayBecome(ClientState.connecting)
        assert state.mayBecome(ClientState.closed) is (state is not ClientState.closed)
    for state in (ClientState.open, ClientState.reconnecting):
        assert all(ClientState.connecting.mayBecome(s) for s in (state, ClientState.closed))
        assert state.mayBecome(ClientState.open) and state.mayBecome(ClientState.reconnecting)
    assert not any(ClientState.closed.mayBecome(s) for s in states)


def test_backoffUpgradeJitter() -> None:
    """
    The upgrade schedule's backoff (jitter 0.5) draws each delay between
    half its bound and its bound: 5 s doubling up to 300 s by default, so
    that no delay is shorter than the one before it until the cap.
    """
    from gateway.client._state import MAX_UPGRADE_DELAY, UPGRADE_DELAY, UPGRADE_JITTER

    assert (UPGRADE_DELAY, MAX_UPGRADE_DELAY, UPGRADE_JITTER) == (5.0, 300.0, 0.5)
    rng = random.Random(11)
    for _ in range(50):
        backoff = Backoff(UPGRADE_DELAY, MAX_UPGRADE_DELAY, rng.uniform, UPGRADE_JITTER)
        delays = [backoff.next() for _ in range(12)]
        bounds = [min(300.0, 5.0 * 2 ** n) for n in range(12)]
        assert all(b / 2 <= d <= b for d, b in zip(delays, bounds))
        assert all(later >= earlier for earlier, later in zip(delays[:6], delays[1:7]))
    backoff.reset()
    assert backoff.bound() == 5.0
