"""
The admin API of a real C{twistd -n gateway} process, driven over its own
socket, in front of echo backends that say their name, and of a
python-socketio server for the Socket.IO sessions.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from .helpers import (
    TOKEN,
    admin,
    backendsByName,
    engineHandshake,
    engineWebSocket,
    pause,
    pollUntil,
    poolFile,
    request,
    socketIOFile,
    startGateway,
    upgradeAnswer,
    whichBackend,
)
from gateway.testing import connectClient

@pytest_twisted.ensureDeferred
async def test_drainEnableAndWeight(tmp_path, echo_backends, gateway_process):
    """
    Through a real process: a drained backend gets no new client and keeps
    the ones it has; enabled again, it gets new clients; weights are
    checked and set; every change shows in C{GET /pools}.
    """
    one, two = await echo_backends(2, prefix=True)
    process, port, _, _ = await startGateway(gateway_process, tmp_path, poolFile([one, two]))
    status, pools = await admin(port, "GET", "/pools")
    assert status == 200
    assert {n: (b["state"], b["draining"], b["connections"]) for n, b in backendsByName(pools).items()} == {
        "backend-1": ("healthy", False, 0), "backend-2": ("healthy", False, 0)}

    first = await connectClient(process.url)
    kept = await whichBackend(first)
    other = "backend-2" if kept == "backend-1" else "backend-1"
    status, body = await admin(port, "POST", f"/pools/chat/backends/{kept}/drain")
    assert (status, body["draining"], body["connections"]) == (200, True, 1)
    clients = [await connectClient(process.url) for _ in range(4)]
    assert [await whichBackend(c) for c in clients] == [other] * 4
    assert await whichBackend(first) == kept  # its connection is left alone

    status, body = await admin(port, "POST", f"/pools/chat/backends/{kept}/enable")
    assert (status, body["draining"], body["available"]) == (200, False, True)
    late = await connectClient(process.url)
    assert await whichBackend(late) == kept  # least connections: 1 against 4

    status, body = await admin(port, "POST", f"/pools/chat/backends/{kept}/weight", b'{"weight": 0}')
    assert (status, body["message"]) == (400, "weight must be an integer from 1 to 10000, not 0")
    status, body = await admin(port, "POST", f"/pools/chat/backends/{kept}/weight", b'{"weight": 9}')
    assert (status, body["weight"]) == (200, 9)
    status, pools = await admin(port, "GET", "/pools")
    assert {n: (b["weight"], b["connections"]) for n, b in backendsByName(pools).items()} == {
        kept: (9, 2), other: (1, 4)}
    status, sessions = await admin(port, "GET", "/sessions")
    assert (status, sessions["sessions"]) == (200, 0)

    for client in [first, late, *clients]:
        await client.close().addTimeout(10, reactor)
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_tokenRequired(tmp_path, echo_backends, gateway_process):
    """
    Without the token the process answers 401 and changes nothing.
    """
    [one] = await echo_backends(1, prefix=True)
    process, port, watcher, _ = await startGateway(gateway_process, tmp_path, poolFile([one]))
    for token in (None, "x" * 40):
        status, body = await admin(port, "POST", "/pools/chat/backends/backend-1/drain", token=token)
        assert (status, body["status"]) == (401, 401)
    status, body = await admin(port, "GET", "/pools/chat/backends/backend-1")
    assert (status, body["draining"]) == (200, False)
    assert TOKEN not in process.output
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_reloadThroughAdmin(tmp_path, echo_backends, gateway_process):
    """
    C{POST /reload} applies the file and lists the changes; a bad file gets
    400 with the one-line reason, and the gateway carries on unchanged.
    """
    one, two = await echo_backends(2, prefix=True)
    process, port, watcher, config = await startGateway(gateway_process, tmp_path, poolFile([one]))
    config.write_text(poolFile([one, two], **{"backend-1": 3}))
    status, body = await admin(port, "POST", "/reload")
    assert (status, body) == (200, {
        "changes": ["pool chat: backend backend-1 weight 1 -> 3", "pool chat: backend backend-2 added"],
        "restart_needed": [],
    })
    config.write_text("[pool.chat]\n")
    mark = watcher.mark()
    status, body = await admin(port, "POST", "/reload")
    assert (status, body["message"]) == (
        400, f"{config}: pool.chat: has no backends; add a [[pool.chat.backend]] table with a url")
    assert len(watcher.matching("reload failed", mark)) == 1
    status, pools = await admin(port, "GET", "/pools")
    assert sorted(backendsByName(pools)) == ["backend-1", "backend-2"]
    client = await connectClient(process.url)
    assert await whichBackend(client) in ("backend-1", "backend-2")
    await client.close().addTimeout(10, reactor)
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_socketIOSessionsListedAndDrained(tmp_path, socketio_server, gateway_process):
    """
    Socket.IO sessions of a real server are counted in C{GET /sessions} (by
    pool, backend and transport) and listed by C{GET /sessions/socketio}
    with their short sid, transport, client address, backend, age and
    node.  Draining their backend leaves them in place and listed on it
    (a poll and a WebSocket message still reach the server), while a new
    handshake over either transport gets 503 with a JSON body and
    C{Retry-After}; enabled again, the backend takes new sessions.
    """
    process, port, _, _ = await startGateway(
        gateway_process, tmp_path, socketIOFile([socketio_server], route="ping_interval = 60\n"))
    sid, _ = await engineHandshake(process.port)
    client, wsid = await engineWebSocket(process.port)
    try:
        status, counts = await admin(port, "GET", "/sessions")
        assert status == 200 and counts["sessions"] == 0
        assert counts["socketio"] == {
            "sessions": 2, "polling": 1, "websocket": 1, "upgrading": 0,
            "pools": {"app": {"sessions": 2, "polling": 1, "websocket": 1,
                              "backends": {"sio-1": {"sessions": 2, "polling": 1, "websocket": 1}}}},
        }
        status, listing = await admin(port, "GET", "/sessions/socketio")
        assert (status, listing["count"], listing["listed"]) == (200, 2, 2)
        first, second = listing["sessions"]  # the oldest first
        assert first["sid"] == sid[:8] + "\N{HORIZONTAL ELLIPSIS}" and sid not in json.dumps(listing)
        assert second["sid"] == wsid[:8] + "\N{HORIZONTAL ELLIPSIS}"
        assert (first["transport"], second["transport"]) == ("polling", "websocket")
        for entry in (first, second):
            assert (entry["pool"], entry["backend"], entry["address"]) == ("app", "sio-1", "127.0.0.1")
            assert entry["age"] >= 0 and entry["node"] and entry["upgrading"] is False
        status, pools = await admin(port, "GET", "/pools")
        backend = backendsByName(pools, "app")["sio-1"]
        assert (backend["connections"], backend["socketio"]) == (2, 2)

        status, body = await admin(port, "POST", "/pools/app/backends/sio-1/drain")
        assert (status, body["draining"], body["connections"], body["socketio"]) == (200, True, 2, 2)
        status, listing = await admin(port, "GET", "/sessions/socketio?backend=sio-1&limit=1")
        assert (status, listing["count"], listing["listed"]) == (200, 2, 1)
        status, counts = await admin(port, "GET", "/sessions")
        assert counts["socketio"]["pools"]["app"]["backends"]["sio-1"]["sessions"] == 2
        # Both go on with the draining server.
        target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        assert (await request(process.port, "POST", target, b'421["echo","a"]'))[0] == 200
        await pollUntil(process.port, sid, b'431["a"]')
        client.send('422["echo","b"]')
        while b'432["b"]' not in (await client.receive(30))[0]:
            pass
        # New sessions are refused, over either transport, with JSON.
        for answer in (await request(process.port, "GET", "/socket.io/?EIO=4&transport=polling"),
                       await upgradeAnswer(process.port, "/socket.io/?EIO=4&transport=websocket")):
            status, headers, body = answer
            assert (status, headers["content-type"], headers["retry-after"]) == (503, "application/json", "1")
            assert json.loads(body) == {"code": 3, "message": "every backend of pool 'app' is draining"}

        status, _ = await admin(port, "POST", "/pools/app/backends/sio-1/enable")
        assert status == 200
        await engineHandshake(process.port)
        status, listing = await admin(port, "GET", "/sessions/socketio?pool=app")
        assert listing["count"] == 3
        status, body = await admin(port, "GET", "/sessions/socketio?limit=0")
        assert (status, body["message"]) == (400, "limit must be a whole number from 1 to 1000, not '0'")
    finally:
        client.protocol.dropConnection(abort=True)
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_socketIOSessionOnRemovedBackend(tmp_path, socketio_server, gateway_process):
    """
    A backend removed from the file by a reload keeps its Socket.IO
    session (it cannot move without losing the Socket.IO state): the
    session goes on, listed on the backend, which the admin API shows
    removed and draining until the session ends; then it leaves the list.
    """
    text = socketIOFile([socketio_server, socketio_server], route="ping_interval = 60\n")
    process, port, _, config = await startGateway(gateway_process, tmp_path, text)
    sid, _ = await engineHandshake(process.port)
    status, listing = await admin(port, "GET", "/sessions/socketio")
    [entry] = listing["sessions"]
    kept = entry["backend"]
    config.write_text(text.replace(f'name = "{kept}"', 'name = "sio-3"'))
    status, body = await admin(port, "POST", "/reload")
    assert status == 200 and f"pool app: backend {kept} removed (draining)" in body["changes"]
    status, pools = await admin(port, "GET", "/pools")
    backend = backendsByName(pools, "app")[kept]
    assert (backend["removed"], backend["draining"], backend["connections"]) == (True, True, 1)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    assert (await request(process.port, "POST", target, b'421["echo","still"]'))[0] == 200
    await pollUntil(process.port, sid, b'431["still"]')
    status, listing = await admin(port, "GET", f"/sessions/socketio?backend={kept}")
    assert listing["count"] == 1
    # The client closes its session: the backend leaves.
    assert (await request(process.port, "POST", target, b"1"))[0] == 200
    while kept in backendsByName((await admin(port, "GET", "/pools"))[1], "app"):
        await pause(0.1)
    process.signal("TERM")
    assert await process.wait() == 0
