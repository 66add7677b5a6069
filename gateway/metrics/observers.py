"""
Counting wrappers around two of the gateway's contracts, so that neither
passive nor active health checking has to know of metrics: the composition
root wraps the L{IConnectObserver} that every backend connect reports to,
and each pool's L{IHealthCheck}, in these.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from zope.interface import implementer

from ..interfaces import IConnectObserver, IHealthCheck, IMetrics

__all__ = ["CountingObserver", "TimedHealthCheck"]


@implementer(IConnectObserver)
class CountingObserver:
    """
    Counts failed backend connects (C{txgateway_backend_connect_failures_total}),
    then tells the observer it wraps (passive health).
    """

    def __init__(self, observer: IConnectObserver, metrics: IMetrics) -> None:
        self.observer = observer
        self.metrics = metrics

    def connectFailed(self, pool: Any, backend: Any, reason: str) -> None:
        """
        Count the failure, and pass it on.
        """
        self.metrics.connectFailed(pool.name, backend.name)
        self.observer.connectFailed(pool, backend, reason)

    def connectSucceeded(self, pool: Any, backend: Any) -> None:
        """
        Pass it on.
        """
        self.observer.connectSucceeded(pool, backend)

    def answered(self, pool: Any, backend: Any, status: int) -> None:
        """
        Pass it on: an answer is not a failed connect, whatever its status.
        """
        self.observer.answered(pool, backend, status)


@implementer(IHealthCheck)
class TimedHealthCheck:
    """
    Times each active check of the probe it wraps and counts its result
    (C{txgateway_health_checks_total}, C{..._duration_seconds}); a check
    cancelled (the monitor stopping) is not counted.
    """

    def __init__(self, check: IHealthCheck, pool: str, metrics: IMetrics, clock: Any) -> None:
        """
        @param pool: the name of the pool whose backends C{check} probes.
        @param clock: provides L{IReactorTime}.
        """
        self.probe = check
        self.pool = pool
        self.metrics = metrics
        self.clock = clock

    def check(self, backend: Any) -> Deferred:
        """
        Probe C{backend} with the wrapped check, counting how it went.
        """
        started = self.clock.seconds()
        d = self.probe.check(backend)

        def done(result: object) -> object:
            if not (isinstance(result, Failure) and result.check(CancelledError)):
                self.metrics.healthChecked(self.pool, backend.name, not isinstance(result, Failure),
                                           self.clock.seconds() - started)
            return result

        return d.addBoth(done)
