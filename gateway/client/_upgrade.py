"""
One attempt to move a session from long-polling to a WebSocket
(docs/protocol.md, "Switching transports"): open a WebSocket, send the
probing C{hello}, and wait for C{{"t":"probe"}} within C{upgradeTimeout}.

L{Upgrade} owns its WebSocket until the session takes it over
(L{Upgrade.handOver}); until then it receives the connection's events in
place of the session (it is the C{session} of its L{ClientFactory}).  It
tells the session C{_upgradeProbed} once the round trip is verified, and
C{_upgradeFailed} when anything else happens first.  The session decides
when to switch: after its outstanding poll has ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import ProtocolError
from ..wire.protocol import SUBPROTOCOL, Hello, Probe, decodeMessage, encodeControl
from ._websocket import ClientFactory, ClientProtocol

if TYPE_CHECKING:
    from ._session import SessionClient

__all__ = ["Upgrade"]


class Upgrade:
    """
    See the module docstring.

    @ivar probed: the probe came back; the WebSocket is ready for the
        resume C{hello}.
    @ivar proto: the WebSocket, once connected.
    """

    log = Logger()

    #: Tags this owner's connections (see L{ClientFactory.buildProtocol}).
    _attempt = 0

    def __init__(
        self,
        session: SessionClient,
        endpoint: IStreamClientEndpoint,
        makeFactory: Callable[[Any], ClientFactory],
        clock: IReactorTime,
        timeout: float,
        hello: Hello,
    ) -> None:
        """
        @param makeFactory: C{makeFactory(owner)} builds the factory of a
            WebSocket whose events go to C{owner} (this upgrade).
        @param timeout: bound on connecting, the opening handshake and the
            probe's round trip.
        @param hello: the probing hello.
        """
        self.session = session
        self._endpoint = endpoint
        self._factory = makeFactory(self)
        self._clock = clock
        self._connectTimeout = timeout
        self._hello = hello
        self.proto: ClientProtocol | None = None
        self.probed = False
        self._done = False
        self._connecting: Deferred | None = None
        self._timer: IDelayedCall | None = None

    def start(self) -> None:
        """
        Connect, and start the clock on the round trip.
        """
        self._timer = self._clock.callLater(self._connectTimeout, self._timedOut)
        d = self._connecting = self._endpoint.connect(self._factory)
        d.addCallbacks(self._tcpConnected, self._tcpFailed)
        d.addErrback(
            lambda f: self.log.failure("unexpected error while probing", f)
        )

    def cancel(self) -> None:
        """
        Give up: close the WebSocket; the session hears nothing more.
        """
        if self._done:
            return
        self._done = True
        self._stopTimer()
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        if self.proto is not None:
            self.proto.closeWith(1000, "upgrade abandoned")

    def handOver(self) -> ClientProtocol:
        """
        The session takes the WebSocket over: its events go to the session
        from now on.
        """
        assert self.probed and self.proto is not None
        self._done = True
        self._stopTimer()
        return self.proto

    # ------------------------------------------------------------------
    # The WebSocket's events (see ClientProtocol).

    def _tcpConnected(self, proto: ClientProtocol) -> None:
        self._connecting = None

    def _tcpFailed(self, failure: Failure) -> None:
        self._connecting = None
        self._fail(" ".join(failure.getErrorMessage().split()) or "connect failed")

    def _wsConnected(self, proto: ClientProtocol) -> None:
        if self._done or self.proto is not None:
            proto.transport.abortConnection()
            return
        self.proto = proto

    def _wsOpen(self, proto: ClientProtocol) -> None:
        if proto is not self.proto or self._done:
            proto.closeWith(1000)
            return
        if proto.selected != SUBPROTOCOL:
            self._fail(f"the gateway did not select the {SUBPROTOCOL} subprotocol")
            return
        proto.sendMessage(encodeControl(self._hello), False)

    def _wsMessage(self, proto: ClientProtocol, payload: bytes, isBinary: bool) -> None:
        if proto is not self.proto or self._done:
            return
        try:
            packet = decodeMessage(payload, isBinary)
        except ProtocolError as e:
            self._fail(f"protocol error: {e}")
            return
        if isinstance(packet, Probe) and not self.probed:
            self.probed = True
            self._stopTimer()
            self.session._upgradeProbed(self)
        else:
            self._fail(f"unexpected {type(packet).__name__.lower()} packet")

    def _wsActivity(self, proto: ClientProtocol) -> None:
        pass

    def _wsClosed(self, proto: ClientProtocol, code: int | None, reason: str | None) -> None:
        if proto is not self.proto:
            return
        self.proto = None
        status = proto.handshakeStatus()
        if not proto.opened and status is not None and status != 101:
            self._fail(f"the gateway answered HTTP {status}")
        else:
            self._fail(f"the WebSocket closed ({code})" + (f": {reason}" if reason else ""))

    # ------------------------------------------------------------------

    def _timedOut(self) -> None:
        self._timer = None
        self._fail(f"no probe answer within {self._connectTimeout:g} s")

    def _fail(self, why: str) -> None:
        if self._done:
            return
        self.cancel()
        self.session._upgradeFailed(self, why)

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
