"""
Tests for L{gateway.wire.frames}: following WebSocket frame boundaries without
decoding, and encoding the few frames the gateway sends itself.

The frames fed to L{FrameTracker} are built here by L{buildFrame}, not by
L{encodeFrame}, and what L{encodeFrame} writes is read back by L{decodeFrames},
a small reference decoder written from RFC 6455 section 5.2, and by the
sans-IO frame parser of the C{websockets} library.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.wire import frames
from tests.helpers import unframe
from gateway.errors import GatewayError, ProtocolError
from gateway.wire.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameTracker,
    encodeClose,
    encodeFrame,
    readClientMessage,
)

#: No example database: a test run leaves nothing behind in the checkout.
SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: Payload lengths at and around every boundary of the three length forms.
LENGTH_CLASSES = [0, 1, 125, 126, 127, 65535, 65536, 65537]

KEY = b"\x37\xfa\x21\x3d"


# -- an independent encoder, for frames fed to the tracker -----------------


def buildFrame(
    opcode: int,
    payload: bytes = b"",
    key: bytes | None = None,
    fin: bool = True,
    form: str = "minimal",
) -> bytes:
    """
    Write one frame by hand.

    @param key: a 4-byte masking key, or L{None} for an unmasked frame.
    @param form: C{"minimal"} for the shortest length encoding, C{"16"} or
        C{"64"} to force the 16-bit or 64-bit extended length (legal to
        follow, even when not minimal).
    """
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    maskBit = 0x80 if key is not None else 0
    if form == "minimal":
        form = "7" if n < 126 else "16" if n < 65536 else "64"
    if form == "7":
        header = bytes([b0, maskBit | n])
    elif form == "16":
        header = bytes([b0, maskBit | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([b0, maskBit | 127]) + n.to_bytes(8, "big")
    if key is None:
        return header + payload
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def payloadOf(size: int, seed: int = 0) -> bytes:
    """
    @return: C{size} pseudo-random bytes (full of things that look like
        frame headers, so that a tracker reading a payload is caught).
    """
    return random.Random(seed).randbytes(size)


# -- an independent decoder, for frames the module writes --------------------


@dataclass
class DecodedFrame:
    """
    One frame as L{decodeFrames} read it.
    """

    fin: bool
    rsv: int
    opcode: int
    masked: bool
    key: bytes | None
    payload: bytes
    headerLength: int
    end: int


def decodeFrames(data: bytes) -> list[DecodedFrame]:
    """
    Decode whole frames, RFC 6455 section 5.2, and unmask their payloads.

    @raise AssertionError: when C{data} does not end on a frame boundary.
    """
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        i = pos + 2
        size = b1 & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", data[i : i + 2])
            i += 2
        elif size == 127:
            (size,) = struct.unpack("!Q", data[i : i + 8])
            i += 8
        key = None
        if b1 & 0x80:
            key = data[i : i + 4]
            i += 4
        raw = data[i : i + size]
        assert len(raw) == size, "truncated frame"
        if key is not None:
            raw = bytes(b ^ key[j % 4] for j, b in enumerate(raw))
        out.append(
            DecodedFrame(
                fin=bool(b0 & 0x80),
                rsv=(b0 >> 4) & 0x7,
                opcode=b0 & 0x0F,
                masked=key is not None,
                key=key,
                payload=raw,
                headerLength=i - pos,
                end=i + size,
            )
        )
        pos = i + size
    return out


def decodeOne(data: bytes) -> DecodedFrame:
    """
    @return: the single frame that C{data} holds.
    """
    decoded = decodeFrames(data)
    assert len(decoded) == 1
    return decoded[0]


def websocketsParse(data: bytes, mask: bool):
    """
    Parse one frame with the C{websockets} library's own sans-IO parser.

    @param mask: whether the frame must be masked (it comes from a client).
    @return: a C{websockets.frames.Frame}.
    """
    from websockets.frames import Frame
    from websockets.streams import StreamReader

    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=mask)
    with pytest.raises(StopIteration) as stop:
        next(parser)
    assert not reader.buffer, "bytes left after the frame"
    return stop.value.value


def boundaries(stream: bytes) -> list[int]:
    """
    @return: the offset just past every frame of C{stream}.
    """
    return [f.end for f in decodeFrames(stream)]


def feedInChunks(tracker: FrameTracker, stream: bytes, cuts: list[int]) -> Iterator[int]:
    """
    Feed C{stream} to C{tracker}, split at C{cuts}, checking that every
    chunk is followed whole.

    @return: an iterator of the offset reached after each chunk, yielded
        before the next chunk is fed.
    """
    previous = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        if cut <= previous:
            continue
        assert tracker.feed(stream[previous:cut]) == cut - previous
        yield cut
        previous = cut


# -- FrameTracker --------------------------------------------------------


def test_freshTrackerAtBoundary():
    """
    A new tracker is at a boundary, has counted no frames and seen no close.
    """
    tracker = FrameTracker()
    assert tracker.atBoundary is True
    assert tracker.frames == 0
    assert tracker.closeSeen is False


def test_feedNothing():
    """
    Feeding no bytes follows none and changes nothing.
    """
    tracker = FrameTracker()
    assert tracker.feed(b"") == 0
    assert tracker.feed(b"", stopAtBoundary=True) == 0
    assert tracker.atBoundary is True
    assert tracker.frames == 0


@pytest.mark.parametrize("size", LENGTH_CLASSES)
@pytest.mark.parametrize("key", [None, KEY], ids=["unmasked", "masked"])
def test_wholeFrame(size, key):
    """
    A frame of any length class, masked or not, fed whole, is followed to
    its end: all bytes are consumed, the tracker is at a boundary and has
    counted one frame.
    """
    frame = buildFrame(OP_BINARY, payloadOf(size), key)
    tracker = FrameTracker()
    assert tracker.feed(frame) == len(frame)
    assert tracker.atBoundary is True
    assert tracker.frames == 1
    assert tracker.closeSeen is False


@pytest.mark.parametrize("size", LENGTH_CLASSES)
@pytest.mark.parametrize("key", [None, KEY], ids=["unmasked", "masked"])
def test_byteByByte(size, key):
    """
    A frame fed one byte at a time is mid-frame after every byte but the
    last, and counted only when its last byte arrives.
    """
    frame = buildFrame(OP_TEXT, payloadOf(size, seed=size), key)
    tracker = FrameTracker()
    for i in range(len(frame) - 1):
        assert tracker.feed(frame[i : i + 1]) == 1
        assert tracker.atBoundary is False
        assert tracker.frames == 0
    assert tracker.feed(frame[-1:]) == 1
    assert tracker.atBoundary is True
    assert tracker.frames == 1


@pytest.mark.parametrize("size", LENGTH_CLASSES)
@pytest.mark.parametrize("key", [None, KEY], ids=["unmasked", "masked"])
def test_headerSplit(size, key):
    """
    A frame header split at any byte (including inside the extended length
    or the masking key, and right after the header) is joined with the
    rest: the boundary after the frame, and the next frame's, are found.
    """
    frame = buildFrame(OP_BINARY, payloadOf(size, seed=1), key)
    after = buildFrame(OP_PING, b"ping", key)
    stream = frame + after
    headerLength = decodeOne(frame).headerLength
    for split in range(1, min(headerLength + 1, len(frame))):
        tracker = FrameTracker()
        assert tracker.feed(stream[:split]) == split
        assert tracker.atBoundary is False
        assert tracker.feed(stream[split:], stopAtBoundary=True) == len(frame) - split
        assert tracker.atBoundary is True
        assert tracker.frames == 1
        assert tracker.feed(stream[len(frame) :]) == len(after)
        assert tracker.atBoundary is True
        assert tracker.frames == 2


@pytest.mark.parametrize("form", ["16", "64"])
@pytest.mark.parametrize("size", [0, 5, 125])
def test_nonMinimalLength(form, size):
    """
    A length written in a longer form than needed is still followed: the
    tracker counts bytes, it does not judge encodings.
    """
    frame = buildFrame(OP_BINARY, payloadOf(size), KEY, form=form)
    tracker = FrameTracker()
    tracker.feed(frame[:1])
    assert tracker.feed(frame[1:] + frame, stopAtBoundary=True) == len(frame) - 1
    assert tracker.frames == 1


def test_payloadNotRead():
    """
    A payload full of bytes that look like frame headers (an empty close
    frame, a 64-bit length with its top bit set) is skipped, not parsed.
    """
    payload = b"\x88\x00" * 10 + b"\x82\x7f\xff\xff\xff\xff\xff\xff\xff\xff"
    frame = buildFrame(OP_BINARY, payload)
    tracker = FrameTracker()
    assert tracker.feed(frame) == len(frame)
    assert tracker.frames == 1
    assert tracker.closeSeen is False


def test_severalFramesInOneChunk():
    """
    Several frames in one chunk are all counted, including empty ones.
    """
    stream = (
        buildFrame(OP_TEXT, b"hello", fin=False)
        + buildFrame(OP_CONTINUATION, b"")
        + buildFrame(OP_PING, b"", KEY)
        + buildFrame(OP_BINARY, payloadOf(300))
        + buildFrame(OP_PONG, b"x")
    )
    tracker = FrameTracker()
    assert tracker.feed(stream) == len(stream)
    assert tracker.frames == 5
    assert tracker.atBoundary is True


def test_stopAtBoundaryAlreadyThere():
    """
    With C{stopAtBoundary}, a tracker already at a boundary follows no
    bytes at all (so that the caller can put its own frame there), and its
    state does not change.
    """
    frame = buildFrame(OP_TEXT, b"abc")
    tracker = FrameTracker()
    assert tracker.feed(frame, stopAtBoundary=True) == 0
    assert tracker.frames == 0
    assert tracker.feed(frame) == len(frame)
    assert tracker.feed(frame, stopAtBoundary=True) == 0
    assert tracker.frames == 1
    assert tracker.atBoundary is True


def test_stopAtBoundaryOffsets():
    """
    Fed the rest of a stream with C{stopAtBoundary} after each stop, the
    tracker stops exactly at the end of every frame, including a frame
    with no payload, whose end is right after its header.
    """
    parts = [
        buildFrame(OP_TEXT, b"first"),
        buildFrame(OP_PING, b""),
        buildFrame(OP_BINARY, payloadOf(126), KEY),
        buildFrame(OP_BINARY, b"", KEY),
        buildFrame(OP_BINARY, payloadOf(65536)),
        buildFrame(OP_CLOSE, b"\x03\xe8"),
    ]
    stream = b"".join(parts)
    tracker = FrameTracker()
    pos = tracker.feed(stream[:1])
    stops = []
    while pos < len(stream):
        k = tracker.feed(stream[pos:], stopAtBoundary=True)
        assert k > 0
        pos += k
        assert tracker.atBoundary is True
        stops.append(pos)
        if pos < len(stream):
            pos += tracker.feed(stream[pos : pos + 1])
    assert stops == boundaries(stream)
    assert tracker.frames == len(parts)


def test_stopAtBoundaryNotReached():
    """
    With C{stopAtBoundary}, bytes that end inside a frame are all followed.
    """
    frame = buildFrame(OP_BINARY, payloadOf(1000))
    tracker = FrameTracker()
    assert tracker.feed(frame[:10]) == 10
    assert tracker.feed(frame[10:500], stopAtBoundary=True) == 490
    assert tracker.atBoundary is False
    assert tracker.feed(frame[500:] + frame, stopAtBoundary=True) == len(frame) - 500


def test_stopAtBoundaryAfterPartialHeader():
    """
    A tracker holding the first byte of a header is not at a boundary:
    C{stopAtBoundary} follows the rest of that frame and stops after it.
    """
    frame = buildFrame(OP_TEXT, b"abc", KEY)
    tracker = FrameTracker()
    assert tracker.feed(frame[:1]) == 1
    assert tracker.atBoundary is False
    assert tracker.feed(frame[1:] + frame, stopAtBoundary=True) == len(frame) - 1
    assert tracker.frames == 1


@pytest.mark.parametrize("key", [None, KEY], ids=["unmasked", "masked"])
def test_closeSeenOnlyAfterWholeClose(key):
    """
    C{closeSeen} stays false while a close frame is incomplete (header
    only, part of the payload) and becomes true with its last byte.
    """
    close = buildFrame(OP_CLOSE, b"\x03\xe9going away", key)
    tracker = FrameTracker()
    for i in range(len(close) - 1):
        tracker.feed(close[i : i + 1])
        assert tracker.closeSeen is False
    tracker.feed(close[-1:])
    assert tracker.closeSeen is True
    assert tracker.frames == 1


def test_closeSeenEmptyClose():
    """
    An empty close frame is whole as soon as its two header bytes arrive.
    """
    tracker = FrameTracker()
    tracker.feed(b"\x88")
    assert tracker.closeSeen is False
    tracker.feed(b"\x00")
    assert tracker.closeSeen is True


def test_closeSeenAfterOtherFrames():
    """
    Only a close frame sets C{closeSeen}; it stays set after later frames.
    """
    tracker = FrameTracker()
    for opcode in (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_PING, OP_PONG):
        tracker.feed(buildFrame(opcode, b"\x03\xe8"))
        assert tracker.closeSeen is False
    tracker.feed(buildFrame(OP_CLOSE, b"\x03\xe8"))
    assert tracker.closeSeen is True
    tracker.feed(buildFrame(OP_TEXT, b"late"))
    assert tracker.closeSeen is True
    assert tracker.frames == 7


def test_closeOpcodeInPayloadDoesNotCount():
    """
    A close frame whose header has arrived but whose payload has not sets
    nothing, even when the rest arrives together with another frame.
    """
    close = buildFrame(OP_CLOSE, b"\x03\xe8bye")
    tracker = FrameTracker()
    tracker.feed(close[:3])
    assert tracker.closeSeen is False
    tracker.feed(close[3:] + buildFrame(OP_TEXT, b"x"))
    assert tracker.closeSeen is True
    assert tracker.frames == 2


@pytest.mark.parametrize("length", [1 << 63, (1 << 63) + 1, (1 << 64) - 1])
@pytest.mark.parametrize("maskBit", [0, 0x80])
def test_topBitLength(length, maskBit):
    """
    A 64-bit length with its most significant bit set (RFC 6455 5.2) is a
    L{ProtocolError}, which is a L{GatewayError}.
    """
    header = bytes([0x82, maskBit | 127]) + struct.pack("!Q", length)
    with pytest.raises(ProtocolError) as e:
        FrameTracker().feed(header + KEY)
    assert isinstance(e.value, GatewayError)
    assert "most significant bit" in str(e.value)


@pytest.mark.parametrize("split", range(1, 10))
def test_topBitLengthSplit(split):
    """
    The forbidden length is caught when its header arrives in pieces too.
    """
    header = b"\x82\x7f" + struct.pack("!Q", 1 << 63)
    tracker = FrameTracker()
    assert tracker.feed(header[:split]) == split
    with pytest.raises(ProtocolError):
        tracker.feed(header[split:])


def test_largestLegalLength():
    """
    The largest legal 64-bit length, 2**63 - 1, is accepted and leaves the
    tracker inside that frame.
    """
    tracker = FrameTracker()
    header = b"\x82\x7f" + struct.pack("!Q", (1 << 63) - 1)
    assert tracker.feed(header + b"abc") == len(header) + 3
    assert tracker.atBoundary is False
    assert tracker.frames == 0


_opcodes = st.sampled_from([OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG])
_sizes = st.one_of(
    st.integers(0, 140),
    st.sampled_from(LENGTH_CLASSES),
    st.integers(0, 70000),
)


@st.composite
def frameSpecs(draw):
    """
    A frame's opcode, payload size, masking key and length form.
    """
    opcode = draw(_opcodes)
    size = draw(_sizes)
    key = draw(st.one_of(st.none(), st.binary(min_size=4, max_size=4)))
    forms = ["minimal", "64"] + (["16"] if size < 65536 else [])
    form = draw(st.sampled_from(forms))
    return opcode, size, key, form


@st.composite
def streams(draw):
    """
    A stream of up to six frames, as C{(bytes, [frame spec])}.
    """
    specs = draw(st.lists(frameSpecs(), min_size=1, max_size=6))
    seed = draw(st.integers(0, 2**32))
    stream = b"".join(
        buildFrame(op, payloadOf(size, seed + i), key, form=form)
        for i, (op, size, key, form) in enumerate(specs)
    )
    return stream, specs


@SETTINGS
@given(streams(), st.data())
def test_randomChunking(streamAndSpecs, data):
    """
    However a stream is cut into chunks, after each chunk the tracker is at
    a boundary exactly when the bytes so far end a frame, has counted the
    frames that ended, and has seen a close exactly when a whole close
    frame went by.
    """
    stream, specs = streamAndSpecs
    ends = boundaries(stream)
    closeEnds = [e for e, spec in zip(ends, specs) if spec[0] == OP_CLOSE]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12))
    tracker = FrameTracker()
    offset = 0
    for offset in feedInChunks(tracker, stream, cuts):
        assert tracker.atBoundary is (offset in ends)
        assert tracker.frames == sum(1 for e in ends if e <= offset)
        assert tracker.closeSeen is any(e <= offset for e in closeEnds)
    assert offset == len(stream)
    assert tracker.frames == len(specs)


@SETTINGS
@given(streams(), st.data())
def test_randomChunkingStops(streamAndSpecs, data):
    """
    However a stream is cut into chunks, feeding each chunk with
    C{stopAtBoundary} (and, at a boundary, one byte without it to get
    going) stops at exactly the frame ends, each of them once.
    """
    stream, _ = streamAndSpecs
    cuts = sorted(set(data.draw(st.lists(st.integers(1, len(stream) - 1), max_size=12))))
    tracker = FrameTracker()
    stops = []
    start = 0
    for end in cuts + [len(stream)]:
        pos = start
        while pos < end:
            if tracker.atBoundary:
                assert tracker.feed(stream[pos:end], stopAtBoundary=True) == 0
                pos += tracker.feed(stream[pos : pos + 1])
                continue
            rest = end - pos
            k = tracker.feed(stream[pos:end], stopAtBoundary=True)
            assert 0 < k <= rest
            pos += k
            if k < rest:
                assert tracker.atBoundary is True
            if tracker.atBoundary:
                stops.append(pos)
        start = end
    assert stops == boundaries(stream)


# -- encodeFrame / encodeClose --------------------------------------------


@pytest.mark.parametrize(
    "size,headerLength",
    [(0, 2), (1, 2), (125, 2), (126, 4), (127, 4), (65535, 4), (65536, 10), (65537, 10)],
)
@pytest.mark.parametrize("mask", [False, True])
def test_encodeFrameLengthForms(size, headerLength, mask):
    """
    L{encodeFrame} writes one final frame with the shortest length form for
    its payload (7-bit to 125, 16-bit to 65535, 64-bit past it), no RSV
    bits, a masking key exactly when asked, and the payload unchanged once
    unmasked.
    """
    payload = payloadOf(size, seed=7)
    data = encodeFrame(OP_BINARY, payload, mask=mask)
    frame = decodeOne(data)
    assert frame.fin is True
    assert frame.rsv == 0
    assert frame.opcode == OP_BINARY
    assert frame.masked is mask
    assert frame.headerLength == headerLength + (4 if mask else 0)
    assert frame.payload == payload
    assert len(data) == frame.end


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG])
def test_encodeFrameOpcode(opcode):
    """
    The opcode is written into the low four bits of the first byte, with
    FIN set.
    """
    data = encodeFrame(opcode, b"x")
    assert data[0] == 0x80 | opcode
    assert decodeOne(data).opcode == opcode


def test_encodeFrameDefaults():
    """
    By default a frame is unmasked and empty: a server's empty ping is the
    two bytes C{89 00}.
    """
    assert encodeFrame(OP_PING) == b"\x89\x00"
    assert encodeFrame(OP_PONG, b"abc") == b"\x8a\x03abc"


def test_encodeFrameMaskingKey(monkeypatch):
    """
    A masked frame carries four bytes from C{os.urandom} as its key (read
    L{frames.KEY_BATCH} bytes at a time, each four used once) and the
    payload XORed with it, octet i with key octet i mod 4.
    """
    calls = []

    def urandom(n):
        calls.append(n)
        return b"\x01\x02\x04\x08" + bytes(i % 256 for i in range(n - 4))

    monkeypatch.setattr(frames.os, "urandom", urandom)
    monkeypatch.setattr(frames, "_keys", b"")
    data = encodeFrame(OP_TEXT, b"\x00\x00\x00\x00\xff", mask=True)
    assert calls == [frames.KEY_BATCH]
    assert data == b"\x81\x85\x01\x02\x04\x08\x01\x02\x04\x08\xfe"
    assert encodeFrame(OP_TEXT, b"", mask=True)[2:] == bytes(range(4))
    assert calls == [frames.KEY_BATCH]


def test_encodeFrameFreshKeys():
    """
    Every masked frame gets its own key: twenty frames do not all share
    one (RFC 6455 10.3 wants keys a peer cannot predict).
    """
    keys = {decodeOne(encodeFrame(OP_PING, b"p", mask=True)).key for _ in range(20)}
    assert len(keys) > 1


@SETTINGS
@given(
    st.sampled_from([OP_TEXT, OP_BINARY, OP_PING, OP_PONG, OP_CONTINUATION]),
    st.one_of(st.binary(max_size=300), st.sampled_from(LENGTH_CLASSES).map(payloadOf)),
    st.booleans(),
)
def test_encodeFrameRoundTrip(opcode, payload, mask):
    """
    Whatever the payload, the reference decoder, the C{websockets} parser
    and L{FrameTracker} all agree with L{encodeFrame}: one final frame with
    that opcode and payload, ending where the bytes end.
    """
    data = encodeFrame(opcode, payload, mask=mask)
    frame = decodeOne(data)
    assert (frame.opcode, frame.payload, frame.fin, frame.masked) == (
        opcode,
        payload,
        True,
        mask,
    )
    if opcode not in (OP_PING, OP_PONG) or len(payload) <= 125:
        parsed = websocketsParse(data, mask=mask)
        assert parsed.opcode.value == opcode
        assert parsed.data == payload
        assert parsed.fin is True
    tracker = FrameTracker()
    tracker.feed(data[:1])
    assert tracker.feed(data[1:] + data, stopAtBoundary=True) == len(data) - 1
    assert tracker.frames == 1


@pytest.mark.parametrize("mask", [False, True])
def test_encodeClose(mask):
    """
    L{encodeClose} writes a close frame whose payload is the code, two
    bytes big-endian, then the reason in UTF-8; C{websockets} reads the
    same code and reason.
    """
    data = encodeClose(1001, "gateway shutting down", mask)
    frame = decodeOne(data)
    assert frame.opcode == OP_CLOSE
    assert frame.masked is mask
    assert frame.payload == b"\x03\xe9gateway shutting down"
    from websockets.frames import Close

    close = Close.parse(websocketsParse(data, mask=mask).data)
    assert (close.code, close.reason) == (1001, "gateway shutting down")
    tracker = FrameTracker()
    tracker.feed(data)
    assert tracker.closeSeen is True


def test_encodeCloseEmptyReason():
    """
    An empty reason gives a payload of just the code.
    """
    assert encodeClose(1000, "") == b"\x88\x02\x03\xe8"


def test_encodeCloseDefaultUnmasked():
    """
    Without C{mask}, a close frame is unmasked, as a server's must be.
    """
    assert decodeOne(encodeClose(1000, "x")).masked is False


@pytest.mark.parametrize(
    "reason,kept",
    [
        ("a" * 123, "a" * 123),
        ("a" * 124, "a" * 123),
        ("a" * 1000, "a" * 123),
        ("\u00e9" * 100, "\u00e9" * 61),  # 2 bytes each: 122 of 123
        ("a" + "\u00e9" * 100, "a" + "\u00e9" * 61),  # 123 exactly
        ("\u20ac" * 50, "\u20ac" * 41),  # 3 bytes each: 123 exactly
        ("aa" + "\u20ac" * 50, "aa" + "\u20ac" * 40),  # 122, a 3rd byte short
        ("\U0001f600" * 40, "\U0001f600" * 30),  # 4 bytes each: 120
        ("abc" + "\U0001f600" * 40, "abc" + "\U0001f600" * 30),  # 123
    ],
    ids=["123", "124", "1000", "2byte", "2byte-exact", "3byte", "3byte-cut", "4byte", "4byte-exact"],
)
def test_encodeCloseTruncates(reason, kept):
    """
    A reason longer than 123 UTF-8 bytes is cut so that the payload fits
    the 125-byte control frame limit, never in the middle of a character.
    """
    frame = decodeOne(encodeClose(1001, reason))
    assert len(frame.payload) <= 125
    assert frame.headerLength == 2
    assert frame.payload[2:].decode("utf-8") == kept


@SETTINGS
@given(st.text(max_size=200), st.sampled_from([1000, 1001, 1011, 4000, 4999]), st.booleans())
def test_encodeCloseProperty(reason, code, mask):
    """
    For any reason, the close payload is at most 125 bytes, starts with the
    code, and carries the longest prefix of the reason whose UTF-8 fits in
    123 bytes; C{websockets} accepts the frame.
    """
    data = encodeClose(code, reason, mask)
    frame = decodeOne(data)
    assert len(frame.payload) <= 125
    assert struct.unpack("!H", frame.payload[:2])[0] == code
    kept = frame.payload[2:].decode("utf-8")
    assert reason.startswith(kept)
    assert len(kept.encode("utf-8")) <= 123
    if kept != reason:
        longer = reason[: len(kept) + 1]
        assert len(longer.encode("utf-8")) > 123
    from websockets.frames import Close

    close = Close.parse(websocketsParse(data, mask=mask).data)
    assert (close.code, close.reason) == (code, kept)


def test_exports():
    """
    The module's public names are pinned, and the opcodes are RFC 6455's.
    """
    assert sorted(frames.__all__) == sorted(
        [
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
    )
    assert (OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG) == (
        0x0,
        0x1,
        0x2,
        0x8,
        0x9,
        0xA,
    )


def test_reservedBits():
    """
    A frame that sets a reserved bit its stream does not allow marks the
    stream as violated; RSV1 is allowed once permessage-deflate is agreed.
    """
    tracker = FrameTracker()
    tracker.feed(encodeFrame(OP_TEXT, b"fine"))
    assert not tracker.violated
    frame = bytearray(encodeFrame(OP_TEXT, b"compressed?"))
    frame[0] |= frames.RSV1
    allowed = FrameTracker()
    allowed.allowedRsv = frames.RSV1
    allowed.feed(bytes(frame))
    assert not allowed.violated
    tracker.feed(bytes(frame))
    assert tracker.violated
    rsv3 = bytearray(encodeFrame(OP_TEXT, b"x"))
    rsv3[0] |= 0x10
    allowed.feed(bytes(rsv3))
    assert allowed.violated


# -- readClientMessage: the common frame, read without a full parser


def _rawFrame(first: int, payload: bytes, key: bytes | None, length: int | None = None) -> bytes:
    """
    A frame with any first byte, masked with C{key} (or not), its length
    field C{length} (by default the payload's, encoded minimally).
    """
    n = len(payload) if length is None else length
    maskBit = 0x80 if key is not None else 0
    if n < 126:
        header = bytes((first, maskBit | n))
    elif n < 65536:
        header = struct.pack("!BBH", first, maskBit | 126, n)
    else:
        header = struct.pack("!BBQ", first, maskBit | 127, n)
    if key is None:
        return header + payload
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 127, 4096, 65535])
@pytest.mark.parametrize("isBinary", [False, True])
def test_readClientMessage(size, isBinary):
    """
    A whole masked text or binary frame is read and unmasked, whatever its
    length up to 65535, and the position after it is given.
    """
    payload = (bytes(range(256)) * 256)[:size] if isBinary else (b"abc\xc3\xa9" * 20000)[:size]
    if not isBinary:
        payload = payload.decode("utf-8", "ignore").encode("utf-8")
    frame = encodeFrame(OP_BINARY if isBinary else OP_TEXT, payload, mask=True)
    before, after = b"\x00junk", b"\x81\x80more"
    assert readClientMessage(before + frame + after, len(before), 65535) == (
        isBinary, payload, len(before) + len(frame))


@pytest.mark.parametrize("frame, why", [
    (_rawFrame(0x01, b"abc", b"kkkk"), "not final: the first fragment"),
    (_rawFrame(0x80, b"abc", b"kkkk"), "a continuation"),
    (_rawFrame(0x89, b"abc", b"kkkk"), "a ping"),
    (_rawFrame(0x8A, b"abc", b"kkkk"), "a pong"),
    (_rawFrame(0x88, b"\x03\xe8", b"kkkk"), "a close"),
    (_rawFrame(0xC1, b"abc", b"kkkk"), "RSV1 (compressed)"),
    (_rawFrame(0x91, b"abc", b"kkkk"), "RSV3"),
    (_rawFrame(0x83, b"abc", b"kkkk"), "a reserved opcode"),
    (_rawFrame(0x81, b"abc", None), "unmasked"),
    (_rawFrame(0x81, b"\xff\xfe", b"kkkk"), "text that is not UTF-8"),
    (_rawFrame(0x81, b"caf\xc3", b"kkkk"), "text cut inside a character"),
    (_rawFrame(0x82, b"x" * 65536, b"kkkk"), "a 64-bit length"),
    (_rawFrame(0x82, b"x" * 11, b"kkkk"), "over the bound"),
    (_rawFrame(0x82, b"x" * 300, b"kkkk")[:-1], "not all here"),
    (_rawFrame(0x82, b"x" * 300, b"kkkk")[:3], "its length not all here"),
    (b"\x82\x80kkk", "its key not all here"),
])
def test_readClientMessageLeavesTheRest(frame, why):
    """
    Anything but a whole, final, masked text (UTF-8) or binary frame within
    the bound is not read: the full parser gets it.
    """
    assert readClientMessage(frame, 0, 10 if why == "over the bound" else 65535) is None, why


@SETTINGS
@given(st.integers(0, 255), st.binary(max_size=300) | st.text(max_size=100).map(str.encode),
       st.none() | st.binary(min_size=4, max_size=4), st.integers(0, 300), st.integers(0, 8))
def test_readClientMessageAnyFrame(first, payload, key, limit, cut):
    """
    Any frame (any first byte, masked or not, any payload) is read exactly
    when it is a whole, final, masked text (UTF-8) or binary frame within
    the bound, and then as a parser reads it.
    """
    frame = _rawFrame(first, payload, key)
    whole = readClientMessage(frame, 0, limit)
    text = first == 0x81
    try:
        payload.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    expected = first in (0x81, 0x82) and key is not None and len(payload) <= limit and (utf8 or not text)
    assert (whole is not None) == expected
    if whole is not None:
        assert whole == (not text, payload, len(frame))
        _, _, key_, unmasked = unframe(frame)
        assert (unmasked, key_) == (payload, key)
    if cut:
        assert readClientMessage(frame[:-cut], 0, limit) is None
