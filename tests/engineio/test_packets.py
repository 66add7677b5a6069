"""
The Engine.IO v4 packet codec (gateway.engineio.packets), from the protocol
document's examples.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.engineio.packets import (
    ERRORS,
    Packet,
    PacketType,
    decodeFrame,
    decodePayload,
    decodeText,
    encodeFrame,
    encodePayload,
    encodeText,
    errorBody,
    openPacket,
)
from gateway.errors import ProtocolError


def test_textPacket() -> None:
    """
    A text packet is its type's digit followed by its data.
    """
    assert encodeText(Packet(PacketType.MESSAGE, "hello")) == "4hello"
    assert decodeText("4hello") == Packet(PacketType.MESSAGE, "hello")
    assert decodeText("2probe") == Packet(PacketType.PING, "probe")
    assert decodeText("6") == Packet(PacketType.NOOP)


def test_binaryOverPolling() -> None:
    """
    Over long-polling a binary message is C{b} and its bytes in base64.
    """
    assert encodeText(Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")) == "bAQIDBA=="
    assert decodeText("bAQIDBA==") == Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")


def test_payloadSeparator() -> None:
    """
    A payload's packets are joined by the record separator, text and binary
    mixed, in order.
    """
    packets = [Packet(PacketType.MESSAGE, "hello"), Packet(PacketType.MESSAGE, b"\x01\x02\x03\x04")]
    assert encodePayload(packets) == b"4hello\x1ebAQIDBA=="
    assert decodePayload(b"4hello\x1ebAQIDBA==", 10) == packets


def test_frames() -> None:
    """
    Over WebSocket a binary message is a binary frame of its bytes alone; a
    text packet is a text frame.
    """
    assert encodeFrame(Packet(PacketType.MESSAGE, b"\x00\xff")) == (b"\x00\xff", True)
    assert encodeFrame(Packet(PacketType.PONG, "probe")) == (b"3probe", False)
    assert decodeFrame(b"\x00\xff", True) == Packet(PacketType.MESSAGE, b"\x00\xff")
    assert decodeFrame("4é".encode(), False) == Packet(PacketType.MESSAGE, "é")


@pytest.mark.parametrize("text", ["", "7", "abc", "x4", "b!!!"])
def test_badPackets(text: str) -> None:
    """
    An empty packet, an unknown type or bad base64 is a protocol error.
    """
    with pytest.raises(ProtocolError):
        decodeText(text)


def test_textFrameStartingWithB() -> None:
    """
    Over WebSocket, binary goes in binary frames: a text frame starting with
    C{b} is no packet.
    """
    with pytest.raises(ProtocolError):
        decodeFrame(b"bAQID", False)


def test_payloadBounds() -> None:
    """
    A payload of more packets than allowed, or not UTF-8, is refused.
    """
    with pytest.raises(ProtocolError):
        decodePayload(b"\x1e".join([b"4a"] * 11), 10)
    with pytest.raises(ProtocolError):
        decodePayload(b"4\xff", 10)


def test_openPacket() -> None:
    """
    The open packet carries the sid, the upgrades and the settings, times
    in milliseconds.
    """
    packet = openPacket("abc", ["websocket"], 25.0, 20.0, 1_000_000)
    assert packet.type is PacketType.OPEN
    assert json.loads(packet.data) == {"sid": "abc", "upgrades": ["websocket"], "pingInterval": 25000,
                                       "pingTimeout": 20000, "maxPayload": 1000000}


def test_errorBodies() -> None:
    """
    Error bodies are the reference server's: code and message.
    """
    assert errorBody(1) == b'{"code":1,"message":"Session ID unknown"}'
    assert ERRORS[0] == "Transport unknown" and ERRORS[5] == "Unsupported protocol version"


@given(st.lists(st.one_of(st.text(alphabet=st.characters(blacklist_characters="\x1e", blacklist_categories=("Cs",))),
                          st.binary()), min_size=1, max_size=8))
def test_payloadRoundTrip(messages) -> None:
    """
    Any list of messages (text without the separator, or bytes) survives a
    payload's encoding.  Text is what a UTF-8 decoder makes, so it holds no
    lone surrogate.
    """
    packets = [Packet(PacketType.MESSAGE, m) for m in messages]
    assert decodePayload(encodePayload(packets), 10) == packets
