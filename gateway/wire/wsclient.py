"""
The client end of a WebSocket connection (RFC 6455), sans-IO: the opening
handshake, frames both ways and the closing handshake.  Bytes in, events
and bytes out; no socket, no reactor, no timer (the caller owns those).

It is what a session's link to its backend speaks
(L{gateway.backends.link.BackendLink}).  A gateway holds one such
connection per session for as long as the session lives, attached or not,
so it keeps little: a few slots, no buffer between frames, and the
fragments of a message only while one is arriving.

What it enforces, failing the connection with the RFC's close code:

  - the server's answer: a C{101} with C{Upgrade: websocket},
    C{Connection: upgrade} and the C{Sec-WebSocket-Accept} of the key sent,
    no extension and no subprotocol (none is offered), within
    C{maxHeadBytes}; any other well-formed HTTP/1.1 status is a refusal
    (L{Refused}), anything else a failure;
  - frames from the server unmasked, reserved bits clear, known opcodes,
    control frames final and at most 125 bytes, continuation frames only
    within a fragmented message and data frames never inside one (1002);
  - a frame, or a message once its fragments are joined, of at most
    C{maxMessageBytes}, checked from the frame header before its payload
    is read, so that no more is ever buffered (1009);
  - text messages and close reasons in UTF-8 (1007), close frames of 0 or
    2 to 125 bytes with a code an endpoint may send (1002).

Every frame it sends is masked with 4 bytes from C{os.urandom}, as a
client's must be (RFC 6455 section 5.3: unpredictable to the
application that supplies the payload).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import os
import struct
from typing import Iterable

from ..errors import LimitExceeded, ProtocolError
from .frames import (OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT, encodeClose, encodeFrame,
                     isUTF8)
from .http1 import findHeadEnd, parseResponseHead, serializeRequestHead

__all__ = [
    "ClientState",
    "WebSocketClient",
    "Accepted",
    "Refused",
    "Failed",
    "MessageReceived",
    "PongReceived",
    "CloseReceived",
    "Event",
    "acceptKey",
    "validCloseCode",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Frames whose payload is longer than this and has not all arrived are
#: kept as a list of chunks, joined once complete (one copy), rather than
#: by concatenating each read to what came before.
_CHUNKED = 4096

_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from


def acceptKey(key: bytes) -> bytes:
    """
    @return: the C{Sec-WebSocket-Accept} value a server answers the
        C{Sec-WebSocket-Key} C{key} with (RFC 6455 section 4.2.2).
    """
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def validCloseCode(code: int) -> bool:
    """
    @return: whether an endpoint may send C{code} in a close frame (RFC 6455
        section 7.4 and the IANA registry: 1000-1003, 1007-1014, and 3000 to
        4999 for libraries and applications).
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class ClientState(enum.Enum):
    """
    Where a L{WebSocketClient} stands.  The transitions:

      - C{CONNECTING} -> C{OPEN} (the server's C{101}) or C{CLOSED} (a
        refusal, or an answer that is not a WebSocket's);
      - C{OPEN} -> C{CLOSING} (L{WebSocketClient.close}) or C{CLOSED} (the
        server's close frame, answered; or a failure);
      - C{CLOSING} -> C{CLOSED} (the server's close frame, or a failure).

    C{CLOSED} is final: what arrives after it is not read, and nothing more
    is sent.
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Event:
    """
    What L{WebSocketClient.receiveData} reports: equal to another of its
    kind with the same values.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        values = ", ".join(repr(getattr(self, name)) for name in self.__slots__)
        return f"{type(self).__name__}({values})"


class Accepted(_Event):
    """
    The server accepted the opening handshake: the connection is open.
    """

    __slots__ = ()


class Refused(_Event):
    """
    The server answered the opening handshake with a well-formed HTTP/1.1
    status other than 101: its answer (a bad token, an Origin check), not a
    failure.  The connection is closed.

    @ivar status: the status code (100 to 599).
    @ivar reason: the reason phrase, printable ASCII, at most 60
        characters (else empty).
    """

    __slots__ = ("status", "reason")

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


class Failed(_Event):
    """
    The connection failed: the server broke the handshake or RFC 6455, or a
    limit.  The connection is closed; once it was open, a close frame with
    C{code} is in L{WebSocketClient.dataToSend} first (unless the client had
    sent its own already).

    @ivar code: the close code, or L{None} when the connection failed
        before it opened (nothing is sent then).
    @ivar reason: what went wrong, for the log.
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


class MessageReceived(_Event):
    """
    A whole message (its fragments joined).
    """

    __slots__ = ("payload", "isBinary")

    def __init__(self, payload: bytes, isBinary: bool) -> None:
        self.payload = payload
        self.isBinary = isBinary


class PongReceived(_Event):
    """
    A pong (a ping from the server is answered by the client itself).
    """

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class CloseReceived(_Event):
    """
    The server's close frame: the closing handshake is complete (the
    client's answer, when the server spoke first, is in
    L{WebSocketClient.dataToSend}).  The server closes the TCP connection
    next.

    @ivar code: its status code, or L{None} when it had none (1005).
    @ivar reason: its reason (empty when none).
    """

    __slots__ = ("code", "reason")

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = Accepted | Refused | Failed | MessageReceived | PongReceived | CloseReceived

_ACCEPTED = Accepted()


class _Fail(Exception):
    """
    Raised inside the parser to fail the connection with C{code}.
    """

    def __init__(self, code: int | None, reason: str) -> None:
        self.code = code
        self.reason = reason


class WebSocketClient:
    """
    One client connection (see the module's docstring).

    L{handshake} gives the opening request; L{receiveData} takes what the
    server sends and returns the L{Event}s it makes; L{sendMessage},
    L{ping} and L{close} return the bytes to write; after L{receiveData},
    L{dataToSend} has what the client must write in answer (pongs, the
    close frame of a closing handshake or of a failure).

    @ivar state: its L{ClientState}.
    @ivar clean: whether the closing handshake was completed (close frames
        sent and received).
    """

    __slots__ = ("state", "clean", "maxMessageBytes", "maxHeadBytes", "_accept", "_buffer", "_chunks",
                 "_chunked", "_need", "_fragments", "_fragmentBinary", "_fragmentSize", "_out")

    def __init__(self, maxMessageBytes: int, maxHeadBytes: int = 16384) -> None:
        """
        @param maxMessageBytes: the largest message (and frame) taken from
            the server.
        @param maxHeadBytes: the largest handshake answer (status line and
            headers) taken from the server.
        """
        self.state = ClientState.CONNECTING
        self.clean = False
        self.maxMessageBytes = maxMessageBytes
        self.maxHeadBytes = maxHeadBytes
        self._accept: bytes | None = None
        #: Bytes received and not yet used: a head, or a frame begun.
        self._buffer = b""
        #: The chunks of a long frame begun (L{_CHUNKED}), their total
        #: length, and the length of the whole frame.
        self._chunks: list[bytes] | None = None
        self._chunked = 0
        self._need = 0
        #: The fragments of a message begun, or L{None}.
        self._fragments: list[bytes] | None = None
        self._fragmentBinary = False
        self._fragmentSize = 0
        self._out = b""

    # -- the opening handshake

    def handshake(self, host: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]] = (),
                  key: bytes | None = None) -> bytes:
        """
        @param host: the C{Host} header's value.
        @param target: the request target (an absolute path and query).
        @param headers: more headers, after C{Host}, C{Upgrade},
            C{Connection}, C{Sec-WebSocket-Key} and C{Sec-WebSocket-Version}
            (none of those, nor another C{Sec-WebSocket-*}).
        @param key: the C{Sec-WebSocket-Key} (base64 of 16 bytes); by
            default a new one from C{os.urandom}.
        @return: the opening handshake request.
        @raise ValueError: for a target, name or value that would break
            the request (a control character, a space in the target), or a
            header the handshake sets itself.
        """
        if key is None:
            key = base64.b64encode(os.urandom(16))
        if not target.startswith(b"/") or any(c <= 0x20 or c == 0x7F for c in target):
            raise ValueError(f"bad request target {target!r}")
        lines = [(b"Host", host), (b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"),
                 (b"Sec-WebSocket-Key", key), (b"Sec-WebSocket-Version", b"13")]
        for name, value in headers:
            lower = name.lower()
            if lower in (b"host", b"upgrade", b"connection") or lower.startswith(b"sec-websocket-"):
                raise ValueError(f"the handshake sets {name.decode('latin-1')} itself")
            lines.append((name, value))
        for name, value in lines:
            if not name or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in name) or any(
                    (c < 0x20 and c != 0x09) or c == 0x7F for c in value):
                raise ValueError(f"bad header {name!r}")
        self._accept = acceptKey(key)
        return serializeRequestHead(b"GET", target, lines)

    # -- receiving

    def receiveData(self, data: bytes) -> list[Event]:
        """
        Take bytes the server sent.

        @return: the events they make, in order (after a L{Refused},
            L{Failed} or L{CloseReceived}, nothing more).
        """
        events: list[Event] = []
        state = self.state
        if state is ClientState.CLOSED or not data:
            return events
        try:
            if state is ClientState.CONNECTING:
                data = self._readHead(data, events)
                if self.state is not ClientState.OPEN or not data:
                    return events
            self._readFrames(data, events)
        except _Fail as e:
            self._fail(e.code, e.reason, events)
        return events

    def dataToSend(self) -> bytes:
        """
        @return: what the client must write now in answer to what it
            received (and forget it).
        """
        out, self._out = self._out, b""
        return out

    def _readHead(self, data: bytes, events: list[Event]) -> bytes:
        """
        Read the handshake's answer.

        @return: the bytes after it (frames already sent).
        """
        buffer = self._buffer + data
        try:
            end = findHeadEnd(buffer, self.maxHeadBytes)
        except LimitExceeded:
            raise _Fail(None, f"the handshake's answer is larger than {self.maxHeadBytes} bytes") from None
        if end == -1:
            self._buffer = buffer
            return b""
        self._buffer = b""
        try:
            head = parseResponseHead(buffer[:end])
        except ProtocolError as e:
            raise _Fail(None, f"the handshake's answer is not HTTP/1.1: {e}") from None
        if head.version != b"HTTP/1.1" or not 100 <= head.status <= 599:
            raise _Fail(None, f"answered the handshake with {head.version.decode()} {head.status}")
        if head.status != 101:
            phrase = head.reason.decode("latin-1").strip()
            if not phrase.isascii() or not phrase.isprintable():
                phrase = ""
            self.state = ClientState.CLOSED
            events.append(Refused(head.status, phrase[:60]))
            return b""
        if b"websocket" not in head.tokens(b"upgrade") or b"upgrade" not in head.tokens(b"connection"):
            raise _Fail(None, "a 101 without Upgrade: websocket and Connection: upgrade")
        if head.getAll(b"sec-websocket-accept") != [self._accept]:
            raise _Fail(None, "a 101 with the wrong Sec-WebSocket-Accept")
        if head.get(b"sec-websocket-extensions") is not None:
            raise _Fail(None, "the server chose an extension that was not offered")
        if head.get(b"sec-websocket-protocol") is not None:
            raise _Fail(None, "the server chose a subprotocol that was not offered")
        self._accept = None
        self.state = ClientState.OPEN
        events.append(_ACCEPTED)
        return buffer[end:]

    def _readFrames(self, data: bytes, events: list[Event]) -> None:
        chunks = self._chunks
        if chunks is not None:
            chunks.append(data)
            self._chunked += len(data)
            if self._chunked < self._need:
                return
            data = b"".join(chunks)
            self._chunks = None
        elif self._buffer:
            data = self._buffer + data
            self._buffer = b""
        n = len(data)
        pos = 0
        while n - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b1 & 0x80:
                raise _Fail(1002, "a masked frame from the server")
            size = b1
            at = pos + 2
            if size == 126:
                if n - pos < 4:
                    break
                size = _U16(data, at)[0]
                at += 2
            elif size == 127:
                if n - pos < 10:
                    break
                size = _U64(data, at)[0]
                at += 8
                if size >> 63:
                    raise _Fail(1002, "a frame length with its most significant bit set")
            opcode = b0 & 0x0F
            final = b0 & 0x80
            if b0 & 0x70:
                raise _Fail(1002, "a frame with a reserved bit set")
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    raise _Fail(1002, f"a frame with the reserved opcode {opcode}")
                if not final:
                    raise _Fail(1002, "a fragmented control frame")
                if size > 125:
                    raise _Fail(1002, "a control frame longer than 125 bytes")
            else:
                if opcode > OP_BINARY:
                    raise _Fail(1002, f"a frame with the reserved opcode {opcode}")
                if opcode == OP_CONTINUATION:
                    if self._fragments is None:
                        raise _Fail(1002, "a continuation frame outside a fragmented message")
                elif self._fragments is not None:
                    raise _Fail(1002, "a new message inside a fragmented one")
                if size > self.maxMessageBytes - (self._fragmentSize if opcode == OP_CONTINUATION else 0):
                    raise _Fail(1009, f"a message larger than {self.maxMessageBytes} bytes")
            end = at + size
            if end > n:
                rest = data[pos:]
                if size > _CHUNKED:
                    self._chunks = [rest]
                    self._chunked = len(rest)
                    self._need = end - pos
                else:
                    self._buffer = rest
                return
            payload = data[at:end]
            pos = end
            if opcode >= OP_CLOSE:
                if not self._control(opcode, payload, events):
                    return
            elif final:
                if opcode == OP_CONTINUATION:
                    fragments = self._fragments
                    fragments.append(payload)
                    payload = b"".join(fragments)
                    isBinary = self._fragmentBinary
                    self._fragments = None
                    self._fragmentSize = 0
                else:
                    isBinary = opcode == OP_BINARY
                if not isBinary and not isUTF8(payload):
                    raise _Fail(1007, "a text message that is not UTF-8")
                events.append(MessageReceived(payload, isBinary))
            elif opcode == OP_CONTINUATION:
                self._fragments.append(payload)
                self._fragmentSize += size
            else:
                self._fragments = [payload]
                self._fragmentBinary = opcode == OP_BINARY
                self._fragmentSize = size
        if pos < n:
            self._buffer = data[pos:]

    def _control(self, opcode: int, payload: bytes, events: list[Event]) -> bool:
        """
        A control frame.

        @return: whether to read on (not after a close).
        """
        if opcode == OP_PING:
            if self.state is ClientState.OPEN:
                self._out += encodeFrame(OP_PONG, payload, True)
            return True
        if opcode == OP_PONG:
            events.append(PongReceived(payload))
            return True
        code: int | None = None
        reason = ""
        if len(payload) == 1:
            raise _Fail(1002, "a close frame of one byte")
        if payload:
            code = _U16(payload, 0)[0]
            if not validCloseCode(code):
                raise _Fail(1002, f"a close frame with the code {code}")
            raw = payload[2:]
            if not isUTF8(raw):
                raise _Fail(1007, "a close reason that is not UTF-8")
            reason = raw.decode("utf-8")
        if self.state is ClientState.OPEN:
            # Answer with the same code (RFC 6455 section 5.5.1), none if none.
            self._out += encodeFrame(OP_CLOSE, payload[:2], True)
        self.state = ClientState.CLOSED
        self.clean = True
        self._buffer = b""
        events.append(CloseReceived(code, reason))
        return False

    def _fail(self, code: int | None, reason: str, events: list[Event]) -> None:
        if self.state is ClientState.OPEN and code is not None:
            self._out += encodeClose(code, reason, mask=True)
        elif self.state is not ClientState.CLOSING:
            code = None  # before it opened: nothing is sent
        self.state = ClientState.CLOSED
        self._buffer = b""
        self._chunks = None
        self._fragments = None
        events.append(Failed(code, reason))

    # -- sending

    def sendMessage(self, payload: bytes, isBinary: bool) -> bytes:
        """
        @return: the frame of one message (one final frame, masked), or
            nothing once the connection is not open (a client of the link
            keeps what it could not send).
        """
        if self.state is not ClientState.OPEN:
            return b""
        return encodeFrame(OP_BINARY if isBinary else OP_TEXT, payload, True)

    def ping(self, payload: bytes) -> bytes:
        """
        @param payload: at most 125 bytes, echoed by the server's pong.
        @return: a ping frame, or nothing unless open.
        """
        if self.state is not ClientState.OPEN:
            return b""
        if len(payload) > 125:
            raise ValueError("a ping carries at most 125 bytes")
        return encodeFrame(OP_PING, payload, True)

    def close(self, code: int, reason: str = "") -> bytes:
        """
        Start the closing handshake: messages are still received until the
        server's close frame arrives.

        @param code: any code an endpoint may send (L{validCloseCode}).
        @param reason: cut to fit the frame on a character boundary.
        @return: the close frame, or nothing unless open.
        """
        if not validCloseCode(code):
            raise ValueError(f"close code {code} may not be sent")
        if self.state is not ClientState.OPEN:
            return b""
        self.state = ClientState.CLOSING
        return encodeClose(code, reason, mask=True)
