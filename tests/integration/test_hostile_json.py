"""
Deeply nested and otherwise hostile JSON sent to a real C{twistd -n gateway}
process: over long-polling, over a WebSocket session and to the admin API,
each is answered with a clean refusal (400 JSON, close 4400), nothing like a
traceback reaches the log, and a normal client is served afterwards.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from .helpers import admin, poolFile, startGateway
from gateway.testing import connectClient, rawExchange
from gateway.wire.protocol import MAX_JSON_DEPTH, SUBPROTOCOL

T = 10.0
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


async def post(port: int, kind: str, body: bytes) -> tuple[int, bytes, bytes]:
    """
    One long-polling request over a fresh connection.

    @return: C{(status, head, body)}.
    """
    head = (f"POST /?txgw={kind}&n=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    answer = await rawExchange(port, head + body, timeout=T)
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, rest


def assertClean(output: str) -> None:
    """
    Nothing in the gateway's log says an exception escaped.
    """
    for word in ("Traceback", "RecursionError", "Unhandled", "Error"):
        assert word not in output, output[-2000:]


@pytest_twisted.ensureDeferred
async def test_deepNestingRefusedEverywhere(tmp_path, echo_backends, gateway_process):
    """
    A body nested 100,000 deep gets 400 with a JSON body (code 4400) on the
    long-polling C{open} and C{send}; the same as a WebSocket control packet
    closes the connection with 4400; the admin API's C{/weight} answers 400
    JSON (and so do NaN and 1e999).  The log holds no traceback, and a session client is served
    afterwards.
    """
    [one] = await echo_backends(1)
    process, adminPort, _, _ = await startGateway(gateway_process, tmp_path, poolFile([one]))

    for kind, body in [("open", DEEP), ("send", DEEP), ("open", DEEP_OBJECT),
                       ("send", b'{"sid":"x","secret":"y","packets":' + DEEP + b"}"),
                       ("open", b'{"t":"hello","v":1,"x":' + b"[" * (MAX_JSON_DEPTH + 1)
                        + b"]" * (MAX_JSON_DEPTH + 1) + b"}"),
                       ("open", b'{"t":"hello","v":NaN}'), ("open", b'{"t":"hello","v":1e999}'),
                       ("open", b'"\xed\xa0\x80"'), ("open", b"1" * 5000),
                       ("send", b'{"sid":"\\ud800","secret":"\\udfff","packets":[]}')]:
        status, head, answer = await post(process.port, kind, body)
        assert status == 400, (kind, body[:60], head, answer[:200])
        assert b"content-type: application/json" in head.lower()
        payload = json.loads(answer)
        assert (payload["status"], payload["code"]) == (400, 4400), payload

    raw = await connectClient(process.url, protocols=[SUBPROTOCOL])
    raw.send(b"{" + b'"a":{' * 50_000 + b"}" * 50_001, isBinary=False)
    wasClean, code, reason = await raw.closed.addTimeout(T, reactor)
    assert code == 4400, (wasClean, code, reason)
    assert "nest deeper than 32" in reason

    deep = b"[" * 30_000 + b"]" * 30_000  # within the admin API's 64 KiB bodies
    for body in [b'{"weight":' + deep + b"}", deep, b'{"weight":NaN}', b'{"weight":1e999}']:
        status, answer = await admin(adminPort, "POST", "/pools/chat/backends/backend-1/weight", body)
        assert (status, answer["status"]) == (400, 400), answer
    status, answer = await admin(adminPort, "POST", "/pools/chat/backends/backend-1/weight", deep)
    assert "nest deeper than 32 levels" in answer["message"]

    client = await connectClient(process.url, protocols=[SUBPROTOCOL])
    client.send('{"t":"hello","v":1}')
    welcome, _ = await client.receive(T)
    assert json.loads(welcome)["t"] == "welcome"
    client.send("1:still served")
    while True:
        payload, _ = await client.receive(T)
        if not payload.startswith(b"{"):
            break
    assert payload == b"1:still served"
    await client.close().addTimeout(T, reactor)

    assertClean(process.output)
    process.signal("TERM")
    assert await process.wait() == 0
