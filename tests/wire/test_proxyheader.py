"""
L{gateway.wire.proxyheader}: telling a PROXY header from anything else from
the first bytes, reading one header however it is cut into reads, its
bounds, and the carried address in normal form.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import LimitExceeded, ProtocolError
from gateway.wire.proxyheader import MAX_V2_HEADER, ProxyHeaderReader, proxiedEndpoint, sniff

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
REQUEST = b"GET / HTTP/1.1\r\n\r\n"


def v2(command: int = 0x21, family: int = 0x11, body: bytes | None = None, source: str = "192.0.2.1") -> bytes:
    """
    @return: a version 2 header (by default C{PROXY}, TCP over IPv4).
    """
    if body is None:
        address = ipaddress.ip_address(source)
        other = ipaddress.ip_address("127.0.0.1" if address.version == 4 else "::1")
        body = address.packed + other.packed + struct.pack("!HH", 4000, 80)
    return SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


def readAll(data: bytes, step: int | None = None):
    """
    Feed C{data} whole, or C{step} bytes at a time.

    @return: the header and the bytes after it.
    """
    reader = ProxyHeaderReader()
    step = step or len(data)
    header = None
    for i in range(0, len(data), step):
        header = reader.feed(data[i : i + step])
        if header is not None:
            break
    return header, reader.remaining


def test_proxiedEndpoint() -> None:
    """
    C{haproxy:} (any case) is taken off a listener's endpoint string;
    others are not listeners that read a header.
    """
    assert proxiedEndpoint("haproxy:tcp:8080") == "tcp:8080"
    assert proxiedEndpoint("HAProxy:ssl:8443:privateKey=k.pem") == "ssl:8443:privateKey=k.pem"
    assert proxiedEndpoint("tcp:8080") is None
    assert proxiedEndpoint("unix:/run/haproxy:x") is None


def test_sniff() -> None:
    """
    A stream is known to begin a header from 6 bytes (v1) or 12 (v2), and
    known not to as soon as a byte differs: a request's first byte.
    """
    assert sniff(b"") is None
    assert sniff(b"PROX") is None
    assert sniff(b"PROXY ") is True
    assert sniff(SIGNATURE[:11]) is None
    assert sniff(SIGNATURE) is True
    assert sniff(b"G") is False
    assert sniff(b"\r\n\r\n\x00\r\nQUIT!") is False
    assert sniff(b"PROXYZ") is False
    assert sniff(b"\r\nGET") is False


@pytest.mark.parametrize("step", [None, 1, 5, 15, 17])
def test_v1(step: int | None) -> None:
    """
    A v1 header in any number of reads: its source, and the bytes after it.
    """
    header, rest = readAll(b"PROXY TCP4 203.0.113.7 127.0.0.1 4000 80\r\n" + REQUEST, step)
    assert (header.version, header.source.host, header.source.port) == (1, "203.0.113.7", 4000)
    assert REQUEST.startswith(rest) and (step is not None or rest == REQUEST)


@pytest.mark.parametrize("step", [None, 1, 13, 16, 20])
def test_v2(step: int | None) -> None:
    """
    A v2 header in any number of reads (Twisted's own wrapper drops one
    whose first read is under 16 bytes).
    """
    header, rest = readAll(v2() + REQUEST, step)
    assert (header.version, header.source.host, header.source.port) == (2, "192.0.2.1", 4000)
    assert REQUEST.startswith(rest)


def test_normalForm() -> None:
    """
    IPv6 is written short (Twisted's parser writes every group), and IPv4
    mapped into IPv6 as IPv4.
    """
    assert readAll(v2(family=0x21, source="2001:db8::7"))[0].source.host == "2001:db8::7"
    assert readAll(b"PROXY TCP6 2001:DB8:0:0::7 ::1 1 2\r\n")[0].source.host == "2001:db8::7"
    assert readAll(b"PROXY TCP6 ::ffff:198.51.100.3 ::1 1 2\r\n")[0].source.host == "198.51.100.3"


def test_noClient() -> None:
    """
    v2 C{LOCAL}, v1 C{UNKNOWN}, and a v2 Unix or unspecified family carry
    no client: the real peer stands.
    """
    assert readAll(v2(command=0x20, body=b""))[0].source is None
    assert readAll(b"PROXY UNKNOWN\r\n")[0].source is None
    assert readAll(v2(family=0x31, body=b"/a".ljust(108, b"\0") + b"/b".ljust(108, b"\0")))[0].source is None
    assert readAll(v2(family=0x00, body=b""))[0].source is None


@pytest.mark.parametrize("data", [
    b"PROXY TCP4 x 127.0.0.1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 port 2\r\n",
    b"PROXY TCP4 1.2.3.4 127.0.0.1 70000 2\r\n",
    b"PROXY TCP4 1.2.3.4\r\n",
    b"PROXY TCP9 1.2.3.4 1.2.3.4 1 2\r\n",
    b"PROXY " + b"1" * 200,
    SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),
    SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 4) + bytes(4),
    SIGNATURE + bytes([0x22, 0x11]) + struct.pack("!H", 12) + bytes(12),
    SIGNATURE + bytes([0x21, 0x15]) + struct.pack("!H", 12) + bytes(12),
], ids=["v1-address", "v1-port", "v1-port-range", "v1-short", "v1-family", "v1-long",
        "v2-version", "v2-short", "v2-command", "v2-protocol"])
def test_malformed(data: bytes) -> None:
    """
    A malformed header is a L{ProtocolError} (never another exception),
    and its version is known.
    """
    reader = ProxyHeaderReader()
    with pytest.raises(ProtocolError):
        reader.feed(data)
    assert reader.version in (1, 2)


def test_notAHeader() -> None:
    """
    A stream that begins otherwise is a L{ProtocolError} with version 0.
    """
    reader = ProxyHeaderReader()
    with pytest.raises(ProtocolError):
        reader.feed(REQUEST)
    assert reader.version == 0


def test_v2TooLarge() -> None:
    """
    A v2 header claiming more than L{MAX_V2_HEADER} bytes is refused from
    its first 16, before the rest is read; one at the bound is read.
    """
    reader = ProxyHeaderReader()
    with pytest.raises(LimitExceeded):
        reader.feed(SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", MAX_V2_HEADER - 15))
    address = ipaddress.ip_address("192.0.2.9").packed + bytes(4) + struct.pack("!HH", 1, 2)
    body = address + bytes(MAX_V2_HEADER - 16 - len(address))
    assert readAll(v2(body=body))[0].source.host == "192.0.2.9"


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=40))
def test_anyBytes(data: bytes, step: int) -> None:
    """
    Whatever the bytes and however they are cut, the reader returns a
    header, asks for more, or raises a L{ProtocolError} (or
    L{LimitExceeded}); nothing else.
    """
    for prefix in (b"", b"PROXY ", SIGNATURE):
        reader = ProxyHeaderReader()
        stream = prefix + data
        try:
            for i in range(0, len(stream), step):
                if reader.feed(stream[i : i + step]) is not None:
                    break
        except (ProtocolError, LimitExceeded):
            pass
