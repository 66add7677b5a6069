"""
Engine.IO v4 packets and payloads (sans-IO): the framing Socket.IO clients
speak to the gateway on a C{protocol = "socket.io"} route.

A packet is a type (one digit) and its data.  Over WebSocket a text packet
is one text frame (the digit, then the data) and a binary message is one
binary frame holding only its bytes.  Over HTTP long-polling a payload is
packets joined by the record separator (C{\\x1e}), a binary message written
as C{b} and its bytes in base64.

The errors a handshake or request can get are the reference server's
(L{ERRORS}), with its JSON bodies (L{errorBody}).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from enum import IntEnum

from ..errors import ProtocolError
from ..wire.http1 import REASONS, serializeResponseHead

__all__ = [
    "PacketType",
    "Packet",
    "SEPARATOR",
    "encodeText",
    "decodeText",
    "encodeFrame",
    "decodeFrame",
    "encodePayload",
    "decodePayload",
    "openPacket",
    "ERRORS",
    "UNKNOWN_TRANSPORT",
    "UNKNOWN_SID",
    "BAD_HANDSHAKE_METHOD",
    "BAD_REQUEST",
    "FORBIDDEN",
    "UNSUPPORTED_PROTOCOL_VERSION",
    "errorBody",
    "errorResponse",
]

#: What separates the packets of a long-polling payload.
SEPARATOR = "\x1e"


class PacketType(IntEnum):
    """
    The seven packet types, by their digit on the wire.
    """

    OPEN = 0
    CLOSE = 1
    PING = 2
    PONG = 3
    MESSAGE = 4
    UPGRADE = 5
    NOOP = 6


@dataclass(frozen=True, slots=True)
class Packet:
    """
    One Engine.IO packet.

    @ivar data: text, or (for a binary message only) bytes.
    """

    type: PacketType
    data: str | bytes = ""

    @property
    def isBinary(self) -> bool:
        """
        Whether this is a binary message.
        """
        return isinstance(self.data, bytes)

    @property
    def size(self) -> int:
        """
        The data's length (characters or bytes), what buffers are bounded in.
        """
        return len(self.data) + 1


def encodeText(packet: Packet) -> str:
    """
    @return: C{packet} as a long-polling payload carries it (a binary
        message as C{b} and base64).
    """
    if isinstance(packet.data, bytes):
        return "b" + base64.b64encode(packet.data).decode("ascii")
    return f"{packet.type:d}{packet.data}"


def decodeText(text: str) -> Packet:
    """
    @return: the packet C{text} encodes (as L{encodeText} writes it).
    @raise ProtocolError: an unknown type, or bad base64.
    """
    if not text:
        raise ProtocolError("an empty packet")
    first = text[0]
    if first == "b":
        try:
            return Packet(PacketType.MESSAGE, base64.b64decode(text[1:], validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError("a binary packet that is not base64") from None
    if not "0" <= first <= "6":
        raise ProtocolError(f"unknown packet type {first!r}")
    return Packet(PacketType(ord(first) - 48), text[1:])


def encodeFrame(packet: Packet) -> tuple[bytes, bool]:
    """
    @return: the WebSocket message for C{packet} and whether it is binary.
    """
    if isinstance(packet.data, bytes):
        return packet.data, True
    return f"{packet.type:d}{packet.data}".encode("utf-8"), False


def decodeFrame(payload: bytes, isBinary: bool) -> Packet:
    """
    @return: the packet a WebSocket message carries (a binary frame is a
        binary message).
    @raise ProtocolError: as L{decodeText}; a text frame starting with
        C{b} is not a packet.
    """
    if isBinary:
        return Packet(PacketType.MESSAGE, payload)
    text = payload.decode("utf-8")  # Autobahn has checked it is UTF-8
    if text[:1] == "b":
        raise ProtocolError("unknown packet type 'b'")
    return decodeText(text)


def encodePayload(packets: list[Packet]) -> bytes:
    """
    @return: the body of a long-polling answer carrying C{packets}.
    """
    return SEPARATOR.join(encodeText(p) for p in packets).encode("utf-8")


def decodePayload(body: bytes, maxPackets: int) -> list[Packet]:
    """
    @return: the packets of a long-polling request body.
    @raise ProtocolError: a body that is not UTF-8, an empty one, more than
        C{maxPackets} packets, or a packet L{decodeText} refuses.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the payload is not UTF-8") from None
    parts = text.split(SEPARATOR)
    if len(parts) > maxPackets:
        raise ProtocolError(f"more than {maxPackets} packets in one payload")
    return [decodeText(part) for part in parts]


def openPacket(sid: str, upgrades: list[str], pingInterval: float, pingTimeout: float,
               maxPayload: int) -> Packet:
    """
    @return: the open packet of a session (intervals given in seconds, sent
        in milliseconds).
    """
    data = json.dumps({
        "sid": sid,
        "upgrades": upgrades,
        "pingInterval": round(pingInterval * 1000),
        "pingTimeout": round(pingTimeout * 1000),
        "maxPayload": maxPayload,
    }, separators=(",", ":"))
    return Packet(PacketType.OPEN, data)


UNKNOWN_TRANSPORT = 0
UNKNOWN_SID = 1
BAD_HANDSHAKE_METHOD = 2
BAD_REQUEST = 3
FORBIDDEN = 4
UNSUPPORTED_PROTOCOL_VERSION = 5

#: The reference server's error codes and messages.
ERRORS = {
    UNKNOWN_TRANSPORT: "Transport unknown",
    UNKNOWN_SID: "Session ID unknown",
    BAD_HANDSHAKE_METHOD: "Bad handshake method",
    BAD_REQUEST: "Bad request",
    FORBIDDEN: "Forbidden",
    UNSUPPORTED_PROTOCOL_VERSION: "Unsupported protocol version",
}


def errorBody(code: int, message: str | None = None) -> bytes:
    """
    @return: the JSON body of an error answer, as the reference server
        writes it: C{{"code":N,"message":"..."}}.
    """
    text = ERRORS[code] if message is None else message
    return json.dumps({"code": code, "message": text}, separators=(",", ":")).encode("utf-8")


def errorResponse(status: int, code: int, message: str | None = None,
                  headers: list[tuple[bytes, bytes]] = ()) -> bytes:
    """
    @return: a whole HTTP response closing the connection, with the
        reference server's JSON error body (L{errorBody}) and C{headers}
        (C{Retry-After}): what a refused WebSocket handshake is answered
        with, as a refused polling request is.
    """
    body = errorBody(code, message)
    return serializeResponseHead(status, REASONS.get(status, b"Error"), [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"%d" % len(body)),
        (b"Cache-Control", b"no-store"),
        (b"Connection", b"close"),
        *headers,
    ]) + body
