"""
L{gateway.wire.protocol}: packet encoding and the sequence/acknowledgement
arithmetic both ends share.
"""

from __future__ import annotations

import json

import pytest

from gateway.errors import LimitExceeded, ProtocolError
from gateway.wire.protocol import (
    Ack,
    Close,
    Data,
    Hello,
    Inbox,
    Outbox,
    Probe,
    Welcome,
    controlToJSON,
    dataToJSON,
    decodeMessage,
    encodeControl,
    encodeData,
    packetFromJSON,
    shortId,
)


@pytest.mark.parametrize(
    "packet",
    [
        Hello(),
        Hello("sid", "secret", 7),
        Hello("sid", "secret", 7, probe=True),
        Welcome("sid", "secret", 3, True, 10.0, 30.0),
        Ack(12),
        Close(4000, "done"),
        Probe(),
    ],
)
def test_controlRoundTrip(packet):
    """
    Every control packet decodes back to itself, as a WebSocket text
    message and as a long-polling JSON object.
    """
    assert decodeMessage(encodeControl(packet), False) == packet
    assert packetFromJSON(controlToJSON(packet)) == packet


@pytest.mark.parametrize(
    "packet",
    [Ack(0), Ack(12), Ack(2**63 - 1), Close(4000, "fin \u00e9"), Welcome("s", "k", 3, False, 10.0, 30.0)],
)
def test_encodeControlIsCompactJSON(packet):
    """
    A control packet's message is its JSON object in compact form, byte for
    byte what C{json.dumps} with compact separators gives (acks, formatted
    directly, included).
    """
    expected = json.dumps(controlToJSON(packet), separators=(",", ":")).encode("utf-8")
    assert encodeControl(packet) == expected


def test_dataRoundTrip():
    """
    Data packets keep their number, payload and kind, on a WebSocket
    (C{seq:payload}, payload byte for byte, colons included) and in JSON
    (text as a string, binary as base64).
    """
    for message in (Data(1, b"a:b:c", False), Data(42, b"\x00\xff:", True), Data(3, b"", False)):
        assert decodeMessage(encodeData(message.seq, message.payload), message.isBinary) == message
        assert packetFromJSON(dataToJSON(message)) == message


@pytest.mark.parametrize(
    "payload, isBinary",
    [
        (b"{not json", False),
        (b"[1, 2]", False),
        (b'{"t": "nope"}', False),
        (b'{"t": "hello", "v": 2}', False),
        (b'{"t": "ack", "n": -1}', False),
        (b'{"t": "ack", "n": "1"}', False),
        (b'{"t": "m", "s": 1, "d": "x"}', False),
        (b"abc", False),
        (b"0:zero", False),
        (b":x", True),
        (b"12345678901234567890:too long", False),
    ],
)
def test_decodeRefusesMalformed(payload, isBinary):
    """
    Malformed packets, JSON data packets on a WebSocket, sequence number 0
    and over-long numbers are protocol errors.
    """
    with pytest.raises(ProtocolError):
        decodeMessage(payload, isBinary)


@pytest.mark.parametrize(
    "obj",
    [
        {"t": "m", "s": 0, "d": "x"},
        {"t": "m", "s": 1},
        {"t": "m", "s": 1, "d": 5},
        {"t": "m", "s": 1, "b": "!!"},
        {"t": "m", "s": 1, "d": "\ud800"},
        {"t": "close", "code": 1000, "reason": "x" * 2000},
        "not an object",
    ],
)
def test_packetFromJSONRefusesMalformed(obj):
    """
    Long-polling packets with a bad number, no payload, a wrong payload
    type, bad base64, a lone surrogate or an over-long reason are protocol
    errors.
    """
    with pytest.raises(ProtocolError):
        packetFromJSON(obj)


def test_inbox():
    """
    The next message is accepted, earlier ones are duplicates, and a gap is
    a protocol error.
    """
    inbox = Inbox()
    assert inbox.receive(Data(1, b"", False))
    assert inbox.accept() == 1
    assert not inbox.receive(Data(1, b"", False))
    with pytest.raises(ProtocolError):
        inbox.receive(Data(3, b"", False))


def test_outboxNumbersKeepsAndAcks():
    """
    Messages are numbered from 1 and kept until acknowledged; a stale ack
    changes nothing; an ack beyond what was sent is a protocol error.
    """
    outbox = Outbox(10, 1000)
    for payload in (b"a", b"bb", b"ccc"):
        outbox.add(payload, False)
    assert [m.seq for m in outbox.unacknowledged()] == [1, 2, 3]
    assert outbox.ack(2) == 2
    assert outbox.ack(1) == 0
    assert [m.payload for m in outbox.unacknowledged()] == [b"ccc"]
    assert outbox.pendingBytes == 3
    with pytest.raises(ProtocolError):
        outbox.ack(4)


def test_outboxBoundsAtTheLimit():
    """
    The replay buffer takes messages up to exactly its bounds, in count and
    in bytes, and refuses the next one; an acknowledgement makes room.
    """
    byCount = Outbox(2, 1000)
    byCount.add(b"1", False)
    byCount.add(b"2", False)
    with pytest.raises(LimitExceeded):
        byCount.add(b"3", False)
    byCount.ack(1)
    byCount.add(b"3", False)

    byBytes = Outbox(100, 10)
    byBytes.add(b"x" * 6, True)
    byBytes.add(b"y" * 4, True)  # exactly 10 bytes held
    with pytest.raises(LimitExceeded):
        byBytes.add(b"z", True)
    assert byBytes.sent == 2


def test_shortId():
    """
    Ids are logged by their first 8 characters only.
    """
    assert shortId("abcdefghijklmnop") == "abcdefgh…"
    assert shortId(None) == "-"


@pytest.mark.parametrize("text", [
    b'{"t":"ack","n":0}', b'{"t":"ack","n":7}', b'{"t":"ack","n":9223372036854775807}',
    b'{"t":"ack","n":12345678901234567890123}', b'{"t":"ack","n":01}', b'{"t":"ack","n":-1}',
    b'{"t":"ack","n":1.5}', b'{"t":"ack","n":1e3}', b'{"t":"ack","n":"7"}', b'{"t":"ack","n":7,"x":1}',
    b'{"t":"ack","n":}', b'{"t":"ack","n":7}}', b'{"t":"ack","n": 7}', b'{"t":"ack","n":\xd9\xa3}',
    b'{"t":"ack","n":7 }', b'{"n":7,"t":"ack"}',
])
def test_ackAsJSONReadsIt(text):
    """
    An ack is read as JSON would read it, whatever its spelling (the
    common one is read without JSON's machinery): the same packet, or the
    same refusal.
    """
    try:
        obj = json.loads(text)
        expected = packetFromJSON(obj)
    except (ValueError, ProtocolError):
        expected = ProtocolError
    try:
        got = decodeMessage(text, False)
    except ProtocolError:
        got = ProtocolError
    assert got == expected
