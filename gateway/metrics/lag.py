"""
The event loop's lag: how late the reactor runs a timer that is due.

Everything the gateway does runs on one reactor thread, so a turn that
takes too long (a large JSON body, a burst of handshakes, a blocking call
that should not be there) delays every connection at once.  L{LoopLag}
asks the clock for a call every C{interval} seconds and records how much
later than asked the call came.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service

__all__ = ["LoopLag", "LAG_INTERVAL"]

#: Seconds between two samples of the lag.
LAG_INTERVAL = 0.5


class LoopLag(Service):
    """
    Samples the event loop's lag with one timer at a time, each set when
    the last one ran (as a L{twisted.internet.task.LoopingCall} would, but
    measuring from the moment each call was due, not skipping late ones).

    @ivar last: the lag at the last sample, in seconds.
    """

    def __init__(self, clock: Any, observe: Callable[[float], None], interval: float = LAG_INTERVAL) -> None:
        """
        @param clock: provides L{IReactorTime}.
        @param observe: called with each sample, in seconds.
        """
        self.clock = clock
        self.observe = observe
        self.interval = interval
        self.last = 0.0
        self._due = 0.0
        self._call: Any = None

    def startService(self) -> None:
        """
        Start sampling.
        """
        super().startService()
        self._schedule()

    def _schedule(self) -> None:
        self._due = self.clock.seconds() + self.interval
        self._call = self.clock.callLater(self.interval, self._sample)

    def _sample(self) -> None:
        self._call = None
        self.last = max(0.0, self.clock.seconds() - self._due)
        self.observe(self.last)
        self._schedule()

    def stopService(self) -> None:
        """
        Stop sampling.
        """
        super().stopService()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
