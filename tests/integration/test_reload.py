"""
Reloading a real C{twistd -n gateway} process's file on SIGHUP, and how it
ends on SIGTERM.
"""

from __future__ import annotations

import base64
import hashlib
import os
from types import SimpleNamespace

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.service import STOP_MARGIN
from gateway.testing import connectClient

from .helpers import admin, backendsByName, poolFile, startGateway, whichBackend


@pytest_twisted.ensureDeferred
async def test_sighupAddsAndRemovesBackends(tmp_path, echo_backends, gateway_process):
    """
    On SIGHUP the file is read again: a backend added gets new clients; a
    backend removed gets none, keeps its open connections, and leaves the
    pool once the last one has ended.
    """
    one, two = await echo_backends(2, prefix=True)
    process, port, watcher, config = await startGateway(gateway_process, tmp_path, poolFile([one]))
    old = await connectClient(process.url)
    assert await whichBackend(old) == "backend-1"

    config.write_text(poolFile([two]))
    mark = watcher.mark()
    process.signal("HUP")
    line = await watcher.wait("configuration reloaded", mark)
    assert line.endswith(
        "pool chat: backend backend-1 removed (draining); pool chat: backend backend-2 added")
    new = [await connectClient(process.url) for _ in range(3)]
    assert [await whichBackend(c) for c in new] == ["backend-2"] * 3
    assert await whichBackend(old) == "backend-1"
    status, pools = await admin(port, "GET", "/pools")
    gone = backendsByName(pools)["backend-1"]
    assert (gone["removed"], gone["draining"], gone["connections"]) == (True, True, 1)

    mark = watcher.mark()
    await old.close().addTimeout(10, reactor)
    await watcher.wait("backend backend-1 of pool chat removed: its last connection ended", mark)
    status, pools = await admin(port, "GET", "/pools")
    assert sorted(backendsByName(pools)) == ["backend-2"]
    for client in new:
        await client.close().addTimeout(10, reactor)
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_sighupBadFile(tmp_path, echo_backends, gateway_process):
    """
    A file that has gone wrong leaves the gateway as it was, with one line
    naming the file, the key and the reason; a later good file is applied.
    """
    one, two = await echo_backends(2, prefix=True)
    process, port, watcher, config = await startGateway(gateway_process, tmp_path, poolFile([one]))
    config.write_text(poolFile([one, two]).replace('name = "backend-2"', 'name = "backend-2"\nweight = 0'))
    mark = watcher.mark()
    process.signal("HUP")
    line = await watcher.wait("reload failed", mark)
    assert line.endswith(
        f"gateway: reload failed, nothing changed: {config}: "
        "pool.chat.backend[1].weight: must be an integer >= 1, not 0")
    client = await connectClient(process.url)
    assert await whichBackend(client) == "backend-1"
    status, pools = await admin(port, "GET", "/pools")
    assert sorted(backendsByName(pools)) == ["backend-1"]

    config.write_text(poolFile([one, two]))
    mark = watcher.mark()
    process.signal("HUP")
    await watcher.wait("configuration reloaded", mark)
    status, pools = await admin(port, "GET", "/pools")
    assert sorted(backendsByName(pools)) == ["backend-1", "backend-2"]
    assert len(watcher.matching("reload failed")) == 1
    await client.close().addTimeout(10, reactor)
    process.signal("TERM")
    assert await process.wait() == 0


class SilentClient(Protocol):
    """
    A WebSocket client that completes its handshake, then never reads a
    frame nor answers the gateway's close.
    """

    def connectionMade(self) -> None:
        key = base64.b64encode(os.urandom(16))
        self.transport.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and not self.factory.upgraded.called:
            self.factory.upgraded.callback(self.received)

    def connectionLost(self, reason) -> None:
        self.factory.lost.callback(reactor.seconds())


class SilentBackend(Protocol):
    """
    A WebSocket server that accepts the handshake, then never reads a frame
    nor answers the gateway's close.
    """

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        if self.received is None:
            return
        self.received += data
        if b"\r\n\r\n" in self.received:
            key = [line.split(b":", 1)[1].strip() for line in self.received.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            self.received = None


@pytest_twisted.ensureDeferred
async def test_sigtermExitsZeroWithinDeadline(tmp_path, gateway_process):
    """
    On SIGTERM the gateway sends its closes, aborts at C{timeouts.shutdown}
    a tunnel whose client and backend both leave them unanswered, and exits
    with status 0 within C{timeouts.shutdown} + L{STOP_MARGIN} (plus the
    time a process takes to end).
    """
    listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        Factory.forProtocol(SilentBackend))
    try:
        silent = SimpleNamespace(name="silent", url=f"ws://127.0.0.1:{listening.getHost().port}")
        await endsWithinDeadline(tmp_path, gateway_process, silent)
    finally:
        await listening.stopListening()


async def endsWithinDeadline(tmp_path, gateway_process, backend) -> None:
    """
    Tunnel a silent client to C{backend}, SIGTERM the gateway, and check
    the abort time and the exit status.
    """
    process, _, _, _ = await startGateway(gateway_process, tmp_path, poolFile([backend]))
    factory = Factory.forProtocol(SilentClient)
    factory.upgraded, factory.lost = Deferred(), Deferred()
    await TCP4ClientEndpoint(reactor, "127.0.0.1", process.port).connect(factory)
    head = await factory.upgraded.addTimeout(10, reactor)
    assert head.startswith(b"HTTP/1.1 101 ")
    shutdown = 2.0  # poolFile's [timeouts] shutdown
    started = reactor.seconds()
    process.signal("TERM")
    aborted = await factory.lost.addTimeout(shutdown + 10, reactor)
    assert shutdown - 0.5 <= aborted - started < shutdown + STOP_MARGIN + 2
    assert await process.wait(shutdown + STOP_MARGIN + 10) == 0
    assert "Traceback" not in process.output
