"""
The admin API of a real C{twistd -n gateway} process, driven over its own
socket, in front of echo backends that say their name.
"""

from __future__ import annotations


import pytest_twisted
from twisted.internet import reactor

from .helpers import TOKEN, admin, backendsByName, poolFile, startGateway, whichBackend
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
