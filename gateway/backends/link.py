"""
The WebSocket link a session opens to its backend (L{BackendLink}, opened
by L{openBackendLink}), and connecting to a pool: choosing a backend and
connecting to it with retries, each attempt holding a connection slot
(L{connectToPool}), through the one place that turns a L{Backend} into a
client endpoint (L{backendEndpoint}: plain TCP for C{ws://}, TLS for
C{wss://}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Collection, Protocol, TypeVar

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import IProtocol, IProtocolFactory, IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from .. import __version__
from ..errors import BackendRefused, BackendUnreachable, GatewayError, NoBackendAvailable, ProtocolError
from ..interfaces import IBackendLink
from ..tcp import noDelay, replaceProducer
from ..wire.wsclient import (
    Accepted,
    ClientState,
    CloseReceived,
    Failed,
    MessageReceived,
    PongReceived,
    Refused,
    WebSocketClient,
)
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
    "openBackendLink",
    "SERVER_DROP_TIMEOUT",
]

T = TypeVar("T")

log = Logger()

#: Seconds a backend link waits, once the closing handshake is done, for the
#: backend to close the TCP connection before closing it itself.
SERVER_DROP_TIMEOUT = 1.0

#: The C{User-Agent} of a session's backend handshake when its client sent
#: none.
_USER_AGENT = f"txgateway/{__version__}".encode("ascii")


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


@implementer(IBackendLink, IProtocol)
class BackendLink:
    """
    A session's WebSocket to its backend: one ordinary WebSocket per
    session, opened with the session id in C{X-Session-Id}.

    It speaks through the project's own sans-IO client
    (L{gateway.wire.wsclient.WebSocketClient}) on the TCP (or TLS)
    connection of its endpoint.  A gateway holds one per session for the
    session's whole life, attached or detached, so it keeps a dozen slots
    and nothing else: not a full Autobahn protocol (a hundred attributes,
    a factory of its own, a traffic counter, a send queue), nor a
    L{twisted.internet.protocol.Protocol} base, whose lack of C{__slots__}
    would give every link a C{__dict__}.

    Messages that arrive before the session is bound are held and handed
    over by L{bind}.

    It holds its connection's slot from the moment it connects, and
    releases it when it closes after being bound, or when it is closed
    (L{closeLink}), bound or not.

    The timeouts: C{timeout} seconds for the opening handshake (from the
    TCP connection to the C{101}) and for a closing handshake it started
    (its close frame to the backend's); then L{SERVER_DROP_TIMEOUT} for the
    backend to close the TCP connection once the closing handshake is done,
    as a server does (RFC 6455 section 7.1.1), after which the link closes
    it (as Autobahn's client did).  The first two drop the connection.

    @ivar slot: the connection's slot on its backend (L{NO_SLOT} until
        connected).
    @ivar session: what the backend's messages, receipts and close go to
        (L{None} until bound, and once closed).
    @ivar transportGone: whether the connection has been lost (its
        transport takes no producer any more).
    """

    __slots__ = ("transport", "session", "slot", "transportGone", "_ws", "_reactor", "_timeout",
                 "_request", "_pendingSlot", "_opened", "_early", "_timer", "_closeCode", "_closeReason")

    confirmsReceipts = True
    log = Logger()

    def __init__(self, reactor, slot: ConnectionSlot = NO_SLOT, *, maxMessageBytes: int = 1 << 20,
                 maxHeadBytes: int = 16384, timeout: float = 10.0) -> None:
        """
        @param reactor: times the handshakes (L{IReactorTime}).
        @param slot: the connection slot it holds once connected.
        @param maxMessageBytes: the largest message taken from the backend.
        @param maxHeadBytes: the largest handshake answer taken from it.
        @param timeout: seconds each handshake may take.
        """
        self.transport = None
        self.session = None
        self.slot: ConnectionSlot = NO_SLOT
        self.transportGone = False
        self._ws = WebSocketClient(maxMessageBytes, maxHeadBytes)
        self._reactor = reactor
        self._timeout = timeout
        self._request = b""
        self._pendingSlot = slot
        #: Fires with the link once the backend accepted the handshake;
        #: L{None} once fired.
        self._opened: Deferred[BackendLink] | None = Deferred(self._cancelOpening)
        #: Messages received before the link was bound (L{None} once bound
        #: or closed).
        self._early: list[tuple[bytes, bool]] | None = []
        self._timer = None
        self._closeCode: int | None = None
        self._closeReason: str | None = None

    def __repr__(self) -> str:
        backend = self.slot.backend
        return f"<BackendLink {backend.name if backend else '-'} {self._ws.state.value}>"

    @property
    def backend(self) -> Backend | None:
        """
        The backend it is connected to (L{None} before it connects).
        """
        return self.slot.backend

    @property
    def opened(self) -> Deferred[BackendLink]:
        """
        L{Deferred} firing with the link once the backend accepted the
        handshake; failing with L{BackendRefused} when it answered with
        another status, or with L{BackendUnreachable} when the handshake
        failed (cancelling it drops the connection).  Ask once.
        """
        opened = self._opened
        assert opened is not None, "already opened"
        return opened

    def handshake(self, host: bytes, target: bytes, headers: dict[str, str], origin: str | None) -> None:
        """
        Prepare the opening handshake, written once connected: C{Host},
        C{headers} (C{User-Agent} among them, else the gateway's own), and
        C{Origin} when given.

        @raise ValueError: for a header that would break the request.
        """
        lines = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        if "User-Agent" not in headers:
            lines.append((b"User-Agent", _USER_AGENT))
        if origin is not None:
            lines.append((b"Origin", origin.encode("latin-1")))
        self._request = self._ws.handshake(host, target, lines)

    # IProtocol
    def makeConnection(self, transport) -> None:
        """
        Connected: take the connection's slot, turn Nagle's algorithm off,
        send the handshake and start its clock.
        """
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        """
        See L{makeConnection}.
        """
        self.slot, self._pendingSlot = self._pendingSlot, NO_SLOT
        noDelay(self.transport)
        request, self._request = self._request, b""
        self.transport.write(request)
        self._timer = self._reactor.callLater(self._timeout, self._handshakeTimedOut)

    def dataReceived(self, data: bytes) -> None:
        """
        Bytes from the backend: to the client engine, and what it makes of
        them to the session.
        """
        ws = self._ws
        events = ws.receiveData(data)
        out = ws.dataToSend()
        if out:
            self.transport.write(out)
        for event in events:
            kind = type(event)
            if kind is MessageReceived:
                session = self.session
                if session is not None:
                    session.messageFromBackend(event.payload, event.isBinary)
                elif self._early is not None:
                    self._early.append((event.payload, event.isBinary))
            elif kind is PongReceived:
                session = self.session
                if session is not None and event.payload.isdigit():
                    session.backendReceipt(self, int(event.payload))
            elif kind is Accepted:
                self._cancelTimer()
                opened, self._opened = self._opened, None
                opened.callback(self)
            elif kind is CloseReceived:
                self._closeCode, self._closeReason = event.code, event.reason
                self._startTimer(SERVER_DROP_TIMEOUT)  # for the backend to close the connection
            elif kind is Refused:
                self._cancelTimer()
                self._openFailed(BackendRefused(event.status, event.reason))
                self.transport.loseConnection()
            elif kind is Failed:
                self._failed(event)

    def _failed(self, event: Failed) -> None:
        self._cancelTimer()
        if self._opened is not None:
            self._openFailed(BackendUnreachable(f"backend handshake failed: {event.reason}"))
            self.transport.abortConnection()
            return
        backend = self.slot.backend
        self.log.info("backend {backend} broke the WebSocket protocol ({reason}): closing its"
                      " connection with {code}", backend=backend.name if backend else "-",
                      reason=event.reason, code=event.code)
        self._closeCode, self._closeReason = event.code, event.reason
        self.transport.loseConnection()  # after the close frame, if one was written

    def connectionLost(self, reason=None) -> None:
        """
        The connection is gone: tell the session (or, before the handshake
        was done, the opener).
        """
        self.transportGone = True
        self._cancelTimer()
        if self._opened is not None:
            self._openFailed(BackendUnreachable("backend handshake failed: connection lost"))
            return
        if self.session is not None:
            self._closed()

    def _openFailed(self, error: Exception) -> None:
        opened, self._opened = self._opened, None
        if opened is not None:
            opened.errback(error)

    def _cancelOpening(self, opened: Deferred) -> None:
        # The opener gave up (its session ended meanwhile): drop the
        # connection, whose slot the opener releases.  (Deferred.cancel
        # fails the Deferred with CancelledError.)
        self._opened = None
        self._cancelTimer()
        if self.transport is not None and not self.transportGone:
            self.transport.abortConnection()

    def _handshakeTimedOut(self) -> None:
        self._timer = None
        self._openFailed(BackendUnreachable(f"backend handshake timed out after {self._timeout:g}s"))
        self.transport.abortConnection()

    def _startTimer(self, timeout: float | None = None) -> None:
        self._cancelTimer()
        if not self.transportGone:
            self._timer = self._reactor.callLater(self._timeout if timeout is None else timeout,
                                                  self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._timer = None
        if self._ws.state is ClientState.CLOSED:
            self.transport.loseConnection()  # the closing handshake is done
        else:
            self.transport.abortConnection()

    def _cancelTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # IBackendLink
    def bind(self, session, backend: Backend) -> None:
        """
        From now on, messages go to C{session}, which is told (its
        C{linkBound}) once the early messages are handed over.

        @param backend: the backend the link is connected to (that of its
            slot, which it releases when it closes).
        """
        self.session = session
        early, self._early = self._early or (), None
        for payload, isBinary in early:
            session.messageFromBackend(payload, isBinary)
        if self.transportGone:
            self._closed()
            return
        session.linkBound(self)

    def _closed(self) -> None:
        self.slot.release()
        session, self.session = self.session, None
        if session is not None:
            session.backendClosed(self._closeCode, self._closeReason, self, self._ws.clean)

    def sendMessage(self, payload: bytes, isBinary: bool = False) -> None:
        """
        A client message to the backend, as one masked frame; nothing once
        the WebSocket is closing (the session keeps what the backend has not
        confirmed).
        """
        frame = self._ws.sendMessage(payload, isBinary)
        if frame:
            self.transport.write(frame)

    def requestReceipt(self, seq: int) -> None:
        """
        Ask the backend to confirm the client messages up to C{seq} (the
        last one written): a ping, which it answers after reading them.
        """
        frame = self._ws.ping(b"%d" % seq)
        if frame:
            self.transport.write(frame)

    def finishLink(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with C{code}, still handing the session
        what the backend sends until its close arrives (a move).
        """
        self._close(code, reason)

    def closeLink(self, code: int, reason: str) -> None:
        """
        Close the backend WebSocket with C{code} and C{reason}, and release
        its connection slot (bound to a session or not).
        """
        self.session = None
        self._early = None
        self._close(code, reason)
        self.slot.release()

    def _close(self, code: int, reason: str) -> None:
        ws = self._ws
        if ws.state is ClientState.OPEN:
            self.transport.write(ws.close(code, reason))
            self._startTimer()  # for the backend's close frame
        elif ws.state is ClientState.CONNECTING and self.transport is not None and not self.transportGone:
            self.transport.abortConnection()

    # Flow control: a session pauses reading from one of its two
    # connections while the other cannot keep up (gateway/sessions/upstream.py).
    def pauseReading(self) -> None:
        """
        Stop reading from the backend.
        """
        if self.transport is not None and not self.transportGone:
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        """
        Read from the backend again.
        """
        if self.transport is not None and not self.transportGone:
            self.transport.resumeProducing()

    def registerFlow(self, producer) -> None:
        """
        Have C{producer} (pausing the session's other side) paused while
        this connection's write buffer is full, replacing any earlier one.
        """
        transport = self.transport
        if transport is None or self.transportGone:
            return
        replaceProducer(transport, producer)


@implementer(IProtocolFactory)
class _OneLink:
    """
    The factory an endpoint connects with: it builds the one link it was
    given, and then holds nothing (the endpoint's connector keeps it for
    the connection's life).
    """

    __slots__ = ("link",)

    def __init__(self, link: BackendLink) -> None:
        self.link: BackendLink | None = link

    def buildProtocol(self, addr) -> BackendLink | None:
        """
        @return: the link, the first time.
        """
        link, self.link = self.link, None
        return link

    def doStart(self) -> None:
        """
        Nothing to start.
        """

    def doStop(self) -> None:
        """
        Nothing to stop.
        """


async def openBackendLink(
    reactor,
    slot: ConnectionSlot,
    target: bytes,
    headers: dict[str, str],
    *,
    connectTimeout: float,
    maxMessageBytes: int,
    origin: str | None = None,
    maxHeadBytes: int = 16384,
) -> BackendLink:
    """
    Open a session's WebSocket to C{slot.backend} for request target
    C{target}; once connected, the link holds C{slot}.  The TCP connect and
    then the opening handshake each have C{connectTimeout} seconds.

    @param maxMessageBytes: the largest message taken from the backend
        (past it, the link closes with 1009).
    @param maxHeadBytes: the largest handshake answer taken from it.
    @raise BackendUnreachable: when the connection or the handshake fails.
    @raise BackendRefused: when the backend answers the handshake with a
        status other than 101.
    """
    backend = slot.backend
    link = BackendLink(reactor, slot, maxMessageBytes=maxMessageBytes, maxHeadBytes=maxHeadBytes,
                       timeout=connectTimeout)
    try:
        link.handshake(hostHeader(backend), target, headers, origin)
    except (ValueError, UnicodeEncodeError) as e:
        raise BackendUnreachable(f"{backend.name}: cannot send the handshake: {e}") from None
    endpoint = backendEndpoint(reactor, backend, connectTimeout)
    opened = link.opened
    try:
        await endpoint.connect(_OneLink(link))
    except CancelledError:
        raise
    except Exception as e:
        raise BackendUnreachable(f"{backend.name}: {str(e).strip() or type(e).__name__}") from None
    return await opened
