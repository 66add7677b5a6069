"""
WebSocket frame boundaries without decoding (RFC 6455 section 5.2), and
encoding the gateway's own frames (L{encodeFrame}, L{encodeClose}).

Transparent proxying splices the client and backend sockets and copies bytes
as they come.  To send a frame of its own (a keep-alive ping, a close when a
peer goes away or the gateway shuts down) the gateway must put it between
two frames of the stream, never inside one.  L{FrameTracker} follows the
frame headers of one direction of a stream and skips over payloads without
reading them.  Sans-IO.

L{readClientMessage} reads the one kind of frame that makes up nearly all
of a session's traffic from its client (a whole, unfragmented, masked text
or binary message) without a full parser's per-frame machinery; anything
else is left to the full parser (Autobahn's, for the client WebSockets:
L{gateway.transports.lean}).
"""

from __future__ import annotations

import os
import struct

from ..errors import ProtocolError

__all__ = [
    "FrameTracker",
    "RSV1",
    "encodeFrame",
    "encodeClose",
    "readClientMessage",
    "isUTF8",
    "OP_CONTINUATION",
    "OP_TEXT",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_MAX_PAYLOAD = 1 << 63


#: The reserved bit permessage-deflate sets on a compressed message's first
#: frame (RFC 7692).
RSV1 = 0x40


class FrameTracker:
    """
    Follows frame boundaries in one direction of a WebSocket byte stream.

    @ivar closeSeen: whether a whole close frame has gone by.
    @ivar frames: how many whole frames have gone by.
    @ivar dataFrames: how many of them carried data (text, binary or
        continuation), not control.
    @ivar closeCode: the status code of the first close frame, when its
        first two payload bytes came in the same read as its header (a
        close frame is a few bytes: in practice, always); else L{None}.
    @ivar allowedRsv: the reserved bits (of C{0x70}) a frame may set: those
        of the extensions the handshake agreed on (RSV1 for
        permessage-deflate), none by default.
    @ivar violated: whether a frame set a reserved bit not allowed: the
        stream broke RFC 6455, and its receiver will fail the connection.
    """

    __slots__ = ("_remaining", "_partial", "_opcode", "closeSeen", "frames", "dataFrames", "closeCode",
                 "allowedRsv", "violated")

    def __init__(self) -> None:
        self._remaining = 0
        self._partial = b""
        self._opcode = -1
        self.closeSeen = False
        self.frames = 0
        self.dataFrames = 0
        self.closeCode: int | None = None
        self.allowedRsv = 0
        self.violated = False

    @property
    def atBoundary(self) -> bool:
        """
        Whether everything fed so far ends exactly between two frames.
        """
        return self._remaining == 0 and not self._partial

    def feed(self, data: bytes, stopAtBoundary: bool = False) -> int:
        """
        Follow C{data}, the next bytes of the stream.

        @param stopAtBoundary: stop at the first frame boundary reached (at
            once, when the stream is already at one).
        @return: how many bytes of C{data} were followed: all of them, unless
            C{stopAtBoundary} stopped earlier.
        @raise ProtocolError: for a frame length that RFC 6455 forbids.
        """
        n = len(data)
        if stopAtBoundary and self._remaining == 0 and not self._partial:
            return 0
        pos = 0
        while pos < n:
            remaining = self._remaining
            if remaining:
                available = n - pos
                if available < remaining:
                    self._remaining = remaining - available
                    return n
                pos += remaining
                self._remaining = 0
                self._frameDone()
                if stopAtBoundary:
                    return pos
                continue
            # A frame header starts here (perhaps begun in an earlier chunk).
            if self._partial:
                buf = self._partial + data[pos : pos + 14]
                base = len(self._partial)
            else:
                buf = data
                base = -pos
            length = len(buf) if self._partial else n - pos
            start = 0 if self._partial else pos
            if length < 2:
                self._partial = bytes(buf[start:])
                return n
            b0 = buf[start]
            b1 = buf[start + 1]
            size = b1 & 0x7F
            headerLength = 2 + (4 if b1 & 0x80 else 0)
            if size == 126:
                headerLength += 2
            elif size == 127:
                headerLength += 8
            if length < headerLength:
                self._partial = bytes(buf[start : start + length])
                return n
            if size == 126:
                size = struct.unpack_from("!H", buf, start + 2)[0]
            elif size == 127:
                size = struct.unpack_from("!Q", buf, start + 2)[0]
                if size >= _MAX_PAYLOAD:
                    raise ProtocolError("frame length has its most significant bit set")
            self._opcode = b0 & 0x0F
            if b0 & 0x70 & ~self.allowedRsv:
                self.violated = True
            if self._opcode == OP_CLOSE and size >= 2 and self.closeCode is None:
                self._readCloseCode(buf, start + headerLength, b1 & 0x80)
            if self._partial:
                pos += headerLength - base
                self._partial = b""
            else:
                pos += headerLength
            if size:
                self._remaining = size
            else:
                self._frameDone()
                if stopAtBoundary:
                    return pos
        return n

    def _readCloseCode(self, buf: bytes, at: int, masked: int) -> None:
        if len(buf) < at + 2:
            return
        code = buf[at] << 8 | buf[at + 1]
        if masked:
            key = buf[at - 4 : at - 2]
            code ^= key[0] << 8 | key[1]
        self.closeCode = code

    def _frameDone(self) -> None:
        self.frames += 1
        if self._opcode < OP_CLOSE:
            self.dataFrames += 1
        elif self._opcode == OP_CLOSE:
            self.closeSeen = True


_HEADER16 = struct.Struct("!BBH").pack
_HEADER64 = struct.Struct("!BBQ").pack


#: Masking keys are drawn from C{os.urandom} this many bytes at a time (a
#: system call per key was a third of the cost of masking a short message).
KEY_BATCH = 4096
_keys = b""
_keyAt = 0


def _maskingKey() -> bytes:
    """
    @return: the next 4 bytes of C{os.urandom}'s output (read in batches of
        L{KEY_BATCH}), each used once.
    """
    global _keys, _keyAt
    at = _keyAt
    if at >= len(_keys):
        _keys, at = os.urandom(KEY_BATCH), 0
    _keyAt = at + 4
    return _keys[at:at + 4]


def _forgetKeys() -> None:
    global _keys, _keyAt
    _keys, _keyAt = b"", 0


# A forked child never uses the keys its parent has drawn.
os.register_at_fork(after_in_child=_forgetKeys)


def encodeFrame(opcode: int, payload: bytes = b"", mask: bool = False, key: bytes | None = None) -> bytes:
    """
    Encode one final frame.  The gateway's one frame encoder: the tunnel's
    pings and closes, the health checks' closes and every message a
    session's two WebSockets write themselves (a hot path) go through it.

    @param mask: whether to mask the payload, as a client (and so the gateway
        talking to a backend) must (RFC 6455, section 5.3), with a key from
        C{os.urandom} (L{_maskingKey}).
    @param key: the 4-byte masking key to mask with instead (implies
        C{mask}); the caller answers for its being unpredictable.
    """
    n = len(payload)
    first = 0x80 | opcode
    if key is None:
        if not mask:
            if n < 126:
                return bytes((first, n)) + payload
            if n < 65536:
                return _HEADER16(first, 126, n) + payload
            return _HEADER64(first, 127, n) + payload
        key = _maskingKey()
    if n < 126:
        header = bytes((first, 0x80 | n))
    elif n < 65536:
        header = _HEADER16(first, 0xFE, n)
    else:
        header = _HEADER64(first, 0xFF, n)
    if not n:
        return header + key
    # The payload XORed with the key repeated, octet i with key octet i mod
    # 4, as one integer operation.
    stream = (key * ((n + 3) >> 2))[:n]
    masked = int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")
    return b"".join((header, key, masked.to_bytes(n, "little")))


def encodeClose(code: int, reason: str, mask: bool = False) -> bytes:
    """
    Encode a close frame; C{reason} is cut to fit the 125-byte control frame
    limit on a UTF-8 character boundary.
    """
    raw = reason.encode("utf-8")[:123]
    raw = raw.decode("utf-8", "ignore").encode("utf-8")
    return encodeFrame(OP_CLOSE, struct.pack("!H", code) + raw, mask)


def isUTF8(payload: bytes) -> bool:
    """
    @return: whether C{payload} is valid UTF-8 (ASCII checked first: no
        copy).
    """
    if payload.isascii():
        return True
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def readClientMessage(data: bytes, pos: int, limit: int) -> tuple[bool, bytes, int] | None:
    """
    Read the frame at C{data[pos:]} when it is a whole message of the
    common kind: final (FIN set), no reserved bit, text or binary, masked
    (as a client's must be), at most C{limit} bytes of payload (and under
    64 KiB: a 64-bit length is left to the full parser), all of it in
    C{data}, and for text, valid UTF-8.

    Anything else (a control frame, a fragment, a frame not all here yet,
    one that breaks a rule) gives L{None}, and the caller hands the bytes
    from C{pos} on to a full parser, which reads it (or fails the
    connection) as RFC 6455 says; so this function never judges a frame,
    it only recognises the ones that need no judging.

    @return: C{(isBinary, payload, end)}, the payload unmasked and C{end}
        the position after the frame; or L{None}.
    """
    if len(data) - pos < 6:
        return None
    b0 = data[pos]
    b1 = data[pos + 1]
    if (b0 != 0x81 and b0 != 0x82) or b1 < 0x80:
        return None
    size = b1 & 0x7F
    at = pos + 2
    if size == 126:
        size = data[at] << 8 | data[at + 1]
        at += 2
    elif size == 127:
        return None
    end = at + 4 + size
    if size > limit or end > len(data):
        return None
    if size:
        key = data[at : at + 4]
        # As in encodeFrame: the payload XORed with the key repeated, as one
        # integer operation.
        stream = (key * ((size + 3) >> 2))[:size]
        payload = (int.from_bytes(data[at + 4 : end], "little") ^ int.from_bytes(stream, "little")).to_bytes(
            size, "little")
    else:
        payload = b""
    if b0 == 0x81 and not isUTF8(payload):
        return None
    return b0 == 0x82, payload, end
