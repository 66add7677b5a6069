"""
Tests for L{gateway.tcp.writeNow}: a write sent at once when the transport
has nothing buffered, and buffered, in order, otherwise; and for
L{gateway.tcp.connectionOpen}, through wrappers.
"""

from __future__ import annotations

import socket

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from gateway.tcp import connectionOpen, writeNow


@pytest.fixture
def pair():
    """
    A TCP transport over one end of a connected socket pair (its reactor a
    L{MemoryReactor}, which records writers), and the other end.
    """
    left, right = socket.socketpair()
    left.setblocking(False)
    right.settimeout(5)
    reactor = MemoryReactor()
    transport = tcp.Connection(left, Protocol(), reactor)
    transport.connected = True
    yield reactor, transport, right
    left.close()
    right.close()


def test_sentAtOnce(pair):
    """
    With nothing buffered, the data is sent in the call, and the transport
    is never registered for writability.
    """
    reactor, transport, peer = pair
    writeNow(transport, b"hello")
    assert peer.recv(100) == b"hello"
    assert reactor.getWriters() == []
    assert transport._tempDataLen == 0


def test_behindBufferedData(pair):
    """
    With data already buffered, the new data waits behind it: the bytes
    arrive in the order they were written.
    """
    reactor, transport, peer = pair
    transport.write(b"first ")
    writeNow(transport, b"second")
    assert reactor.getWriters() == [transport]
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)
    transport.doWrite()
    peer.setblocking(True)
    assert peer.recv(100) == b"first second"


def test_partialSendBuffersTheRest(pair):
    """
    What the socket does not take is buffered (and the transport registered
    for writability); it all arrives, in order.
    """
    reactor, transport, peer = pair
    data = bytes(range(256)) * 40000  # more than the socket buffers hold
    writeNow(transport, data)
    assert reactor.getWriters() == [transport]
    assert 0 < transport._tempDataLen < len(data)
    received = b""
    while len(received) < len(data):
        received += peer.recv(1 << 20)
        if transport._tempDataLen or transport.offset < len(transport.dataBuffer):
            transport.doWrite()
    assert received == data


def test_otherTransportsBuffer():
    """
    A transport that is not plain TCP gets an ordinary C{write}.
    """
    transport = StringTransport()
    writeNow(transport, b"hello")
    assert transport.value() == b"hello"


def test_disconnectingTransportBuffers(pair):
    """
    A transport whose connection is being closed is not written to
    directly: C{write} decides what becomes of the data.
    """
    reactor, transport, peer = pair
    transport.disconnecting = True
    writeNow(transport, b"late")
    peer.setblocking(False)
    with pytest.raises(BlockingIOError):
        peer.recv(100)


def test_connectionOpen(pair):
    """
    L{connectionOpen} reads the TCP connection's state through the
    wrappers over it (TLS, PROXY), whose own flag outlives the connection;
    a transport that is no TCP connection is never waited for.
    """
    from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

    _, transport, _ = pair
    wrapper = ProtocolWrapper(WrappingFactory(None), Protocol())
    wrapper.makeConnection(transport)
    assert connectionOpen(transport) and connectionOpen(wrapper)
    transport.connected = False
    assert wrapper.connected and not connectionOpen(wrapper)
    assert not connectionOpen(StringTransport())
