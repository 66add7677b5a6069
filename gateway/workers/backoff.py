"""
How soon a worker that died is started again: a pure policy, with no clock
of its own (the supervisor tells it how long the worker lived).

A worker that dies soon after it started is probably crashing on start-up
(a backend file it cannot read, a bug): starting it again at once would spin
the machine.  Each quick death doubles the wait before the next start, up to
L{MAX_DELAY}; a worker that lived L{STABLE_AFTER} seconds or more is taken
for healthy again, and its next death restarts it after L{INITIAL_DELAY}.
"""

from __future__ import annotations

__all__ = ["RestartBackoff", "INITIAL_DELAY", "MAX_DELAY", "STABLE_AFTER"]

#: Seconds before the first restart of a worker that died.
INITIAL_DELAY = 0.5
#: The longest wait between two restarts of a worker that keeps dying.
MAX_DELAY = 30.0
#: Seconds a worker must live for its death to count as a first one.
STABLE_AFTER = 10.0


class RestartBackoff:
    """
    The restart delays of one worker slot: L{INITIAL_DELAY}, then doubled
    for each death within L{STABLE_AFTER} seconds of a start, at most
    L{MAX_DELAY}; so a crash loop restarts a worker at most once every
    L{MAX_DELAY} seconds.

    @ivar deaths: consecutive quick deaths so far.
    """

    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY,
                 stable: float = STABLE_AFTER) -> None:
        self.initial = initial
        self.maximum = maximum
        self.stable = stable
        self.deaths = 0

    def exited(self, uptime: float) -> float:
        """
        A worker of this slot died after C{uptime} seconds.

        @return: the seconds to wait before starting it again.
        """
        if uptime >= self.stable:
            self.deaths = 0
        delay = min(self.maximum, self.initial * 2 ** self.deaths)
        self.deaths += 1
        return delay
