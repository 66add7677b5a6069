"""
One listening port for everything: the front door reads a request head and
sends a WebSocket upgrade on a routed path to a new tunnel (or, for the
session subprotocol, to a session WebSocket), and any other request to the
gateway's HTTP face (twisted.web): the health probe, the JavaScript client,
the demo page, long-polling and CORS preflights.

L{GatewayFactory} builds the front doors and routes: it is given what it
needs by the composition root (L{gateway.service}), and is what the
transports use of the front door (L{gateway.interfaces.IEdge}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from .admission import Admission, ClientSlot, ConnectionLimit, DroppedConnections
from .errors import LimitExceeded, ProtocolError
from .edge.accesslog import NoAccessLog
from .interfaces import IAccessLog, IConnectObserver, IEdge, IEngineCluster, IMetrics, ISessionMap
from .metrics import NoMetrics
from .wire.forwarded import clientAddress
from .wire.http1 import RequestHead, errorPayload, errorResponse, findHeadEnd, parseRequestHead
from .wire.protocol import SUBPROTOCOL
from .backends.routing import RouteOrigins, Router, affinityKey
from .wire.forwarded import TrustedProxies
from .sessions.registry import SessionRegistry
from .tcp import deliveredTo, noDelay, requestLost, switchProtocol, unreadBytes
from .transports.tunnel import Tunnel
from .transports.longpoll import LongPolling
from .transports.websocket import SessionWebSocketFactory
from .engineio import EngineIOEdge
from .web import (BoundedSite, LeanRequest, StaticFiles, StrictChannel, corsHeaders, headFromRequest,
                  headRefusal, respondJSON)

if TYPE_CHECKING:
    from .backends.pool import Pool
    from .config import GatewayConfig

__all__ = ["GatewayFactory", "FrontDoor", "GatewayResource", "Route", "StrictChannel", "headRefusal",
           "KEEP_ALIVE_TIMEOUT"]

#: Seconds a kept-alive connection may stay idle between requests (each
#: head and body then has its own deadline, L{gateway.web.BoundedChannel}).
KEEP_ALIVE_TIMEOUT = 60

@dataclass(frozen=True)
class Route:
    """
    Where a WebSocket upgrade goes.

    @ivar key: the balancing key; C{sticky}: whether the backend chosen for
        it is recorded in the session map.
    @ivar peer: the TCP peer's address; C{secure}: whether it came over TLS.
    """

    pool: Pool
    key: bytes | None
    sticky: bool
    head: RequestHead
    peer: str
    secure: bool


class FrontDoor(Protocol):
    """
    The first protocol of every client connection: reads the request head
    (bounded in size and time), then hands the connection over.

    A WebSocket upgrade on a route's path becomes a L{Tunnel}, which then
    owns the connection; any other request goes to the twisted.web site,
    with this protocol relaying to its channel.
    """

    log = Logger()

    def __init__(self) -> None:
        self._buffer = b""
        self._channel = None
        self._timer = None
        self._slot: ClientSlot | None = None
        self._started = 0.0

    def connectionMade(self) -> None:
        """
        Count the connection against the gateway's bounds (L{Admission}),
        and start the handshake clock.
        """
        factory = self.factory
        try:
            self._slot = factory.admit(self.transport)
        except ConnectionLimit as e:
            factory.refusedConnections += 1
            factory.dropped.dropped(e.reason)
            factory.metrics.refused(503, e.reason)
            self.transport.write(errorResponse(503, str(e), [(b"Retry-After", b"1")]))
            self.transport.loseConnection()
            return
        noDelay(self.transport)
        reactor = factory.reactor
        self._started = reactor.seconds()
        self._timer = reactor.callLater(factory.config.timeouts.handshake, self._timedOut)

    def dataReceived(self, data: bytes) -> None:
        """
        Collect the request head; then route it.
        """
        if self._channel is not None:
            self._channel.dataReceived(data)
            return
        if self._slot is None:
            return
        self._buffer += data
        try:
            end = findHeadEnd(self._buffer, self.factory.config.limits.maxHeaderBytes)
            if end == -1:
                return
            head = parseRequestHead(self._buffer[:end])
        except LimitExceeded as e:
            self._refuse(431, str(e))
            return
        except ProtocolError as e:
            self._refuse(400, str(e))
            return
        refusal = headRefusal(head)
        if refusal is not None:
            self._refuse(400, refusal)
            return
        try:
            self.factory.claim(self._slot, self.transport, head)
        except ConnectionLimit as e:
            self.factory.dropped.dropped(e.reason)
            self._refuse(503, str(e), [(b"Retry-After", b"1")], e.reason)
            return
        if head.isWebSocketUpgrade() and self.factory.router.match(head.path) is not None:
            self._cancelTimer()
            if self.factory.engineio.routeFor(head.path) is not None:
                buffer, self._buffer = self._buffer, b""
                route = self.factory.route(self.transport, head)
                if self.factory.engineio.openWebSocket(self.transport, head, buffer, self._slot, route):
                    self._slot = None
                return
            if (SUBPROTOCOL.encode("ascii") in head.tokens(b"sec-websocket-protocol")
                    and self.factory.takesSessions(head.path)):
                buffer, self._buffer = self._buffer, b""
                if self.factory.openSessionTransport(self.transport, head, buffer, self._slot):
                    self._slot = None
                return
            early, self._buffer = self._buffer[end:], b""
            if self.factory.openTunnel(self.transport, head, early, self._started, self._slot):
                self._slot = None
            return
        self._toWeb()

    def _toWeb(self) -> None:
        self._cancelTimer()
        channel = self.factory.web.buildProtocol(self.transport.getPeer())
        self._channel = channel
        channel.makeConnection(self.transport)
        buffer, self._buffer = self._buffer, b""
        channel.dataReceived(buffer)

    def takeOver(self, channel, head: RequestHead) -> None:
        """
        A WebSocket upgrade arrived as a later request of a kept-alive HTTP
        connection: take the connection back from twisted.web's C{channel}
        and tunnel it.
        """
        self._channel = None
        transport = channel.transport
        # Bytes twisted.web read past this request (a client should send
        # none before the 101, but nothing read may be lost).
        early = unreadBytes(channel)
        channel.transport = None
        channel.setTimeout(None)
        transport.unregisterProducer()
        transport.resumeProducing()
        if self.factory.openTunnel(transport, head, early, self.factory.reactor.seconds(), self._slot):
            self._slot = None

    def _refuse(self, status: int, message: str, headers=(), reason: str | None = None) -> None:
        self._cancelTimer()
        self.factory.clientErrors += 1
        self.factory.metrics.refused(status, reason)
        self.transport.write(errorResponse(status, message, headers))
        self.transport.loseConnection()
        self._buffer = b""

    def _timedOut(self) -> None:
        self._timer = None
        self._refuse(408, "request head not received in time")

    def _cancelTimer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason) -> None:
        """
        Release the connection's slot, unless it was handed on with the
        connection; tell the web channel, if there is one.
        """
        self._cancelTimer()
        if self._slot is not None:
            slot, self._slot = self._slot, None
            slot.release()
        if self._channel is not None:
            channel, self._channel = self._channel, None
            channel.connectionLost(reason)


class GatewayResource(Resource):
    """
    The gateway's HTTP face: the demo page (in demo mode, with 404s for
    what browsers ask by themselves, L{_BROWSER_OWN}), a health probe at
    C{/_gateway/health}, the JavaScript client at C{/_gateway/txgateway.js}
    (and C{.mjs}), long-polling (C{POST} with C{txgw}) and CORS preflights
    on routed paths, 426 on routed paths asked anything else, and JSON 404s
    elsewhere.
    """

    isLeaf = True

    def __init__(self, factory: GatewayFactory) -> None:
        super().__init__()
        self.factory = factory
        self.static = StaticFiles()

    def render(self, request):
        """
        Answer every path (see the class docstring).
        """
        path = request.path
        request.setHeader(b"server", b"txgateway")
        if request.requestHeaders.hasHeader(b"upgrade"):
            # A refused upgrade ends the connection: the client may already
            # be sending frames.
            request.channel.persistent = False
            head = headFromRequest(request)
            if (head.isWebSocketUpgrade() and self.factory.router.match(head.path) is not None
                    and self.factory.engineio.routeFor(head.path) is None):
                door = deliveredTo(request.channel.transport)
                if isinstance(door, FrontDoor):
                    door.takeOver(request.channel, head)
                    return NOT_DONE_YET
        if path == b"/_gateway/health":
            return self._health(request)
        if path in _SCRIPTS and request.method in (b"GET", b"HEAD"):
            return self.static.script(request, _SCRIPTS[path])
        engineRoute = self.factory.engineio.routeFor(path)
        if engineRoute is not None:
            return self.factory.engineio.polling.render(request, engineRoute)
        routed = self.factory.router.match(path) is not None
        if routed:
            for name, value in corsHeaders(request.getHeader(b"origin"),
                                           self.factory.config.session.corsOrigins):
                request.setHeader(name, value)
            if request.method == b"OPTIONS":
                request.setResponseCode(204)
                request.setHeader(b"access-control-allow-methods", b"POST, OPTIONS")
                request.setHeader(b"access-control-allow-headers", b"content-type")
                request.setHeader(b"access-control-max-age", b"600")
                return b""
            kind = request.args.get(b"txgw")
            if kind and not self.factory.takesSessions(path):
                return respondJSON(request, 404, errorPayload(
                    404, "this path takes WebSocket upgrades only (no sessions)", {"code": 4404}))
            if kind:
                return self.factory.polling.render(request, kind[0])
        if self.factory.config.demo and request.method in (b"GET", b"HEAD"):
            if path in (b"/", b"/index.html"):
                return self.static.page(request, "static/demo.html")
            if path.startswith(_BROWSER_OWN):
                return respondJSON(request, 404, errorPayload(404, "no such resource"))
        self.factory.metrics.refused(426 if routed else 404)
        if routed:
            request.setHeader(b"upgrade", b"websocket")
            return respondJSON(request, 426, errorPayload(426, "this path expects a WebSocket upgrade"),
                               reason=b"Upgrade Required")
        return respondJSON(request, 404, errorPayload(404, "no such resource"))

    def _health(self, request) -> bytes:
        """
        C{/_gateway/health}: 200 while this node can serve; 503 when it
        shares sessions and Redis, or its subscription, is in trouble (so
        that a balancer in front takes it out).
        """
        cluster = self.factory.sessions.cluster
        if not cluster.sharesSessions:
            return respondJSON(request, 200, {"status": "ok"})
        healthy = cluster.healthy
        return respondJSON(request, 200 if healthy else 503,
                           {"status": "ok" if healthy else "degraded", "cluster": cluster.health()})


#: The JavaScript client, by path.
_SCRIPTS = {
    b"/_gateway/txgateway.js": "static/txgateway.js",
    b"/_gateway/txgateway.mjs": "static/txgateway.mjs",
}


#: What browsers ask of a site that shows them a page, by themselves (icons,
#: robots, their developer tools' probe under /.well-known/): in demo mode,
#: under the demo's route "/", these get a plain 404 (the page's icon is
#: inline), not the 426 of a routed path that a browser shows as an error.
_BROWSER_OWN = (b"/favicon.ico", b"/robots.txt", b"/apple-touch-icon", b"/.well-known/")


class _GatewaySite(BoundedSite):
    """
    The site of the gateway's HTTP face: L{StrictChannel}s, bounded by the
    gateway's C{max_header_bytes}.

    @ivar gateway: the L{GatewayFactory}, which counts refused requests.
    """

    #: Not C{log}: that is twisted.web's per-request hook.
    logger = Logger()

    def __init__(self, resource, *, gateway: GatewayFactory, maxHeaderBytes: int, **kwargs) -> None:
        super().__init__(resource, **kwargs)
        self.gateway = gateway
        self.maxHeaderBytes = maxHeaderBytes
        #: The answers of the queries the bundled clients send, by their
        #: first parameter (parse_qs would read the same kind from it).
        self._answers = {b"txgw=" + kind: partial(self._answerPoll, kind)
                         for kind in (b"open", b"poll", b"send")}

    def refused(self, status: int) -> None:
        """
        Count a request refused by its channel as a client error.
        """
        self.gateway.clientErrors += 1
        self.gateway.metrics.refused(status)

    def leanAnswer(self, head: RequestHead):
        """
        The session protocol's long-polling requests (a C{POST} with
        C{txgw} to a route that takes sessions, not an upgrade) are answered
        without twisted.web's C{Request} (L{StrictChannel}): as
        L{GatewayResource} answers them, with the same headers, by the same
        L{LongPolling}.

        @return: the answer for C{head}'s request, or L{None} for every
            other request (twisted.web's).
        """
        if head.method != b"POST" or head.get(b"upgrade") is not None:
            return None
        path, gateway = head.path, self.gateway
        if (path == b"/_gateway/health" or gateway.engineio.routeFor(path) is not None
                or gateway.router.match(path) is None or not gateway.takesSessions(path)):
            return None
        query = head.query
        answer = self._answers.get(query.partition(b"&")[0])
        if answer is not None:
            return answer
        kind = parse_qs(query, 1).get(b"txgw")  # as twisted.web's request.args
        return None if not kind else partial(self._answerPoll, kind[0])

    def _answerPoll(self, kind: bytes, request: LeanRequest) -> None:
        origins = request.gatewayHead.getAll(b"origin")
        for name, value in corsHeaders(origins[-1] if origins else None, self.corsOrigins):
            request.setHeader(name, value)
        try:
            self.gateway.polling.render(request, kind)
        except Exception:  # noqa: BLE001 - where twisted.web would have logged it and answered 500
            self.logger.failure("a long-polling request failed")
            if not request.finished and not requestLost(request):
                request.setHeader(b"content-type", b"application/json")
                request.setResponseCode(503)
                request.write(json.dumps(errorPayload(503, "the request could not be served")).encode())
                request.finish()

    def tooLarge(self, request, limit: int) -> bytes:
        """
        Count the 413 of a body over C{limit} bytes (L{BoundedSite.tooLarge}).
        """
        self.gateway.metrics.refused(413)
        return super().tooLarge(request, limit)

    def protocol(self) -> StrictChannel:
        """
        @return: a new L{StrictChannel} (called by C{buildProtocol}).
        """
        channel = StrictChannel()
        channel.MAX_LENGTH = self.maxHeaderBytes
        return channel


@implementer(IEdge)
class GatewayFactory(Factory):
    """
    Builds a L{FrontDoor} per client connection, routes what they read, and
    holds what they share: the router, the live tunnels and the counters.

    @ivar admission: the client connections open now (bounded by
        C{limits.maxConnections} and C{limits.maxConnectionsPerIp}).
    @ivar refusedConnections: connections refused at those bounds.
    @ivar clientErrors: requests refused as malformed (the transports add
        theirs).
    """

    protocol = FrontDoor
    log = Logger()
    noisy = False

    def __init__(
        self,
        *,
        config: GatewayConfig,
        router: Router,
        pools: dict[str, Pool],
        sessions: SessionRegistry,
        sessionMap: ISessionMap,
        trustedProxies: TrustedProxies,
        health: IConnectObserver,
        reactor: Any,
        metrics: IMetrics | None = None,
        accessLog: IAccessLog | None = None,
        engines: IEngineCluster | None = None,
    ) -> None:
        """
        @param pools: the pools by name (the service's own mapping, so that
            pools added later are found).
        @param sessions: the node's session registry.
        @param sessionMap: the node's session map (affinity records).
        @param health: passive health, told how each backend connect went.
        @param reactor: provides L{IReactorTime} and L{IReactorTCP}.
        @param metrics: what the front door and the transports record to.
        @param accessLog: where each tunnel reports its end (none by default).
        @param engines: how Socket.IO sessions are found across nodes
            (none: this node only).
        """
        self.reactor = reactor
        self.config = config
        self.router = router
        self.pools = pools
        self.sessionMap = sessionMap
        self.trustedProxies = trustedProxies
        self.health = health
        self.metrics: IMetrics = metrics if metrics is not None else NoMetrics()
        self.accessLog: IAccessLog = accessLog if accessLog is not None else NoAccessLog()
        self.tunnels: set[Tunnel] = set()
        self.admission = Admission(config.limits.maxConnections, config.limits.maxConnectionsPerIp)
        self.refusedConnections = 0
        self.dropped = DroppedConnections(reactor)
        self.clientErrors = 0
        self.sessions: SessionRegistry = sessions
        self.origins = RouteOrigins([(r.prefix, r.allowedOrigins) for r in config.routes],
                                    config.session.corsOrigins)
        self.sessionFactory = SessionWebSocketFactory(self)
        self.engineio = EngineIOEdge(self, config.routes, engines)
        self._transparentRoutes = Router([(r.prefix, r.protocol == "transparent") for r in config.routes])
        self.polling = LongPolling(self)
        self.web = _GatewaySite(
            GatewayResource(self),
            gateway=self,
            maxHeaderBytes=config.limits.maxHeaderBytes,
            maxBodyBytes=config.session.maxBodyBytes,
            corsOrigins=config.session.corsOrigins,
            parseForms=False,
            headTimeout=config.timeouts.handshake,
            bodyTimeout=config.timeouts.requestBody,
            minBodyRate=config.limits.minBodyRate,
            timeout=KEEP_ALIVE_TIMEOUT,
            reactor=reactor,
        )

    def buildProtocol(self, addr):
        """
        @return: a L{FrontDoor}.
        """
        door = FrontDoor()
        door.factory = self
        return door

    def route(self, transport, head: RequestHead) -> Route:
        """
        @return: where a WebSocket upgrade goes: its pool and balancing key.
        """
        pool = self.router.match(head.path)
        peer = self.peerHost(transport)
        address = clientAddress(head, peer, self.trustedProxies)
        spec = pool.keySpec
        if spec is None:
            key, sticky = b"address:" + address.encode("ascii", "replace"), False
        else:
            key = affinityKey(spec, head, address)
            sticky = key is not None
        return Route(pool, key, sticky, head, peer, self.secure(transport))

    def routeRequest(self, request) -> Route:
        """
        @return: where a session opened by the twisted.web C{request} (a
            long-polling C{open}) goes.
        """
        return self.route(request.transport, headFromRequest(request))

    def admit(self, transport) -> ClientSlot:
        """
        Take a new client connection (L{Admission}): counted against its
        peer's address, unless the peer is a trusted proxy (its first head
        names the client, L{claim}) or has no address (UNIX sockets).

        @raise ConnectionLimit: at C{max_connections} or at the address's
            C{max_connections_per_ip}.
        """
        peer = self.peerHost(transport)
        counted = None if peer == "unknown" or peer in self.trustedProxies else peer
        return self.admission.admit(counted)

    def claim(self, slot: ClientSlot, transport, head: RequestHead) -> None:
        """
        Count a trusted proxy's connection against the client its first
        request head forwards.

        @raise ConnectionLimit: that client is at C{max_connections_per_ip}.
        """
        if slot.address is None:
            peer = self.peerHost(transport)
            if peer in self.trustedProxies:
                slot.claim(clientAddress(head, peer, self.trustedProxies))

    def openTunnel(self, transport, head: RequestHead, early: bytes, started: float,
                   slot: ClientSlot) -> bool:
        """
        Hand a client connection that asked for a WebSocket upgrade to a new
        L{Tunnel}, with its C{slot}, released when the tunnel ends.

        @return: whether the connection was handed over (not when its
            Origin is refused).
        """
        if self.refuseOrigin(transport, head, "tunnel"):
            return False
        route = self.route(transport, head)
        tunnel = Tunnel(self, transport, head, early, route.pool, route.key, route.sticky,
                        partial(self.tunnelClosed, slot))
        self.tunnels.add(tunnel)
        switchProtocol(transport, tunnel.client)
        remaining = self.config.timeouts.handshake - (self.reactor.seconds() - started)
        tunnel.start(max(remaining, 0.001))
        return True

    def openSessionTransport(self, transport, head: RequestHead, data: bytes,
                             slot: ClientSlot) -> bool:
        """
        Hand a client connection that asked for the session subprotocol to
        a L{SessionWebSocket}, replaying what was read, with its C{slot},
        released when the connection ends.

        @return: whether the connection was handed over.
        """
        if self.refuseOrigin(transport, head, "session"):
            return False
        protocol = self.sessionFactory.buildProtocol(transport.getPeer())
        protocol.route = self.route(transport, head)
        protocol.onLost = slot.release
        switchProtocol(transport, protocol)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return True

    def refuseOrigin(self, transport, head: RequestHead, mode: str) -> bool:
        """
        Check a WebSocket upgrade's C{Origin} against its route
        (L{RouteOrigins}, C{mode} C{"tunnel"} or C{"session"}); when it may
        not pass, answer 403 and close, before any backend is asked.

        @return: whether the upgrade was refused.
        """
        reason = self.origins.refusal(head.path, mode, head.getAll(b"origin"),
                                      head.getAll(b"host"), self.secure(transport))
        if reason is None:
            return False
        self.clientErrors += 1
        self.metrics.refused(403, "origin")
        transport.write(errorResponse(403, reason))
        transport.loseConnection()
        return True

    def tunnelClosed(self, slot: ClientSlot, tunnel: Tunnel) -> None:
        """
        Both connections of a tunnel have ended.
        """
        self.tunnels.discard(tunnel)
        slot.release()

    @property
    def openConnections(self) -> int:
        """
        Client connections open now.
        """
        return self.admission.open

    def takesSessions(self, path: bytes) -> bool:
        """
        @return: whether the route of C{path} takes the session protocol
            (its C{protocol} is not C{"transparent"}).
        """
        return not self._transparentRoutes.match(path)

    @staticmethod
    def peerHost(transport) -> str:
        """
        @return: the peer's IP address, or C{"unknown"} (UNIX sockets).
        """
        return getattr(transport.getPeer(), "host", None) or "unknown"

    @staticmethod
    def secure(transport) -> bool:
        """
        @return: whether the client's connection is TLS.
        """
        return ISSLTransport.providedBy(transport)
