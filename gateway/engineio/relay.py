"""
Engine.IO sessions served by any node (L{EngineRelay}): a poll, a send or
an upgrade that reaches a node other than the one holding the session (its
I{owner}, which holds its Socket.IO server connection) is carried to the
owner over the nodes' channels (L{IEngineCluster}), and the owner's answer
back.

The messages, each C{kind|fields...} (the cluster prefixes C{E|}):

 - C{p|sid|node|id}: a poll from C{node}, answered C{a|id|status|k|body}
   (C{k}: C{p} a payload, C{o} the C{ok} of a send, C{j} a JSON error);
   C{g|sid|id}: that poll's client went away;
 - C{s|sid|node|id|body}: a send (the POST's body), answered likewise;
 - C{u|sid|node|ws}: a WebSocket upgrading the session from C{node},
   answered C{a|ws|...}; then C{w|sid|ws|n|payload} (its packets, in
   order C{n}) and C{c|sid|ws|n} (it closed) to the owner,
   C{W|ws|n|payload} (packets for it) and C{C|ws|n} (close it; C{C|ws|n|1001}
   when the owner is stopping) from it.

The channels are published to over a pool of connections, so messages of
one WebSocket carry a number and are put back in order on arrival.  A
request relayed and not answered within the route's C{pingInterval +
pingTimeout} is answered "Session ID unknown": its owner is gone, and the
client starts again.

On one node L{LocalEngines} is the null strategy: every session is here.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from ..errors import ProtocolError
from ..interfaces import IEngineCluster, IEngineTransport
from .engine import EngineRefusal
from .packets import UNKNOWN_SID, Packet, decodePayload, encodePayload, errorBody

if TYPE_CHECKING:
    from .engine import EngineSession

__all__ = ["LocalEngines", "EngineRelay", "RelayedEngine", "RemoteWebSocket"]

#: The content type of each kind of relayed answer.
_KINDS = {b"p": b"text/plain; charset=UTF-8", b"o": b"text/html", b"j": b"application/json"}

#: Messages of one relayed WebSocket that may arrive ahead of their turn.
MAX_OUT_OF_ORDER = 256


@implementer(IEngineCluster)
class LocalEngines:
    """
    One node: every session is held here, none is found elsewhere.
    """

    node = "local"
    sharesSessions = False

    def own(self, sid: str, ttl: float) -> Deferred:
        """
        Nothing to record.
        """
        return succeed(None)

    def owner(self, sid: str) -> Deferred:
        """
        @return: L{Deferred} firing with L{None}: no other node.
        """
        return succeed(None)

    def disown(self, sid: str) -> Deferred:
        """
        Nothing recorded.
        """
        return succeed(None)

    def send(self, node: str, message: bytes) -> Deferred:
        """
        No other node to send to.
        """
        return succeed(None)

    def listen(self, listener) -> None:
        """
        Nothing arrives.
        """


class _Sequence:
    """
    Puts the numbered messages of one relayed WebSocket back in order.
    """

    def __init__(self) -> None:
        self.next = 0
        self.ahead: dict[int, tuple] = {}

    def arrived(self, n: int, item: tuple) -> list[tuple] | None:
        """
        @return: the items now in order, or L{None} when too many are
            ahead (the relay is broken).
        """
        self.ahead[n] = item
        if len(self.ahead) > MAX_OUT_OF_ORDER:
            return None
        ready = []
        while self.next in self.ahead:
            ready.append(self.ahead.pop(self.next))
            self.next += 1
        return ready


@implementer(IEngineTransport)
class RemoteWebSocket:
    """
    On the owner: a WebSocket held by another node, as the session's
    transport.
    """

    kind = "websocket"

    def __init__(self, relay: EngineRelay, node: str, wsid: str, engine: EngineSession) -> None:
        self.relay = relay
        self.node = node
        self.wsid = wsid
        self.engine = engine
        self.sequence = _Sequence()
        self._sent = 0
        self.closed = False

    def _next(self) -> bytes:
        n, self._sent = self._sent, self._sent + 1
        return b"%d" % n

    def deliver(self, packets: list[Packet]) -> None:
        """
        Send C{packets} to the node that holds the WebSocket.
        """
        if not self.closed:
            self.relay.send(self.node, b"W|%s|%s|%s" % (self.wsid.encode(), self._next(),
                                                        encodePayload(packets)))

    def closeTransport(self) -> None:
        """
        Have that node close it (with 1001, going away, when this node
        stops).
        """
        if not self.closed:
            self.closed = True
            going = b"|1001" if self.relay.edge.stopping else b""
            self.relay.send(self.node, b"C|%s|%s%s" % (self.wsid.encode(), self._next(), going))
            self.relay.remote.pop(self.wsid, None)


class RelayedEngine:
    """
    On a node holding a WebSocket for a session held elsewhere: what the
    WebSocket tells its session, sent to the owner.

    @ivar transport: always L{None}: the WebSocket is never this node's
        session transport.
    """

    transport = None
    upstream = None

    def __init__(self, relay: EngineRelay, owner: str, sid: str, wsid: str) -> None:
        self.relay = relay
        self.owner = owner
        self.sid = sid
        self.wsid = wsid
        self.sequence = _Sequence()
        self._sent = 0

    def _send(self, kind: bytes, payload: bytes | None = None) -> None:
        n, self._sent = self._sent, self._sent + 1
        message = b"%s|%s|%s|%d" % (kind, self.sid.encode(), self.wsid.encode(), n)
        if payload is not None:
            message += b"|" + payload
        self.relay.send(self.owner, message)

    def fromWebSocket(self, websocket, packet: Packet) -> None:
        """
        A packet from the client: to the owner.
        """
        self._send(b"w", encodePayload([packet]))

    def brokenWebSocket(self, websocket) -> None:
        """
        The client broke the protocol: close, and tell the owner.
        """
        websocket.closeTransport()
        self.transportClosed(websocket)

    def upgradeFailed(self, websocket) -> None:
        """
        Nothing: the owner decides, and says so.
        """

    def transportClosed(self, websocket) -> None:
        """
        The WebSocket closed: tell the owner.
        """
        if self.relay.sockets.pop(self.wsid, None) is not None:
            self._send(b"c")


class EngineRelay:
    """
    Both ends of the requests relayed between nodes (see the module
    docstring).

    @ivar sockets: on a node holding WebSockets of sessions held elsewhere,
        those WebSockets by id (with their L{RelayedEngine}).
    @ivar remote: on an owner, the L{RemoteWebSocket}s of its sessions.
    """

    log = Logger()

    def __init__(self, edge, cluster: IEngineCluster, clock) -> None:
        """
        @param edge: the node's L{gateway.engineio.edge.EngineIOEdge}.
        """
        self.edge = edge
        self.cluster = cluster
        self.clock = clock
        self.sockets: dict[str, tuple] = {}
        self.remote: dict[str, RemoteWebSocket] = {}
        self._waiting: dict[str, tuple[Callable, object]] = {}
        self._polls: dict[str, tuple[Callable, EngineSession]] = {}
        cluster.listen(self.received)

    def send(self, node: str, message: bytes) -> None:
        """
        Send C{message} to C{node}, on its own (an outage is the map's to
        log; the request it carries times out).
        """
        self.cluster.send(node, message).addErrback(lambda f: None)

    # The node the client reached.
    def request(self, owner: str, build: Callable[[bytes], bytes], wait: float,
                answered: Callable[[int, bytes, bytes], None]) -> str:
        """
        Send a request to C{owner}; C{answered(status, contentType, body)}
        is called with its answer, or after C{wait} seconds with a 400
        "Session ID unknown".

        @param build: makes the request's message, given its id.
        @return: the request's id.
        """
        reqid = secrets.token_hex(8)
        timer = self.clock.callLater(wait, self._expired, reqid)
        self._waiting[reqid] = (answered, timer)
        self.send(owner, build(reqid.encode()))
        return reqid

    def forget(self, reqid: str) -> bool:
        """
        The request's client went away: stop waiting for it.

        @return: whether it was still waiting.
        """
        entry = self._waiting.pop(reqid, None)
        if entry is None:
            return False
        if entry[1].active():
            entry[1].cancel()
        return True

    def _expired(self, reqid: str) -> None:
        entry = self._waiting.pop(reqid, None)
        if entry is not None:
            entry[0](400, _KINDS[b"j"], errorBody(UNKNOWN_SID))

    def _answered(self, rest: bytes) -> None:
        reqid, status, kind, body = rest.split(b"|", 3)
        entry = self._waiting.pop(reqid.decode(), None)
        if entry is None:
            return
        answered, timer = entry
        if timer.active():
            timer.cancel()
        answered(int(status), _KINDS.get(kind, _KINDS[b"j"]), body)

    # The owner.
    def _reply(self, node: str, reqid: bytes, status: int, kind: bytes, body: bytes) -> None:
        self.send(node, b"a|%s|%d|%s|%s" % (reqid, status, kind, body))

    def _refused(self, node: str, reqid: bytes, e: EngineRefusal) -> None:
        self._reply(node, reqid, e.status, b"j", errorBody(e.code, str(e)))

    def _poll(self, rest: bytes) -> None:
        sid, node, reqid = rest.split(b"|", 2)
        nodeName = node.decode()
        try:
            engine = self.edge.find(sid.decode())
            packets = engine.poll()
        except EngineRefusal as e:
            self._refused(nodeName, reqid, e)
            return
        if packets is not None:
            self._reply(nodeName, reqid, 200, b"p", encodePayload(packets))
            return
        key = reqid.decode()

        def answer(packets: list[Packet]) -> None:
            self._polls.pop(key, None)
            self._reply(nodeName, reqid, 200, b"p", encodePayload(packets))

        self._polls[key] = (answer, engine)
        engine.transport.hold(answer)

    def _pollGone(self, rest: bytes) -> None:
        _, reqid = rest.split(b"|", 1)
        entry = self._polls.pop(reqid.decode(), None)
        if entry is not None:
            answer, engine = entry
            if engine.transport.kind == "polling":
                engine.transport.letGo(answer, engine)

    def _post(self, rest: bytes) -> None:
        sid, node, reqid, body = rest.split(b"|", 3)
        nodeName = node.decode()
        try:
            self.edge.polling.postBody(self.edge.find(sid.decode()), body)
        except EngineRefusal as e:
            self._refused(nodeName, reqid, e)
            return
        self._reply(nodeName, reqid, 200, b"o", b"ok")

    def _upgrade(self, rest: bytes) -> None:
        sid, node, wsid = rest.split(b"|", 2)
        nodeName, key = node.decode(), wsid.decode()
        try:
            engine = self.edge.find(sid.decode())
            remote = RemoteWebSocket(self, nodeName, key, engine)
            engine.upgradeStarted(remote)
        except EngineRefusal as e:
            self._refused(nodeName, wsid, e)
            return
        self.remote[key] = remote
        self._reply(nodeName, wsid, 200, b"o", b"")

    def _fromSocket(self, kind: bytes, rest: bytes) -> None:
        _, wsid, n, *payload = rest.split(b"|", 3)
        remote = self.remote.get(wsid.decode())
        if remote is None:
            return
        ready = remote.sequence.arrived(int(n), (kind, payload[0] if payload else b""))
        if ready is None:
            remote.engine.transportClosed(remote)
            remote.closeTransport()
            return
        for kind, payload in ready:
            if kind == b"c":
                self.remote.pop(remote.wsid, None)
                remote.closed = True
                remote.engine.transportClosed(remote)
                return
            try:
                packets = decodePayload(payload, 1)
            except ProtocolError:
                remote.engine.brokenWebSocket(remote)
                return
            for packet in packets:
                remote.engine.fromWebSocket(remote, packet)

    def _toSocket(self, kind: bytes, rest: bytes) -> None:
        wsid, n, *payload = rest.split(b"|", 2)
        entry = self.sockets.get(wsid.decode())
        if entry is None:
            return
        websocket, relayed = entry
        ready = relayed.sequence.arrived(int(n), (kind, payload[0] if payload else b""))
        if ready is None:
            websocket.closeTransport()
            return
        for kind, payload in ready:
            if kind == b"C":
                self.sockets.pop(relayed.wsid, None)
                websocket.closeTransport(int(payload) if payload else None)
                return
            websocket.deliver(decodePayload(payload, 1_000_000))

    def received(self, message: bytes) -> None:
        """
        A message from another node.
        """
        kind, _, rest = message.partition(b"|")
        try:
            if kind == b"a":
                self._answered(rest)
            elif kind == b"p":
                self._poll(rest)
            elif kind == b"g":
                self._pollGone(rest)
            elif kind == b"s":
                self._post(rest)
            elif kind == b"u":
                self._upgrade(rest)
            elif kind in (b"w", b"c"):
                self._fromSocket(kind, rest)
            elif kind in (b"W", b"C"):
                self._toSocket(kind, rest)
        except (ValueError, ProtocolError, UnicodeDecodeError):
            self.log.warn("an Engine.IO notice that cannot be read: {kind}", kind=kind)
