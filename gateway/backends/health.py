"""
Backend health: active probes (TCP connect, HTTP GET, WebSocket handshake)
and the L{HealthMonitor} service that turns probe results and the proxy's
connect failures into each backend's C{healthy} flag, as HAProxy does (C{rise}
and C{fall} counts of consecutive results).
"""

from __future__ import annotations

import base64
import os
import re
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet import error as ierror
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError as DeferredTimeoutError,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .link import backendEndpoint, hostHeader
from ..config import HealthCheckConfig
from ..errors import ConfigError, HealthCheckFailed, LimitExceeded, ProtocolError
from ..wire.frames import encodeClose
from ..wire.http1 import ResponseHead, findHeadEnd, parseResponseHead, serializeRequestHead
from ..wire.wsclient import acceptKey
from ..interfaces import IConnectObserver, IHealthCheck
from .pool import Backend, Pool

__all__ = [
    "TCPCheck",
    "HTTPCheck",
    "WebSocketCheck",
    "makeHealthCheck",
    "HealthMonitor",
    "PassiveHealth",
    "MAX_RESPONSE_HEAD",
]


@implementer(IConnectObserver)
class PassiveHealth:
    """
    Passive health checks: the results of the connects the gateway makes
    (tunnels and session links alike) passed to the L{HealthMonitor} of the
    backend's pool.

    @ivar monitors: the health monitor of each pool, by pool name (the
        service's own mapping, so that pools added later are found).
    """

    def __init__(self, monitors: dict[str, HealthMonitor]) -> None:
        self.monitors = monitors

    def connectFailed(self, pool: Pool, backend: Backend, reason: str) -> None:
        """
        A connect or handshake to C{backend} failed: it counts toward C{fall}.
        """
        monitor = self.monitors.get(pool.name)
        if monitor is not None:
            monitor.connectFailed(backend, reason)

    def connectSucceeded(self, pool: Pool, backend: Backend) -> None:
        """
        A handshake with C{backend} succeeded: its failures count from zero.
        """
        monitor = self.monitors.get(pool.name)
        if monitor is not None:
            monitor.connectSucceeded(backend)

    def answered(self, pool: Pool, backend: Backend, status: int) -> None:
        """
        C{backend} answered a handshake with C{status}: a success, or, with
        the pool's monitor observing layer 7, a failure when a 5xx.
        """
        monitor = self.monitors.get(pool.name)
        if monitor is None:
            return
        if status >= 500 and monitor.observeLayer7:
            monitor.connectFailed(backend, f"answered the handshake with {status}")
        else:
            monitor.connectSucceeded(backend)

#: The largest response head a check reads, in bytes.
MAX_RESPONSE_HEAD = 16384

_USER_AGENT = b"txgateway-health"
_PATH = re.compile(r"^/[\x21-\x7e]*$")


def _reasonFor(failure: Failure, timeout: float) -> str:
    """
    @return: one short line saying why a check failed.
    """
    e = failure.value
    if isinstance(e, HealthCheckFailed):
        return str(e)
    if isinstance(e, (DeferredTimeoutError, ierror.TimeoutError)):
        return f"timed out after {float(timeout)}s"
    if isinstance(e, ierror.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ierror.DNSLookupError):
        return "DNS lookup failed"
    if isinstance(e, ierror.NoRouteError):
        return "no route to host"
    if isinstance(e, LimitExceeded):
        return f"response head larger than {MAX_RESPONSE_HEAD} bytes"
    if isinstance(e, ProtocolError):
        return f"bad response: {e}"
    if isinstance(e, (ierror.ConnectionDone, ierror.ConnectionLost)):
        return "connection closed before a response"
    if type(e).__module__.startswith("OpenSSL"):
        return "TLS error"
    text = str(e).strip().splitlines()
    detail = f": {text[0][:120]}" if text else ""
    return f"{type(e).__name__}{detail}"


class _HeadProtocol(Protocol):
    """
    Sends a request head and waits for the response head.

    @ivar done: fires with the L{ResponseHead}, or fails; cancelling it
        aborts the connection.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buffer = b""
        self.done: Deferred[ResponseHead] = Deferred(self._cancel)

    def _cancel(self, d: Deferred) -> None:
        """
        Abort the connection when the check is cancelled (or times out).
        """
        if self.transport is not None:
            self.transport.abortConnection()

    def connectionMade(self) -> None:
        """
        Send the request.
        """
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        """
        Buffer until the response head is complete, then parse it.
        """
        if self.done.called:
            return
        self.buffer += data
        try:
            end = findHeadEnd(self.buffer, MAX_RESPONSE_HEAD)
            if end == -1:
                return
            head = parseResponseHead(self.buffer[: end - 4])
        except ProtocolError:
            self.transport.abortConnection()
            self.done.errback()
            return
        self.done.callback(head)

    def connectionLost(self, reason: Failure) -> None:
        """
        Fail C{done} if the connection closed before a response head.
        """
        if not self.done.called:
            self.done.errback(reason)


class _ProbeBase:
    """
    What the three checks share: connect with L{backendEndpoint}, bound
    everything by C{timeout}, and turn every failure into a
    L{HealthCheckFailed} with a one-line reason.
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self.reactor = reactor
        self.timeout = timeout

    def check(self, backend: Backend) -> Deferred[None]:
        """
        Probe C{backend}.  See L{IHealthCheck.check}.

        @return: L{Deferred} firing with L{None} when healthy, failing with
            L{HealthCheckFailed} otherwise (or L{CancelledError} when
            cancelled); it never takes longer than C{timeout} seconds.
        """
        d = Deferred.fromCoroutine(self._probe(backend))
        d.addTimeout(self.timeout, self.reactor)
        d.addErrback(self._translate)
        return d

    def _translate(self, failure: Failure) -> Failure:
        """
        Turn any failure but a cancellation into L{HealthCheckFailed}.
        """
        if failure.check(CancelledError, HealthCheckFailed):
            return failure
        return Failure(HealthCheckFailed(_reasonFor(failure, self.timeout)))

    async def _probe(self, backend: Backend) -> None:
        raise NotImplementedError

    async def _connect(self, backend: Backend, factory: Factory) -> Protocol:
        """
        Connect to C{backend}.

        @return: the connected protocol.
        @raise CancelledError: when cancelled, or timed out, while
            connecting (endpoints fail with L{ConnectingCancelledError},
            which L{Deferred.addTimeout} would not see as a cancellation).
        """
        endpoint = backendEndpoint(self.reactor, backend, self.timeout)
        factory.noisy = False  # one check per backend per interval: no log lines
        try:
            return await endpoint.connect(factory)
        except ierror.ConnectingCancelledError:
            raise CancelledError() from None

    async def _exchange(
        self, backend: Backend, request: bytes
    ) -> tuple[_HeadProtocol, ResponseHead]:
        """
        Connect, send C{request} and read the response head.
        """
        protocol = await self._connect(
            backend, Factory.forProtocol(partial(_HeadProtocol, request))
        )
        # Cancelling (or timing out) while waiting aborts the connection.
        head = await protocol.done
        return protocol, head


@implementer(IHealthCheck)
class TCPCheck(_ProbeBase):
    """
    A backend is healthy when a TCP connection to it can be opened; it is
    closed at once.  (For C{wss://} backends the TLS handshake is not
    awaited: use the C{http} or C{websocket} check to cover TLS.)
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        """
        @param reactor: connects and tells the time.
        @param timeout: seconds the check may take.
        """
        super().__init__(reactor, timeout)

    async def _probe(self, backend: Backend) -> None:
        protocol = await self._connect(backend, Factory.forProtocol(Protocol))
        protocol.transport.loseConnection()


class _PathProbe(_ProbeBase):
    """
    A probe that requests a path.
    """

    def __init__(self, reactor: Any, path: bytes, timeout: float) -> None:
        """
        @param reactor: connects and tells the time.
        @param path: the request target, e.g. C{b"/healthz"}.
        @param timeout: seconds the check may take.
        """
        super().__init__(reactor, timeout)
        self.path = path


@implementer(IHealthCheck)
class HTTPCheck(_PathProbe):
    """
    A backend is healthy when C{GET path} answers with a 2xx or 3xx status.

    The request is plain HTTP/1.1 with C{Host} set as the proxy sets it,
    C{Connection: close} and C{User-Agent: txgateway-health}; the connection
    is closed as soon as the response head is read (the body is not).
    """

    async def _probe(self, backend: Backend) -> None:
        request = serializeRequestHead(
            b"GET",
            self.path,
            [
                (b"Host", hostHeader(backend)),
                (b"User-Agent", _USER_AGENT),
                (b"Accept", b"*/*"),
                (b"Connection", b"close"),
            ],
        )
        protocol, head = await self._exchange(backend, request)
        protocol.transport.loseConnection()
        if not 200 <= head.status < 400:
            raise HealthCheckFailed(f"status {head.status}")


@implementer(IHealthCheck)
class WebSocketCheck(_PathProbe):
    """
    A backend is healthy when a WebSocket opening handshake on C{path}
    succeeds: the answer is C{101} with C{Upgrade: websocket},
    C{Connection: upgrade} and the right C{Sec-WebSocket-Accept}.  The check
    then sends a masked close frame (code 1000) and closes the connection.
    """

    async def _probe(self, backend: Backend) -> None:
        key = base64.b64encode(os.urandom(16))
        request = serializeRequestHead(
            b"GET",
            self.path,
            [
                (b"Host", hostHeader(backend)),
                (b"User-Agent", _USER_AGENT),
                (b"Upgrade", b"websocket"),
                (b"Connection", b"Upgrade"),
                (b"Sec-WebSocket-Key", key),
                (b"Sec-WebSocket-Version", b"13"),
            ],
        )
        protocol, head = await self._exchange(backend, request)
        transport = protocol.transport
        if head.status != 101:
            transport.loseConnection()
            raise HealthCheckFailed(f"status {head.status}")
        if b"websocket" not in head.tokens(b"upgrade") or b"upgrade" not in head.tokens(
            b"connection"
        ):
            transport.abortConnection()
            raise HealthCheckFailed("101 without Upgrade: websocket")
        if head.get(b"sec-websocket-accept") != acceptKey(key):
            transport.abortConnection()
            raise HealthCheckFailed("bad Sec-WebSocket-Accept")
        transport.write(encodeClose(1000, "", mask=True))
        transport.loseConnection()


def _checkPath(path: str) -> bytes:
    """
    @return: C{path} as a request target.
    @raise ConfigError: unless it starts with C{/} and is printable ASCII
        without spaces.
    """
    if not _PATH.match(path):
        raise ConfigError(
            f"health check path {path!r} must start with '/' and be printable"
            " ASCII without spaces (percent-encode anything else)"
        )
    return path.encode("ascii")


def makeHealthCheck(config: HealthCheckConfig, reactor: Any) -> IHealthCheck:
    """
    @param config: a pool's C{[health]} table.
    @param reactor: connects and tells the time.
    @return: the check C{config.type} names: C{"tcp"}, C{"http"} or
        C{"websocket"}.
    @raise ConfigError: for another type or a bad path.
    """
    if config.type == "tcp":
        return TCPCheck(reactor, config.timeout)
    if config.type == "http":
        return HTTPCheck(reactor, _checkPath(config.path), config.timeout)
    if config.type == "websocket":
        return WebSocketCheck(reactor, _checkPath(config.path), config.timeout)
    raise ConfigError(
        f"unknown health check type {config.type!r} (known: http, tcp, websocket)"
    )


class _BackendState:
    """
    What the monitor knows about one backend.
    """

    __slots__ = ("successes", "failures", "reason", "lastCheck", "inFlight", "retry")

    def __init__(self) -> None:
        self.successes = 0
        self.failures = 0
        self.reason: str | None = None
        self.lastCheck: float | None = None
        self.inFlight: Deferred[None] | None = None
        self.retry: IDelayedCall | None = None


class HealthMonitor(Service):
    """
    Keeps the C{healthy} flag of every backend of one pool, as HAProxy does.

    Every backend starts up.  An up backend goes down after C{fall}
    consecutive failures, counting both active checks and the connect (or
    handshake) failures the proxy reports through L{connectFailed}; a down
    backend comes up after C{rise} consecutive good active checks.  Any
    success resets the failure count, any failure the success count.

    With active checks (a L{HealthCheckConfig}), every backend is checked
    every C{interval} seconds, all concurrently, never two checks of one
    backend at once (a check still running when the next round starts is
    left to finish; each is bounded by the check's C{timeout}).

    Without them (C{config=None}), only the proxy's failures count (C{fall}
    from L{HealthCheckConfig}'s defaults); a backend they took down comes
    back C{failTimeout} seconds later to be tried again, on probation: one
    more failure takes it down again, one success makes it fully up.

    Each change of state is logged once.
    """

    log = Logger()

    def __init__(
        self,
        pool: Pool,
        config: HealthCheckConfig | None,
        reactor: Any,
        failTimeout: float,
        observeLayer7: bool = False,
        *,
        healthCheck: IHealthCheck | None = None,
    ) -> None:
        """
        @param pool: the pool whose backends are watched.
        @param config: active checks, or L{None} for passive ones only.
        @param reactor: provides L{IReactorTime} (and L{IReactorTCP} for the
            checks).
        @param failTimeout: without active checks, seconds a backend taken
            down by connect failures stays down.
        @param observeLayer7: whether a handshake answered with a 5xx counts
            as a failed connect (HAProxy's C{observe layer7}); a refusal
            below 500 never does.
        @param healthCheck: the probe to use instead of the one
            C{config.type} names (for tests and embedding).
        """
        self.pool = pool
        self.config = config
        self._reactor = reactor
        self.failTimeout = failTimeout
        self.observeLayer7 = observeLayer7
        defaults = config or HealthCheckConfig()
        self.rise = defaults.rise
        self.fall = defaults.fall
        if config is not None and healthCheck is None:
            healthCheck = makeHealthCheck(config, reactor)
        self.healthCheck = healthCheck
        self._states: dict[Backend, _BackendState] = {}
        self._loop: LoopingCall | None = None

    def _state(self, backend: Backend) -> _BackendState:
        state = self._states.get(backend)
        if state is None:
            state = self._states[backend] = _BackendState()
        return state

    # -- service

    def startService(self) -> None:
        """
        Start checking every C{interval} seconds (the first round at once),
        when there are active checks.
        """
        super().startService()
        if self.config is not None and self.healthCheck is not None:
            self._loop = LoopingCall(self.checkAll)
            self._loop.clock = self._reactor
            self._loop.start(self.config.interval, now=True).addErrback(
                lambda f: self.log.failure(
                    "health checks of pool {pool} stopped", f, pool=self.pool.name
                )
            )

    def stopService(self) -> Deferred[None]:
        """
        Stop checking: cancel the checks in flight and the pending
        C{failTimeout} retries.

        @return: L{Deferred} that fires once every check in flight is done.
        """
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        inFlight = []
        for state in self._states.values():
            if state.retry is not None and state.retry.active():
                state.retry.cancel()
            state.retry = None
            if state.inFlight is not None:
                inFlight.append(state.inFlight)
        for d in inFlight:
            d.cancel()
        return DeferredList(inFlight, consumeErrors=True).addCallback(lambda _: None)

    def forget(self, backend: Backend) -> None:
        """
        C{backend} has left the pool: cancel its check in flight and its
        C{failTimeout} retry, and drop what is known of it.
        """
        state = self._states.pop(backend, None)
        if state is None:
            return
        if state.retry is not None and state.retry.active():
            state.retry.cancel()
        state.retry = None
        if state.inFlight is not None:
            state.inFlight.cancel()

    # -- active checks

    def checkAll(self) -> None:
        """
        Start a check of every backend that has none in flight.
        """
        for backend in list(self.pool.backends):
            state = self._state(backend)
            if state.inFlight is None:
                self._checkOne(backend, state)

    def _checkOne(self, backend: Backend, state: _BackendState) -> None:
        assert self.healthCheck is not None
        try:
            d = self.healthCheck.check(backend)
        except Exception:
            d = Deferred()
            d.errback()
        state.inFlight = d

        def done(result: object) -> None:
            """
            Count the check's result, unless it was cancelled or the
            monitor has stopped.
            """
            state.inFlight = None
            if isinstance(result, Failure):
                if result.check(CancelledError) or not self.running:
                    return
                if result.check(HealthCheckFailed):
                    reason = str(result.value)
                else:
                    self.log.failure(
                        "health check of backend {backend} of pool {pool} broke",
                        result,
                        backend=backend.name,
                        pool=self.pool.name,
                    )
                    reason = f"check error: {type(result.value).__name__}"
                self._failed(backend, state, reason)
            elif self.running:
                self._succeeded(backend, state, "passed {n} checks")

        d.addBoth(done)
        d.addErrback(
            lambda f: self.log.failure("health monitor of pool {pool} broke", f, pool=self.pool.name)
        )

    # -- passive checks

    def connectSucceeded(self, backend: Backend) -> None:
        """
        The proxy connected (and handshook) to C{backend}: its consecutive
        failures start again from zero.
        """
        state = self._state(backend)
        if backend.healthy:
            state.failures = 0
            state.reason = None

    def connectFailed(self, backend: Backend, reason: object) -> None:
        """
        The proxy failed to connect (or handshake) to C{backend}; this
        counts toward C{fall}.

        @param reason: why, as a short string (a L{Failure} or exception is
            turned into its message).

        While the monitor is stopped, failures still count but no
        C{failTimeout} retry is scheduled.
        """
        if isinstance(reason, Failure):
            reason = reason.getErrorMessage()
        text = str(reason).strip().splitlines()
        self._failed(backend, self._state(backend), text[0] if text else "connect failed")

    # -- state changes

    def _succeeded(self, backend: Backend, state: _BackendState, how: str) -> None:
        state.lastCheck = self._reactor.seconds()
        state.reason = None
        state.failures = 0
        state.successes += 1
        if not backend.healthy and state.successes >= self.rise:
            backend.healthy = True
            self.log.info(
                "backend {backend} of pool {pool} is up: {reason}",
                backend=backend.name,
                pool=self.pool.name,
                reason=how.format(n=state.successes),
            )

    def _failed(self, backend: Backend, state: _BackendState, reason: str) -> None:
        state.lastCheck = self._reactor.seconds()
        state.reason = reason
        state.successes = 0
        state.failures += 1
        if backend.healthy and state.failures >= self.fall:
            backend.healthy = False
            self.log.warn(
                "backend {backend} of pool {pool} is down: {reason}",
                backend=backend.name,
                pool=self.pool.name,
                reason=reason,
            )
            if self.config is None and self.running:
                if state.retry is not None and state.retry.active():
                    state.retry.cancel()
                state.retry = self._reactor.callLater(
                    self.failTimeout, self._tryAgain, backend, state
                )

    def _tryAgain(self, backend: Backend, state: _BackendState) -> None:
        """
        Without active checks, bring a backend back C{failTimeout} seconds
        after it went down, on probation.
        """
        state.retry = None
        if backend.healthy:
            return
        backend.healthy = True
        state.successes = 0
        state.failures = max(self.fall - 1, 0)
        self.log.info(
            "backend {backend} of pool {pool} is up: {reason}",
            backend=backend.name,
            pool=self.pool.name,
            reason=f"trying again after {self.failTimeout}s",
        )

    # -- reporting

    def status(self) -> dict[str, Any]:
        """
        @return: a JSON-able description of the pool's backends: for each,
            C{name}, C{url}, C{healthy}, C{draining}, C{connections},
            C{weight}, C{maxConnections}, C{lastCheck} (the reactor time of
            the last check or connect result, or L{None}) and C{reason} (why
            the last one failed, L{None} when it passed).
        """
        backends = []
        for backend in self.pool.backends:
            state = self._states.get(backend)
            backends.append(
                {
                    "name": backend.name,
                    "url": backend.url,
                    "healthy": backend.healthy,
                    "draining": backend.draining,
                    "connections": backend.connections,
                    "weight": backend.weight,
                    "maxConnections": backend.maxConnections,
                    "lastCheck": state.lastCheck if state else None,
                    "reason": state.reason if state else None,
                }
            )
        return {
            "pool": self.pool.name,
            "active": self.config.type if self.config is not None else None,
            "backends": backends,
        }
