"""
The WebSocket link a session opens to its backend (L{BackendLink}, opened
by L{openBackendLink}), and connecting to a pool: choosing a backend and
connecting to it with retries, each attempt holding a connection slot
(L{connectToPool}), through the one place that turns a L{Backend} into a
client endpoint (L{backendEndpoint}: plain TCP for C{ws://}, TLS for
C{wss://}).  L{DirectMessages} is the message fast path both WebSockets of a
session (the client's and this link) share.
"""

from __future__ import annotations

from random import getrandbits
from typing import TYPE_CHECKING, Awaitable, Callable, Collection, Protocol, TypeVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import BackendRefused, BackendUnreachable, GatewayError, NoBackendAvailable, ProtocolError
from ..interfaces import IBackendLink
from ..tcp import noDelay
from ..wire.frames import encodeFrame
from .pool import NO_SLOT

if TYPE_CHECKING:
    from ..interfaces import ISessionMap
    from .pool import Backend, ConnectionSlot, Pool

__all__ = [
    "backendEndpoint",
    "hostHeader",
    "connectToPool",
    "ConnectObserver",
    "BackendLink",
    "BackendLinkFactory",
    "openBackendLink",
    "sendCloseCode",
    "DirectMessages",
]

T = TypeVar("T")

log = Logger()


class ConnectObserver(Protocol):
    """
    Told how each connect attempt went (passive health checks).
    """

    def connectFailed(self, pool: Pool, backend: Backend, reason: str) -> None:
        """
        An attempt to C{backend} failed.
        """

    def connectSucceeded(self, pool: Pool, backend: Backend) -> None:
        """
        An attempt to C{backend} succeeded.
        """

    def answered(self, pool: Pool, backend: Backend, status: int) -> None:
        """
        C{backend} answered the attempt's handshake with C{status}.
        """


async def connectToPool(
    pool: Pool,
    key: bytes | None,
    sticky: bool,
    sessionMap: ISessionMap,
    observer: ConnectObserver,
    connect: Callable[[ConnectionSlot], Awaitable[T]],
    exclude: Collection[Backend] = (),
    statusOf: Callable[[T], int] | None = None,
) -> tuple[ConnectionSlot, T]:
    """
    Choose a backend of C{pool} and connect to it, trying the next candidate
    when one cannot be reached, up to C{pool.connectAttempts} backends.

    With C{sticky}, the backend recorded for C{key} in the session map is
    tried first while it is available, and the backend that worked is
    recorded.  A session map that fails (Redis down) never fails the
    connection: the balancer chooses, and the record is not written.

    @param connect: makes one attempt, given the attempt's connection slot
        (on C{slot.backend}); fails with L{BackendUnreachable},
        L{ProtocolError} or L{OSError} when that backend cannot serve (each
        counted by C{observer} as a failure), or with L{BackendRefused} when
        it answered the handshake with a refusal: that is its answer to this
        client, passed on at once, and counted as a connect that worked
        (the backend is serving), never as a failure.  The slot of a failed
        or refused attempt is released here.
    @return: the slot of the attempt that worked, still held, for the
        caller (or what C{connect} made, which may have kept it) to release
        when the connection ends; and what C{connect} returned.
    @param exclude: backends not to try.
    @param statusOf: the HTTP status of what C{connect} returned, when it
        returns refusals too (a tunnel passes them on); otherwise what it
        returns is a 101.  C{observer} is told it (L{IConnectObserver.answered}).
    @raise NoBackendAvailable: with a reason safe to show a client.
    @raise BackendRefused: the backend's refusal of the handshake.
    """
    exclude = set(exclude)
    lastError: Exception | None = None
    backend = None
    if sticky:
        name = await _mapCall(pool, "reading", sessionMap.getAffinity, pool.name, key)
        if name is not None:
            recorded = pool.backend(name)
            if recorded is not None and recorded.available():
                backend = recorded
    for _ in range(pool.connectAttempts):
        if backend is None:
            backend = pool.choose(key, exclude)
        if backend is None:
            break
        slot = backend.reserve()
        try:
            result = await connect(slot)
        except BackendRefused as e:
            slot.release()
            observer.answered(pool, backend, e.status)
            raise
        except (BackendUnreachable, ProtocolError, OSError) as e:
            slot.release()
            lastError = e
            observer.connectFailed(pool, backend, str(e))
            exclude.add(backend)
            backend = None
            continue
        except BaseException:
            slot.release()
            raise
        observer.answered(pool, backend, 101 if statusOf is None else statusOf(result))
        if sticky:
            await _mapCall(
                pool, "writing", sessionMap.setAffinity, pool.name, key, backend.name,
                pool.affinityTtl,
            )
        return slot, result
    if lastError is not None:
        raise NoBackendAvailable(f"no backend of pool {pool.name!r} could be reached ({lastError})")
    raise NoBackendAvailable(pool.noneAvailableReason())


async def _mapCall(pool: Pool, doing: str, method: Callable[..., Deferred], *args) -> object:
    """
    Call a session map method for L{connectToPool}, which goes on without
    it when it fails.

    A L{GatewayError} (such as the Redis map's C{SessionMapUnavailable}) is
    the map reporting an outage, which the map logs itself, once per outage;
    anything else is a bug in the map, logged every time.

    @return: what the method's L{Deferred} fired with, or L{None} when it
        failed.
    """
    try:
        return await method(*args)
    except CancelledError:
        raise
    except GatewayError:
        return None
    except Exception:
        log.failure(
            "session map failed {doing} the affinity of pool {pool}; balancing without it",
            doing=doing, pool=pool.name,
        )
        return None


def backendEndpoint(reactor, backend: Backend, timeout: float) -> IStreamClientEndpoint:
    """
    @param reactor: the reactor to connect with.
    @param backend: where to connect.
    @param timeout: seconds a TCP connect may take.
    @return: an endpoint that connects to C{backend}, through TLS (with the
        backend's host name verified) when its URL is C{wss://}.  A host
        that is an IP address is connected to directly; only a name goes
        through L{HostnameEndpoint}, which resolves it (in a thread) and
        tries each of its addresses.
    """
    endpoint: IStreamClientEndpoint
    host = backend.host
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, backend.port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, backend.port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, backend.port, timeout=timeout)
    if backend.secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def hostHeader(backend: Backend) -> bytes:
    """
    @return: the C{Host} header value for requests to C{backend}.
    """
    host = backend.host
    if ":" in host:
        host = f"[{host}]"
    default = 443 if backend.secure else 80
    if backend.port == default:
        return host.encode("idna")
    return f"{host}:{backend.port}".encode("idna")


def sendCloseCode(protocol, code: int, reason: str) -> None:
    """
    Start an Autobahn protocol's closing handshake with any code RFC 6455
    lets an endpoint send (Autobahn's C{sendClose} refuses 1001-1015, which
    the gateway sends on behalf of peers that went away).
    """
    raw = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    protocol.sendCloseFrame(code=code, reasonUtf8=raw, isReply=False)


class DirectMessages:
    """
    Autobahn's per-message work cut to what the session protocol uses, for
    the two WebSockets of a session (the client's and the backend link).

    A whole message is written as one frame straight to the transport
    (masked with a random key by a client), without Autobahn's per-frame
    masker objects, traffic counters and debug-log arguments, whenever
    nothing else is in play (no compression, fragmentation, queued or
    synchronous sends, frame logging or timing); otherwise Autobahn sends
    it.  A message received is handed to C{onMessage} without firing
    Autobahn's "message" observers (a Deferred per message; the gateway
    never observes them).  Both connections also take the session's flow
    control (L{pauseReading}, L{resumeReading}, L{registerFlow}).

    @ivar transportGone: whether the connection has been lost (its
        transport takes no producer any more).
    """

    transportGone = False

    def sendMessage(self, payload: bytes, isBinary: bool = False, fragmentSize=None,
                    sync: bool = False, doNotCompress: bool = False) -> None:
        """
        Send one message (see L{DirectMessages}).
        """
        if (
            self.state == self.STATE_OPEN
            and fragmentSize is None
            and not sync
            and self._perMessageCompress is None
            and not self.autoFragmentSize
            and not self.send_queue
            and not self.logFrames
            and not self.logOctets
            and not self.trackedTimings
            and not 0 < self.maxMessagePayloadSize < len(payload)
        ):
            opcode = 2 if isBinary else 1
            if self.maskServerFrames if self.factory.isServer else self.maskClientFrames:
                self.transport.write(encodeFrame(opcode, payload, True, getrandbits(32).to_bytes(4, "big")))
            else:
                self.transport.write(encodeFrame(opcode, payload))
            return
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)

    def connectionLost(self, reason) -> None:
        """
        The connection is gone: no flow control registers on it any more.
        """
        self.transportGone = True
        super().connectionLost(reason)

    def onMessageEnd(self) -> None:
        """
        A whole message has arrived: to C{onMessage}.
        """
        if not self.failedByMe:
            self._onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    # Flow control: a session pauses reading from one of its two
    # connections while the other cannot keep up (gateway/sessions/upstream.py).
    def pauseReading(self) -> None:
        """
        Stop reading from the peer.
        """
        if self.transport is not None:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read from the peer again.
        """
        if self.transport is not None and self.state != self.STATE_CLOSED:
            self.transport.resumeProducing()

    def registerFlow(self, producer) -> None:
        """
        Have C{producer} (pausing the session's other side) paused while
        this connection's write buffer is full, replacing any earlier one.
        """
        transport = self.transport
        if transport is None or self.transportGone:
            return
        try:
            transport.registerProducer(producer, True)
        except RuntimeError:
            transport.unregisterProducer()
            transport.registerProducer(producer, True)


@implementer(IBackendLink)
class BackendLink(DirectMessages, WebSocketClientProtocol):
    """
    A session's WebSocket to its backend: one ordinary WebSocket per
    session, opened with the session id in C{X-Session-Id}.

    Messages that arrive before the session is bound are held and handed
    over by L{bind}.

    It holds its connection's slot (its factory's, L{BackendLinkFactory})
    from the moment it connects, and releases it when it closes after being
    bound, or when it is closed (L{closeLink}), bound or not.

    Its C{log} is Autobahn's own (txaio's), which drops debug events where
    they are emitted: Autobahn logs at debug level twice per frame, and a
    plain L{Logger} here would format and write every one of them.

    @ivar slot: the connection's slot on its backend (L{NO_SLOT} until
        connected).
    """

    factory: BackendLinkFactory
    confirmsReceipts = True

    def __init__(self) -> None:
        super().__init__()
        self.session = None
        self.slot: ConnectionSlot = NO_SLOT
        self._early: list[tuple[bytes, bool]] = []
        self._clean = False

    @property
    def backend(self) -> Backend | None:
        """
        The backend it is connected to (L{None} before it connects).
        """
        return self.slot.backend

    def connectionMade(self) -> None:
        """
        Take the connection's slot, turn Nagle's algorithm off, then start
        the handshake.
        """
        self.slot = self.factory.slot
        noDelay(self.transport)
        super().connectionMade()

    def onOpen(self) -> None:
        """
        The backend accepted the handshake.
        """
        self.factory.opened.callback(self)

    def bind(self, session, backend: Backend) -> None:
        """
        From now on, messages go to C{session}, which is told (its
        C{linkBound}) once the early messages are handed over.

        @param backend: the backend the link is connected to (that of its
            slot, which it releases when it closes).
        """
        self.session = session
        early, self._early = self._early, []
        for payload, isBinary in early:
            session.messageFromBackend(payload, isBinary)
        if self.state == self.STATE_CLOSED:
            self._closed()
            return
        session.linkBound(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """
        A backend message: to the session.
        """
        if self.session is None:
            self._early.append((payload, isBinary))
        else:
            self.session.messageFromBackend(payload, isBinary)

    def onClose(self, wasClean: bool, code, reason) -> None:
        """
        The backend WebSocket closed (or never opened).
        """
        opened = self.factory.opened
        if not opened.called:
            status = _refusalStatus(getattr(self, "http_status_line", None))
            if status is not None:
                opened.errback(BackendRefused(*status))
            else:
                opened.errback(BackendUnreachable(f"backend handshake failed: {reason or code}"))
            return
        self._clean = wasClean
        if self.session is not None:
            self._closed()

    def _closed(self) -> None:
        self.slot.release()
        session, self.session = self.session, None
        if session is not None:
            session.backendClosed(self.remoteCloseCode, self.remoteCloseReason, self, self._clean)

    def onPong(self, payload: bytes) -> None:
        """
        The backend answered a ping of L{requestReceipt}: it has read every
        message before it.
        """
        session = self.session
        if session is not None and payload.isdigit():
            session.backendReceipt(self, int(payload))

    def requestReceipt(self, seq: int) -> None:
        """
        Ask the backend to confirm the client messages up to C{seq} (the
        last one written): a ping, which it answers after reading them.
        """
        if self.state == self.STATE_OPEN:
            self.sendPing(b"%d" % seq)

    def finishLink(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with C{code}, still handing the session
        what the backend sends until its close arrives (a move).
        """
        if self.state == self.STATE_OPEN:
            sendCloseCode(self, code, reason)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)

    def closeLink(self, code: int, reason: str) -> None:
        """
        Close the backend WebSocket with C{code} and C{reason}, and release
        its connection slot (bound to a session or not).
        """
        self.session = None
        if self.state == self.STATE_OPEN:
            sendCloseCode(self, code, reason)
        elif self.state != self.STATE_CLOSED:
            self.dropConnection(abort=True)
        self.slot.release()


def _refusalStatus(line: str | None) -> tuple[int, str] | None:
    """
    @param line: the status line of the backend's answer to the opening
        handshake, as Autobahn read it (L{None} when none arrived).
    @return: the status and reason phrase of an answer that is a refusal (a
        well-formed HTTP/1.1 status line with a status other than 101), or
        L{None} for anything else (no answer, a malformed one, or a 101
        whose headers were wrong: those are failures of the backend).
    """
    if not line:
        return None
    parts = line.split(None, 2)
    if len(parts) < 2 or parts[0] != "HTTP/1.1" or not (len(parts[1]) == 3 and parts[1].isdigit()):
        return None
    status = int(parts[1])
    if status == 101 or not 100 <= status <= 599:
        return None
    phrase = parts[2].strip() if len(parts) > 2 else ""
    if not phrase.isascii() or not phrase.isprintable():
        phrase = ""
    return status, phrase[:60]


class BackendLinkFactory(WebSocketClientFactory):
    """
    Opens one L{BackendLink}.

    @ivar slot: the connection slot the link holds once connected.
    @ivar opened: fires with the link once the backend accepted the
        handshake, or fails with L{BackendUnreachable} when it did not.
    """

    protocol = BackendLink
    noisy = False

    def __init__(self, url: str, slot: ConnectionSlot, *, headers: dict[str, str],
                 origin: str | None) -> None:
        # The client's User-Agent, when forwarded, replaces Autobahn's own:
        # a request with two is refused by strict servers (aiohttp's).
        headers = dict(headers)
        agent = headers.pop("User-Agent", None)
        if agent is None:
            super().__init__(url, headers=headers, origin=origin)
        else:
            super().__init__(url, headers=headers, origin=origin, useragent=agent)
        self.slot = slot
        self.opened: Deferred[BackendLink] = Deferred()


async def openBackendLink(
    reactor,
    slot: ConnectionSlot,
    target: bytes,
    headers: dict[str, str],
    *,
    connectTimeout: float,
    maxMessageBytes: int,
    origin: str | None = None,
) -> BackendLink:
    """
    Open a session's WebSocket to C{slot.backend} for request target
    C{target}; once connected, the link holds C{slot}.

    @raise BackendUnreachable: when the connection or the handshake fails.
    @raise BackendRefused: when the backend answers the handshake with a
        status other than 101.
    """
    backend = slot.backend
    scheme = "wss" if backend.secure else "ws"
    url = f"{scheme}://{hostHeader(backend).decode('ascii')}{target.decode('ascii')}"
    factory = BackendLinkFactory(url, slot, headers=headers, origin=origin)
    factory.setProtocolOptions(
        maxMessagePayloadSize=maxMessageBytes,
        maxFramePayloadSize=maxMessageBytes,
        autoPingInterval=0,
        failByDrop=False,
        openHandshakeTimeout=connectTimeout,
        closeHandshakeTimeout=connectTimeout,
    )
    endpoint = backendEndpoint(reactor, backend, connectTimeout)
    try:
        await endpoint.connect(factory)
    except CancelledError:
        raise
    except Exception as e:
        raise BackendUnreachable(f"{backend.name}: {str(e).strip() or type(e).__name__}") from None
    return await factory.opened
