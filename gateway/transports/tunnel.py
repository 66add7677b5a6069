"""
Transparent WebSocket proxying: proxy the opening handshake, then splice.

After the backend answers 101, bytes are copied between the two sockets as
they come, without decoding frames (as HAProxy does).  A L{FrameTracker} per
direction knows where frames end, so that the gateway can put frames of its
own between them: keep-alive pings when a peer has been silent, and a close
frame when the other peer went away or the gateway shuts down.

Flow control: each side is registered as the producer of the other side's
transport, so a peer that reads slowly pauses reading from the other peer;
a stalled direction holds at most one transport write buffer (Twisted pauses
the producer past 64 KiB, plus at most one read of up to 64 KiB) and the
kernel's socket buffers.

A tunnel uses the front door that made it through L{IEdge} (settings,
clock, the session map for affinity, passive health) and tells it it has
ended through the C{onClosed} callback it was given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..backends.link import backendEndpoint, connectToPool
from ..backends.pool import NO_SLOT
from ..errors import BackendUnreachable, NoBackendAvailable, ProtocolError
from ..wire.forwarded import clientAddress, clientHeaders, forwardedHeaders
from ..tcp import noDelay, writeNow
from ..wire.frames import OP_PING, RSV1, FrameTracker, encodeClose, encodeFrame
from ..wire.http1 import (
    HOP_BY_HOP,
    RequestHead,
    ResponseHead,
    errorResponse,
    findHeadEnd,
    parseResponseHead,
    serializeRequestHead,
    serializeResponseHead,
)

if TYPE_CHECKING:
    from ..config import Timeouts
    from ..backends.pool import Backend, ConnectionSlot, Pool
    from ..interfaces import IEdge

__all__ = ["Tunnel", "CLOSE_GOING_AWAY", "CLOSE_BACKEND_GONE"]

#: Sent to both peers when the gateway shuts down, and to a backend whose client left.
CLOSE_GOING_AWAY = 1001
#: Sent to a client whose backend connection ended without a close frame:
#: "service restart", reconnecting is expected to work.
CLOSE_BACKEND_GONE = 1012

_PING = encodeFrame(OP_PING, b"txgateway")
_DROPPED_CLIENT_HEADERS = frozenset({b"content-length"})
_DROPPED_RESPONSE_HEADERS = HOP_BY_HOP | {b"content-length"}


@implementer(IPushProducer)
class _Side(Protocol):
    """
    One of the two connections of a tunnel, client or backend.

    As the producer registered with the I{other} side's transport, it pauses
    and resumes reading from its own transport; C{stopProducing} does
    nothing, because the tunnel closes both sides itself, at frame
    boundaries.

    @ivar tracker: frames arriving on this side, bound for the other one.
    @ivar pending: a frame to write to this side at the next boundary of the
        stream bound for it.
    @ivar closing: a close frame was sent to this side: nothing more is
        forwarded to it.
    @ivar seen: bytes arrived since the last keep-alive sweep.
    @ivar received: bytes spliced from this side to the other (the access
        log's count, and the metrics': read at scrape time, and added to the
        node's totals when the tunnel ends).
    """

    masked: bool = False

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel
        self.other: _Side | None = None
        self.tracker = FrameTracker()
        self.pending: bytes | None = None
        self._pendingIsClose = False
        self.closing = False
        self.seen = True
        self.lastSeen = 0.0
        self.pingSentAt: float | None = None
        self.gone = False
        self.received = 0

    # Splice hot path.
    def splicedDataReceived(self, data: bytes) -> None:
        """
        Forward C{data} to the other side, injecting any frame due there.

        Forwarded bytes are sent at once when the other side's transport has
        nothing buffered (L{writeNow}), in the turn of the reactor that read
        them.
        """
        self.seen = True
        self.received += len(data)
        other = self.other
        if other.pending is None and not other.closing:
            self.tracker.feed(data)
            writeNow(other.transport, data)
            return
        tracker = self.tracker
        while data:
            if other.closing:
                # The other peer was sent a close frame: drop what follows,
                # and end this side once its own close frame has come.
                tracker.feed(data)
                if tracker.closeSeen and self.closing:
                    self.transport.loseConnection()
                return
            if other.pending is None:
                tracker.feed(data)
                writeNow(other.transport, data)
                return
            k = tracker.feed(data, stopAtBoundary=True)
            if k:
                writeNow(other.transport, data[:k])
                data = data[k:]
            if tracker.atBoundary:
                other.flushPending()

    def inject(self, frame: bytes, close: bool = False) -> None:
        """
        Send C{frame} to this side between two frames of the stream bound
        for it: now, or as soon as the stream reaches a boundary.

        @param close: C{frame} is a close frame: nothing is forwarded to
            this side after it.
        """
        if self.closing or self.gone:
            return
        if close:
            self.pending = frame
            self._pendingIsClose = True
        elif self.pending is None:
            self.pending = frame
            self._pendingIsClose = False
        if self.other is None or self.other.gone or self.other.tracker.atBoundary:
            self.flushPending()

    def flushPending(self) -> None:
        """
        Write the pending frame now: the stream bound for this side is at a
        frame boundary.
        """
        frame, self.pending = self.pending, None
        if frame is None or self.gone:
            return
        self.transport.write(frame)
        if self._pendingIsClose:
            self.closing = True

    def atBoundaryTowards(self) -> bool:
        """
        @return: whether the stream bound for this side is between frames.
        """
        return self.other is None or self.other.tracker.atBoundary

    # IPushProducer, on behalf of this side's transport.
    def pauseProducing(self) -> None:
        """
        The other side's transport is full: stop reading from this side.
        """
        if not self.gone:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The other side's transport drained: read from this side again.
        """
        if not self.gone:
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        """
        Ignored: the tunnel closes its sides itself.
        """


class ClientSide(_Side):
    """
    The client's connection, taken over from the gateway's front door after
    the request head was read.
    """

    masked = False

    def dataReceived(self, data: bytes) -> None:
        """
        Before the splice, hold what the client sends early (bounded); after
        it, forward.
        """
        if self.tunnel.spliced:
            self.splicedDataReceived(data)
        else:
            self.tunnel.earlyClientData(data)

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        The client is gone.
        """
        self.gone = True
        self.tunnel.sideLost(self, reason)


class BackendSide(_Side):
    """
    The gateway's connection to the backend.
    """

    masked = True

    def __init__(self, tunnel: Tunnel) -> None:
        super().__init__(tunnel)
        self.buffer = b""
        self.response: Deferred | None = None

    def connectionMade(self) -> None:
        """
        Send the rewritten opening handshake (Nagle's algorithm off, as on
        the client side: frames are forwarded as they come).
        """
        noDelay(self.transport)
        self.response = Deferred()
        self.transport.write(self.tunnel.backendRequest())

    def dataReceived(self, data: bytes) -> None:
        """
        Read the backend's response head; after the splice, forward.
        """
        if self.tunnel.spliced:
            self.splicedDataReceived(data)
            return
        self.buffer += data
        response, self.response = self.response, None
        if response is None:
            # Head already read: a refusal body still arriving.
            self.tunnel.refusalBodyReceived()
            return
        try:
            end = findHeadEnd(self.buffer, self.tunnel.limits.maxHeaderBytes)
            if end == -1:
                self.response = response
                return
            head = parseResponseHead(self.buffer[:end])
        except ProtocolError as e:
            response.errback(Failure(e))
            return
        rawHead, self.buffer = self.buffer[:end], self.buffer[end:]
        response.callback((head, rawHead))

    def connectionLost(self, reason: Failure = Failure(ConnectionDone())) -> None:
        """
        The backend connection ended.
        """
        self.gone = True
        response, self.response = self.response, None
        if response is not None:
            response.errback(
                Failure(BackendUnreachable("backend closed the connection during the handshake"))
            )
        self.tunnel.sideLost(self, reason)


class _BackendSideFactory(Factory):
    noisy = False

    def __init__(self, tunnel: Tunnel) -> None:
        self.tunnel = tunnel

    def buildProtocol(self, addr):
        side = BackendSide(self.tunnel)
        side.factory = self
        return side


class Tunnel:
    """
    One client connection proxied to one backend connection.

    Life: handshake (choose a backend, connect, forward the handshake, read
    the answer; retry another backend when one cannot be reached), then
    spliced, then closing.

    @ivar backend: the backend of the tunnel's connection, until it ends.
    @ivar slot: the connection's slot on it, released when the tunnel
        finishes (L{NO_SLOT} until a backend answered).
    """

    log = Logger()

    def __init__(
        self,
        factory: IEdge,
        clientTransport,
        head: RequestHead,
        early: bytes,
        pool: Pool,
        key: bytes | None,
        sticky: bool,
        onClosed: Callable[[Tunnel], None],
    ) -> None:
        self.factory = factory
        self.reactor = factory.reactor
        self.limits = factory.config.limits
        self.timeouts = factory.config.timeouts
        self.head = head
        self.pool = pool
        self.key = key
        self.sticky = sticky
        self.onClosed = onClosed
        self.client = ClientSide(self)
        self.clientTransport = clientTransport
        self.backendSide: BackendSide | None = None
        self.backend: Backend | None = None
        self.slot: ConnectionSlot = NO_SLOT
        #: When the tunnel was made, and the status the client was answered
        #: (101 once spliced), for the access log.
        self.opened = self.reactor.seconds()
        self.status: int | None = None
        self.spliced = False
        self.closed = False
        self._early = [early] if early else []
        self._earlySize = len(early)
        self._opening: Deferred | None = None
        self._refusal: tuple[ResponseHead, Deferred] | None = None
        self._shutdown: Deferred | None = None
        self._abortCall = None
        self._dataFrames = 0
        self._lastData = 0.0
        self._started = 0.0

    # Handshake.
    def start(self, deadline: float) -> None:
        """
        Take over the client connection and start the handshake with a
        backend, bounded by C{deadline} seconds.
        """
        self.factory.metrics.accepted("transparent", "websocket")
        self._started = self.reactor.seconds()
        self.client.makeConnection(self.clientTransport)
        self._opening = Deferred.fromCoroutine(self._open())
        self._opening.addTimeout(deadline, self.reactor)
        self._opening.addCallbacks(self._opened, self._openFailed)

    def _opened(self, _: None) -> None:
        self._opening = None

    def earlyClientData(self, data: bytes) -> None:
        """
        Bytes the client sent before the handshake completed: held, within
        the header size limit, and forwarded after the backend's 101.
        """
        self._earlySize += len(data)
        if self._earlySize > self.limits.maxHeaderBytes:
            self._fail(400, "data sent before the WebSocket handshake completed", "early_data")
            return
        self._early.append(data)

    async def _open(self) -> None:
        slot, (head, rawHead) = await connectToPool(
            self.pool, self.key, self.sticky, self.factory.sessionMap, self.factory.health, self._handshake,
            statusOf=_answerStatus,
        )
        self.slot, self.backend = slot, slot.backend
        self._answer(head, rawHead)

    async def _handshake(self, slot: ConnectionSlot) -> tuple[ResponseHead, bytes]:
        backend = slot.backend
        endpoint = backendEndpoint(self.reactor, backend, self.timeouts.connect)
        try:
            side = await endpoint.connect(_BackendSideFactory(self))
        except CancelledError:
            raise
        except Exception as e:
            raise BackendUnreachable(_connectError(backend, e)) from None
        self.backendSide = side
        try:
            return await side.response
        except BaseException:
            # Timed out, cancelled, or a malformed or oversized answer: this
            # connection is done with, whatever is tried next.
            if not side.gone:
                side.transport.abortConnection()
            raise

    def backendRequest(self) -> bytes:
        """
        @return: the opening handshake for the backend: the client's request
            with hop-by-hop headers (and those named in C{Connection})
            replaced, the gateway's own headers dropped
            (L{gateway.wire.forwarded.clientHeaders}) and forwarding headers
            added.
        """
        head = self.head
        headers = clientHeaders(head, drop=_DROPPED_CLIENT_HEADERS)
        headers.append((b"Upgrade", b"websocket"))
        headers.append((b"Connection", b"Upgrade"))
        headers.extend(
            forwardedHeaders(
                head, self.factory.peerHost(self.clientTransport), self.factory.secure(self.clientTransport),
                self.factory.trustedProxies,
            )
        )
        return serializeRequestHead(head.method, head.target, headers)

    def _answer(self, head: ResponseHead, rawHead: bytes) -> None:
        self.status = head.status
        if head.status == 101 and b"websocket" in head.tokens(b"upgrade"):
            self.client.transport.write(rawHead)
            self._splice(head)
            return
        # A refusal: pass its status, headers and (bounded) body on, then close.
        length = head.get(b"content-length")
        try:
            expected = int(length) if length is not None else 0
        except ValueError:
            expected = 0
        if expected < 0 or head.get(b"transfer-encoding"):
            expected = 0  # a chunked body is not decoded: none is passed on
        expected = min(expected, self.limits.maxErrorBody)  # the rest is cut
        self._refusal = (head, expected)
        self.refusalBodyReceived()

    def refusalBodyReceived(self) -> None:
        """
        More of a refusal's body arrived (or the backend closed): answer the
        client once it is all here.
        """
        if self._refusal is None or self.backendSide is None:
            return
        head, expected = self._refusal
        body = self.backendSide.buffer
        if len(body) < expected and not self.backendSide.gone:
            return
        self._refusal = None
        body = body[:expected]
        headers = [(k, v) for k, v in head.headers if k.lower() not in _DROPPED_RESPONSE_HEADERS]
        headers.append((b"Content-Length", b"%d" % len(body)))
        headers.append((b"Connection", b"close"))
        self.log.info(
            "backend {backend} refused a handshake for {path}: {status}",
            backend=self.backend.name,
            path=self.head.path,
            status=head.status,
        )
        self.client.transport.write(serializeResponseHead(head.status, head.reason, headers) + body)
        self.client.transport.loseConnection()
        self.backendSide.transport.loseConnection()

    def _splice(self, head: ResponseHead) -> None:
        client, backend = self.client, self.backendSide
        client.other, backend.other = backend, client
        now = self.reactor.seconds()
        client.lastSeen = backend.lastSeen = self._lastData = now
        self.factory.metrics.handshake("transparent", "websocket", now - self._started)
        self.spliced = True
        if any(v.split(b";", 1)[0].strip().lower() == b"permessage-deflate"
               for v in head.tokens(b"sec-websocket-extensions")):
            # The one extension in use that sets a reserved bit.
            client.tracker.allowedRsv = backend.tracker.allowedRsv = RSV1
        ctransport, btransport = client.transport, backend.transport
        ctransport.registerProducer(backend, True)
        btransport.registerProducer(client, True)
        early, self._early = b"".join(self._early), []
        if early:
            client.splicedDataReceived(early)
        rest, backend.buffer = backend.buffer, b""
        if rest:
            backend.splicedDataReceived(rest)

    def _openFailed(self, failure: Failure) -> None:
        self._opening = None
        if self.client.gone:
            return None
        if failure.check(NoBackendAvailable):
            self.log.warn("{error}", error=failure.value)
            self._fail(503, str(failure.value), "no_backend")
        elif failure.check(CancelledError, TimeoutError):
            self._fail(504, f"no backend answered the handshake within {self.timeouts.handshake:g}s")
        else:
            self.log.failure("handshake with a backend failed", failure)
            self._fail(502, "the backend handshake failed")
        return None

    def _fail(self, status: int, message: str, reason: str | None = None) -> None:
        if self._opening is not None:
            opening, self._opening = self._opening, None
            opening.cancel()
        if self.backendSide is not None and not self.backendSide.gone:
            self.backendSide.transport.abortConnection()
        if not self.client.gone:
            self.factory.metrics.refused(status, reason)
            self.status = status
            self.client.transport.write(errorResponse(status, message))
            self.client.transport.loseConnection()

    # Splice life.
    def sideLost(self, side: _Side, reason: Failure) -> None:
        """
        One connection ended: close the other one cleanly (a close frame at
        a frame boundary, or an abort when mid-frame).
        """
        if not self.spliced:
            if side is self.client:
                if self._opening is not None:
                    opening, self._opening = self._opening, None
                    opening.cancel()
                if self.backendSide is not None and not self.backendSide.gone:
                    self.backendSide.transport.abortConnection()
                self._finished()
            elif self._refusal is not None:
                self.refusalBodyReceived()
                self._finished()
            elif self._opening is None:
                self._finished()
            return
        other = side.other
        if not other.gone:
            if side.tracker.closeSeen or other.closing:
                # Its close frame has passed (or ours went out): just finish.
                other.transport.loseConnection()
            elif other.tracker.closeSeen or other.tracker.violated:
                # The other peer began the closing handshake, or broke the
                # protocol, and this one failed the connection in answer
                # (RFC 6455 7.1.7): pass the failure on as it came, as a
                # direct connection would show it.
                other.transport.loseConnection()
            elif other.atBoundaryTowards():
                if side is self.client:
                    other.inject(encodeClose(CLOSE_GOING_AWAY, "client went away", True), close=True)
                else:
                    self.factory.metrics.closed("transparent", CLOSE_BACKEND_GONE)
                    other.inject(encodeClose(CLOSE_BACKEND_GONE, "backend closed the connection"), close=True)
                other.transport.loseConnection()
            else:
                other.transport.abortConnection()
        if other.gone:
            self._finished()

    def _finished(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.factory.accessLog.connectionEnded(self.accessRecord())
        self._release()
        client, backend = self.client, self.backendSide
        if backend is not None and self.spliced:
            self.factory.metrics.traffic.tunnelEnded(client.tracker.dataFrames, client.received,
                                                     backend.tracker.dataFrames, backend.received)
        if self._abortCall is not None and self._abortCall.active():
            self._abortCall.cancel()
        self._abortCall = None
        shutdown, self._shutdown = self._shutdown, None
        self.onClosed(self)
        if shutdown is not None:
            shutdown.callback(None)

    def accessRecord(self) -> dict:
        """
        @return: the access log's record of this tunnel (docs/operations.md,
            "Access log").
        """
        client, backend = self.client, self.backendSide
        transport = self.clientTransport
        peer = self.factory.peerHost(transport)
        closeCode = None
        for side in (client, backend):
            if side is not None and side.tracker.closeCode is not None:
                closeCode = side.tracker.closeCode
                break
        return {
            "event": "tunnel",
            "client": clientAddress(self.head, peer, self.factory.trustedProxies),
            "peer": peer,
            "path": self.head.path.decode("ascii", "replace"),
            "pool": self.pool.name,
            "backend": self.backend.name if self.backend is not None else None,
            "mode": "transparent",
            "transport": "websocket",
            "tls": self.factory.secure(transport),
            "status": self.status,
            "duration": round(self.reactor.seconds() - self.opened, 3),
            "bytes_from_client": client.received,
            "bytes_to_client": backend.received if backend is not None else 0,
            "messages_from_client": client.tracker.dataFrames,
            "messages_to_client": backend.tracker.dataFrames if backend is not None else 0,
            "close_code": closeCode,
        }

    def _release(self) -> None:
        self.backend = None
        self.slot.release()

    def sweep(self, now: float, timeouts: Timeouts) -> None:
        """
        Keep-alive: ping a side that has been silent for C{pingInterval}
        seconds, and abort one still silent C{pingTimeout} seconds after its
        ping.  Close the tunnel (1001) when no data frame has passed either
        way for C{idle} seconds, if set.
        """
        if self._shutdown is not None:
            return
        interval, timeout = timeouts.pingInterval, timeouts.pingTimeout
        dataFrames = self.client.tracker.dataFrames + self.backendSide.tracker.dataFrames
        if dataFrames != self._dataFrames:
            self._dataFrames, self._lastData = dataFrames, now
        elif timeouts.idle and now - self._lastData >= timeouts.idle:
            self.shutDown(timeouts.shutdown, "idle timeout")
            return
        for side in (self.client, self.backendSide):
            if side.gone or side.closing:
                continue
            if side.seen:
                side.seen = False
                side.lastSeen = now
                side.pingSentAt = None
            elif side.pingSentAt is None:
                if now - side.lastSeen >= interval:
                    side.pingSentAt = now
                    side.inject(encodeFrame(OP_PING, b"txgateway", side.masked))
            elif now - side.pingSentAt >= timeout:
                self.log.info(
                    "{which} of a tunnel to {backend} silent for {silence:.1f}s: closing",
                    which="client" if side is self.client else "backend",
                    backend=self.backend.name if self.backend else "?",
                    silence=now - side.lastSeen,
                )
                side.transport.abortConnection()

    def shutDown(self, deadline: float, reason: str = "gateway shutting down") -> Deferred:
        """
        Close both peers with 1001 and C{reason} at frame boundaries; abort
        whatever is still open after C{deadline} seconds.

        @return: L{Deferred} that fires when both connections are closed.
        """
        if self.closed:
            return succeed(None)
        if self._shutdown is None:
            self._shutdown = Deferred()
            if not self.spliced:
                self._fail(503, "the gateway is shutting down", "shutting_down")
                if self.client.gone:
                    self._finished()
            else:
                self.factory.metrics.closed("transparent", CLOSE_GOING_AWAY)
                self.client.inject(encodeClose(CLOSE_GOING_AWAY, reason), close=True)
                self.backendSide.inject(encodeClose(CLOSE_GOING_AWAY, reason, True), close=True)
            if not self.closed:
                self._abortCall = self.reactor.callLater(deadline, self._abort)
        return self._shutdown if self._shutdown is not None else succeed(None)

    def _abort(self) -> None:
        self._abortCall = None
        for side in (self.client, self.backendSide):
            if side is not None and not side.gone:
                side.transport.abortConnection()


def _connectError(backend: Backend, error: Exception) -> str:
    name = type(error).__name__
    text = str(error).strip() or name
    if "refused" in text.lower():
        return f"{backend.name}: connection refused"
    if "timeout" in name.lower() or "timed out" in text.lower():
        return f"{backend.name}: connect timed out"
    return f"{backend.name}: {text.splitlines()[0][:200]}"


def _answerStatus(answer: tuple[ResponseHead, bytes]) -> int:
    """
    @return: the status of a backend's answer to a tunnel's handshake (for
        passive health, L{connectToPool}).
    """
    return answer[0].status
