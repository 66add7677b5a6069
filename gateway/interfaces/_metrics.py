"""
The metrics contract: what the gateway's parts record as things happen, so
that the node's L{gateway.metrics.Metrics} (or the null L{NoMetrics} a part
gets when none is given) counts them without any part importing
C{prometheus_client}.

Part of L{gateway.interfaces}, which re-exports every name.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = ["IMetrics", "IMeasured"]


class IMetrics(Interface):
    """
    Events of one gateway node, counted for C{/metrics}.

    Every label value a part passes comes from the gateway itself: its
    modes and transports, its own status and close codes with a reason
    from a fixed vocabulary, pool and backend names from the configuration,
    the Redis command names of its own code.  Nothing a client sends
    (paths, addresses, headers) becomes a label.

    The counts of messages and bytes relayed are plain integers on
    L{traffic}, which the hot paths add to (no lock, no call), and which
    are read at scrape time.
    """

    traffic = Attribute(
        "The node's L{gateway.metrics.Traffic}: messages and bytes each way, added to by the "
        "session layer per message and by tunnels once they end."
    )

    def accepted(mode, transport):
        """
        A client connection was handed to C{mode} (C{"transparent"},
        C{"session"}) over C{transport} (C{"websocket"}, C{"longpoll"}).
        """

    def handshake(mode, transport, seconds):
        """
        A client's connection became usable C{seconds} after it was handed
        over: spliced to a backend (transparent), or its session opened or
        resumed (session).
        """

    def refused(status, reason=None):
        """
        The gateway answered an HTTP request itself with C{status} (4xx or
        5xx) for C{reason}, a word of the gateway's own (C{"origin"},
        C{"no_backend"}, ...; by default the status's own word,
        C{"bad_request"} for 400).
        """

    def closed(mode, code):
        """
        The gateway sent close code C{code} to a client of C{mode} (a
        WebSocket close, or a long-polling C{closed} packet or refusal).
        """

    def sessionEvent(event, pool):
        """
        Something happened to a session of C{pool} (a pool name, or
        L{None}): C{"opened"}, C{"failover"}, C{"move"}, C{"takeover"}.
        """

    def resumed(transport):
        """
        A client resumed its session over C{transport} (C{"websocket"},
        C{"longpoll"}).
        """

    def connectFailed(pool, backend):
        """
        A connect or handshake to backend C{backend} (name) of C{pool}
        (name) failed.
        """

    def healthChecked(pool, backend, passed, seconds):
        """
        An active health check of C{backend} of C{pool} passed (or not)
        after C{seconds}.
        """

    def redisCommand(command, seconds, failed, shard):
        """
        The Redis command C{command} (its name) was answered, or failed,
        after C{seconds}, by the session map's shard C{shard} (its name:
        the one server's, without several shards).
        """

    def redisMessages(shard, count):
        """
        C{count} session messages (client or backend messages of shared
        sessions) were written to the mailboxes of shard C{shard}: with the
        commands counted, what each message costs in Redis.
        """


class IMeasured(Interface):
    """
    A part built by a plug-in factory whose signature carries no metrics
    (a session map), which records to the node's metrics once given them.
    """

    def measureWith(metrics):
        """
        Record to C{metrics} (an L{IMetrics}) from now on.
        """
