"""
Tests for L{gateway.workers.sockets} and the two helpers of L{gateway.tcp}
it uses: a listening socket bound here and adopted again, as a worker
adopts its supervisor's, keeps working for the others when one adopter
stops, TCP and Unix alike.
"""

from __future__ import annotations

import os
import socket

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import SSL4ServerEndpoint, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions

from gateway.tcp import tlsContextFactory
from gateway.workers.sockets import adoptedEndpoint, bindShared


class _Hello(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")
        self.transport.loseConnection()


def _connect(family: int, address) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(address)
        return s.recv(5)


async def _adoptTwice(description: str, family: int):
    shared = await bindShared(reactor, description, serverFromString(reactor, description))
    ports = []
    for _ in range(2):
        endpoint = adoptedEndpoint(reactor, os.dup(shared.fileno()), shared.family, description)
        ports.append(await endpoint.listen(Factory.forProtocol(_Hello)))
    return shared, ports


@pytest_twisted.ensureDeferred
async def test_tcpSharedAfterOneStops():
    """
    Two ports adopted from one TCP socket: after one stops listening, the
    other still accepts.
    """
    shared, (first, second) = await _adoptTwice("tcp:0:interface=127.0.0.1", socket.AF_INET)
    address = ("127.0.0.1", shared.port.getHost().port)
    await first.stopListening()
    answer = await _inThread(_connect, socket.AF_INET, address)
    assert answer == b"hello"
    await second.stopListening()
    await shared.port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unixSharedAfterOneStops(tmp_path):
    """
    Two ports adopted from one Unix socket: after one stops listening, the
    path is still there and the other still accepts; the binder removes the
    path when it stops.
    """
    path = str(tmp_path / "s.sock")
    shared, (first, second) = await _adoptTwice(f"unix:{path}", socket.AF_UNIX)
    assert shared.family == "unix"
    await first.stopListening()
    assert os.path.exists(path)
    assert await _inThread(_connect, socket.AF_UNIX, path) == b"hello"
    await second.stopListening()
    await shared.port.stopListening()
    assert not os.path.exists(path)


def test_tlsContextFactory():
    """
    The TLS settings of an C{ssl:} endpoint are found; other endpoints have
    none.  (A worker running TLS on an adopted socket is tested with real
    processes: tests/integration/test_workers.py.)
    """
    options = CertificateOptions()
    assert tlsContextFactory(SSL4ServerEndpoint(reactor, 0, options)) is options
    assert tlsContextFactory(serverFromString(reactor, "tcp:0")) is None


def _inThread(f, *args):
    from twisted.internet.threads import deferToThread

    return deferToThread(f, *args)
