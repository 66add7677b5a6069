"""
Engine.IO requests relayed between nodes (gateway.engineio.relay), with a
fake cluster carrying messages between two relays in memory.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gateway.cluster.engines import SharedEngines
from gateway.engineio.engine import EngineSession, EngineSettings, EngineState
from gateway.engineio.packets import Packet, PacketType
from gateway.engineio.polling import EnginePolling, PollingTransport
from gateway.engineio.relay import OWNER_DIED, EngineRelay, LocalEngines, RelayedEngine, _Sequence
from gateway.errors import SessionMapUnavailable
from gateway.interfaces import IEngineCluster

from .fakes import FakeTransport, FakeUpstream


class FakeNode:
    """
    What L{SharedEngines} needs of a cluster node.
    """

    node = "n1"
    shared = None
    nodeTtl = 3.0

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
    heartbeat = 1.0

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

    def deadOwners(self, owners):
        from twisted.internet.defer import succeed

        return succeed(set())


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
    relay.request("a", "sid", lambda i: b"s|sid|b|" + i + b"|4hello", 5, lambda *a: answers.append(a))
    assert engine.upstream.messages == ["hello"]
    assert answers == [(200, b"text/html", b"ok")]
    relay.request("a", "sid", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
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
    relay.request("a", "sid", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers == [(200, b"text/plain; charset=UTF-8", b"41")]
    relay.request("a", "sid", lambda i: b"p|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[1] == (200, b"text/plain; charset=UTF-8", b"1")
    assert engine.state is EngineState.CLOSED


def test_relayedRefusalAndTimeout() -> None:
    """
    A relayed request for a session the owner does not have gets its
    refusal; one never answered gets "Session ID unknown" after its wait.
    """
    _, _, _, relay, _, clock = relays()
    answers = []
    relay.request("a", "other", lambda i: b"p|other|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[0][0] == 400 and b'"code":1' in answers[0][2]
    relay.request("b", "sid", lambda i: b"x|" + i, 5, lambda *a: answers.append(a))  # nobody answers
    clock.advance(5)
    assert answers[1][0] == 400


def test_relayedUpgradeInOrder() -> None:
    """
    An upgrade through the other node: the probe, C{5}, then messages, in
    order even when the channel delivers two out of order.
    """
    _, _, engine, relay, wire, _ = relays()
    answers = []
    wsid = relay.request("a", "sid", lambda i: b"u|sid|b|" + i, 5, lambda *a: answers.append(a))
    assert answers[0][0] == 200
    socket = FakeTransport("websocket")
    relayed = RelayedEngine(relay, "a", "sid", wsid)
    relay.carry(socket, relayed)
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
        wsid = relay.request("a", "sid", lambda i: b"u|sid|b|" + i, 5, lambda *a: None)
        socket = FakeTransport("websocket")
        relayed = RelayedEngine(relay, "a", "sid", wsid)
        relay.carry(socket, relayed)
        relayed.fromWebSocket(socket, Packet(PacketType.PING, "probe"))
        relayed.fromWebSocket(socket, Packet(PacketType.UPGRADE))
        edge.stopping = stopping
        engine.close("the gateway is shutting down")
        assert (socket.closed, socket.closeCode) == (True, code)
        assert wsid not in relay.sockets


@implementer(IEngineCluster)
class Silent:
    """
    A cluster whose other nodes answer nothing (dead or slow), and whose
    looks at their liveness wait until the test answers them.

    @ivar looks: C{(owners, Deferred)} of each look asked for.
    """

    node = "b"
    sharesSessions = True
    heartbeat = 1.0

    def __init__(self) -> None:
        self.looks: list[tuple[dict, Deferred]] = []
        self.sent: list[tuple[str, bytes]] = []

    def own(self, sid, ttl):
        return succeed(None)

    def owner(self, sid):
        return succeed(None)

    def disown(self, sid):
        return succeed(None)

    def send(self, node, message):
        self.sent.append((node, message))
        return succeed(None)

    def listen(self, listener):
        self.listener = listener

    def deadOwners(self, owners):
        d: Deferred = Deferred()
        self.looks.append((dict(owners), d))
        return d


def silentRelay():
    """
    @return: a relay on a L{Silent} cluster, the cluster and the clock.
    """
    clock = Clock()
    cluster = Silent()
    return EngineRelay(Edge(), cluster, clock), cluster, clock


def carried(relay: EngineRelay, owner: str, sid: str) -> FakeTransport:
    """
    @return: a WebSocket carried by C{relay} for session C{sid} of C{owner}.
    """
    socket = FakeTransport("websocket")
    relay.carry(socket, RelayedEngine(relay, owner, sid, "ws-" + sid))
    return socket


def test_deadOwnerAnsweredAtOnce() -> None:
    """
    One heartbeat after a request is relayed, the owners waited on are
    looked at, all in one call; the requests and WebSockets of the owner
    found dead are answered "Session ID unknown" (400, JSON) and closed
    with 1001 at once, long before their wait ends, and the death is
    logged once, without a traceback; those of a live owner wait on.
    """
    relay, cluster, clock = silentRelay()
    answers: dict[str, list] = {"s1": [], "s2": [], "s3": []}
    for sid, owner in (("s1", "x"), ("s2", "x"), ("s3", "y")):
        relay.request(owner, sid, lambda i: b"p|" + i, 45, lambda *a, sid=sid: answers[sid].append(a))
    socket, alive = carried(relay, "x", "s4"), carried(relay, "y", "s5")
    assert cluster.looks == []
    clock.advance(1)
    ((owners, look),) = cluster.looks
    assert owners == {"s1": "x", "s2": "x", "s3": "y", "s4": "x", "s5": "y"}
    with capturedLogs() as events:
        look.callback({"s1", "s2", "s4"})
    for sid in ("s1", "s2"):
        ((status, kind, body),) = answers[sid]
        assert (status, kind) == (400, b"application/json") and json.loads(body)["code"] == 1
    assert answers["s3"] == []
    assert (socket.closed, socket.closeCode) == (True, OWNER_DIED) and not alive.closed
    assert list(relay.sockets) == ["ws-s5"]
    (event,) = events
    assert "x" in formatEvent(event) and "2 relayed requests" in formatEvent(event)
    assert event["log_level"] is LogLevel.warn and "log_failure" not in event
    assert not any(sent[1].startswith(b"c|") for sent in cluster.sent)  # nobody to tell


def test_lookedAtOncePerHeartbeat() -> None:
    """
    However many requests wait, the owners are looked at once per
    heartbeat, never twice at once: a look still under way when the next
    heartbeat comes delays the next look until a heartbeat after it ends.
    """
    relay, cluster, clock = silentRelay()
    for n in range(50):
        relay.request("x", f"s{n}", lambda i: b"p|" + i, 45, lambda *a: None)
    clock.advance(1)
    assert len(cluster.looks) == 1
    clock.advance(5)  # the look is slow: no second one meanwhile
    assert len(cluster.looks) == 1
    cluster.looks[0][1].callback(set())
    clock.advance(0.5)
    assert len(cluster.looks) == 1
    clock.advance(0.5)
    assert len(cluster.looks) == 2 and len(cluster.looks[1][0]) == 50


def test_noTimerWhileNothingWaits() -> None:
    """
    No look is due while nothing relayed waits: none before the first
    request, none once the last is answered, forgotten or timed out, or
    the last WebSocket released, and none is armed again after a look
    that found nothing waiting any more.
    """
    relay, cluster, clock = silentRelay()
    assert clock.getDelayedCalls() == []
    reqid = relay.request("x", "s1", lambda i: b"p|" + i, 45, lambda *a: None)
    assert len(clock.getDelayedCalls()) == 2  # its wait, and the look
    relay.received(b"a|%s|200|p|6" % reqid.encode())
    assert clock.getDelayedCalls() == []
    reqid = relay.request("x", "s1", lambda i: b"p|" + i, 45, lambda *a: None)
    relay.forget(reqid)
    assert clock.getDelayedCalls() == []
    relay.request("x", "s1", lambda i: b"p|" + i, 0.5, lambda *a: None)
    clock.advance(0.5)
    assert clock.getDelayedCalls() == []
    carried(relay, "x", "s2")
    assert len(clock.getDelayedCalls()) == 1
    relay.release("ws-s2")
    assert clock.getDelayedCalls() == []
    carried(relay, "x", "s3")
    clock.advance(1)
    relay.release("ws-s3")  # while the look is under way
    cluster.looks[-1][1].callback(set())
    assert clock.getDelayedCalls() == [] and len(cluster.looks) == 1


def test_unknownLivenessIsNotDeath() -> None:
    """
    While no owner can be found dead (Redis away: the cluster says none,
    or the look fails), what waits goes on waiting, looked at again each
    heartbeat, and a request is answered when its own wait ends; a look
    that fails is logged.
    """
    relay, cluster, clock = silentRelay()
    answers: list = []
    relay.request("x", "s1", lambda i: b"p|" + i, 10, lambda *a: answers.append(a))
    socket = carried(relay, "x", "s2")
    clock.advance(1)
    cluster.looks[-1][1].callback(set())
    clock.advance(1)
    with capturedLogs() as events:
        cluster.looks[-1][1].errback(RuntimeError("boom"))
    assert len(events) == 1 and events[0]["log_failure"].check(RuntimeError)
    assert answers == [] and not socket.closed
    clock.advance(8)
    assert len(cluster.looks) >= 3 and answers[0][0] == 400 and not socket.closed


def test_deathLoggedOncePerOwner() -> None:
    """
    An owner found dead again at a later look (a request relayed to it
    before its death was known) is not logged again; once it answers
    (a node of that id lives again), its next death is.
    """
    relay, cluster, clock = silentRelay()
    with capturedLogs() as events:
        for _ in range(2):
            relay.request("x", "s1", lambda i: b"p|" + i, 45, lambda *a: None)
            clock.advance(1)
            cluster.looks[-1][1].callback({"s1"})
        assert len(events) == 1
        reqid = relay.request("x", "s1", lambda i: b"p|" + i, 45, lambda *a: None)
        relay.received(b"a|%s|200|p|6" % reqid.encode())
        relay.request("x", "s1", lambda i: b"p|" + i, 45, lambda *a: None)
        clock.advance(1)
        cluster.looks[-1][1].callback({"s1"})
        assert len(events) == 2


def test_deadOwnerOfRelayedUpgrade() -> None:
    """
    An upgrade waiting for its owner's answer is answered 400 once the
    owner is found dead, like any relayed request.
    """
    relay, cluster, clock = silentRelay()
    answers: list = []
    relay.request("x", "s1", lambda i: b"u|s1|b|" + i, 10, lambda *a: answers.append(a))
    clock.advance(1)
    cluster.looks[-1][1].callback({"s1"})
    assert answers[0][0] == 400


def test_localEnginesNoneDead() -> None:
    """
    On one node no owner is ever dead.
    """
    assert LocalEngines().deadOwners({"s": "local"}).result == set()


class FakeShared:
    """
    The shared sessions of two shards: C{s0...} ids on shard 0, the rest on
    shard 1; shard 1 may be away.
    """

    def __init__(self, alive: set[str], away: bool = False) -> None:
        self.alive = alive
        self.away = away
        self.calls: list[tuple[int, set[str]]] = []

    def shardOf(self, sid):
        return 0 if sid.startswith("s0") else 1

    def aliveOn(self, shard, nodes):
        self.calls.append((shard, set(nodes)))
        if shard == 1 and self.away:
            return fail(SessionMapUnavailable("Redis shard 1 is away"))
        return succeed(set(nodes) & self.alive)


def test_sharedEnginesDeadOwners() -> None:
    """
    L{SharedEngines.deadOwners} asks each shard once, for the nodes of its
    sessions, and finds dead the sessions whose node's liveness that shard
    does not hold; a shard that is away finds none of its sessions' nodes
    dead.  Its heartbeat is the cluster's, C{node_ttl / 3}.
    """
    node = FakeNode()
    engines = SharedEngines(node)
    assert engines.heartbeat == 1.0
    owners = {"s0a": "x", "s0b": "y", "s0c": "x", "s1a": "x", "s1b": "z"}
    node.shared = FakeShared({"y"})
    assert engines.deadOwners(owners).result == {"s0a", "s0c", "s1a", "s1b"}
    assert sorted(node.shared.calls, key=lambda c: c[0]) == [(0, {"x", "y"}), (1, {"x", "z"})]
    node.shared = FakeShared({"y"}, away=True)
    assert engines.deadOwners(owners).result == {"s0a", "s0c"}
