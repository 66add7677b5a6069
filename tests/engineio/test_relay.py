"""
Engine.IO requests relayed between nodes (gateway.engineio.relay), with a
fake cluster carrying messages between two relays in memory.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.cluster.engines import SharedEngines
from gateway.engineio.engine import EngineSession, EngineSettings, EngineState
from gateway.engineio.packets import Packet, PacketType
from gateway.engineio.polling import EnginePolling, PollingTransport
from gateway.engineio.relay import EngineRelay, LocalEngines, RelayedEngine, _Sequence
from gateway.interfaces import IEngineCluster

from .fakes import FakeTransport, FakeUpstream


class FakeNode:
    """
    What L{SharedEngines} needs of a cluster node.
    """

    node = "n1"
    shared = None

    def listenEngines(self, listener):
        self.listener = listener


def test_strategies() -> None:
    """
    Both strategies provide L{IEngineCluster}.
    """
    assert verifyObject(IEngineCluster, LocalEngines())
    assert verifyObject(IEngineCluster, SharedEngines(FakeNode()))


def test_sequenceReorders() -> None:
    """
    Numbered messages come out in order, whatever order they arrive in;
    too many ahead of their turn is a broken relay.
    """
    sequence = _Sequence()
    assert sequence.arrived(1, ("b",)) == []
    assert sequence.arrived(0, ("a",)) == [("a",), ("b",)]
    assert sequence.arrived(2, ("c",)) == [("c",)]
    broken = _Sequence()
    results = [broken.arrived(n, ("x",)) for n in range(1, 300)]
    assert results[-1] is None


@implementer(IEngineCluster)
class Wire:
    """
    Two nodes' channels, in memory, delivering out of order on request.
    """

    sharesSessions = True

    def __init__(self, node: str, peers: dict) -> None:
        self.node = node
        self.peers = peers
        self.listener = None
        self.swap = False
        self._held = None

    def own(self, sid, ttl):
        return None

    def owner(self, sid):
        return None

    def disown(self, sid):
        return None

    def send(self, node, message):
        from twisted.internet.defer import succeed

        if self.swap and self._held is None:
            self.swap = False
            self._held = (node, message)
            return succeed(None)
        self.peers[node].listener(message)
        if self._held is not None:
            held, self._held = self._held, None
            self.peers[held[0]].listener(held[1])
        return succeed(None)

    def listen(self, listener):
        self.listener = listener


class Edge:
    """
    What the relay needs of an edge.
    """

    stopping = False

    def __init__(self) -> None:
        self.sessions: dict[str, EngineSession] = {}
        self.polling = EnginePolling(self)

    def find(self, sid):
        from gateway.engineio.engine import EngineRefusal

        if sid not in self.sessions:
            raise EngineRefusal(1, "Session ID unknown")
        return self.sessions[sid]


def relays():
    """
    @return: the owner's relay, its edge and session, the other node's relay
        and its wire.
    """
    peers: dict = {}
    clock = Clock()
    owner, other = Wire("a", peers), Wire("b", peers)
    peers.update(a=owner, b=other)
    edge = Edge()
    engine = EngineSession("sid", EngineSettings(), clock, PollingTransport(), lambda e: None)
    engine.start(FakeUpstream())
    edge.sessions["sid"] = engine
    return EngineRelay(edge, owner, clock), edge, engine, EngineRelay(Edge(), other, clock), other, clock


def test_relayedPollAndSend() -> None:
    """
    A send relayed to the owner is answered C{ok} once taken; a poll
    relayed there is held, and answered with the next message.
    """
    _, _, engine, relay, _, _ = relays()
    answers = []
    relay.request("a", lambda i: b"s|sid|b|" + i + b"|4hello", 5, lambda *a: answers.append(a))
    assert engine.upstream.messages == ["hello"]
    assert answers == [(200, b"text/html", b"ok")]
    relay.request("a", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert len(answers) == 1  # held
    engine.send("back")
    assert answers[1] == (200, b"text/plain; charset=UTF-8", b"4back")


def test_relayedPollsAfterServerClose() -> None:
    """
    The server's DISCONNECT and its end reach the owner while the client's
    next poll is on its way from the other node: that poll is answered with
    the DISCONNECT alone, the one after it with the close packet, and the
    session ends.
    """
    _, _, engine, relay, _, _ = relays()
    engine.send("1")
    engine.close("the Socket.IO server connection closed")
    answers = []
    relay.request("a", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers == [(200, b"text/plain; charset=UTF-8", b"41")]
    relay.request("a", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[1] == (200, b"text/plain; charset=UTF-8", b"1")
    assert engine.state is EngineState.CLOSED


def test_relayedRefusalAndTimeout() -> None:
    """
    A relayed request for a session the owner does not have gets its
    refusal; one never answered gets "Session ID unknown" after its wait.
    """
    _, _, _, relay, _, clock = relays()
    answers = []
    relay.request("a", lambda i: b"p|other|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[0][0] == 400 and b'"code":1' in answers[0][2]
    relay.request("b", lambda i: b"x|" + i, 5, lambda *a: answers.append(a))  # nobody answers
    clock.advance(5)
    assert answers[1][0] == 400


def test_relayedUpgradeInOrder() -> None:
    """
    An upgrade through the other node: the probe, C{5}, then messages, in
    order even when the channel delivers two out of order.
    """
    _, _, engine, relay, wire, _ = relays()
    answers = []
    wsid = relay.request("a", lambda i: b"u|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[0][0] == 200
    socket = FakeTransport("websocket")
    relayed = RelayedEngine(relay, "a", "sid", wsid)
    relay.sockets[wsid] = (socket, relayed)
    relayed.fromWebSocket(socket, Packet(PacketType.PING, "probe"))
    assert socket.delivered == [[Packet(PacketType.PONG, "probe")]]
    relayed.fromWebSocket(socket, Packet(PacketType.UPGRADE))
    assert engine.kind == "websocket"
    wire.swap = True  # the next two arrive swapped
    relayed.fromWebSocket(socket, Packet(PacketType.MESSAGE, "one"))
    relayed.fromWebSocket(socket, Packet(PacketType.MESSAGE, "two"))
    assert engine.upstream.messages == ["one", "two"]
    relayed.transportClosed(socket)
    assert engine.closeReason == "transport close"


def test_stoppingOwnerClosesRelayedWebSocketGoingAway() -> None:
    """
    A session upgraded through the other node, closed while its owner
    stops: the other node closes the client's WebSocket with 1001 (going
    away); closed otherwise, with its default code.
    """
    for stopping, code in ((True, 1001), (False, None)):
        _, edge, engine, relay, _, _ = relays()
        wsid = relay.request("a", lambda i: b"u|sid|b|" + i, 5, lambda *a: None)
        socket = FakeTransport("websocket")
        relayed = RelayedEngine(relay, "a", "sid", wsid)
        relay.sockets[wsid] = (socket, relayed)
        relayed.fromWebSocket(socket, Packet(PacketType.PING, "probe"))
        relayed.fromWebSocket(socket, Packet(PacketType.UPGRADE))
        edge.stopping = stopping
        engine.close("the gateway is shutting down")
        assert (socket.closed, socket.closeCode) == (True, code)
        assert wsid not in relay.sockets
