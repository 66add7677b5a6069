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
one WebSocket carry a number and are put back in order on arrival.

An owner that dies (killed, its machine gone) answers nothing more, and
its death is not announced: while anything relayed waits on another node
(a request, or a WebSocket carried for one of its sessions), the relaying
node looks at those nodes' liveness once per heartbeat (C{node_ttl / 3}),
one call per Redis shard however many wait (L{IEngineCluster.deadOwners}).
Once an owner's liveness key has expired (C{node_ttl} after its last
heartbeat), each request waiting on it is answered "Session ID unknown"
(400) and each WebSocket carried for it is closed with 1001 (going away),
so that the client starts again at once: within C{node_ttl} plus a
heartbeat of the death (2 to 4 s with the default C{node_ttl} of 3 s),
not a ping timeout later.  While Redis cannot be asked no owner is taken
for dead, and a request relayed and not answered within its wait (the
route's C{pingInterval + pingTimeout} for a poll, C{pingTimeout} for a
send, the handshake timeout for an upgrade) is answered "Session ID
unknown" all the same.

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

__all__ = ["LocalEngines", "EngineRelay", "OWNER_DIED", "RelayedEngine", "RemoteWebSocket"]

#: The content type of each kind of relayed answer.
_KINDS = {b"p": b"text/plain; charset=UTF-8", b"o": b"text/html", b"j": b"application/json"}

#: Messages of one relayed WebSocket that may arrive ahead of their turn.
MAX_OUT_OF_ORDER = 256

#: The close code of a WebSocket carried for a session whose owner died:
#: going away, as when the owner stops (see L{EngineRelay.ownersDied}).
OWNER_DIED = 1001

#: Dead owners remembered, so that each is logged once.
MAX_DEAD_REMEMBERED = 256


@implementer(IEngineCluster)
class LocalEngines:
    """
    One node: every session is held here, none is found elsewhere.
    """

    node = "local"
    sharesSessions = False
    #: Nothing is relayed, so nothing is ever looked at.
    heartbeat = 1.0

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

    def deadOwners(self, owners) -> Deferred:
        """
        @return: L{Deferred} firing with an empty set: no other node to die.
        """
        return succeed(set())


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
        if self.relay.release(self.wsid) is not None:
            self._send(b"c")


class _Pending:
    """
    A request relayed to C{owner} for session C{sid}, not answered yet.
    """

    __slots__ = ("owner", "sid", "answered", "timer")

    def __init__(self, owner: str, sid: str, answered: Callable[[int, bytes, bytes], None], timer) -> None:
        self.owner = owner
        self.sid = sid
        self.answered = answered
        self.timer = timer


class EngineRelay:
    """
    Both ends of the requests relayed between nodes (see the module
    docstring).

    @ivar sockets: on a node holding WebSockets of sessions held elsewhere,
        those WebSockets by id (with their L{RelayedEngine}); added with
        L{carry}, removed with L{release}.
    @ivar remote: on an owner, the L{RemoteWebSocket}s of its sessions.
    """

    log = Logger()

    def __init__(self, edge, cluster: IEngineCluster, clock) -> None:
        """
        @param edge: the node's L{gateway.engineio.edge.EngineIOEdge}.
        @param clock: the L{IReactorTime} of the requests' waits and of
            the looks at their owners' liveness.
        """
        self.edge = edge
        self.cluster = cluster
        self.clock = clock
        self.sockets: dict[str, tuple] = {}
        self.remote: dict[str, RemoteWebSocket] = {}
        self._waiting: dict[str, _Pending] = {}
        self._polls: dict[str, tuple[Callable, EngineSession]] = {}
        #: The next look at the owners' liveness, while something waits.
        self._watch = None
        #: Whether a look is under way.
        self._looking = False
        #: The owners found dead and logged, the oldest first.
        self._dead: dict[str, None] = {}
        cluster.listen(self.received)

    def send(self, node: str, message: bytes) -> None:
        """
        Send C{message} to C{node}, on its own (an outage is the map's to
        log; the request it carries times out).
        """
        self.cluster.send(node, message).addErrback(lambda f: None)

    # The node the client reached.
    def request(self, owner: str, sid: str, build: Callable[[bytes], bytes], wait: float,
                answered: Callable[[int, bytes, bytes], None]) -> str:
        """
        Send a request of session C{sid} to its owner C{owner};
        C{answered(status, contentType, body)} is called with its answer,
        or with a 400 "Session ID unknown" after C{wait} seconds or once
        C{owner} is found dead, whichever comes first.

        @param build: makes the request's message, given its id.
        @return: the request's id.
        """
        reqid = secrets.token_hex(8)
        timer = self.clock.callLater(wait, self._expired, reqid)
        self._waiting[reqid] = _Pending(owner, sid, answered, timer)
        self._watchOwners()
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
        if entry.timer.active():
            entry.timer.cancel()
        self._settle()
        return True

    def carry(self, websocket, relayed: RelayedEngine) -> None:
        """
        Carry C{websocket}, upgrading a session of another node, for
        C{relayed} (until L{release}d).
        """
        self.sockets[relayed.wsid] = (websocket, relayed)
        self._watchOwners()

    def release(self, wsid: str) -> tuple | None:
        """
        Carry WebSocket C{wsid} no more.

        @return: its C{(websocket, relayed)}, or L{None} when not carried.
        """
        entry = self.sockets.pop(wsid, None)
        self._settle()
        return entry

    def _expired(self, reqid: str) -> None:
        entry = self._waiting.pop(reqid, None)
        if entry is not None:
            if entry.timer.active():
                entry.timer.cancel()
            self._settle()
            entry.answered(400, _KINDS[b"j"], errorBody(UNKNOWN_SID))

    def _answered(self, rest: bytes) -> None:
        reqid, status, kind, body = rest.split(b"|", 3)
        entry = self._waiting.pop(reqid.decode(), None)
        if entry is None:
            return
        if entry.timer.active():
            entry.timer.cancel()
        if self._dead:
            self._dead.pop(entry.owner, None)  # it answers: it lives (again)
        self._settle()
        entry.answered(int(status), _KINDS.get(kind, _KINDS[b"j"]), body)

    # The owners' liveness, seen from the node the client reached.
    def _watchOwners(self) -> None:
        """
        Something waits on another node: look at its liveness one
        heartbeat from now, unless a look is already due or under way.
        """
        if self._watch is None and not self._looking:
            self._watch = self.clock.callLater(self.cluster.heartbeat, self._look)

    def _settle(self) -> None:
        """
        Once nothing waits on another node, no timer runs for it.
        """
        if self._watch is not None and not self._waiting and not self.sockets:
            if self._watch.active():
                self._watch.cancel()
            self._watch = None

    def _look(self) -> None:
        """
        Ask the cluster which of the owners waited on are dead (one call),
        then look again a heartbeat later while something still waits.
        """
        self._watch = None
        owners = {entry.sid: entry.owner for entry in self._waiting.values()}
        owners.update((relayed.sid, relayed.owner) for _, relayed in self.sockets.values())
        if not owners:
            return
        self._looking = True

        def looked(result) -> None:
            self._looking = False
            if self._waiting or self.sockets:
                self._watchOwners()

        d = self.cluster.deadOwners(owners)
        d.addCallback(self.ownersDied, owners)
        d.addErrback(lambda f: self.log.failure("looking at Socket.IO sessions' nodes failed", f))
        d.addBoth(looked)

    def ownersDied(self, dead: set[str], owners: dict[str, str]) -> None:
        """
        The owners of sessions C{dead} (of C{owners}, session id to node)
        have died: each request waiting on one is answered as its wait's
        end would be (400, "Session ID unknown"), and each WebSocket
        carried for one of their sessions is closed with L{OWNER_DIED}, so
        that the client starts a new session now.

        Why 1001 and a closing handshake: engine.io-client takes any close
        of its WebSocket for "transport close" (its C{onclose} handler,
        whatever the code), and socket.io-client's Manager then reconnects
        after its first reconnection delay (1 s +- 50%).  A Socket.IO
        C{DISCONNECT} would be "io server disconnect", after which the
        client does not reconnect by itself, and an Engine.IO close packet
        is read by engine.io-client over polling only (over WebSocket it is
        ignored), so neither is sent.  1001 is also what the client gets
        when the owner stops (C{C|ws|n|1001}): it sees the same whether its
        session's node stopped or died, and the clean close reports that
        code rather than an abnormal 1006.
        """
        gone = {(sid, owners[sid]) for sid in dead if sid in owners}
        if not gone:
            return
        counts: dict[str, list[int]] = {}
        for reqid, entry in list(self._waiting.items()):
            if (entry.sid, entry.owner) in gone and reqid in self._waiting:
                counts.setdefault(entry.owner, [0, 0])[0] += 1
                self._expired(reqid)
        for wsid, (websocket, relayed) in list(self.sockets.items()):
            if (relayed.sid, relayed.owner) in gone and self.release(wsid) is not None:
                counts.setdefault(relayed.owner, [0, 0])[1] += 1
                websocket.closeTransport(OWNER_DIED)
        for node, (requests, websockets) in sorted(counts.items()):
            if node in self._dead:
                continue
            self._dead[node] = None
            if len(self._dead) > MAX_DEAD_REMEMBERED:
                del self._dead[next(iter(self._dead))]
            self.log.warn("node {node}, holding Socket.IO sessions relayed here, is dead:"
                          " {requests} relayed requests answered \"Session ID unknown\","
                          " {websockets} relayed WebSockets closed", node=node, requests=requests,
                          websockets=websockets)

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
        if self._dead:
            self._dead.pop(relayed.owner, None)  # it speaks: it lives (again)
        ready = relayed.sequence.arrived(int(n), (kind, payload[0] if payload else b""))
        if ready is None:
            relayed.transportClosed(websocket)  # carried no more; its owner told
            websocket.closeTransport()
            return
        for kind, payload in ready:
            if kind == b"C":
                self.release(relayed.wsid)
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
