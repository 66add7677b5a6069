"""
Socket.IO behind real C{twistd gateway} processes, on a route with
C{protocol = "socket.io"}: the gateway ends Engine.IO v4 and opens one
WebSocket per session to a python-socketio server (aiohttp) run as its own
process.

The Engine.IO rules are checked with raw HTTP requests; conformance with
python-socketio's own client (run as a process) over polling only,
WebSocket only, and polling upgraded to WebSocket: text, binary attachments
and acknowledgements both ways, and what reaches the server (the client's
query, cookies, Authorization and the forwarding headers); then the same
with Node's socket.io-client against a Node Socket.IO 4 server (npm
packages installed by C{make test} from C{socketio/package-lock.json}).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor

from gateway.testing import rawExchange, startProcess

from .helpers import (
    SOCKETIO_DIR,
    assertError,
    engineHandshake,
    engineWebSocket,
    held,
    node,
    pause,
    pollUntil,
    request,
    socketIOFile,
    startSocketIOServer,
    upgradeAnswer,
)

HERE = SOCKETIO_DIR


async def startGateway(gateway_process, tmp_path: Path, port: int, extra: str = "") -> int:
    """
    Run a gateway with C{/socket.io/} as a Socket.IO route to the server on
    C{port}.

    @return: the gateway's port.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[route]]\nprefix = "/socket.io/"\npool = "app"\nprotocol = "socket.io"\n'
        'allowed_origins = ["https://app.example"]\n' + extra +
        f'[pool.app]\n[[pool.app.backend]]\nurl = "ws://127.0.0.1:{port}"\n'
    )
    process = await gateway_process("--config", str(config))
    return process.port


async def handshake(port: int) -> tuple[str, dict]:
    """
    @return: a new polling session's sid and open packet.
    """
    status, headers, body = await request(port, "GET", "/socket.io/?EIO=4&transport=polling")
    assert status == 200, body
    assert headers["content-type"] == "text/plain; charset=UTF-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert body[:1] == b"0"
    opened = json.loads(body[1:])
    return opened["sid"], opened


@pytest_twisted.ensureDeferred
async def test_pollingRules(socketio_server, gateway_process, tmp_path) -> None:
    """
    The handshake's open packet and the rules for bad requests (400 with
    the reference server's codes), POSTs answered C{ok}, a Socket.IO
    CONNECT through a poll, CORS for an allowed origin, 403 for another,
    and the duplicate poll that closes the session.
    """
    port = await startGateway(gateway_process, tmp_path, socketio_server,
                              "ping_interval = 30\nping_timeout = 20\n")
    sid, opened = await handshake(port)
    assert opened["upgrades"] == ["websocket"]
    assert (opened["pingInterval"], opened["pingTimeout"], opened["maxPayload"]) == (30000, 20000, 1000000)
    assert len(sid) == 20
    assertError(await request(port, "GET", "/socket.io/?transport=polling"), 400, 5)
    assertError(await request(port, "GET", "/socket.io/?EIO=3&transport=polling"), 400, 5)
    assertError(await request(port, "GET", "/socket.io/?EIO=4"), 400, 0)
    assertError(await request(port, "GET", "/socket.io/?EIO=4&transport=abc"), 400, 0)
    assertError(await request(port, "POST", "/socket.io/?EIO=4&transport=polling"), 400, 2)
    assertError(await request(port, "PUT", "/socket.io/?EIO=4&transport=polling"), 400, 2)
    assertError(await request(port, "GET", "/socket.io/?EIO=4&transport=polling&sid=nope"), 400, 1)

    # A Socket.IO CONNECT to the default namespace, answered through a poll.
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    status, headers, body = await request(port, "POST", target, b"40")
    assert (status, body) == (200, b"ok")
    status, _, body = await request(port, "GET", target)
    assert status == 200 and body.startswith(b'40{"sid":'), body
    # An event with an ack, and a binary one, in one payload.
    status, _, body = await request(port, "POST", target,
                                    b'421["echo","x"]\x1e' + b'451-["binary",{"blob":{"_placeholder":true,"num":0}}]'
                                    b"\x1ebAQIDBA==")
    assert (status, body) == (200, b"ok")
    received = b""
    while b"431[" not in received or b"bBAMCAQ==" not in received:
        status, _, body = await request(port, "GET", target)
        assert status == 200
        received += body + b"\x1e"
    assert b'421["echo","x"]' not in received and b'431["x"]' in received
    # The binary event's header comes right before its attachment.
    assert re.search(rb'451-\["binary",\{[^\x1e]*\}\]\x1ebBAMCAQ==', received), received

    # CORS: an allowed origin may read the answers; another is refused.
    status, headers, _ = await request(port, "OPTIONS", target, headers="Origin: https://app.example\r\n")
    assert status == 204
    assert headers["access-control-allow-origin"] == "https://app.example"
    assert headers["access-control-allow-credentials"] == "true"
    assert "POST" in headers["access-control-allow-methods"]
    assertError(await request(port, "GET", target, headers="Origin: https://evil.example\r\n"), 403, 4)

    # Two GETs at once: the held one gets a close packet, the second 400,
    # and the session is gone.
    (first,) = await held(port, target)
    second = await request(port, "GET", target + "&t=burst")
    answer = await first
    assert answer.endswith(b"\r\n\r\n1"), held
    assertError(second, 400, 3)
    assertError(await request(port, "GET", target), 400, 1)


@pytest_twisted.ensureDeferred
async def test_closeAndHeartbeat(socketio_server, gateway_process, tmp_path) -> None:
    """
    The client's close packet ends the session (the held poll gets a noop);
    a client that stops polling misses a ping and its session closes; a
    POST over C{max_payload} gets 413.
    """
    port = await startGateway(gateway_process, tmp_path, socketio_server,
                              "ping_interval = 0.5\nping_timeout = 0.5\nmax_payload = 100\n")
    sid, _ = await handshake(port)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    (poll,) = await held(port, target)
    status, _, body = await request(port, "POST", target, b"1")
    answer = await poll
    assert (status, body) == (200, b"ok")
    assert answer.endswith(b"\r\n\r\n6"), answer
    assertError(await request(port, "GET", target), 400, 1)

    # The heartbeat: a ping comes within ping_interval; unanswered, the
    # session is gone after ping_timeout.
    sid, _ = await handshake(port)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    status, _, body = await request(port, "GET", target)
    assert (status, body) == (200, b"2")
    # Past ping_timeout, unanswered: the session is gone.
    await pause(1.5)
    assertError(await request(port, "GET", target), 400, 1)

    sid, _ = await handshake(port)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    status, _, _ = await request(port, "POST", target, b"4" + b"x" * 200)
    assert status == 413
    assertError(await request(port, "GET", target), 400, 1)


@pytest_twisted.ensureDeferred
async def test_webSocketHandshakeRefusals(socketio_server, gateway_process, tmp_path) -> None:
    """
    A WebSocket handshake with a bad C{EIO} or C{transport}, an unknown sid
    or a foreign Origin is refused before any upgrade, with the reference
    server's JSON body.
    """
    port = await startGateway(gateway_process, tmp_path, socketio_server)
    key = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    for query, status, code, extra in [
        ("EIO=3&transport=websocket", 400, 5, ""),
        ("EIO=4&transport=polling", 400, 3, ""),
        ("EIO=4&transport=websocket&sid=nope", 400, 1, ""),
        ("EIO=4&transport=websocket", 403, 4, "Origin: https://evil.example\r\n"),
    ]:
        raw = f"GET /socket.io/?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{key}{extra}\r\n".encode()
        answer = await rawExchange(port, raw, timeout=30)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 %d " % status), answer
        assert json.loads(body)["code"] == code


@pytest.mark.parametrize("transports", ["polling", "websocket", "polling,websocket"])
@pytest.mark.parametrize("serverKind", ["python", "node"])
@pytest.mark.parametrize("clientKind", ["python", "node"])
@pytest_twisted.ensureDeferred
async def test_socketIOPeers(gateway_process, tmp_path, clientKind, serverKind, transports) -> None:
    """
    Each Socket.IO client (python-socketio's, Node's socket.io-client)
    through the gateway to each Socket.IO server (python-socketio's,
    Node's socket.io 4), over each transport: events, binary attachments,
    acks both ways, order, the server's disconnect; the server sees the
    client's query, cookies, Authorization and the forwarding headers.
    """
    from twisted.internet import utils

    server = await startSocketIOServer(serverKind)
    try:
        port = await startGateway(gateway_process, tmp_path, int(server.match.group(1)))
        if clientKind == "python":
            command, args = sys.executable, [str(HERE / "client.py")]
        else:
            command, args = node(), [str(HERE / "client.mjs")]
        out, err, code = await utils.getProcessOutputAndValue(
            command, [*args, f"http://127.0.0.1:{port}", transports], env={"PATH": "/usr/bin:/bin"},
            path=str(HERE))
    finally:
        server.signal("KILL")
        try:
            await server.wait(10)
        except Exception:
            pass
    assert code == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert seen["echoAck"] == {"text": "héllo", "n": [1, 2, 3]} == seen["echo"]
    assert seen["binaryAck"] == 10240 and seen["binaryOk"]
    assert seen["answer"] == {"answer": 42}
    assert seen["ordered"] and seen["serverDisconnected"]
    assert seen["transport"] == transports.split(",")[-1]
    who = seen["whoami"]
    assert who["cookie"] == "flavour=oatmeal" and who["authorization"] == "Bearer t0ken"
    assert who["forwarded_for"] == "127.0.0.1" and who["auth"] == {"token": "abc"}
    assert who["query"] == "EIO=4&transport=websocket"


@pytest_twisted.ensureDeferred
async def test_backendDropClosesSession(gateway_process, tmp_path) -> None:
    """
    When the Socket.IO server goes away, each of its sessions at the
    gateway is closed: a held poll gets the close packet, then the sid is
    unknown.
    """
    server = await startProcess([sys.executable, str(HERE / "server.py")], r"listening on (\d+)")
    try:
        port = await startGateway(gateway_process, tmp_path, int(server.match.group(1)))
        sid, _ = await handshake(port)
        target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
        status, _, _ = await request(port, "POST", target, b"40")
        assert status == 200
        status, _, body = await request(port, "GET", target)
        assert body.startswith(b'40{"sid"'), body
        (poll,) = await held(port, target)
        server.signal("KILL")
        answer = await poll
        assert answer.endswith(b"\r\n\r\n1"), answer
        assertError(await request(port, "GET", target), 400, 1)
    finally:
        server.signal("KILL")
        try:
            await server.wait(10)
        except Exception:
            pass


def secondWebSocket(port: int, sid: str) -> tuple[str, bool, str]:
    """
    (In a thread.)  Open a WebSocket upgrading session C{sid}, then a
    second one for it.

    @return: what the second one got (C{""}: a close), whether it is
        closed, and the first one's answer to its probe.
    """
    import websocket

    url = f"ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&sid={sid}"
    first = websocket.create_connection(url, timeout=10)
    second = websocket.create_connection(url, timeout=10)
    try:
        got = second.recv()
        closed = not second.connected
    finally:
        second.shutdown()  # close() leaves the socket open once the server closed it
    try:
        first.send("2probe")
        probe = first.recv()
    finally:
        first.close()
        first.shutdown()
    return got, closed, probe


@pytest_twisted.ensureDeferred
async def test_oneWebSocketPerSession(socketio_server, gateway_process, tmp_path) -> None:
    """
    A second WebSocket for a session that already has one is accepted and
    closed at once; the first goes on.
    """
    from twisted.internet.threads import deferToThread

    port = await startGateway(gateway_process, tmp_path, socketio_server)
    sid, _ = await handshake(port)
    got, closed, probe = await deferToThread(secondWebSocket, port, sid)
    assert got == "" and closed
    assert probe == "3probe"


@pytest_twisted.ensureDeferred
async def test_refusalsAreJSON(socketio_server, gateway_process, tmp_path) -> None:
    """
    A handshake the Socket.IO server refuses gets 502 over either
    transport, with the reference server's JSON body, never HTML; a
    WebSocket handshake Autobahn itself refuses (no key) gets a JSON 400; a
    POST of C{application/octet-stream} (Engine.IO 3's binary payloads) is
    refused 400 with code 3, as the reference server refuses it with
    C{EIO=4}, and the session goes on.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(socketIOFile([socketio_server], route="ping_interval = 60\n",
                                   extra='[[route]]\nprefix = "/refused/"\npool = "app"\n'
                                         'protocol = "socket.io"\nbackend_path = "/nope/"\n'))
    port = (await gateway_process("--config", str(config))).port
    for status, headers, body in (
        await request(port, "GET", "/refused/?EIO=4&transport=polling"),
        await upgradeAnswer(port, "/refused/?EIO=4&transport=websocket"),
    ):
        assert (status, headers["content-type"]) == (502, "application/json"), body
        assert json.loads(body)["code"] == 3 and "refused" in json.loads(body)["message"]
    raw = (f"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    head, _, body = (await rawExchange(port, raw, timeout=30)).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"Content-Type: application/json" in head, head
    assert json.loads(body)["code"] == 3

    sid, _ = await engineHandshake(port)
    target = f"/socket.io/?EIO=4&transport=polling&sid={sid}"
    for contentType in ("application/octet-stream", "Application/Octet-Stream; x=1"):
        answer = await request(port, "POST", target, b"\x04binary", headers=f"Content-Type: {contentType}\r\n")
        assertError(answer, 400, 3)
        assert "octet-stream" in json.loads(answer[2])["message"]
    status, _, body = await request(port, "POST", target, b'421["echo","x"]',
                                    headers="Content-Type: text/plain;charset=UTF-8\r\n")
    assert (status, body) == (200, b"ok")
    await pollUntil(port, sid, b'431["x"]')


@pytest.mark.parametrize("websocket", [False, True])
@pytest_twisted.ensureDeferred
async def test_shutdownClosesSessions(socketio_server, gateway_process, tmp_path, websocket) -> None:
    """
    SIGTERM ends every Socket.IO session at once, so that clients reconnect
    without waiting for a ping timeout: a held poll is answered with the
    close packet (also when no WebSocket's closing makes the stop wait), a
    WebSocket is closed with 1001 (going away), and the gateway exits with
    status 0.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(socketIOFile([socketio_server], route="ping_interval = 60\nping_timeout = 60\n",
                                   top="[timeouts]\nshutdown = 5\n"))
    process = await gateway_process("--config", str(config))
    sid, _ = await engineHandshake(process.port)
    client = (await engineWebSocket(process.port))[0] if websocket else None
    (poll,) = await held(process.port, f"/socket.io/?EIO=4&transport=polling&sid={sid}")
    started = reactor.seconds()
    process.signal("TERM")
    answer = await poll
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n1"), answer
    if client is not None:
        _, code, _ = await client.closed.addTimeout(30, reactor)
        assert code == 1001
    assert await process.wait() == 0
    print(f"\nshutdown: poll answered and WebSocket closed within {reactor.seconds() - started:.2f}s")
