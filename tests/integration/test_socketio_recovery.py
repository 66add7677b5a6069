"""
Socket.IO's connection state recovery through the gateway, with real peers:
Node's socket.io-client (C{socketio/recovery.mjs}) against a Node Socket.IO
4 server (C{socketio/server.mjs}) with C{connectionStateRecovery} on and
off, after the client drops its connection, and after the gateway node
holding its session is killed (SIGKILL) behind a round-robin HAProxy, or
while the other node relays every request of the session.

Recovery needs nothing of the gateway but to stay out of the way: the
client's new session gets a new server WebSocket, whose Socket.IO
C{CONNECT} (with the old session's C{pid} and C{offset}) reaches the
server unchanged, and the server saw the old one close without a
Socket.IO C{DISCONNECT} (a recoverable "transport close").

What each side may lose is Socket.IO's own: server to client, nothing with
recovery (the server sends again what the client has not seen), the rest
of the old session's stream without; client to server, what the client had
handed to a connection that died (a contiguous run), never what it emitted
while disconnected (socket.io-client buffers that), never twice.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from gateway.testing import startProcess

from .helpers import SOCKETIO_DIR, HAProxy, LineWatcher, node, redisCli

#: Seconds the survivor takes a killed node for alive (its last heartbeat's
#: liveness key).
NODE_TTL = 3

#: The route's Engine.IO heartbeat in L{test_nodeKilled}: short, so that it
#: bounds the wait of what a survivor relays to the dead node even when the
#: survivor cannot see the death (see docs/socketio.md, "Several nodes").
PING = 'ping_interval = 2.0\nping_timeout = 2.0\n'

ROUTE = '[[route]]\nprefix = "/socket.io/"\npool = "app"\nprotocol = "socket.io"\n'

#: The most seconds from the death of a session's node to its client's
#: disconnect when every request of the session was relayed by the other
#: node: C{NODE_TTL} and a heartbeat (C{NODE_TTL / 3}) are the bound, the
#: rest a margin for a loaded machine.
DEATH_SEEN = 10.0


async def startServer(recovery: bool):
    """
    @return: a Node Socket.IO server process, with connection state
        recovery on or off.
    """
    args = [node(), str(SOCKETIO_DIR / "server.mjs")] + (["--recovery"] if recovery else [])
    return await startProcess(args, r"listening on (\d+)")


async def startClient(url: str, transports: str, mode: str):
    """
    Run C{recovery.mjs} against C{url} until it is ready (connected, the
    server's ticks flowing).

    @return: the process, its output's watcher, and its ready line.
    """
    process = await startProcess([node(), str(SOCKETIO_DIR / "recovery.mjs"), url, transports, mode],
                                 r'^\{"ready"', env={"PATH": "/usr/bin:/bin"}, cwd=str(SOCKETIO_DIR))
    return process, LineWatcher(process), json.loads(process.match.string)


async def finished(process, watcher) -> dict:
    """
    @return: the client's report, once it has reconnected and finished.
    """
    try:
        line = await watcher.wait(r'^\{"done"', 0, timeout=75)
        assert await process.wait(10) == 0, process.output
    finally:
        process.signal("KILL")
    return json.loads(line)


def runs(numbers: list[int]) -> list[tuple[int, int]]:
    """
    @return: C{numbers} as runs of consecutive ones, C{(first, last)}.
    """
    found: list[tuple[int, int]] = []
    for n in numbers:
        if found and n == found[-1][1] + 1:
            found[-1] = (found[-1][0], n)
        else:
            found.append((n, n))
    return found


def checkUpstream(report: dict) -> list[int]:
    """
    Client to server: every number at most once and in order; what the
    client emitted while disconnected all there; what is missing, one
    contiguous run of what it had handed to the connection that dropped.

    @return: the numbers lost.
    """
    received = report["received"]
    assert received == sorted(set(received)), "duplicated or out of order"
    emitted = report["emitted"]
    lost = sorted({n for n, _, _ in emitted} - set(received))
    assert all(n in received for n, connected, _ in emitted if not connected)
    assert len(runs(lost)) <= 1, lost
    connected = {n: c for n, c, _ in emitted}
    assert all(connected[n] for n in lost), lost
    return lost


def checkTicks(report: dict, recovery: bool) -> None:
    """
    Server to client: with recovery the client is back on its session
    (same socket id, C{recovered}) and the ticks are contiguous across the
    drop, none missed, none twice; without, it has a new socket id and a
    new stream, each one contiguous from 0.
    """
    first, second = report["connections"][:2]
    ticks = report["ticks"]
    before = [n for c, n in ticks if c == 0]
    after = [n for c, n in ticks if c == 1]
    assert after, "no ticks after the reconnect"
    assert before == list(range(len(before)))
    if recovery:
        assert second["recovered"] and second["id"] == first["id"], report["connections"]
        assert before + after == list(range(len(before) + len(after)))
    else:
        assert not second["recovered"] and second["id"] != first["id"], report["connections"]
        assert after == list(range(len(after)))


@pytest.mark.parametrize("transports", ["polling", "websocket"])
@pytest.mark.parametrize("recovery", [True, False], ids=["recovery", "norecovery"])
@pytest_twisted.ensureDeferred
async def test_clientDrops(tmp_path, gateway_process, recovery, transports) -> None:
    """
    A client whose connection drops (it closes its Engine.IO session)
    reconnects through the gateway; with the server's recovery on it is
    back on its Socket.IO session and has missed nothing either way;
    without, it starts a new one.
    """
    server = await startServer(recovery)
    try:
        config = tmp_path / "gateway.toml"
        config.write_text(ROUTE + f'[pool.app]\n[[pool.app.backend]]\nurl = "ws://127.0.0.1:{server.match.group(1)}"\n')
        gateway = await gateway_process("--config", str(config))
        process, watcher, _ = await startClient(f"http://127.0.0.1:{gateway.port}", transports, "drop")
        report = await finished(process, watcher)
    finally:
        server.signal("KILL")
    assert report["disconnected"]["reason"] == "forced close"
    checkTicks(report, recovery)
    lost = checkUpstream(report)
    print(f"\n{transports} recovery={recovery}: reconnected "
          f"{report['connections'][1]['at'] - report['disconnected']['at']:.0f} ms after the drop, {len(lost)} lost up")


async def startNodes(tmp_path, gateway_process, redis, serverPort: int, ping: str = PING) -> tuple[str, dict]:
    """
    Start two gateway nodes, C{n1} and C{n2}, on C{redis} with a Socket.IO
    route to the server on C{serverPort}.

    @param ping: the route's Engine.IO heartbeat keys (L{PING}; empty for
        the reference server's 25 s and 20 s).
    @return: their key prefix in Redis, and the processes by node id.
    """
    prefix = f"r{uuid.uuid4().hex[:6]}:"
    nodes = {}
    for name in ("n1", "n2"):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'[session_map]\ntype = "redis"\nurl = "{redis.url}"\nkey_prefix = "{prefix}"\n'
            f'node_id = "{name}"\nnode_ttl = {NODE_TTL}\ntimeout = 0.5\n' + ROUTE + ping +
            f'[pool.app]\n[[pool.app.backend]]\nurl = "ws://127.0.0.1:{serverPort}"\n')
        nodes[name] = await gateway_process("--config", str(path))
    return prefix, nodes


@pytest.mark.parametrize("transports", ["polling", "websocket", "polling,websocket"])
@pytest.mark.parametrize("recovery", [True, False], ids=["recovery", "norecovery"])
@pytest_twisted.ensureDeferred
async def test_nodeKilled(tmp_path, redis_server, gateway_process, recovery, transports) -> None:
    """
    Two nodes behind a round-robin HAProxy, no stickiness: the node holding
    a client's session is killed; the client reconnects by itself through
    the survivor, and with recovery it is back on its Socket.IO session,
    having missed none of the server's events; without, it starts a new
    one.  Of what it emitted, at most what it had handed to the dead
    connection is lost; nothing twice.
    """
    server = await startServer(recovery)
    proxy = None
    try:
        prefix, nodes = await startNodes(tmp_path, gateway_process, redis_server, int(server.match.group(1)))
        proxy = HAProxy(str(tmp_path), [p.port for p in nodes.values()])
        port = await proxy.start()
        process, watcher, ready = await startClient(f"http://127.0.0.1:{port}", transports, "wait")
        owner = (await deferToThread(redisCli, redis_server.port, "GET", f"{prefix}eio:{ready['ready']}")).strip()
        assert owner in nodes, (owner, ready)
        killed = time.time() * 1000
        nodes[owner].signal("KILL")
        report = await finished(process, watcher)
    finally:
        if proxy is not None:
            proxy.stop()
        server.signal("KILL")
    checkTicks(report, recovery)
    lost = checkUpstream(report)
    reconnected = report["connections"][1]["at"] - killed
    print(f"\n{transports} recovery={recovery}: disconnect after {report['disconnected']['at'] - killed:.0f} ms "
          f"({report['disconnected']['reason']}), reconnected after {reconnected:.0f} ms, {len(lost)} lost up")


class RelayingProxy(HAProxy):
    """
    HAProxy in HTTP mode in front of two nodes: each handshake (a request
    with no C{sid}) to the first, the I{owner} (to the second once the
    first is down), every other request of a session (its polls, its
    sends, its upgrade: C{sid} in the query) to the second, which relays
    them all to the owner.
    """

    def config(self, port: int) -> str:
        """
        @return: HAProxy's configuration, listening on C{port}.
        """
        owner, relaying = self.ports
        check = "check inter 100ms fall 1 rise 2"
        return (
            "global\n  maxconn 4096\n"
            "defaults\n  mode http\n  timeout connect 2s\n  timeout client 120s\n"
            "  timeout server 120s\n  timeout tunnel 120s\n  retries 3\n  option redispatch\n"
            f"frontend front\n  bind 127.0.0.1:{port}\n  acl session urlp(sid) -m found\n"
            "  use_backend relaying if session\n  default_backend owning\n"
            f"backend owning\n  server owner 127.0.0.1:{owner} {check}\n"
            f"  server relaying 127.0.0.1:{relaying} {check} backup\n"
            f"backend relaying\n  server relaying 127.0.0.1:{relaying}\n"
        )


@pytest.mark.parametrize("transports", ["polling", "polling,websocket"])
@pytest_twisted.ensureDeferred
async def test_ownerKilledWhileRelayed(tmp_path, redis_server, gateway_process, transports) -> None:
    """
    With the reference server's heartbeat (25 s, 20 s), every request of
    a client's session but its handshake goes through the node that does
    not hold it (L{RelayingProxy}), and the node holding it is killed
    (SIGKILL).  The relaying node sees the death within C{node_ttl} and a
    heartbeat: the client is disconnected within L{DEATH_SEEN} of the kill
    (its relayed poll and send answered "Session ID unknown", or its
    relayed WebSocket closed), not after the 20 s of a send's wait or its
    own ping timeout, and reconnects through the survivor, back on its
    Socket.IO session (the server's recovery is on) with nothing missed
    and nothing twice.
    """
    server = await startServer(True)
    proxy = None
    try:
        prefix, nodes = await startNodes(tmp_path, gateway_process, redis_server, int(server.match.group(1)),
                                         ping="")
        proxy = RelayingProxy(str(tmp_path), [nodes["n1"].port, nodes["n2"].port])
        port = await proxy.start()
        process, watcher, ready = await startClient(f"http://127.0.0.1:{port}", transports, "wait")
        owner = (await deferToThread(redisCli, redis_server.port, "GET", f"{prefix}eio:{ready['ready']}")).strip()
        assert owner == "n1", (owner, ready)
        killed = time.time() * 1000
        nodes["n1"].signal("KILL")
        report = await finished(process, watcher)
    finally:
        if proxy is not None:
            proxy.stop()
        server.signal("KILL")
    disconnected = report["disconnected"]["at"] - killed
    reconnected = report["connections"][1]["at"] - killed
    lost = checkUpstream(report)
    print(f"\n{transports}: disconnect after {disconnected:.0f} ms ({report['disconnected']['reason']}), "
          f"reconnected after {reconnected:.0f} ms, {len(lost)} lost up")
    assert disconnected < DEATH_SEEN * 1000, report["disconnected"]
    assert report["disconnected"]["reason"] == ("transport close" if "websocket" in transports
                                                else "transport error"), report["disconnected"]
    checkTicks(report, True)
    assert "is dead" in nodes["n2"].output
