"""
Every request head on a connection to a real C{twistd -n gateway} process
is held to the front door's strict parser and checks, the second request of
a kept-alive connection as the first: hostile heads get a 400 with the
gateway's JSON body, the backend never sees them, and a normal client is
served afterwards.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from gateway.testing import connectClient, rawExchange

KEY = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"

#: A plain request kept alive, sent first on every connection.
FIRST = b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\n\r\n"


def upgrade(path: bytes = b"/public/room", extra: bytes = b"") -> bytes:
    """
    @return: a WebSocket upgrade head for C{path} with the C{extra} header
        lines (each ending in CRLF), and its final blank line.
    """
    return (b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\n" + KEY + extra + b"\r\n")


#: Hostile second requests, and a word of the 400's message.
HOSTILE = {
    "dot-dot": (upgrade(b"/public/../admin"), "segments"),
    "encoded dot-dot": (upgrade(b"/public/%2e%2e/admin"), "segments"),
    "control byte": (upgrade(extra=b"X-Note: a\x01b\r\n"), "control character"),
    "obs-fold": (upgrade(extra=b"X-Note: a\r\n folded\r\n"), "folding"),
    "8-bit path byte": (upgrade(b"/public/\xff"), "request line"),
    "length and chunked": (upgrade(extra=b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n")
                           + b"0\r\n\r\n", "Transfer-Encoding"),
    "two lengths": (upgrade(extra=b"Content-Length: 4\r\nContent-Length: 5\r\n") + b"abcde",
                    "conflicting"),
    "body": (upgrade(extra=b"Content-Length: 4\r\n") + b"abcd", "body"),
    "two hosts": (upgrade(extra=b"Host: other\r\n"), "Host"),
}


def split(answer: bytes) -> list[tuple[int, bytes]]:
    """
    @return: the C{(status, body)} of each response in C{answer} (all have
        a C{Content-Length}).
    """
    out = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        out.append((status, rest[:length]))
        answer = rest[length:]
    return out


@pytest_twisted.async_yield_fixture
async def gateway(tmp_path, echo_backends, gateway_process):
    """
    A gateway process with one route, C{/public}, to an echo backend
    (C{/admin} is not routed); yields C{(process, backend)}.
    """
    [backend] = await echo_backends(1)
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[timeouts]\nshutdown = 2\n"
        f'[pool.chat]\n[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
        '[[route]]\nprefix = "/public"\npool = "chat"\n'
    )
    process = await gateway_process("--config", str(config))
    yield process, backend


async def servedAfterwards(process, backend) -> None:
    """
    A normal WebSocket client on C{/public} is tunnelled and echoed.
    """
    before = backend.factory.opened
    client = await connectClient(process.url, path="/public/room")
    client.send("hello")
    payload, _ = await client.receive()
    assert b"hello" in payload
    await client.close()
    assert backend.factory.opened == before + 1


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest_twisted.ensureDeferred
async def test_hostile_second_request(gateway, case):
    """
    After a kept-alive plain GET, each hostile upgrade on the same
    connection gets the front door's 400 with a JSON body naming what was
    wrong; the backend never sees it; a normal client is then served.
    """
    process, backend = gateway
    request, word = HOSTILE[case]
    answers = split(await rawExchange(process.port, FIRST + request))
    assert [status for status, _ in answers] == [200, 400]
    payload = json.loads(answers[1][1])
    assert payload["status"] == 400 and payload["error"] == "Bad Request"
    assert word in payload["message"]
    assert backend.factory.opened == 0 and backend.factory.handshakes == []
    await servedAfterwards(process, backend)


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest_twisted.ensureDeferred
async def test_hostile_first_request(gateway, case):
    """
    The same heads as the first request of a connection get the same 400.
    """
    process, backend = gateway
    request, word = HOSTILE[case]
    [(status, body)] = split(await rawExchange(process.port, request))
    assert status == 400 and word in json.loads(body)["message"]
    assert backend.factory.opened == 0


@pytest_twisted.ensureDeferred
async def test_hostile_plain_second_request(gateway):
    """
    Plain (non-upgrade) second requests are held to the same parser: a
    dot segment, a control byte, an obs-fold line, an 8-bit path byte and
    two Host headers each get the JSON 400, where the same request without
    the fault gets its ordinary answer.
    """
    process, backend = gateway
    plain = {
        b"GET /public/../admin HTTP/1.1\r\nHost: x\r\n\r\n": "segments",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Note: a\x7fb\r\n\r\n": "control character",
        b"GET /x HTTP/1.1\r\nHost: x\r\nX-Note: a\r\n\tb\r\n\r\n": "folding",
        b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n": "request line",
        b"GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n": "Host",
    }
    for request, word in plain.items():
        answers = split(await rawExchange(process.port, FIRST + request))
        assert [status for status, _ in answers] == [200, 400], request
        assert word in json.loads(answers[1][1])["message"]
    fine = b"GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert [s for s, _ in split(await rawExchange(process.port, FIRST + fine))] == [200, 404]
    await servedAfterwards(process, backend)


@pytest_twisted.ensureDeferred
async def test_clean_second_upgrade_is_tunnelled(gateway):
    """
    A well-formed upgrade as the second request is still tunnelled, and a
    C{Content-Length: 0} on it is no body.
    """
    process, backend = gateway
    answer = await rawExchange(process.port, FIRST + upgrade(extra=b"Content-Length: 0\r\n")
                               + b"\x88\x80abcd")
    assert b"HTTP/1.1 200" in answer and b"HTTP/1.1 101" in answer
    assert backend.factory.opened == 1
