"""
The session protocol over HTTP long-polling (twisted.web), on the same port
and paths as the WebSocket front end (docs/protocol.md, "Long-polling").

Every request is a C{POST} to a routed path with C{txgw=open|poll|send}; the
session's id and secret travel in the JSON body.  A L{PollingTransport} is
the session's L{ISessionTransport} while the client polls: data stays in the
session's replay buffer and every poll answer is built from it, so an
aborted poll loses nothing.

The requests come from the gateway's site (L{gateway.site}), bounded there:
twisted.web requests (L{gateway.web.BoundedRequest}), or, for most of them,
lean ones its channel reads (L{gateway.edge.exchange.LeanRequest}); both
have what L{gateway.interfaces.IPollRequest} says.  L{LongPolling} uses the
front door through L{gateway.interfaces.IEdge}.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..config.values import parseOrigin
from ..edge.exchange import headFromRequest
from ..errors import BackendRefused, Elsewhere, GatewayError, LimitExceeded, NoBackendAvailable, ProtocolError, ResumeRefused, SessionLimit
from ..tcp import requestLost
from ..wire.forwarded import clientAddress
from ..wire.http1 import errorPayload
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_ENDED,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_SUPERSEDED,
    CLOSE_TOO_BIG,
    CLOSE_ORIGIN_REFUSED,
    CLOSE_REFUSED,
    CLOSE_UNAVAILABLE,
    Ack,
    Close,
    Data,
    Hello,
    Welcome,
    checkText,
    controlToJSON,
    dataToJSON,
    loadJSON,
    packetFromJSON,
)
from ..interfaces import ISessionTransport
from ..sessions.states import SessionState

if TYPE_CHECKING:
    from ..interfaces import IEdge
    from ..sessions.session import Session

__all__ = ["PollingTransport", "LongPolling", "HTTP_STATUS"]

#: The HTTP status of each session close code.
HTTP_STATUS = {
    4400: 400,
    4403: 403,
    CLOSE_ORIGIN_REFUSED: 403,
    4404: 404,
    4409: 409,
    4410: 410,
    CLOSE_TOO_BIG: 413,
    CLOSE_REFUSED: 502,
    CLOSE_UNAVAILABLE: 503,
}

_NO_CACHE = [
    (b"cache-control", b"no-store, no-cache, must-revalidate"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
]


#: Compact JSON, built once (C{json.dumps} with C{separators} builds an
#: encoder on every call).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def _respond(request: Request, status: int, payload: dict, origin: bytes | None = None) -> None:
    """
    Finish a request with a JSON body (if the client is still there).
    """
    if request.finished or requestLost(request):
        return
    body = _COMPACT.encode(payload).encode("utf-8")
    request.setResponseCode(status)
    retryAfter = payload.get("retry_after")
    if type(retryAfter) is int:
        request.setHeader(b"retry-after", b"%d" % retryAfter)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"content-length", b"%d" % len(body))
    for name, value in _NO_CACHE:
        request.setHeader(name, value)
    request.write(body)
    request.finish()


def _respondError(request: Request, code: int, message: str, extra: dict | None = None) -> None:
    """
    Finish a request with the error body of session close code C{code}
    (and any C{extra} fields) and its HTTP status (L{HTTP_STATUS}).
    """
    status = HTTP_STATUS.get(code, 400)
    _respond(request, status, errorPayload(status, message, {"code": code, **(extra or {})}))


@implementer(ISessionTransport)
class PollingTransport:
    """
    A session's transport while its client long-polls: at most one held
    poll; everything to send is read from the session when a poll is
    answered.
    """

    log = Logger()
    kind = "poll"

    def __init__(self, polling: LongPolling, session: Session) -> None:
        self.polling = polling
        self.session = session
        polling.factory.metrics.accepted("session", "longpoll")
        self.welcome: Welcome | None = None
        self.closing: Close | None = None
        self.closed: tuple[int, str] | None = None
        self._held: tuple[Request, int, Any] | None = None
        self._wake = None
        self._ackSent = 0
        self._ackAnswered: int | None = None
        #: Paused by the session (its backend is slow): a send's answer
        #: waits, and with it the client's next send.
        self.paused = False
        self._readingWaiters: list[Deferred] = []

    # ISessionTransport
    def pushData(self, message: Data) -> None:
        """
        A message is in the replay buffer: answer the held poll.
        """
        self._scheduleAnswer()

    def pushControl(self, packet) -> None:
        """
        Keep the welcome and the closing packet for the next answer; acks
        are read from the session.
        """
        if isinstance(packet, Welcome):
            self.welcome = packet
        elif isinstance(packet, Close):
            self.closing = packet
        elif isinstance(packet, Ack) and packet.count == self._ackAnswered:
            # A send's answer has just carried this count (L{ackAnswered}).
            self._ackAnswered = None
            return
        self._scheduleAnswer()

    def closeTransport(self, code: int, reason: str) -> None:
        """
        The gateway is done with this transport: say so in the next answer.
        """
        self.closed = (code, reason)
        self.polling.factory.metrics.closed("session", code)
        if self.session is not None and self.session.transport is self:
            session, self.session = self.session, None
            session.detach(self, reason)
        self._scheduleAnswer()

    def letGo(self) -> None:
        """
        The session was attached on another gateway node: stop carrying it,
        and answer a held poll with nothing (the client's next poll, on
        whichever node, attaches it there).  A poll is no connection of its
        own, so this is not news for the client, unlike a WebSocket taking
        the session over.
        """
        self.session = None
        self.closing = None
        self._answerHeld()

    def abortTransport(self) -> None:
        """
        The client stopped polling: detach.
        """
        self.closeTransport(CLOSE_PROTOCOL_ERROR, "client stopped polling")
        self._answerHeld()

    def pauseReading(self) -> None:
        """
        Stop taking the client's messages: answers to sends wait.
        """
        self.paused = True

    def resumeReading(self) -> None:
        """
        Take the client's messages again: answer the sends that waited.
        """
        self.paused = False
        waiters, self._readingWaiters = self._readingWaiters, []
        for waiter in waiters:
            waiter.callback(None)

    def registerFlow(self, producer) -> None:
        """
        Nothing: a poll buffers nothing (its answers are built from the
        session's replay buffer), so it never pushes back.
        """

    def whenReading(self) -> Deferred:
        """
        @return: L{Deferred} firing once the transport is not paused.
        """
        d: Deferred = Deferred()
        if self.paused:
            self._readingWaiters.append(d)
        else:
            d.callback(None)
        return d

    # Polls.
    def hold(self, request: Request, received: int) -> None:
        """
        Answer C{request} now if there is something to send, or hold it (up
        to C{poll_timeout}); a poll already held is answered empty.
        """
        if self._held is not None:
            old, _, timer = self._held
            self._held = None
            if timer.active():
                timer.cancel()
            _respond(old, 200, {"packets": []})
        if self.worthAnswering(received):
            _respond(request, 200, {"packets": self.packets(received)})
            return
        clock = self.polling.factory.reactor
        timer = clock.callLater(self.polling.config.pollTimeout, self._answerHeld)
        self._held = (request, received, timer)

        def gone(_):
            # The request finished or its connection was lost: either way
            # _respond now leaves it alone; it is no longer held.
            if self._held is not None and self._held[0] is request:
                if self._held[2].active():
                    self._held[2].cancel()
                self._held = None

        request.notifyFinish().addBoth(gone)

    def release(self) -> None:
        """
        Answer the held poll now (a WebSocket upgrade's probe succeeded: the
        client waits for its poll to end before it switches).
        """
        self._answerHeld()

    def _scheduleAnswer(self) -> None:
        if self._held is not None and self._wake is None:
            self._wake = self.polling.factory.reactor.callLater(0, self._answerHeld)

    def _answerHeld(self) -> None:
        self._wake = None
        if self._held is None:
            return
        request, received, timer = self._held
        self._held = None
        if timer.active():
            timer.cancel()
        _respond(request, 200, {"packets": self.packets(received)})

    def packets(self, received: int) -> list[dict]:
        """
        What an answer carries now: the welcome (once), unacknowledged data
        after C{received} (bounded), the gateway's ack, and the closing and
        closed packets.
        """
        out: list[dict] = []
        if self.welcome is not None:
            out.append(controlToJSON(self.welcome))
            self.welcome = None
        session = self.session
        if session is not None:
            config = self.polling.config
            count = size = 0
            for message in session.outbox.unacknowledged():
                if message.seq > received:
                    # Bounded in messages and (as JSON, base64 included) in
                    # bytes; the next poll carries the rest.
                    n = len(message.payload)
                    cost = (n * 4 // 3 + 4 if message.isBinary else n) + 32
                    if count and (count >= config.maxBatchMessages or size + cost > config.maxBodyBytes):
                        break
                    out.append(dataToJSON(message))
                    count += 1
                    size += cost
            if session.inbox.accepted:
                out.append(controlToJSON(Ack(session.inbox.accepted)))
        if self.closing is not None:
            out.append(controlToJSON(self.closing))
        if self.closed is not None:
            code, reason = self.closed
            out.append({"t": "closed", "code": code, "reason": reason})
        if session is not None:
            self._ackSent = session.inbox.accepted
        return out

    def ackAnswered(self, before: int) -> None:
        """
        A send's answer is telling the client the gateway's count: a held
        poll is not answered just to tell it again.  When the send moved the
        count (from C{before}), the session's ack for it, due on the next
        turn, is not pushed to the poll either.
        """
        session = self.session
        if session is None:
            return
        accepted = session.inbox.accepted
        if accepted != before:
            self._ackAnswered = accepted
        self._ackSent = accepted

    def worthAnswering(self, received: int) -> bool:
        """
        @return: whether a poll that has C{received} messages should be
            answered now rather than held.
        """
        if self.welcome is not None or self.closing is not None or self.closed is not None:
            return True
        session = self.session
        if session is None:
            return True
        outbox = session.outbox
        return outbox.sent > max(received, outbox.acked) or session.inbox.accepted != self._ackSent


class _OnAnotherConnection(Exception):
    """
    A poll or send for a session that a WebSocket holds.
    """


class LongPolling:
    """
    The long-polling requests of one gateway: C{open}, C{poll}, C{send}.
    """

    log = Logger()

    def __init__(self, factory: IEdge) -> None:
        self.factory = factory
        self.config = factory.config.session

    def _refuse(self, request: Request, code: int, message: str, extra: dict | None = None) -> None:
        """
        Answer C{request} with the session protocol's C{code} and its HTTP
        status (L{_respondError}), counted as a close code sent.
        """
        self.factory.metrics.closed("session", code)
        _respondError(request, code, message, extra)

    def render(self, request: Request, kind: bytes) -> Any:
        """
        Handle one long-polling request.
        """
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST, OPTIONS")
            self.factory.metrics.refused(405)
            _respond(request, 405, errorPayload(405, "long-polling requests are POSTs", {"code": 4400}))
            return NOT_DONE_YET
        head = headFromRequest(request)
        origins = head.getAll(b"origin")
        refusal = self.factory.origins.refusal(request.path, "poll", origins, head.getAll(b"host"),
                                               request.isSecure())
        if refusal is not None:
            self.factory.clientErrors += 1
            if len(origins) == 1 and parseOrigin(origins[0].decode("latin-1")) is not None:
                # The page may read its refusal (and nothing else): a
                # refusal it cannot read looks like a network error, which
                # a client retries for ever.
                request.setHeader(b"access-control-allow-origin", origins[0])
                request.setHeader(b"vary", b"Origin")
            self._refuse(request, CLOSE_ORIGIN_REFUSED, refusal)  # 403, final for the clients
            return NOT_DONE_YET
        try:
            body = loadJSON(request.content.read() or b"null")
        except ProtocolError as e:
            self.factory.clientErrors += 1
            self._refuse(request, CLOSE_PROTOCOL_ERROR, f"the body is not valid JSON: {e}")
            return NOT_DONE_YET
        if not isinstance(body, dict):
            self._refuse(request, CLOSE_PROTOCOL_ERROR, "the body must be a JSON object")
            return NOT_DONE_YET
        try:
            if kind == b"open":
                d = Deferred.fromCoroutine(self._open(request, body))
                d.addErrback(self._failed, request)
            elif kind == b"poll":
                self._poll(request, body)
            elif kind == b"send":
                self._send(request, body)
            else:
                raise ProtocolError(f"unknown long-polling request {kind.decode('ascii', 'replace')!r}")
        except _OnAnotherConnection:
            self._elsewhere(request)
        except ResumeRefused as e:
            self._refuse(request, e.code, e.reason)
        except LimitExceeded as e:  # before ProtocolError, its base
            self._refuse(request, CLOSE_TOO_BIG, str(e))
        except ProtocolError as e:
            self.factory.clientErrors += 1
            self._refuse(request, CLOSE_PROTOCOL_ERROR, str(e))
        return NOT_DONE_YET

    def _failed(self, failure, request: Request) -> None:
        if failure.check(_OnAnotherConnection):
            self._elsewhere(request)
        elif failure.check(ResumeRefused):
            self._refuse(request, failure.value.code, failure.value.reason)
        elif failure.check(SessionLimit):
            # A session bound (max_sessions, per address): come back later.
            self._refuse(request, CLOSE_UNAVAILABLE, str(failure.value),
                          {"retry_after": failure.value.retryAfter})
        elif failure.check(LimitExceeded):
            self._refuse(request, CLOSE_TOO_BIG, str(failure.value))
        elif failure.check(ProtocolError):
            self._refuse(request, CLOSE_PROTOCOL_ERROR, str(failure.value))
        elif failure.check(BackendRefused):
            self._refuse(request, CLOSE_REFUSED, str(failure.value),
                          {"backend_status": failure.value.status})
        elif failure.check(NoBackendAvailable, GatewayError):
            self._refuse(request, CLOSE_UNAVAILABLE, str(failure.value))
        else:
            self.log.failure("a long-polling request failed", failure)
            self._refuse(request, CLOSE_UNAVAILABLE, "the session could not be opened")

    async def _open(self, request: Request, body: dict) -> None:
        hello = packetFromJSON(body)
        if not isinstance(hello, Hello):
            raise ProtocolError("open needs a hello packet")
        if hello.probe:
            raise ProtocolError("probes are for WebSocket upgrades")
        factory = self.factory
        started = factory.reactor.seconds()
        if hello.sid is None:
            route = factory.routeRequest(request)
            address = clientAddress(route.head, route.peer, factory.trustedProxies)
            session = await factory.sessions.open(route, address)
            if request.finished:
                session.orphaned()
                return
            transport = PollingTransport(self, session)
            session.attach(transport, resumed=False)
            session.awaitFirstPoll()
        else:
            try:
                session = await factory.sessions.resume(hello, "poll")
            except Elsewhere:
                raise _OnAnotherConnection() from None
            transport = PollingTransport(self, session)
            session.attach(transport, resumed=True)
        session.lastReceived = factory.reactor.seconds()
        factory.metrics.handshake("session", "longpoll", session.lastReceived - started)
        _respond(request, 200, {"packets": transport.packets(hello.received)})

    @staticmethod
    def _credentials(body: dict) -> tuple[str, str]:
        sid, secret = body.get("sid"), body.get("secret")
        if not isinstance(sid, str) or not isinstance(secret, str):
            raise ProtocolError("'sid' and 'secret' must be strings")
        checkText(sid, "sid")
        checkText(secret, "secret")
        return sid, secret

    def _session(self, sid: str, secret: str) -> tuple[Session, PollingTransport]:
        session = self.factory.sessions.local(sid, secret)
        session.lastReceived = self.factory.reactor.seconds()
        transport = session.transport
        if isinstance(transport, PollingTransport) and self.factory.sessions.sessions.get(sid) is session:
            session.polled()  # a poll or send: the attach deadline is over
        if transport is None:
            # Detached (the client was silent too long): polling again resumes.
            transport = PollingTransport(self, session)
            session.attach(transport, resumed=True)
            transport.welcome = None
        elif not isinstance(transport, PollingTransport):
            # The session is on a WebSocket: only an explicit resume (open)
            # moves it, so that a late, stray request cannot take it over.
            raise _OnAnotherConnection()
        return session, transport

    def _elsewhere(self, request: Request) -> None:
        self.factory.metrics.closed("session", CLOSE_SUPERSEDED)
        _respond(request, 200, {"packets": [
            {"t": "closed", "code": CLOSE_SUPERSEDED, "reason": "the session is on another connection"}
        ]})

    def _poll(self, request: Request, body: dict) -> None:
        received = body.get("ack")
        if type(received) is not int or received < 0:
            raise ProtocolError("'ack' must be a non-negative integer")
        sid, secret = self._credentials(body)
        if self.factory.sessions.mustResume(sid):
            # Several nodes: held or attached elsewhere; resume it here.
            d = Deferred.fromCoroutine(self._pollHere(request, sid, secret, received))
            d.addErrback(self._failed, request)
            return
        session, transport = self._session(sid, secret)
        session.ackReceived(Ack(received))
        transport.hold(request, received)

    async def _pollHere(self, request: Request, sid: str, secret: str, received: int) -> None:
        sessions = self.factory.sessions
        try:
            session = await sessions.resume(Hello(sid, secret, received), "poll")
        except Elsewhere:
            self._elsewhere(request)
            return
        if request.finished:
            session.abandon()
            return
        session.lastReceived = self.factory.reactor.seconds()
        transport = session.transport
        if not isinstance(transport, PollingTransport):
            transport = PollingTransport(self, session)
            session.attach(transport, resumed=True)
            transport.welcome = None
        session.ackReceived(Ack(received))
        transport.hold(request, received)

    def _send(self, request: Request, body: dict) -> None:
        packets = body.get("packets")
        if not isinstance(packets, list):
            raise ProtocolError("'packets' must be a list")
        if len(packets) > self.config.maxBatchMessages:
            raise LimitExceeded(f"more than {self.config.maxBatchMessages} packets in one send")
        decoded = [packetFromJSON(p) for p in packets]
        sid, secret = self._credentials(body)
        if not self.factory.sessions.sharesSessions:
            session, transport = self._session(sid, secret)
            self._deliver(request, session, transport, decoded)
            return
        d = Deferred.fromCoroutine(self._sendShared(request, sid, secret, decoded))
        d.addErrback(self._failed, request)

    async def _sendShared(self, request: Request, sid: str, secret: str, decoded: list) -> None:
        """
        A send with several nodes: to the session wherever its client is
        attached (a send never moves it), acknowledged once Redis has it.
        """
        sessions = self.factory.sessions
        session = sessions.here(sid)
        if session is None:
            session = await sessions.sendTarget(sid, secret)
        elif not hmac.compare_digest(session.secret.encode(), secret.encode()):
            raise ResumeRefused(CLOSE_BAD_SECRET, "wrong session secret")
        transport = session.transport
        if transport is not None and not isinstance(transport, PollingTransport):
            raise _OnAnotherConnection()
        session.lastReceived = self.factory.reactor.seconds()
        for packet in decoded:
            session.packetReceived(packet)
            if isinstance(packet, Close):
                break
        await session.settled()
        if transport is not None and transport.paused:
            await transport.whenReading()  # flow control: the backend is slow
        answer = [controlToJSON(Ack(session.ackCount))]
        if any(isinstance(p, Close) for p in decoded):
            answer.append({"t": "closed", "code": CLOSE_ENDED, "reason": "client closed the session"})
            _respond(request, 200, {"packets": answer})
            return
        sent = [p.seq for p in decoded if isinstance(p, Data)]
        if sent and session.ackCount < max(sent) and session.state is not SessionState.ENDED:
            # Some never reached the session (a gap between nodes that did
            # not close): the client resumes, and sends them again.
            answer.append({"t": "closed", "code": CLOSE_UNAVAILABLE,
                           "reason": "not every message reached the session; resume"})
            _respond(request, 200, {"packets": answer})
            return
        # A poll that moved the session to another node meanwhile closed
        # this node's transport: that is no news for the client.
        if transport is not None and transport.closed is not None and transport.closed[0] != CLOSE_SUPERSEDED:
            code, reason = transport.closed
            answer.append({"t": "closed", "code": code, "reason": reason})
        _respond(request, 200, {"packets": answer})

    def _deliver(self, request: Request, session, transport, decoded: list) -> None:
        before = session.inbox.accepted
        for packet in decoded:
            session.packetReceived(packet)
            if isinstance(packet, Close):
                break
        transport.ackAnswered(before)
        answer = [controlToJSON(Ack(session.inbox.accepted))]
        if transport.closed is not None:
            code, reason = transport.closed
            answer.append({"t": "closed", "code": code, "reason": reason})
        if transport.paused:
            # The backend is slow: the answer, and so the client's next
            # send, waits until the session reads again (flow control).
            def answerLater(_):
                if not request.finished:
                    _respond(request, 200, {"packets": answer})

            transport.whenReading().addCallback(answerLater)
            return
        _respond(request, 200, {"packets": answer})
