"""
Origin checks against a real C{twistd gateway} process: session-mode
upgrades and long-polling refuse other sites' pages by default; transparent
upgrades are checked only on a route that sets C{allowed_origins}.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest_twisted

from gateway.testing import connectClient, rawExchange

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
CLOSE = b"\x88\x80abcd"  # a masked close frame, so that a 101 connection ends


def upgrade(port: int, path: bytes, origin: bytes | None, session: bool) -> bytes:
    """
    @return: a WebSocket upgrade request head for C{path} with C{Host} the
        gateway's own address, in session mode with C{session}.
    """
    head = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" % (
        path, port) + KEY
    if session:
        head += b"Sec-WebSocket-Protocol: txgateway.v1\r\n"
    if origin is not None:
        head += b"Origin: " + origin + b"\r\n"
    return head + b"\r\n"


async def startGateway(gateway_process, tmp_path: Path, backend) -> int:
    """
    Run the gateway with C{/open} (no list) and C{/app} (allowing
    C{https://app.example}) routed to C{backend}.

    @return: its port.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[route]]\nprefix = "/open"\npool = "echo"\n'
        '[[route]]\nprefix = "/app"\npool = "echo"\nallowed_origins = ["https://app.example"]\n'
        f'[pool.echo]\n[[pool.echo.backend]]\nurl = "ws://127.0.0.1:{backend.port}"\n'
    )
    process = await gateway_process("--config", str(config))
    return process.port


def assertForbidden(answer: bytes) -> None:
    """
    C{answer} is a 403 with the gateway's JSON error body.
    """
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    assert b"Content-Type: application/json" in head
    payload = json.loads(body)
    assert payload["error"] == "Forbidden" and payload["status"] == 403


@pytest_twisted.ensureDeferred
async def test_session_upgrades(echo_backends, gateway_process, tmp_path):
    """
    A session-mode upgrade from another site's page gets 403 and the
    backend sees no connection; from the gateway's own origin, from a
    listed origin and without Origin it gets 101.
    """
    [backend] = await echo_backends(1)
    port = await startGateway(gateway_process, tmp_path, backend)
    assertForbidden(await rawExchange(port, upgrade(port, b"/open", b"https://evil.example", True)))
    assertForbidden(await rawExchange(port, upgrade(port, b"/app", b"https://evil.example", True)))
    assertForbidden(await rawExchange(port, upgrade(port, b"/open", b"null", True)))
    assert backend.factory.handshakes == []
    for path, origin in [(b"/open", b"http://127.0.0.1:%d" % port), (b"/open", None),
                         (b"/app", b"https://app.example")]:
        answer = await rawExchange(port, upgrade(port, path, origin, True) + CLOSE)
        assert answer.startswith(b"HTTP/1.1 101 "), (path, origin, answer)
    client = await connectClient(f"ws://127.0.0.1:{port}", path="/open")
    client.send("still served")
    assert (await client.receive())[0] == b"still served"
    await client.close()


@pytest_twisted.ensureDeferred
async def test_long_polling(echo_backends, gateway_process, tmp_path):
    """
    A long-polling open from another site's page gets 403 (code 4003, final for the clients);
    without Origin it opens a session.
    """
    [backend] = await echo_backends(1)
    port = await startGateway(gateway_process, tmp_path, backend)
    hello = json.dumps({"t": "hello", "v": 1}).encode()
    post = b"POST /open?txgw=open HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % port
    post += b"Content-Length: %d\r\n" % len(hello)
    answer = await rawExchange(port, post + b"Origin: https://evil.example\r\n\r\n" + hello)
    assertForbidden(answer)
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["code"] == 4003
    assert backend.factory.handshakes == []
    answer = await rawExchange(port, post + b"\r\n" + hello)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"welcome"' in answer


@pytest_twisted.ensureDeferred
async def test_transparent_upgrades(echo_backends, gateway_process, tmp_path):
    """
    On a route without allowed_origins a transparent upgrade from any
    origin goes on, its Origin passed to the backend unchanged; on a route
    with a list, a foreign origin gets 403 without reaching the backend,
    also as the second request of a kept-alive connection, and a listed
    origin gets 101.
    """
    [backend] = await echo_backends(1)
    port = await startGateway(gateway_process, tmp_path, backend)
    answer = await rawExchange(port, upgrade(port, b"/open", b"https://evil.example", False) + CLOSE)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert b"Origin: https://evil.example" in backend.factory.handshakes[0].split(b"\r\n")
    assertForbidden(await rawExchange(port, upgrade(port, b"/app", b"https://evil.example", False)))
    health = b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n"
    answer = await rawExchange(port, health + upgrade(port, b"/app", b"https://evil.example", False))
    assert answer.startswith(b"HTTP/1.1 200 ")
    assertForbidden(answer[answer.index(b"HTTP/1.1 403"):])
    assert len(backend.factory.handshakes) == 1
    answer = await rawExchange(port, upgrade(port, b"/app", b"https://app.example", False) + CLOSE)
    assert answer.startswith(b"HTTP/1.1 101 ")
    assert len(backend.factory.handshakes) == 2
