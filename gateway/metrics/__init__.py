"""
The gateway's metrics, for Prometheus (C{prometheus_client}): the
instruments the parts record to through L{gateway.interfaces.IMetrics}
(L{Metrics}, or the null L{NoMetrics}), the plain counts of the hot paths
(L{Traffic}) and the event loop's lag (L{LoopLag}).

What is read at scrape time (pools, backends, sessions, buffers, live
tunnels) and the C{/metrics} resource and listener are in
L{gateway.metrics.scrape}, which sits above the parts it reads; this
package's other modules sit below every part that records to them.
docs/operations.md ("Metrics") lists every family.
"""

from ._instruments import CLOSE_REASONS, MODES, PREFIX, Metrics, NoMetrics, Traffic
from .lag import LAG_INTERVAL, LoopLag

__all__ = [
    "Metrics",
    "NoMetrics",
    "Traffic",
    "LoopLag",
    "LAG_INTERVAL",
    "PREFIX",
    "MODES",
    "CLOSE_REASONS",
]
