"""
Python's cyclic garbage collector in a gateway process: set up for a
long-running gateway when C{twistd gateway} starts (L{tuneCollector}), and
the whole heap collected after many client connections closed together
(L{CollectAfterDrops}).  docs/performance.md ("Garbage collection") has
the measurements behind both.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from twisted.internet.task import LoopingCall

__all__ = ["COLLECTOR_THRESHOLDS", "DROPS_TO_COLLECT", "CollectAfterDrops", "tuneCollector"]

#: The thresholds of Python's cyclic garbage collector in a gateway process
#: (L{tuneCollector}); Python's own are 700, 10 and 10.
COLLECTOR_THRESHOLDS = (50_000, 20, 10)


def tuneCollector() -> None:
    """
    Set up Python's cyclic garbage collector for a long-running gateway
    process: what the process holds once it is built (modules, the
    configuration) is moved out of the collector's sight (C{gc.freeze}),
    and the youngest generation is collected every 50,000 allocations
    rather than every 700 (L{COLLECTOR_THRESHOLDS}).

    With Python's thresholds, a busy node promotes the objects of every
    message and Redis call still in flight to the oldest generation, which
    it then collects whole every few seconds: holding 9,000 sessions at
    one message every 10 s each, a collection every 3 s, each taking 360
    ms, stopping every connection meanwhile (C{docs/performance.md},
    "Garbage collection").  Collected less often, those objects are freed
    by their reference counts before they are promoted, and the oldest
    generation is collected seldom.  Objects freed only by the collector
    (reference cycles) wait longer for it: memory stays as it was in the
    measured runs.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECTOR_THRESHOLDS)


#: Client connections that must have closed since the last look's peak for
#: L{CollectAfterDrops} to collect the whole heap.
DROPS_TO_COLLECT = 1000


class CollectAfterDrops:
    """
    With the collector set up for a gateway (L{tuneCollector}), the oldest
    generation is collected seldom; what many client connections that
    closed together (a network blip, a proxy restarting) leave in reference
    cycles sits there meanwhile, and the memory of those connections is not
    reused by the next ones.  So once a second the open client
    connections are looked at, and when they fell by L{DROPS_TO_COLLECT}
    or more from their peak since the last collection, the whole heap is
    collected once (as Python's own thresholds would have done).

    Measured with C{bench/session_memory.py --sessions 5000}: a detached
    session cost 10.4 KiB of RSS without it (the dropped connections'
    memory still held), and as much as with Python's thresholds with it.
    """

    def __init__(self, clock, openConnections: Callable[[], int], collect: Callable[[], object] = gc.collect):
        self._open = openConnections
        self._collect = collect
        self._peak = 0
        self._loop = LoopingCall(self.look)
        self._loop.clock = clock

    def start(self) -> None:
        self._peak = self._open()
        self._loop.start(1.0, now=False)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def look(self) -> None:
        """
        Collect if enough connections closed since the peak.
        """
        open = self._open()
        if open > self._peak:
            self._peak = open
        elif self._peak - open >= DROPS_TO_COLLECT:
            self._collect()
            self._peak = open
