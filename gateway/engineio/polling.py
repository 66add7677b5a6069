"""
Engine.IO's HTTP long-polling (twisted.web): the handshake GET, polls
(GET, held until there is something to send) and sends (POST, answered
C{ok}), with the reference server's status codes and JSON error bodies.

Requests reach it from the gateway's site (L{gateway.site.GatewayResource})
on a route whose protocol is C{socket.io}, bounded there
(L{gateway.web.BoundedRequest}: a body past C{session.max_body_bytes} gets
413 before it is buffered).
"""

from __future__ import annotations

import re

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..errors import GatewayError, ProtocolError
from ..interfaces import IEngineTransport
from ..tcp import requestLost
from .engine import UNAVAILABLE_RETRY_AFTER, EngineRefusal, openRefusal
from .packets import (
    BAD_HANDSHAKE_METHOD,
    BAD_REQUEST,
    FORBIDDEN,
    UNKNOWN_SID,
    Packet,
    PacketType,
    decodePayload,
    encodePayload,
    errorBody,
)

if TYPE_CHECKING:
    from ..config import RouteConfig
    from .engine import EngineSession

__all__ = ["PollingTransport", "EnginePolling"]

#: What a session id looks like (the edge makes them URL-safe): anything
#: else is no session, and is not carried to another node.
_SID = re.compile(r"[A-Za-z0-9_-]{1,64}")

_NO_CACHE = b"no-store"

#: The content type of Engine.IO 3's binary payloads, which the reference
#: server refuses with C{EIO=4} (v4 sends every payload as text).
_BINARY = b"application/octet-stream"


def _finish(request: Request, status: int, body: bytes, contentType: bytes,
            headers: list[tuple[bytes, bytes]] = ()) -> None:
    """
    Finish C{request} (if its client is still there).
    """
    if request.finished or requestLost(request):
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", contentType)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.setHeader(b"cache-control", _NO_CACHE)
    # Payloads are the application's text: never to be sniffed as HTML.
    request.setHeader(b"x-content-type-options", b"nosniff")
    for name, value in headers:
        request.setHeader(name, value)
    request.write(body)
    request.finish()


def answerError(request: Request, code: int, message: str | None = None, status: int = 400,
                headers: list[tuple[bytes, bytes]] = ()) -> None:
    """
    Finish C{request} with an error: C{{"code":N,"message":"..."}}.
    """
    _finish(request, status, errorBody(code, message), b"application/json", headers)


def answerPackets(request: Request, packets: list[Packet]) -> None:
    """
    Finish C{request} with a payload of C{packets}.
    """
    _finish(request, 200, encodePayload(packets), b"text/plain; charset=UTF-8")


def _isBinary(contentTypes: list[bytes]) -> bool:
    """
    @return: whether a POST's C{Content-Type} is C{application/octet-stream}
        (its media type, in any case, whatever its parameters).
    """
    return any(value.partition(b";")[0].strip().lower() == _BINARY for value in contentTypes)


@implementer(IEngineTransport)
class PollingTransport:
    """
    A session's transport while its client polls: the GET held now, if
    any.
    """

    kind = "polling"

    def __init__(self) -> None:
        self._answer: Callable[[list[Packet]], None] | None = None

    def hold(self, answer: Callable[[list[Packet]], None]) -> None:
        """
        Hold a GET until the session has something to send (the server
        pings within C{pingInterval}, so no poll waits longer).

        @param answer: answers it (here, or on the node that holds it).
        """
        self._answer = answer

    def letGo(self, answer: Callable[[list[Packet]], None], engine: EngineSession) -> None:
        """
        The GET that C{answer} answers went away unanswered.
        """
        if self._answer is answer:
            self._answer = None
            engine.pollGone()

    def deliver(self, packets: list[Packet]) -> None:
        """
        Answer the held GET with C{packets}.
        """
        answer, self._answer = self._answer, None
        if answer is not None:
            answer(packets)

    def closeTransport(self) -> None:
        """
        Nothing: the last answer carried the close.
        """


class EnginePolling:
    """
    The long-polling requests of every C{socket.io} route.
    """

    log = Logger()

    def __init__(self, edge) -> None:
        """
        @param edge: the node's L{gateway.engineio.edge.EngineIOEdge}.
        """
        self.edge = edge
        #: Polls held here for sessions of other nodes, by relay request id.
        self.relayedPolls: dict[str, Request] = {}
        #: The connections of the polls answered once the gateway stops
        #: (closed after their answer; the stop waits for them).
        self.leaving: list = []

    def render(self, request: Request, route: RouteConfig) -> Any:
        """
        Answer one request on a C{socket.io} route.
        """
        edge = self.edge
        gateway = edge.gateway
        headers = request.requestHeaders
        origins = headers.getRawHeaders(b"origin", [])
        refusal = gateway.origins.refusal(request.path, "poll", origins,
                                          headers.getRawHeaders(b"host", []), request.isSecure())
        if refusal is not None:
            gateway.clientErrors += 1
            gateway.metrics.refused(403, "origin")
            answerError(request, FORBIDDEN, status=403)
            return NOT_DONE_YET
        if origins:
            # Allowed: the page may read the answers, with its cookies.
            request.setHeader(b"access-control-allow-origin", origins[0])
            request.setHeader(b"access-control-allow-credentials", b"true")
            request.setHeader(b"vary", b"Origin")
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"access-control-allow-methods", b"GET, POST, OPTIONS")
            request.setHeader(b"access-control-allow-headers", b"content-type")
            request.setHeader(b"access-control-max-age", b"600")
            request.setHeader(b"content-length", b"0")
            return b""
        try:
            if headers.hasHeader(b"upgrade"):
                # A WebSocket on a kept-alive connection: not taken here.
                request.channel.persistent = False
                raise EngineRefusal(BAD_REQUEST, "Bad request")
            sid = edge.checkQuery(request.uri.partition(b"?")[2], websocket=False)
            if sid is None:
                if request.method != b"GET":
                    raise EngineRefusal(BAD_HANDSHAKE_METHOD, "Bad handshake method")
                d = Deferred.fromCoroutine(self._open(request, route))
                d.addErrback(self._openFailed, request)
                return NOT_DONE_YET
            if request.method == b"POST" and _isBinary(headers.getRawHeaders(b"content-type", [])):
                raise EngineRefusal(BAD_REQUEST, "a binary payload (application/octet-stream) is"
                                    " Engine.IO 3's; with EIO=4 payloads are text")
            if sid not in edge.sessions and edge.cluster.sharesSessions:
                d = Deferred.fromCoroutine(self._relay(request, sid, route))
                d.addErrback(self._relayFailed, request)
                return NOT_DONE_YET
            engine = edge.find(sid)
            if request.method == b"GET":
                self._poll(request, engine)
            elif request.method == b"POST":
                self._post(request, engine)
            else:
                raise EngineRefusal(BAD_REQUEST, "Bad request")
        except EngineRefusal as e:
            gateway.clientErrors += 1
            gateway.metrics.refused(e.status)
            answerError(request, e.code, str(e), e.status)
        return NOT_DONE_YET

    async def _open(self, request: Request, route: RouteConfig) -> None:
        gateway = self.edge.gateway
        started = gateway.reactor.seconds()
        transport = PollingTransport()
        gateway.metrics.accepted("socketio", "longpoll")
        engine = await self.edge.open(route, gateway.routeRequest(request), transport)
        if request.finished or requestLost(request):
            return  # the client left; the heartbeat ends the session
        answerPackets(request, [self.edge.openPacket(engine, ["websocket"])])
        gateway.metrics.handshake("socketio", "longpoll", gateway.reactor.seconds() - started)

    def _openFailed(self, failure, request: Request) -> None:
        if failure.check(GatewayError):
            refusal = openRefusal(failure.value)
        else:
            self.log.failure("opening a Socket.IO session failed", failure)
            refusal = EngineRefusal(BAD_REQUEST, "the session could not be opened", 503,
                                    retryAfter=UNAVAILABLE_RETRY_AFTER)
        self.edge.gateway.metrics.refused(refusal.status, refusal.reason)
        answerError(request, refusal.code, str(refusal), refusal.status, refusal.headers)

    def _poll(self, request: Request, engine: EngineSession) -> None:
        transport = engine.transport
        packets = engine.poll()
        if packets is not None:
            self._lastAnswer(request)
            answerPackets(request, packets)
            return

        def answer(packets: list[Packet]) -> None:
            self._lastAnswer(request)
            answerPackets(request, packets)

        transport.hold(answer)
        request.notifyFinish().addBoth(lambda _: transport.letGo(answer, engine))

    def _post(self, request: Request, engine: EngineSession) -> None:
        self.postBody(engine, request.content.read())
        _finish(request, 200, b"ok", b"text/html")

    @staticmethod
    def postBody(engine: EngineSession, body: bytes) -> None:
        """
        Hand a POST's body to C{engine}.

        @raise EngineRefusal: a body over C{maxPayload} (413) or that is
            not Engine.IO (400); either closes the session.
        """
        settings = engine.settings
        if len(body) > settings.maxPayload:
            engine.close(f"a payload larger than {settings.maxPayload} bytes", notify=False)
            raise EngineRefusal(BAD_REQUEST, f"the payload is larger than {settings.maxPayload} bytes", 413)
        try:
            packets = decodePayload(body, settings.maxPackets)
        except ProtocolError as e:
            engine.close("a payload that is not Engine.IO", notify=False)
            raise EngineRefusal(BAD_REQUEST, str(e)) from None
        engine.post(packets)

    async def _relay(self, request: Request, sid: str, route: RouteConfig) -> None:
        """
        A poll or send for a session this node does not hold: to the node
        that does (L{gateway.engineio.relay}), which answers it.
        """
        edge = self.edge
        cluster = edge.cluster
        owner = None if not _SID.fullmatch(sid) else await cluster.owner(sid)
        if owner is None or owner == cluster.node:
            answerError(request, UNKNOWN_SID)
            return
        if request.finished or requestLost(request):
            return
        settings = edge.settings(route)
        head = b"|".join([sid.encode(), cluster.node.encode()])

        def answered(status: int, contentType: bytes, body: bytes) -> None:
            _finish(request, status, body, contentType)

        relay = edge.relay
        if request.method == b"GET":
            def polled(status: int, contentType: bytes, body: bytes) -> None:
                self.relayedPolls.pop(reqid, None)
                answered(status, contentType, body)

            reqid = relay.request(owner, sid, lambda i: b"p|" + head + b"|" + i,
                                  settings.pingInterval + settings.pingTimeout, polled)
            self.relayedPolls[reqid] = request

            def gone(_):
                self.relayedPolls.pop(reqid, None)
                if relay.forget(reqid):
                    relay.send(owner, b"g|%s|%s" % (sid.encode(), reqid.encode()))

            request.notifyFinish().addBoth(gone)
        elif request.method == b"POST":
            body = request.content.read()
            relay.request(owner, sid, lambda i: b"s|" + head + b"|" + i + b"|" + body,
                          settings.pingTimeout, answered)
        else:
            answerError(request, BAD_REQUEST)

    def shutDown(self) -> None:
        """
        The node stops: each poll it holds for a session of another node is
        answered with a noop (and that node told it is gone), so that its
        client polls again, through another node, and its session goes on.
        """
        for request in list(self.relayedPolls.values()):
            self._lastAnswer(request)
            answerPackets(request, [Packet(PacketType.NOOP)])
        self.relayedPolls.clear()

    def _lastAnswer(self, request: Request) -> None:
        """
        Once the gateway stops, a held poll's answer is the last of its
        connection: it is closed once the answer is written, and the stop
        waits for that (L{leaving}), so that the answer is not lost with
        the process.
        """
        if self.edge.stopping and not (request.finished or requestLost(request)):
            request.setHeader(b"connection", b"close")
            request.channel.persistent = False
            self.leaving.append(request.transport)

    def _relayFailed(self, failure, request: Request) -> None:
        if failure.check(GatewayError):
            answerError(request, UNKNOWN_SID, status=400)  # Redis is away: the client starts again
        else:
            self.log.failure("relaying a Socket.IO request failed", failure)
            answerError(request, UNKNOWN_SID, status=400)
