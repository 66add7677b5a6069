"""
One attempt to move a session from long-polling to a WebSocket
(docs/protocol.md, "Switching transports"): open a WebSocket, send the
probing C{hello}, and wait for C{{"t":"probe"}} within C{upgradeTimeout}.

L{Upgrade} owns its WebSocket until the session's driver takes it over
(L{Upgrade.handOver}); until then it receives the connection's events in
place of the driver: it is an L{IWebSocketOwner
<gateway.interfaces.IWebSocketOwner>}, the C{owner} of its
L{ClientFactory}.  It reports to its own owner, an L{IUpgradeOwner
<gateway.interfaces.IUpgradeOwner>}: C{upgradeProbed} once the round trip is
verified, C{upgradeFailed} when anything else happens first.  The owner
decides when to switch: after its outstanding poll has ended.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import ProtocolError
from ..interfaces import IUpgradeOwner, IWebSocketOwner
from ..wire.protocol import SUBPROTOCOL, Hello, Probe, decodeMessage, encodeControl
from ._websocket import ClientFactory, ClientProtocol

__all__ = ["Upgrade"]


@implementer(IWebSocketOwner)
class Upgrade:
    """
    See the module docstring.

    @ivar owner: the L{IUpgradeOwner} told how the upgrade went.
    @ivar probed: the probe came back; the WebSocket is ready for the
        resume C{hello}.
    @ivar proto: the WebSocket, once connected.
    @ivar clock: the clock of the probe's timers (the WebSocket's too).
    @ivar timeout: the bound on connecting, the opening handshake and the
        probe's round trip.
    """

    log = Logger()

    #: Tags this owner's connections (see L{ClientFactory.buildProtocol}).
    attempt = 0

    def __init__(
        self,
        owner: IUpgradeOwner,
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
        self.owner = owner
        self._endpoint = endpoint
        self._factory = makeFactory(self)
        self.clock = clock
        self.timeout = timeout
        self._hello = hello
        self.proto: ClientProtocol | None = None
        self.probed = False
        self._done = False
        self._connecting: Deferred | None = None
        self._timer: IDelayedCall | None = None

    @property
    def closeTimeout(self) -> float:
        """
        The bound on the probe WebSocket's closing handshake: the upgrade's
        C{timeout}.
        """
        return self.timeout

    def start(self) -> None:
        """
        Connect, and start the clock on the round trip.
        """
        self._timer = self.clock.callLater(self.timeout, self._timedOut)
        d = self._connecting = self._endpoint.connect(self._factory)
        d.addCallbacks(self._tcpConnected, self._tcpFailed)
        d.addErrback(
            lambda f: self.log.failure("unexpected error while probing", f)
        )

    def cancel(self) -> None:
        """
        Give up: close the WebSocket; the owner hears nothing more.
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
        The owner takes the WebSocket over (it calls
        L{ClientProtocol.transferTo}): this upgrade hears nothing more.
        """
        assert self.probed and self.proto is not None
        self._done = True
        self._stopTimer()
        return self.proto

    # ------------------------------------------------------------------
    # IWebSocketOwner: the WebSocket's events (see ClientProtocol).

    def _tcpConnected(self, proto: ClientProtocol) -> None:
        self._connecting = None

    def _tcpFailed(self, failure: Failure) -> None:
        self._connecting = None
        self._fail(" ".join(failure.getErrorMessage().split()) or "connect failed")

    def webSocketConnected(self, proto: ClientProtocol) -> None:
        """
        Keep the first connection; drop any other.
        """
        if self._done or self.proto is not None:
            proto.transport.abortConnection()
            return
        self.proto = proto

    def webSocketOpened(self, proto: ClientProtocol) -> None:
        """
        Send the probing C{hello}, if the gateway speaks C{txgateway.v1}.
        """
        if proto is not self.proto or self._done:
            proto.closeWith(1000)
            return
        if proto.selected != SUBPROTOCOL:
            self._fail(f"the gateway did not select the {SUBPROTOCOL} subprotocol")
            return
        proto.sendMessage(encodeControl(self._hello), False)

    def webSocketMessage(self, proto: ClientProtocol, payload: bytes, isBinary: bool) -> None:
        """
        The probe answer, or anything else: a failure.
        """
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
            self.owner.upgradeProbed(self)
        else:
            self._fail(f"unexpected {type(packet).__name__.lower()} packet")

    def webSocketActivity(self, proto: ClientProtocol) -> None:
        """
        Pings change nothing: only the probe answer counts.
        """

    def webSocketClosed(self, proto: ClientProtocol, code: int | None, reason: str | None) -> None:
        """
        The WebSocket went before the upgrade was done: a failure.
        """
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
        self._fail(f"no probe answer within {self.timeout:g} s")

    def _fail(self, why: str) -> None:
        if self._done:
            return
        self.cancel()
        self.owner.upgradeFailed(self, why)

    def _stopTimer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
