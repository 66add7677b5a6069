"""
Socket.IO across several gateway nodes sharing Redis: every request of a
session may reach any node (polls and sends alternating between nodes, an
upgrade landing on a node other than the session's), real Socket.IO
clients behind a round-robin HAProxy with no stickiness, and what the
node relaying for a session does when the session's node is killed.
"""

from __future__ import annotations

import json
import sys
import uuid

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.threads import deferToThread

from gateway.testing import connectClient, rawExchange

from .helpers import (
    SOCKETIO_DIR as HERE,
    HAProxy,
    assertError,
    engineHandshake,
    held,
    node,
    pause,
    request,
    startSocketIOServer,
)

NODE_TTL = 3

#: The most seconds from an owner's death to the relaying node's answer
#: asserted: C{NODE_TTL} and a heartbeat (C{NODE_TTL / 3}) are the bound,
#: the rest a margin for a loaded machine; the route's heartbeat would have
#: a relayed send wait 20 s, a relayed poll 45 s.
DEATH_SEEN = 10.0


async def startNodes(tmp_path, gateway_process, redis, serverPort: int, count: int = 2) -> list:
    """
    Start C{count} gateway nodes, C{n1}, C{n2}..., on C{redis} with a
    Socket.IO route to the server on C{serverPort} (the route's Engine.IO
    heartbeat the reference server's, 25 s and 20 s).

    @return: their processes.
    """
    prefix = f"s{uuid.uuid4().hex[:6]}:"
    processes = []
    for i in range(1, count + 1):
        path = tmp_path / f"n{i}.toml"
        path.write_text(
            f'[session_map]\ntype = "redis"\nurl = "{redis.url}"\nkey_prefix = "{prefix}"\n'
            f'node_id = "n{i}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.5\n'
            '[[route]]\nprefix = "/socket.io/"\npool = "app"\nprotocol = "socket.io"\n'
            f'[pool.app]\n[[pool.app.backend]]\nurl = "ws://127.0.0.1:{serverPort}"\n'
        )
        processes.append(await gateway_process("--config", str(path)))
    return processes


async def pollUntil(port: int, target: str, wanted: bytes) -> bytes:
    """
    @return: what polls on C{port} received until C{wanted} was among it.
    """
    received = b""
    for _ in range(20):
        status, _, body = await request(port, "GET", target)
        assert status == 200, body
        received += body + b"\x1e"
        if wanted in received:
            return received
    raise AssertionError(f"{wanted!r} never came: {received!r}")


@pytest_twisted.ensureDeferred
async def test_pollingAcrossNodes(tmp_path, redis_server, gateway_process, socketio_server) -> None:
    """
    A session opened on one node is served by the other: its sends and
    polls alternate between nodes, in order; two polls outstanding on two
    nodes close it, as on one.
    """
    one, two = [p.port for p in await startNodes(tmp_path, gateway_process, redis_server, socketio_server)]
    status, _, body = await request(one, "GET", "/socket.io/?EIO=4&transport=polling")
    sid = json.loads(body[1:])["sid"]
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert (await request(two, "POST", target, b"40"))[::2] == (200, b"ok")
    assert (await request(two, "GET", target))[2].startswith(b'40{"sid"')
    for i in range(4):
        here, there = (one, two) if i % 2 else (two, one)
        status, _, body = await request(here, "POST", target, b'42%d["echo",%d]' % (i, i))
        assert (status, body) == (200, b"ok")
        received = await pollUntil(there, target, b"43%d[%d]" % (i, i))
        assert b'42["echo",%d]' % i in received
    # An unknown sid is unknown on every node.
    assertError(await request(two, "GET", "/socket.io/?EIO=4&transport=polling&sid=nope"), 400, 1)
    # Two polls outstanding, on two nodes: the session closes.
    (first,) = await held(one, target)
    second = await request(two, "GET", target)
    answer = await first
    assert answer.endswith(b"\r\n\r\n1"), answer
    assert second[0] == 400
    assertError(await request(two, "GET", target), 400, 1)


def upgradeElsewhere(port: int, sid: str) -> list[str]:
    """
    (In a thread.)  Upgrade session C{sid} through a WebSocket to C{port}:
    the probe, then C{5}, then an event with an ack.

    @return: the messages received, in order.
    """
    import websocket

    ws = websocket.create_connection(
        f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&sid={sid}", timeout=10)
    got = []
    try:
        ws.send("2probe")
        got.append(ws.recv())
        ws.send("5")
        ws.send('421["echo","over ws"]')
        while len(got) < 3:
            message = ws.recv()
            if message != "2":
                got.append(message)
            else:
                ws.send("3")
    finally:
        ws.close()
        ws.shutdown()
    return got


@pytest_twisted.ensureDeferred
async def test_upgradeOnAnotherNode(tmp_path, redis_server, gateway_process, socketio_server) -> None:
    """
    A polling session opened on one node upgrades through a WebSocket to
    the other: the probe is answered, the held poll on the first node ends
    with a noop, and the session goes on over the WebSocket.
    """
    one, two = [p.port for p in await startNodes(tmp_path, gateway_process, redis_server, socketio_server)]
    status, _, body = await request(one, "GET", "/socket.io/?EIO=4&transport=polling")
    sid = json.loads(body[1:])["sid"]
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    await request(one, "POST", target, b"40")
    assert (await request(one, "GET", target))[2].startswith(b'40{"sid"')
    (poll,) = await held(one, target)
    got = await deferToThread(upgradeElsewhere, two, sid)
    assert got[0] == "3probe"
    assert sorted(got[1:]) == sorted(['42["echo","over ws"]', '431["over ws"]'])
    answer = await poll
    assert answer.endswith(b"\r\n\r\n6"), answer
    await pause(0.2)
    assertError(await request(one, "GET", target), 400, 1)  # the WebSocket closed: the session ended


@pytest.mark.parametrize("transports", ["polling", "polling,websocket"])
@pytest.mark.parametrize("peers", ["python", "node"])
@pytest_twisted.ensureDeferred
async def test_clientsBehindRoundRobin(tmp_path, redis_server, gateway_process, peers, transports) -> None:
    """
    Real Socket.IO clients through HAProxy (round robin, no stickiness) in
    front of two nodes: the whole exchange works, whichever node each
    connection lands on.
    """
    from twisted.internet import utils

    server = await startSocketIOServer(peers)
    proxy = None
    try:
        ports = [p.port for p in await startNodes(tmp_path, gateway_process, redis_server,
                                                  int(server.match.group(1)))]
        proxy = HAProxy(str(tmp_path), ports)
        port = await proxy.start()
        if peers == "python":
            command, args = sys.executable, [str(HERE / "client.py")]
        else:
            command, args = node(), [str(HERE / "client.mjs")]
        out, err, code = await utils.getProcessOutputAndValue(
            command, [*args, f"http://127.0.0.1:{port}", transports], env={"PATH": "/usr/bin:/bin"},
            path=str(HERE))
    finally:
        if proxy is not None:
            proxy.stop()
        server.signal("KILL")
        try:
            await server.wait(10)
        except Exception:
            pass
    assert code == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["echoAck"] == {"text": "héllo", "n": [1, 2, 3]} == seen["echo"]
    assert seen["binaryOk"] and seen["answer"] == {"answer": 42}
    assert seen["ordered"] and seen["serverDisconnected"]
    assert seen["transport"] == transports.split(",")[-1]


@pytest_twisted.ensureDeferred
async def test_ownerKilledWhileRelayed(tmp_path, redis_server, gateway_process, socketio_server) -> None:
    """
    The node holding three sessions is killed (SIGKILL) while the other
    relays for each: a poll it holds, a send it relays just after the
    kill (the owner's liveness has not expired yet, so it is relayed, to
    nobody), and an upgraded WebSocket it carries.  Within C{node_ttl} and
    a heartbeat of the kill (under L{DEATH_SEEN}) the relaying node
    answers the poll and the send "Session ID unknown" (400, JSON), closes
    the WebSocket with 1001 (going away), and logs the death once; a new
    session then opens there.
    """
    from twisted.internet import reactor

    one, two = await startNodes(tmp_path, gateway_process, redis_server, socketio_server)
    polled, posted, upgraded = [(await engineHandshake(one.port))[0] for _ in range(3)]
    client = await connectClient(f"ws://127.0.0.1:{two.port}", timeout=30,
                                 path=f"/socket.io/?EIO=4&transport=websocket&sid={upgraded}")
    client.send("2probe")
    assert (await client.receive(10))[0] == b"3probe"
    client.send("5")
    raw = (f"GET /socket.io/?EIO=4&transport=polling&sid={polled} HTTP/1.1\r\nHost: x\r\n"
           "Connection: close\r\n\r\n").encode()
    poll = Deferred.fromCoroutine(rawExchange(two.port, raw, timeout=60))
    await pause(0.3)  # the poll is held, through node two
    assert not poll.called
    killed = reactor.seconds()
    one.signal("KILL")
    post = Deferred.fromCoroutine(request(two.port, "POST", f"/socket.io/?EIO=4&transport=polling&sid={posted}",
                                          b'42["echo",1]'))
    seen: dict[str, float] = {}

    def at(name: str):
        def record(result):
            seen[name] = reactor.seconds() - killed
            return result
        return record

    answer, posting, closed = await gatherResults([
        poll.addCallback(at("poll")), post.addCallback(at("send")),
        client.closed.addTimeout(60, reactor).addCallback(at("websocket"))])
    print("\nseen after the owner's SIGKILL: " + ", ".join(f"{k} {v:.2f} s" for k, v in sorted(seen.items())))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"application/json" in head, answer
    assert json.loads(body)["code"] == 1
    assertError(posting, 400, 1)
    assert closed[1] == 1001, closed
    assert max(seen.values()) < DEATH_SEEN, seen
    assert two.output.count("n1, holding Socket.IO sessions relayed here, is dead") == 1, two.output
    sid, _ = await engineHandshake(two.port)  # the client starts again there
    assert sid
