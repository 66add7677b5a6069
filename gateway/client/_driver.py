"""
The session client's Twisted adapter: a L{SessionDriver} runs one
L{SessionEngine <gateway.client._engine.SessionEngine>} over connections
that come and go, WebSocket or long-polling (docs/protocol.md).

The driver owns the current connection attempt and connection (a
L{ClientProtocol <gateway.client._websocket.ClientProtocol>} or a
L{PollingLink <gateway.client._polling.PollingLink>}, never both), the
upgrade under way, and every timer, on the injected L{IReactorTime}: the
bound on an attempt, the reconnect and upgrade delays, the bound on the end
of a close, and (through its L{Heartbeat <gateway.client._heartbeat.Heartbeat>})
the coalesced ack and the checks for silence.
The adapters report to it through the interfaces they are given
(L{IWebSocketOwner}, L{IPollingOwner}; upgrades report to its
L{Switcher <gateway.client._switch.Switcher>}); it hands their
packets to the engine, carries out the engine's decisions, and tells the
application (L{Listeners <gateway.client._listeners.Listeners>}).  Events
of a connection the driver has given up are ignored.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import ProtocolError
from ..interfaces import IPollingOwner, IWebSocketOwner
from ..wire.protocol import (
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    SUBPROTOCOL,
    Ack,
    Close,
    Data,
    Failover,
    Hello,
    Packet,
    Welcome,
    decodeMessage,
    encodeControl,
    encodeData,
)
from ._dialer import Dialer
from ._engine import POLLING, WEBSOCKET, CloseStep, Finish, SessionEngine
from ._heartbeat import Heartbeat
from ._switch import Switcher
from ._listeners import Listeners
from ._polling import Closed, PollingLink, Refused
from ._state import ClientState, StateDetail, shortId
from ._websocket import PACKET_OVERHEAD, ClientProtocol

__all__ = ["SessionDriver"]

_TIMERS = ("_attemptCall", "_closeCall")


def _oneLine(text: str) -> str:
    return " ".join(text.split())


@implementer(IWebSocketOwner, IPollingOwner)
class SessionDriver:
    """
    See the module docstring.

    @ivar attempt: the number of the current connection attempt; the
        connections of older ones are ignored.
    @ivar clock: the clock of every timer.
    @ivar closeTimeout: the bound on a WebSocket's closing handshake
        (C{connectTimeout}).
    """

    log = Logger()

    def __init__(
        self,
        engine: SessionEngine,
        listeners: Listeners,
        dialer: Dialer,
        clock: IReactorTime,
        *,
        connectTimeout: float,
        upgradeTimeout: float,
    ) -> None:
        self._engine = engine
        self._listeners = listeners
        self._dialer = dialer
        self.clock = clock
        self._connectTimeout = connectTimeout
        self._factory = dialer.webSocketFactory(self)
        self._incomingLimit = engine.maxMessageBytes + PACKET_OVERHEAD

        self.attempt = 0
        self._connecting: Any = None
        self._proto: ClientProtocol | None = None
        self._poller: PollingLink | None = None
        self._reconnectCall: IDelayedCall | None = None
        self._attemptCall: IDelayedCall | None = None
        self._heartbeat = Heartbeat(engine, clock, self._sendPacket, self._dropConnection)
        self._closeCall: IDelayedCall | None = None
        self._switcher = Switcher(
            engine, dialer, clock, upgradeTimeout, link=lambda: self._poller, switch=self._switchTo,
            scheduled=listeners.upgradeScheduled,
        )

    @property
    def closeTimeout(self) -> float:
        """
        See L{IWebSocketOwner}: C{connectTimeout}.
        """
        return self._connectTimeout

    @property
    def upgradeUnderWay(self) -> bool:
        """
        An upgrade to WebSocket is probing, or waits to switch.
        """
        return self._switcher.underWay

    # ------------------------------------------------------------------
    # What the client asks for.

    def connectNow(self) -> None:
        """
        Make the next connection attempt, on the next attempt's transport.
        """
        engine = self._engine
        self._reconnectCall = None
        self.attempt += 1
        attempt = self.attempt
        engine.transport = engine.nextTransport
        self._attemptCall = self.clock.callLater(
            self._connectTimeout, self._attemptTimedOut, attempt
        )
        if engine.transport == POLLING:
            self.log.debug("long-polling {url}", url=self._dialer.pollURL)
            self._poller = self._dialer.pollingLink(
                self, lambda: self._engine.inbox.accepted, engine.requestTimeout
            )
            self._poller.open(engine.hello())
            return
        self.log.debug("connecting to {url}", url=self._dialer.wsURL)
        d = self._connecting = self._dialer.connectWebSocket(self._factory)
        d.addCallbacks(
            self._tcpConnected, self._tcpFailed, callbackArgs=(attempt,), errbackArgs=(attempt,)
        )
        d.addErrback(self._logFailure, "while connecting")

    def send(self, message: Data) -> None:
        """
        Send an application message now, if the session is open here.
        """
        if self._engine.welcomed:
            self._sendPacket(message)

    def close(self) -> None:
        """
        The application asked to close (the engine is C{closing}).
        """
        self.log.info("closing session {sid}", sid=shortId(self._engine.sid))
        self._switcher.cancel()
        if not self._engine.started and len(self._engine.outbox):
            # Messages wait for a session: open one to deliver them.
            self._engine.started = True
            self.connectNow()
        self._maybeFinishClose()

    # ------------------------------------------------------------------
    # Connecting.

    def _tcpConnected(self, proto: ClientProtocol, attempt: int) -> None:
        if attempt == self.attempt:
            self._connecting = None

    def _tcpFailed(self, failure: Failure, attempt: int) -> None:
        if attempt != self.attempt:
            return  # given up already (timed out, or closed)
        self._connecting = None
        self._detach()
        self._lost(None, None, _oneLine(failure.getErrorMessage()))

    def _attemptTimedOut(self, attempt: int) -> None:
        self._attemptCall = None
        if attempt == self.attempt:
            self._dropConnection(f"no welcome within {self._connectTimeout:g} s")

    # IWebSocketOwner.

    def webSocketConnected(self, proto: ClientProtocol) -> None:
        """
        Keep the connection of the current attempt; drop any other.
        """
        if proto.attempt != self.attempt or self._engine.state is ClientState.closed:
            proto.transport.abortConnection()
            return
        self._proto = proto

    def webSocketOpened(self, proto: ClientProtocol) -> None:
        """
        Send the hello, if the gateway speaks C{txgateway.v1}.
        """
        if proto is not self._proto:
            proto.closeWith(1000)
            return
        if proto.selected != SUBPROTOCOL:
            error = f"the gateway did not select the {SUBPROTOCOL} subprotocol"
            if not self._engine.everOpened:
                proto.closeWith(1000, error)
                self._detach()
                self.finish(self._engine.closedDetail(error=error))
            else:
                self._dropConnection(error, closeCode=1000)
            return
        self._engine.lastReceived = self.clock.seconds()
        self._sendPacket(self._engine.hello())

    def webSocketActivity(self, proto: ClientProtocol) -> None:
        """
        A ping: the gateway is alive.
        """
        if proto is self._proto:
            self._engine.lastReceived = self.clock.seconds()

    def webSocketMessage(self, proto: ClientProtocol, payload: bytes, isBinary: bool) -> None:
        """
        One packet.
        """
        if proto is not self._proto:
            return
        self._engine.lastReceived = self.clock.seconds()
        try:
            self._packetReceived(decodeMessage(payload, isBinary))
        except ProtocolError as e:
            self._protocolError(e)

    def webSocketClosed(self, proto: ClientProtocol, code: int | None, reason: str | None) -> None:
        """
        The WebSocket is gone: say why, and decide what next.
        """
        if proto is not self._proto:
            return
        self._detach()
        localCode = proto.closeCodeSent()
        status = proto.handshakeStatus()
        if not proto.opened and status is not None and status != 101:
            error = f"the gateway answered HTTP {status}"
            if self._engine.handshakeRefusalIsFinal(status):
                self.finish(self._engine.closedDetail(error=error))
            else:
                self._lost(None, None, error)
            return
        error = None
        if not proto.opened:
            why = proto.failureReason()
            error = "the opening handshake failed" + (f": {_oneLine(why)}" if why else "")
        elif code == 1006:
            error = "connection lost"
        self._lost(code, reason, error, localCode=localCode)

    # IPollingOwner.

    def pollAnswered(
        self, link: PollingLink, packets: list[Packet | Closed], opening: bool
    ) -> None:
        """
        The packets of one answer, in order.  An answer, even an empty one,
        shows that the gateway is alive.
        """
        if link is not self._poller:
            return
        engine = self._engine
        engine.lastReceived = self.clock.seconds()
        limit = self._incomingLimit
        try:
            first = packets[0] if packets else None
            if opening and not isinstance(first, (Welcome, Closed)):
                raise ProtocolError("the answer to open does not start with welcome")
            for packet in packets:
                if link is not self._poller:
                    return  # the link ended (a close code, an error, the application)
                if isinstance(packet, Closed):
                    self.pollLost(link, packet.code, packet.reason, None)
                    return
                if isinstance(packet, Data) and len(packet.payload) > limit:
                    self.pollLost(
                        link, CLOSE_TOO_BIG, None,
                        f"a message larger than this client accepts ({limit} bytes) (1009)",
                    )
                    return
                self._packetReceived(packet)
        except ProtocolError as e:
            self._protocolError(e)
            return
        if opening and link is self._poller and engine.welcomed:
            assert engine.sid is not None and engine.secret is not None
            link.start(engine.sid, engine.secret)
            self._switcher.schedule()

    def pollRefused(self, link: PollingLink, refusal: Refused) -> None:
        """
        The gateway answered an HTTP error: its session code counts as a
        WebSocket close code would; without one, the HTTP status counts as
        an answer to a WebSocket handshake would.
        """
        if link is not self._poller:
            return
        if refusal.code is not None:
            if refusal.code == CLOSE_TOO_BIG:
                error = "a message was larger than the gateway accepts (HTTP 413, 1009)"
                self.pollLost(link, refusal.code, refusal.reason, error)
            else:
                self.pollLost(link, refusal.code, refusal.reason, None)
            return
        self._detach()
        error = f"the gateway answered HTTP {refusal.status}"
        if self._engine.handshakeRefusalIsFinal(refusal.status, polling=True):
            self.finish(self._engine.closedDetail(error=error))
        else:
            self._lost(None, None, error)

    def pollLost(
        self, link: PollingLink, code: int | None, reason: str | None, error: str | None
    ) -> None:
        """
        The link is gone: closed by the gateway with C{code}, failed
        (C{error}), or drained after the gateway's C{close}.
        """
        if link is not self._poller:
            return
        self._detach()
        if code is None and error is None:
            error = "connection closed"
        self._lost(code, reason, error)

    def pollIdle(self, link: PollingLink) -> None:
        """
        The paused link has nothing outstanding: the upgrade may switch.
        """
        self._switcher.linkIdle(link)

    # ------------------------------------------------------------------
    # Packets.

    def _packetReceived(self, packet: Packet) -> None:
        """
        Act on one packet from the gateway, whatever its transport.

        @raise ProtocolError: for a packet the gateway should not have sent.
        """
        engine = self._engine
        if isinstance(packet, Data):
            payload = engine.dataReceived(packet)
            if self._poller is None:  # (on long-polling the next poll carries the ack)
                self._heartbeat.scheduleAck()  # duplicates are acknowledged too
            if payload is not None:
                self._listeners.message(payload, packet.isBinary)
        elif isinstance(packet, Ack):
            engine.ackReceived(packet)
            self._listeners.acknowledged(engine.outbox.acked)
            self._maybeFinishClose()
        elif isinstance(packet, Welcome):
            self._welcomeReceived(packet)
        elif isinstance(packet, Close):
            engine.closeReceived(packet)
            self._switcher.cancel()
            self._heartbeat.sendAck()
            if self._proto is not None:
                self._proto.closeWith(1000, "session ended")
            elif self._poller is not None:
                # Acknowledge everything, then end the link.
                self._poller.drain()
        elif isinstance(packet, Failover):
            self._listeners.failover(packet.first, packet.last)
        else:
            raise ProtocolError(f"the gateway sent a {type(packet).__name__.lower()} packet")

    def _protocolError(self, error: ProtocolError) -> None:
        self.log.warn(
            "protocol error from the gateway on session {sid}: {error}",
            sid=shortId(self._engine.sid),
            error=str(error),
        )
        self._dropConnection(f"protocol error: {error}", closeCode=CLOSE_PROTOCOL_ERROR)

    def _welcomeReceived(self, welcome: Welcome) -> None:
        engine = self._engine
        resumed = engine.resumes(welcome)
        if engine.sid is not None and not resumed:
            # A new session instead of the one asked for.
            self._listeners.sessionLost(engine.loseSession(None, "the gateway started a new session"))
            if engine.state is ClientState.closed:
                return  # (the application closed when told)
        detail = engine.welcome(welcome, resumed, polling=self._poller is not None)
        self._cancelTimer("_attemptCall")
        for message in list(engine.outbox.unacknowledged()):
            self._sendPacket(message)
        engine.lastSent = self.clock.seconds()
        if self._proto is not None:
            # (Long-polling bounds each request instead: the outstanding poll
            # is the client's heartbeat.)
            self._heartbeat.start()
        self._listeners.acknowledged(engine.outbox.acked)
        self.setState(ClientState.open, detail)
        if engine.state is ClientState.open:
            self._listeners.connected()
            self._maybeFinishClose()

    # ------------------------------------------------------------------
    # Sending.

    def _sendPacket(self, packet: Data | Ack | Close | Hello) -> None:
        """
        Send a packet on the current connection: a WebSocket message, or
        the long-polling link's next send.
        """
        proto = self._proto
        if proto is not None:
            if proto.state == proto.STATE_OPEN:
                if isinstance(packet, Data):
                    proto.sendMessage(encodeData(packet.seq, packet.payload), packet.isBinary)
                else:
                    proto.sendMessage(encodeControl(packet), False)
                self._engine.lastSent = self.clock.seconds()
        elif self._poller is not None and not isinstance(packet, Hello):
            self._poller.write(packet)

    # ------------------------------------------------------------------
    # Losing connections and sessions.

    def _detach(self) -> ClientProtocol | None:
        """
        Forget the current attempt and connection: their events are ignored
        from now on.
        """
        proto, self._proto = self._proto, None
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
        self._switcher.stop()
        self.attempt += 1
        self._engine.detached()
        self._heartbeat.stop()
        for name in _TIMERS:
            self._cancelTimer(name)
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        return proto

    def _dropConnection(self, error: str, closeCode: int | None = None) -> None:
        """
        Give up the current connection (closing it with C{closeCode}, or
        dropping it) and resume on a new one.
        """
        proto = self._detach()
        if proto is not None:
            if closeCode is None:
                proto.transport.abortConnection()
            else:
                proto.closeWith(closeCode, error)
        self._lost(None, None, error)

    def _lost(
        self,
        code: int | None,
        reason: str | None,
        error: str | None,
        localCode: int | None = None,
    ) -> None:
        """
        The connection is gone (already detached): carry out the engine's
        decision.
        """
        decision = self._engine.lost(code, reason, error, localCode)
        if decision is None:
            return
        if isinstance(decision, Finish):
            self.finish(decision.detail)
            return
        if decision.dropped is not None:
            self._listeners.sessionLost(decision.dropped)
            if self._engine.state is ClientState.closed:
                return  # (the application closed when told)
        delay = self._engine.backoff.next()
        self._reconnectCall = self.clock.callLater(delay, self.connectNow)
        detail = decision.detail
        self.log.info(
            "session {sid}: {why}; reconnecting in {delay:.3f} s",
            sid=shortId(self._engine.sid),
            why=(detail.error if detail is not None and detail.error else "connection lost"),
            delay=delay,
        )
        self.setState(ClientState.reconnecting, self._engine.reconnecting(detail, delay))

    # ------------------------------------------------------------------
    # Moving from long-polling to WebSocket (see Switcher).

    def _switchTo(self, proto: ClientProtocol) -> None:
        """
        Long-polling is quiet: leave it, and resume on the probed WebSocket.
        """
        engine = self._engine
        self._detach()
        self._dialer.closePool()
        engine.transport = engine.nextTransport = WEBSOCKET
        engine.upgrading = True
        if proto.state != proto.STATE_OPEN:
            proto.closeWith(1000)
            self._lost(None, None, "the WebSocket closed during the upgrade")
            return
        proto.transferTo(self, self.attempt)
        self._proto = proto
        self.log.info("session {sid}: moving to WebSocket", sid=shortId(engine.sid))
        self._attemptCall = self.clock.callLater(
            self._connectTimeout, self._attemptTimedOut, self.attempt
        )
        engine.lastReceived = self.clock.seconds()
        self._sendPacket(engine.hello())

    # ------------------------------------------------------------------
    # Closing.

    def _maybeFinishClose(self) -> None:
        step = self._engine.closeStep()
        if step == CloseStep.FINISH:
            self.finish(StateDetail())
        elif step == CloseStep.SEND:
            self._sendPacket(Close(1000, ""))
            self._closeCall = self.clock.callLater(self._connectTimeout, self._closeTimedOut)

    def _closeTimedOut(self) -> None:
        self._closeCall = None
        self._dropConnection(f"the gateway did not end the session within {self._connectTimeout:g} s")

    def finish(self, detail: StateDetail) -> None:
        """
        Stop for good: state C{closed} with C{detail}.
        """
        engine = self._engine
        if engine.state is ClientState.closed:
            return
        engine.closing = True
        proto = self._detach()
        if proto is not None:
            proto.closeWith(1000, "client closed")
        self._cancelTimer("_reconnectCall")
        self._dialer.closePool()
        if detail.error:
            self.log.warn("session {sid} closed: {error}", sid=shortId(engine.sid), error=detail.error)
        else:
            self.log.info("session {sid} closed", sid=shortId(engine.sid))
        self.setState(ClientState.closed, detail)
        self._listeners.closed(engine.detail)

    # ------------------------------------------------------------------
    # Helpers.

    def setState(self, state: ClientState, detail: StateDetail) -> None:
        """
        Enter C{state} and tell the application (unless the application
        closed the client meanwhile: nothing leaves C{closed}).
        """
        if not self._engine.state.mayBecome(state):
            return
        self._listeners.stateChanged(state, self._engine.enter(state, detail))

    def _cancelTimer(self, name: str) -> None:
        call = getattr(self, name)
        if call is not None:
            setattr(self, name, None)
            if call.active():
                call.cancel()

    def _logFailure(self, failure: Failure, what: str) -> None:
        self.log.failure("unexpected error {what}", failure, what=what)
