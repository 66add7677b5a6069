"""
The admin API of a real C{twistd -n gateway} process, driven over its own
socket, in front of echo backends that say their name.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from gateway.testing import connectClient, rawExchange

TOKEN = "integration-admin-token-0123456789"


class LineWatcher:
    """
    Waits for lines of a child process's output, as they arrive.
    """

    def __init__(self, process) -> None:
        self.lines = process.protocol.lines
        self._waiting: list[tuple[re.Pattern, int, Deferred]] = []
        received = process.protocol.outReceived

        def hooked(data: bytes) -> None:
            received(data)
            self._check()

        process.protocol.outReceived = hooked
        process.protocol.errReceived = hooked

    def mark(self) -> int:
        """
        @return: where the output is now, for L{wait}.
        """
        return len(self.lines)

    def wait(self, pattern: str, since: int, timeout: float = 15.0) -> Deferred:
        """
        @return: L{Deferred} firing with the first line after C{since}
            matching C{pattern}.
        """
        d: Deferred = Deferred()
        self._waiting.append((re.compile(pattern), since, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def matching(self, pattern: str, since: int = 0) -> list[str]:
        """
        @return: the lines after C{since} matching C{pattern}.
        """
        regex = re.compile(pattern)
        return [line for line in self.lines[since:] if regex.search(line)]

    def _check(self) -> None:
        for entry in list(self._waiting):
            regex, since, d = entry
            for line in self.lines[since:]:
                if regex.search(line):
                    self._waiting.remove(entry)
                    if not d.called:
                        d.callback(line)
                    break


def poolFile(backends, extra: str = "", **weights: int) -> str:
    """
    @return: a configuration with one pool C{chat} of C{backends} (each
        named as the backend names itself), then C{extra}.
    """
    text = "[timeouts]\nshutdown = 2\n" + extra + "[pool.chat]\n"
    for backend in backends:
        text += f'[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
        if backend.name in weights:
            text += f"weight = {weights[backend.name]}\n"
    return text


async def startGateway(gateway_process, tmp_path: Path, text: str, *args: str):
    """
    Run C{twistd -n gateway --config FILE} with the admin API on a free
    port of 127.0.0.1.

    @return: C{(process, admin port, line watcher, config file)}.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    process = await gateway_process("--config", str(config), "--admin", "tcp:0:interface=127.0.0.1",
                                    "--admin-token-file", str(token), *args)
    [port] = re.findall(r"admin API listening on 127\.0\.0\.1:(\d+)", process.output)
    return process, int(port), LineWatcher(process), config


async def admin(port: int, method: str, path: str, body: bytes = b"", token: str | None = TOKEN):
    """
    One admin request over a fresh connection.

    @return: C{(status, JSON body)}.
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    answer = await rawExchange(port, head.encode() + body)
    status, _, rest = answer.partition(b"\r\n\r\n")
    return int(status.split(b" ", 2)[1]), json.loads(rest)


async def whichBackend(client) -> str:
    """
    Ask a prefixed echo backend for its name through an open client.
    """
    client.send("who")
    payload, _ = await client.receive()
    return payload.split(b":", 1)[0].decode()


def backendsByName(pools: dict) -> dict[str, dict]:
    """
    @return: the backends of pool C{chat} in a C{GET /pools} answer, by name.
    """
    [pool] = [p for p in pools["pools"] if p["name"] == "chat"]
    return {b["name"]: b for b in pool["backends"]}


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
