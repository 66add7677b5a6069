"""
Socket.IO at the gateway's edge (L{EngineIOEdge}): the Engine.IO sessions
of every route whose C{protocol} is C{socket.io}, their handshakes over
long-polling and WebSocket, and each one's WebSocket to a Socket.IO server
of the route's pool.

A session's server connection is opened through the node's session opener
(L{gateway.sessions.opener.SessionOpener}: the pool's balancer, affinity,
connection limits, passive health and retries, the forwarding headers,
cookies and C{Authorization}), and the session is counted against the
node's session bounds (C{max_sessions}, C{max_sessions_per_ip}, the opening
rate per address) for as long as it lives.

A session lives on the node that opened it; with several nodes, a request
of it that reaches another node is carried to that one
(L{gateway.engineio.relay}).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Sequence
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..backends.routing import Router
from ..errors import GatewayError, NoBackendAvailable
from ..tcp import connectionOpen, switchProtocol
from ..wire.forwarded import clientAddress
from ..wire.http1 import RequestHead
from .engine import EngineRefusal, EngineSession, EngineSettings, EngineState
from .packets import (
    BAD_REQUEST,
    FORBIDDEN,
    UNKNOWN_SID,
    UNKNOWN_TRANSPORT,
    UNSUPPORTED_PROTOCOL_VERSION,
    Packet,
    errorResponse,
    openPacket,
)
from .polling import EnginePolling
from .relay import EngineRelay, LocalEngines, RelayedEngine
from .upstream import SocketIOUpstream, backendTarget
from .websocket import EngineWebSocket, EngineWebSocketFactory

if TYPE_CHECKING:
    from ..config import RouteConfig
    from ..interfaces import IEdge, IEngineCluster, IEngineTransport

__all__ = ["EngineIOEdge", "PROTOCOL"]

#: The value of a route's C{protocol} that puts Engine.IO at the edge.
PROTOCOL = "socket.io"

#: Seconds the record of which node holds a session is kept (it is
#: deleted when the session ends; a node that died is seen dead sooner,
#: by its liveness key).
OWNER_TTL = 86400.0

#: Seconds between looks, while the gateway stops, at whether the polls
#: answered then have been sent.
POLL_SENT = 0.01


class EngineIOEdge:
    """
    The Engine.IO sessions of one gateway node.

    @ivar gateway: the front door (L{IEdge}).
    @ivar sessions: the live sessions by id (each an L{IEngineView} for the
        admin API and the metrics).
    """

    log = Logger()

    def __init__(self, gateway: IEdge, routes: Sequence[RouteConfig],
                 cluster: IEngineCluster | None = None) -> None:
        """
        @param cluster: how sessions are found across nodes
            (L{LocalEngines} on one node).
        """
        self.gateway = gateway
        self.cluster: IEngineCluster = LocalEngines() if cluster is None else cluster
        self.relay = EngineRelay(self, self.cluster, gateway.reactor)
        self.sessions: dict[str, EngineSession] = {}
        self.router: Router[RouteConfig] = Router([(r.prefix, r) for r in routes])
        #: The routes whose protocol is C{socket.io}.
        self.routes: list[RouteConfig] = [r for r in routes if r.protocol == PROTOCOL]
        self.polling = EnginePolling(self)
        #: Set when the gateway stops: no new session, WebSockets closed
        #: with 1001.
        self.stopping = False
        self._settings: dict[str, EngineSettings] = {}
        self._factories: dict[str, EngineWebSocketFactory] = {}

    def routeFor(self, path: bytes) -> RouteConfig | None:
        """
        @return: the route of C{path} when its protocol is C{socket.io}.
        """
        route = self.router.match(path)
        if route is None or route.protocol != PROTOCOL:
            return None
        return route

    def settings(self, route: RouteConfig) -> EngineSettings:
        """
        @return: the Engine.IO settings of C{route}.
        """
        settings = self._settings.get(route.prefix)
        if settings is None:
            session = self.gateway.config.session
            settings = EngineSettings(
                pingInterval=route.pingInterval,
                pingTimeout=route.pingTimeout,
                maxPayload=route.maxPayload,
                maxBufferBytes=max(session.maxBufferBytes, route.maxPayload),
                maxPackets=max(session.maxBatchMessages, 1),
            )
            self._settings[route.prefix] = settings
        return settings

    @staticmethod
    def checkQuery(query: bytes, websocket: bool) -> str | None:
        """
        Check a request's Engine.IO parameters.

        @return: its C{sid}, or L{None} for a handshake.
        @raise EngineRefusal: C{EIO} is not 4, C{transport} is unknown or
            not the request's (C{websocket} for an upgrade, C{polling}
            otherwise).
        """
        values: dict[str, str] = {}
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True,
                                     encoding="utf-8", errors="replace"):
            values.setdefault(name, value)
        if values.get("EIO") != "4":
            raise EngineRefusal(UNSUPPORTED_PROTOCOL_VERSION, "Unsupported protocol version")
        transport = values.get("transport")
        if transport not in ("polling", "websocket"):
            raise EngineRefusal(UNKNOWN_TRANSPORT, "Transport unknown")
        if (transport == "websocket") != websocket:
            raise EngineRefusal(BAD_REQUEST, "Bad request")
        return values.get("sid")

    def find(self, sid: str) -> EngineSession:
        """
        @raise EngineRefusal: no live session C{sid} here.
        """
        engine = self.sessions.get(sid)
        if engine is None or engine.state is EngineState.CLOSED:
            raise EngineRefusal(UNKNOWN_SID, "Session ID unknown")
        return engine

    def openPacket(self, engine: EngineSession, upgrades: list[str]) -> Packet:
        """
        @return: C{engine}'s open packet, offering C{upgrades}.
        """
        settings = engine.settings
        return openPacket(engine.sid, upgrades, settings.pingInterval, settings.pingTimeout,
                          settings.maxPayload)

    async def open(self, config: RouteConfig, route, transport: IEngineTransport) -> EngineSession:
        """
        Open a session on C{transport}: count it against the node's
        session bounds, open its Socket.IO server connection, start it.

        @param route: the gateway's L{gateway.site.Route} of the handshake.
        @raise gateway.errors.SessionLimit: at a session bound.
        @raise gateway.errors.NoBackendAvailable: no server could be had.
        @raise gateway.errors.BackendRefused: the server refused.
        """
        gateway = self.gateway
        registry = gateway.sessions
        if self.stopping:
            raise NoBackendAvailable("the gateway is shutting down")
        address = clientAddress(route.head, route.peer, gateway.trustedProxies)
        registry.reserve(address)
        try:
            head = route.head
            target = backendTarget(config.backendPath, head.query)
            upstreamHead = RequestHead(b"GET", target, head.version, list(head.headers))
            backend, link, _ = await registry.opener.open(replace(route, head=upstreamHead), {})
        except BaseException:
            registry.unreserve(address)
            raise
        if self.stopping:
            link.closeLink(1001, "the gateway is shutting down")
            registry.unreserve(address)
            raise NoBackendAvailable("the gateway is shutting down")
        sid = secrets.token_urlsafe(15)
        settings = self.settings(config)
        engine = EngineSession(sid, settings, gateway.reactor, transport, partial(self._ended, address),
                               pool=route.pool.name, backend=backend, address=address)
        self.sessions[sid] = engine
        upstream = SocketIOUpstream(engine, link, gateway.metrics.traffic)
        engine.start(upstream)
        link.bind(upstream, backend)
        if self.cluster.sharesSessions:
            # Known to every node before the client hears of it.
            try:
                await self.cluster.own(sid, OWNER_TTL)
            except GatewayError:
                pass  # Redis is away (the map logs it): served by this node only
        return engine

    def _ended(self, address: str | None, engine: EngineSession) -> None:
        if self.sessions.get(engine.sid) is engine:
            del self.sessions[engine.sid]
        self.gateway.sessions.unreserve(address)
        if self.cluster.sharesSessions:
            self.cluster.disown(engine.sid).addErrback(lambda f: None)

    async def relayUpgrade(self, sid: str, websocket) -> RelayedEngine | None:
        """
        A WebSocket upgrading a session held by another node: ask that node
        to take it as the session's upgrade.

        @return: what the WebSocket then tells its session, or L{None} when
            the session already has a WebSocket (this one is to be closed).
        @raise EngineRefusal: no live node holds C{sid}, or it refused.
        """
        owner = await self.cluster.owner(sid)
        if owner is None or owner == self.cluster.node:
            raise EngineRefusal(UNKNOWN_SID, "Session ID unknown")
        answer: Deferred = Deferred()
        node = self.cluster.node.encode()
        wsid = self.relay.request(owner, sid, lambda i: b"u|%s|%s|%s" % (sid.encode(), node, i),
                                  self.gateway.config.timeouts.handshake,
                                  lambda status, kind, body: answer.callback((status, body)))
        status, body = await answer
        if status != 200:
            if b'"code":3' in body:
                return None  # a second WebSocket: accepted, then closed
            raise EngineRefusal(BAD_REQUEST, "Bad request", status)
        relayed = RelayedEngine(self.relay, owner, sid, wsid)
        self.relay.carry(websocket, relayed)
        return relayed

    def openWebSocket(self, transport, head: RequestHead, data: bytes, slot, route) -> bool:
        """
        Hand a client connection asking for a WebSocket on a C{socket.io}
        route to an L{EngineWebSocket} (a new session, or the upgrade of
        the polling session its C{sid} names), replaying what was read;
        refuse it with the reference server's status and JSON body when its
        Origin or its query is refused.

        @param slot: the connection's place among the gateway's client
            connections, released when the connection ends.
        @param route: the gateway's L{gateway.site.Route} for it.
        @return: whether the connection was handed over.
        """
        gateway = self.gateway
        config = self.routeFor(head.path)
        refusal = gateway.origins.refusal(head.path, "session", head.getAll(b"origin"),
                                          head.getAll(b"host"), gateway.secure(transport))
        try:
            if refusal is not None:
                raise EngineRefusal(FORBIDDEN, "Forbidden", 403)
            sid = self.checkQuery(head.query, websocket=True)
            relayed = sid is not None and sid not in self.sessions and self.cluster.sharesSessions
            engine = None if sid is None or relayed else self.find(sid)
            factory = self._factory(config)
            protocol: EngineWebSocket = factory.buildProtocol(transport.getPeer())
            if engine is not None:
                try:
                    engine.upgradeStarted(protocol)
                except EngineRefusal:
                    # A second WebSocket for the session: accepted, then
                    # closed, as the reference server does.
                    engine = None
                    protocol.superfluous = True
            if relayed:
                protocol.relayedSid = sid
        except EngineRefusal as e:
            gateway.clientErrors += 1
            gateway.metrics.refused(e.status, "origin" if e.code == FORBIDDEN else None)
            transport.write(errorResponse(e.status, e.code, str(e), e.headers))
            transport.loseConnection()
            return False
        protocol.route = route
        protocol.engine = engine
        protocol.onLost = slot.release
        switchProtocol(transport, protocol)
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        return True

    def _factory(self, config: RouteConfig) -> EngineWebSocketFactory:
        factory = self._factories.get(config.prefix)
        if factory is None:
            factory = EngineWebSocketFactory(self, config, self.settings(config).maxPayload)
            self._factories[config.prefix] = factory
        return factory

    def shutDown(self, deadline: float) -> Deferred:
        """
        The gateway stops: close every session and every client connection
        of one, so that Socket.IO clients reconnect at once rather than
        after a ping timeout.  A held poll is answered with the close packet
        (C{1}), a WebSocket closed with 1001 (going away), the Socket.IO
        server connections closed; a poll held here for a session of another
        node is answered with a noop (its client polls again, through
        another node), and a WebSocket held here for one is closed (its node
        is told).

        @param deadline: the most seconds to wait for the WebSockets'
            closing handshakes and the polls' answers to be sent.
        @return: L{Deferred} firing once every client WebSocket has closed
            and every poll answered here has been sent (its connection
            closed after it), or after C{deadline}.
        """
        self.stopping = True
        for engine in list(self.sessions.values()):
            engine.close("the gateway is shutting down")
        self.polling.shutDown()
        for websocket, relayed in list(self.relay.sockets.values()):
            relayed.transportClosed(websocket)  # tells the session's node
            websocket.closeTransport()
        open_ = [websocket for factory in self._factories.values() for websocket in factory.open]
        for websocket in open_:
            websocket.closeTransport()  # those still in their handshake
        reactor = self.gateway.reactor
        leaving = self.polling.leaving

        def sentYet() -> None:
            # A connection closed after its answer says so only by being
            # gone: looked at every POLL_SENT seconds.
            if not any(connectionOpen(transport) for transport in leaving):
                sent.stop()

        sent = LoopingCall(sentYet)
        sent.clock = reactor
        closing = DeferredList([sent.start(POLL_SENT), *[websocket.whenLost() for websocket in open_]],
                               consumeErrors=True)

        def late(result, timeout) -> None:
            if sent.running:
                sent.stop()

        closing.addTimeout(deadline, reactor, onTimeoutCancel=late)
        return closing.addBoth(lambda _: None)
