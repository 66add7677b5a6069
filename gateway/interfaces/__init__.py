"""
The gateway's interfaces, in one place: its extension points, and the
contracts between its parts.

The extension points (L{IBalancer}, L{ISessionMap}, L{IHealthCheck}) each
have a named factory interface, so that built-in and third-party
implementations are found the same way: as drop-ins in the top-level
C{plugins} package, looked up by name through L{gateway.dropins}.

The others are the contracts between the gateway's own parts, so that a
lower part drives an upper one without importing it: a session drives its
client connection (L{ISessionTransport}) and its backend link
(L{IBackendLink}); it is given a mirror strategy (L{ISessionMirror}) and the
registry a cluster strategy (L{ISessionCluster}) and an opener
(L{ISessionOpener}); the admin API reads sessions through L{ISessionView}
and drives the node through L{IOperator}; the transports use the front door
through L{IEdge} (its long-polling requests through L{IPollRequest});
tunnels and sessions report their end to the access log through
L{IAccessLog}; the parts record what happens to L{IMetrics} (and a
plug-in made without it is given it through L{IMeasured}); connects report
to passive health through L{IConnectObserver}; the Python client's
transports report to their owner through L{IWebSocketOwner},
L{IPollingOwner} and L{IUpgradeOwner}; an Engine.IO session drives its
client transport (L{IEngineTransport}) and its Socket.IO server side
(L{IEngineUpstream}), finds sessions across nodes through
L{IEngineCluster}, and is read by the admin API and the metrics through
L{IEngineView}.  The
composition root, L{gateway.service}, builds the parts and hands each the
objects it needs.
"""

from ._client import IPollingOwner, IUpgradeOwner, IWebSocketOwner
from ._edge import IAccessLog, IConnectObserver, IEdge, IOperator, IPollRequest
from ._engineio import IEngineCluster, IEngineTransport, IEngineUpstream, IEngineView
from ._metrics import IMeasured, IMetrics
from ._plugins import (
    IBalancer,
    IBalancerFactory,
    IFixedPlacement,
    IHealthCheck,
    ISessionMap,
    ISessionMapFactory,
)
from ._sessions import (
    IBackendLink,
    ISessionCluster,
    ISessionMirror,
    ISessionOpener,
    ISessionTransport,
    ISessionView,
)

__all__ = [
    "IBalancer",
    "IBalancerFactory",
    "IFixedPlacement",
    "ISessionMap",
    "ISessionMapFactory",
    "IHealthCheck",
    "ISessionTransport",
    "IBackendLink",
    "ISessionView",
    "ISessionMirror",
    "ISessionCluster",
    "ISessionOpener",
    "IAccessLog",
    "IConnectObserver",
    "IEdge",
    "IOperator",
    "IPollRequest",
    "IMetrics",
    "IMeasured",
    "IWebSocketOwner",
    "IPollingOwner",
    "IUpgradeOwner",
    "IEngineTransport",
    "IEngineUpstream",
    "IEngineCluster",
    "IEngineView",
]
