"""
The access log against a real C{twistd -n gateway}: a transparent
connection (behind a PROXY header, so the client is the carried address)
and a session (WebSocket, then long-polling) each give one JSON line with
the client, route, backend, mode, transport, duration, bytes and messages
each way and the close code.
"""

from __future__ import annotations

import json
import re

import pytest_twisted
from twisted.internet import reactor

from gateway.client import SessionClient
from gateway.testing import waitUntil

from .helpers import localTCP, markedUpgrade, proxyV2, sendAndCollect, startGateway

T = 10.0
PROXIED = "haproxy:tcp:0:interface=127.0.0.1"


def records(path) -> list[dict]:
    """
    @return: the access log's lines so far, decoded.
    """
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def gatewayFile(backends, log) -> str:
    """
    @return: a configuration trusting 127.0.0.1 for PROXY headers, with an
        access log at C{log} and one route C{/chat} to C{backends}.
    """
    text = (f'proxy_protocol_from = ["127.0.0.1/32"]\n[access_log]\npath = "{log}"\n'
            '[timeouts]\nshutdown = 2\n[[route]]\nprefix = "/chat"\npool = "echo"\n[pool.echo]\n')
    for backend in backends:
        text += f'[[pool.echo.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
    return text


@pytest_twisted.ensureDeferred
async def test_tunnel_and_session_lines(echo_backends, gateway_process, tmp_path):
    """
    One line for a transparent tunnel on a PROXY listener (its client the
    carried address, 101, one data frame and its echo, close code 1000),
    and one for a session over each transport on a plain listener (two
    messages and their payload bytes each way, close code 4000: the client
    ended it).
    """
    backends = await echo_backends(1)
    log = tmp_path / "access.log"
    gateway, _, watcher, _ = await startGateway(gateway_process, tmp_path, gatewayFile(backends, log),
                                                "--listen", "tcp:0:interface=127.0.0.1", "--listen", PROXIED)
    # Polled: the line may have come in the same read as the one the
    # process was found ready by, before the watcher was hooked in.
    await waitUntil(lambda: watcher.matching(r"gateway listening on 127\.0\.0\.1:\d+ \(haproxy:"), T)
    [line] = watcher.matching(r"gateway listening on 127\.0\.0\.1:\d+ \(haproxy:")
    [proxied] = re.findall(r"127\.0\.0\.1:(\d+) \(haproxy:", line)

    answer = await sendAndCollect(localTCP(int(proxied)), proxyV2("203.0.113.77"), markedUpgrade("logged"))
    assert answer.startswith(b"HTTP/1.1 101 ")
    await waitUntil(lambda: len(records(log)) == 1, T)
    [tunnel] = records(log)
    assert tunnel["event"] == "tunnel" and tunnel["mode"] == "transparent"
    assert (tunnel["client"], tunnel["peer"]) == ("203.0.113.77", "203.0.113.77")
    assert (tunnel["path"], tunnel["pool"], tunnel["backend"]) == ("/chat", "echo", backends[0].name)
    assert (tunnel["transport"], tunnel["tls"], tunnel["status"]) == ("websocket", False, 101)
    assert tunnel["messages_from_client"] == 1 and tunnel["messages_to_client"] == 1
    assert tunnel["bytes_from_client"] > 0 and tunnel["bytes_to_client"] > 0
    assert tunnel["close_code"] == 1000
    assert tunnel["duration"] >= 0 and tunnel["time"].endswith("Z")

    for transport, kind in (("websocket", "websocket"), ("polling", "longpoll")):
        client = SessionClient(f"ws://127.0.0.1:{gateway.port}/chat", reactor=reactor, transport=transport)
        received: list = []
        client.onMessage(lambda payload, isBinary: received.append(payload))
        await client.connect().addTimeout(T, reactor)
        client.send("one")
        client.send("three")
        await waitUntil(lambda: len(received) == 2, T)
        await client.close().addTimeout(T, reactor)
        await waitUntil(lambda: [r for r in records(log) if r.get("transport") == kind and r["event"] == "session"], T)
        [session] = [r for r in records(log) if r["event"] == "session" and r["transport"] == kind]
        assert session["mode"] == "session" and session["client"] == "127.0.0.1"
        assert (session["path"], session["pool"], session["backend"]) == ("/chat", "echo", backends[0].name)
        assert session["messages_from_client"] == 2 and session["messages_to_client"] == 2
        assert session["bytes_from_client"] == 8 and session["bytes_to_client"] == 8
        assert session["close_code"] == 4000 and session["reason"]
