"""
The PROXY protocol header (HAProxy's, versions 1 and 2) that an L4 balancer
such as AWS NLB or HAProxy with C{send-proxy} puts before a connection's
first byte, to say whom the connection is from.  Sans-IO.

Twisted's parsers do the parsing (L{gateway.tcp.V1Parser},
L{gateway.tcp.V2Parser}); this module adds what they leave out, so that a
header is read the same way whatever its peer and however it is cut into
reads:

  - L{sniff}: whether the first bytes of a stream begin a header at all,
    decided from as few bytes as possible (a header from a peer that may not
    send one is refused; anything else is passed on);
  - L{ProxyHeaderReader}: one header, however it arrives (Twisted's wrapper
    drops a connection whose first read is shorter than a whole signature),
    bounded in size (L{MAX_V2_HEADER}; version 1 is bounded at 107 bytes by
    its specification), with the address it carries checked and written in
    normal form, so that hashing and per-address limits see one spelling of
    each address.

The endpoint strings of listeners that read a header begin with
L{LISTENER_PREFIX} (L{proxiedEndpoint}).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from twisted.internet.address import IPv4Address, IPv6Address

from ..errors import LimitExceeded, ProtocolError
from ..tcp import InvalidProxyHeader, V1Parser, V2Parser

__all__ = [
    "LISTENER_PREFIX",
    "MAX_V2_HEADER",
    "ProxyHeader",
    "ProxyHeaderReader",
    "proxiedEndpoint",
    "sniff",
    "SNIFF_BYTES",
]

#: The first field of a listener's endpoint string that reads PROXY headers
#: (the name of Twisted's own endpoint for them, which the gateway replaces).
LISTENER_PREFIX = "haproxy"

#: The largest version 2 header read, in bytes, its type-length-value
#: extensions included (AWS NLB and HAProxy send well under 300).  A longer
#: one is refused before it is read.
MAX_V2_HEADER = 2048

_V1_SIGNATURE = b"PROXY "
_V2_SIGNATURE = V2Parser.PREFIX
_V1_UNKNOWN = b"PROXY UNKNOWN\r\n"

#: The most bytes L{sniff} needs to decide.
SNIFF_BYTES = len(_V2_SIGNATURE)


def proxiedEndpoint(description: str) -> str | None:
    """
    @return: the endpoint string a C{haproxy:} listener wraps (C{"tcp:8080"}
        for C{"haproxy:tcp:8080"}), or L{None} when C{description} does not
        begin with L{LISTENER_PREFIX}.
    """
    kind, _, rest = description.partition(":")
    if kind.strip().lower() != LISTENER_PREFIX:
        return None
    return rest


def sniff(data: bytes) -> bool | None:
    """
    @return: whether C{data}, the first bytes of a stream, begin a PROXY
        header: L{True} (they begin a version 1 or version 2 signature),
        L{False} (they cannot), or L{None} (too few bytes to tell; never past
        L{SNIFF_BYTES}).
    """
    for signature in (_V1_SIGNATURE, _V2_SIGNATURE):
        if data[: len(signature)] == signature[: len(data)]:
            if len(data) >= len(signature):
                return True
            return None
    return False


@dataclass(frozen=True)
class ProxyHeader:
    """
    A header read whole.

    @ivar source: the client's address it carries: an
        L{IPv4Address} or L{IPv6Address} with its host in normal form; or
        L{None} when it carries none that is an internet address (version 2
        C{LOCAL}, a balancer's own health check; version 1 C{UNKNOWN}; a
        Unix or unspecified family), and the connection's own peer stands.
    @ivar version: 1 or 2.
    """

    source: IPv4Address | IPv6Address | None
    version: int


class ProxyHeaderReader:
    """
    Reads the one PROXY header at the start of a stream.

    Feed it the stream's bytes with L{feed} until it returns the header;
    then L{remaining} holds the bytes read past it.

    @ivar version: the header's version once its signature has been read,
        else 0.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._parser: V1Parser | V2Parser | None = None
        self.version = 0
        self._line = b""
        self.remaining = b""

    def feed(self, data: bytes) -> ProxyHeader | None:
        """
        @return: the header once it is whole, else L{None} (more is needed).
        @raise ProtocolError: for a stream that begins with no header, or
            with a malformed one.
        @raise LimitExceeded: for a version 2 header longer than
            L{MAX_V2_HEADER}.
        """
        if self._parser is None:
            buffer = self._buffer = self._buffer + data
            found = sniff(buffer)
            if found is False:
                raise ProtocolError("no PROXY protocol header")
            if found is None:
                return None
            if buffer.startswith(_V1_SIGNATURE):
                self._parser, self.version = V1Parser(), 1
            else:
                if len(buffer) < 16:
                    return None
                (length,) = struct.unpack_from("!H", buffer, 14)
                if 16 + length > MAX_V2_HEADER:
                    raise LimitExceeded(f"PROXY header of {16 + length} bytes is over {MAX_V2_HEADER}")
                self._parser, self.version = V2Parser(), 2
            data, self._buffer = buffer, b""
        if self.version == 1:
            # Kept to recognise "PROXY UNKNOWN" with nothing after it, which
            # the specification allows and Twisted's parser refuses (bounded:
            # the parser refuses a line past 107 bytes).
            self._line += data
        try:
            info, rest = self._parser.feed(data)
        except (InvalidProxyHeader, ValueError, KeyError, IndexError, struct.error) as error:
            if self._line.startswith(_V1_UNKNOWN):
                self.remaining = self._line[len(_V1_UNKNOWN):]
                return ProxyHeader(None, 1)
            raise ProtocolError(f"malformed PROXY protocol v{self.version} header") from error
        if info is None:
            return None
        self.remaining = rest or b""
        return ProxyHeader(_normal(info.source, self.version), self.version)


def _normal(source, version: int) -> IPv4Address | IPv6Address | None:
    """
    @return: C{source} with its host checked and in normal form (an IPv4
        address mapped into IPv6 written as IPv4), or L{None} when it is not
        an internet address.
    @raise ProtocolError: for a host or port that is not one.
    """
    if not isinstance(source, (IPv4Address, IPv6Address)):
        return None
    try:
        host = ipaddress.ip_address(source.host)
    except ValueError:
        raise ProtocolError(f"malformed PROXY protocol v{version} header: bad source address") from None
    if not 0 <= source.port <= 65535:
        raise ProtocolError(f"malformed PROXY protocol v{version} header: bad source port")
    if isinstance(host, ipaddress.IPv6Address) and host.ipv4_mapped is not None:
        host = host.ipv4_mapped
    if isinstance(host, ipaddress.IPv4Address):
        return IPv4Address("TCP", str(host), source.port)
    return IPv6Address("TCP", str(host), source.port)
