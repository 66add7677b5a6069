"""
The session protocol, C{txgateway.v1}, without I/O: packets, their encoding
on a WebSocket, and the sequence/acknowledgement arithmetic that both ends
use (docs/protocol.md is the specification).

Each direction numbers its data messages from 1.  A receiver keeps the count
of messages it has accepted in order (L{Inbox}) and drops any message it has
already accepted, so resending is always harmless.  A sender keeps every
message until the other side acknowledges it (L{Outbox}), so that after a
reconnect it can send again exactly what was not received.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections import deque
from dataclasses import dataclass
from typing import Iterator

from ..errors import LimitExceeded, ProtocolError

__all__ = [
    "SUBPROTOCOL",
    "VERSION",
    "Data",
    "Hello",
    "Welcome",
    "Ack",
    "Close",
    "Probe",
    "Packet",
    "encodeData",
    "decodeMessage",
    "loadJSON",
    "checkText",
    "MAX_JSON_DEPTH",
    "encodeControl",
    "controlToJSON",
    "dataToJSON",
    "packetFromJSON",
    "Inbox",
    "Outbox",
    "shortId",
    "CLOSE_ENDED",
    "CLOSE_SUPERSEDED",
    "CLOSE_TOO_BIG",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_BAD_SECRET",
    "CLOSE_UNKNOWN_SESSION",
    "CLOSE_RESUME_FAILED",
    "CLOSE_EXPIRED",
    "CLOSE_BUFFER_FULL",
    "CLOSE_UNAVAILABLE",
    "CLOSE_REFUSED",
    "CLOSE_ORIGIN_REFUSED",
    "CLOSE_SLOW",
    "RESTART_CODES",
    "Failover",
]

#: The WebSocket subprotocol that selects the session protocol.
SUBPROTOCOL = "txgateway.v1"
VERSION = 1

#: The session ended normally (closed by the client, or by the backend: the
#: C{close} packet before it carries the backend's code and reason).
CLOSE_ENDED = 4000
#: This connection was replaced by a newer one for the same session.
CLOSE_SUPERSEDED = 4001
#: A message larger than the gateway accepts (RFC 6455's "message too big").
CLOSE_TOO_BIG = 1009
#: A malformed or out-of-order packet.
CLOSE_PROTOCOL_ERROR = 4400
#: Resume with a wrong secret.
CLOSE_BAD_SECRET = 4403
#: Resume of a session this gateway does not know.
CLOSE_UNKNOWN_SESSION = 4404
#: Resume asked for something that cannot be restored (all or nothing).
CLOSE_RESUME_FAILED = 4409
#: Resume of a session that has expired (grace period over, or its buffer
#: overflowed while the client was away).
CLOSE_EXPIRED = 4410
#: The replay buffer bound was exceeded while the client was attached.
CLOSE_BUFFER_FULL = 4413
#: No backend could be had for a new session; trying again later may work.
CLOSE_UNAVAILABLE = 4503
#: The backend refused the new session's handshake (its answer was not 101;
#: the reason carries its status): final, the client does not retry.
CLOSE_REFUSED = 4502
#: A page from an origin the route does not allow (C{allowed_origins}):
#: final, as retrying from the same page gets the same answer.
CLOSE_ORIGIN_REFUSED = 4003
#: A slow consumer, under C{slow = "close"}: the client acknowledged too
#: little, or the backend confirmed too little (as Centrifugo's 3008).
CLOSE_SLOW = 4008

#: Codes after which a client must start a new session (and tell the
#: application) instead of resuming.
RESTART_CODES = frozenset(
    {CLOSE_BAD_SECRET, CLOSE_UNKNOWN_SESSION, CLOSE_RESUME_FAILED, CLOSE_EXPIRED, CLOSE_BUFFER_FULL,
     CLOSE_SLOW}
)


@dataclass(frozen=True, slots=True)
class Data:
    """
    A data message: C{seq} numbers it within its direction.
    """

    seq: int
    payload: bytes
    isBinary: bool


@dataclass(frozen=True, slots=True)
class Hello:
    """
    The client's first packet: a new session (C{sid} None), or a resume.

    @ivar received: how many data messages the client has received.
    @ivar probe: only check that the session could be resumed here (a
        transport upgrade's round trip); answered with L{Probe}.
    """

    sid: str | None = None
    secret: str | None = None
    received: int = 0
    probe: bool = False


@dataclass(frozen=True, slots=True)
class Welcome:
    """
    The gateway's answer to L{Hello}.

    @ivar received: how many of the client's data messages the gateway has
        accepted; the client sends again those after it.
    @ivar heartbeat: seconds of silence after which each side sends an ack
        (docs/protocol.md, "Heartbeats").
    @ivar grace: seconds a detached session waits for its client.
    """

    sid: str
    secret: str
    received: int
    resumed: bool
    heartbeat: float
    grace: float


@dataclass(frozen=True, slots=True)
class Ack:
    """
    Cumulative acknowledgement: the sender has received C{count} data
    messages.
    """

    count: int


@dataclass(frozen=True, slots=True)
class Probe:
    """
    The gateway's answer to a probing L{Hello}.
    """


@dataclass(frozen=True, slots=True)
class Close:
    """
    The session is over (sent by either side before the WebSocket close).
    """

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Failover:
    """
    The session's backend connection dropped and the session went on with
    another (pool policy C{notify}): the client's messages C{first} to
    C{last} may not have reached the application.
    """

    first: int
    last: int


Packet = Data | Hello | Welcome | Ack | Close | Probe | Failover

_COLON = ord(":")
_MAX_SEQ_DIGITS = 19

#: How an ack begins as the project's clients (and L{encodeMessage}) write it.
_ACK_PREFIX = b'{"t":"ack","n":'


def encodeData(seq: int, payload: bytes) -> bytes:
    """
    @return: the WebSocket message of a data packet: the decimal sequence
        number, a colon, the payload (sent as a text or binary message as
        the payload is).
    """
    return b"%d:%s" % (seq, payload)


#: Compact JSON, built once (C{json.dumps} with C{separators} builds an
#: encoder on every call).
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def encodeControl(packet: Hello | Welcome | Ack | Close | Probe | Failover) -> bytes:
    """
    @return: the JSON text message of a control packet (an ack, the most
        frequent, is formatted directly).
    """
    if type(packet) is Ack:
        return b'{"t":"ack","n":%d}' % packet.count
    return _COMPACT.encode(controlToJSON(packet)).encode("utf-8")


def controlToJSON(packet: Hello | Welcome | Ack | Close | Probe | Failover) -> dict:
    """
    @return: the JSON object of a control packet.
    """
    if isinstance(packet, Ack):
        obj: dict = {"t": "ack", "n": packet.count}
    elif isinstance(packet, Hello):
        obj = {"t": "hello", "v": VERSION}
        if packet.sid is not None:
            obj.update(sid=packet.sid, secret=packet.secret, recv=packet.received)
            if packet.probe:
                obj["probe"] = True
    elif isinstance(packet, Welcome):
        obj = {
            "t": "welcome",
            "v": VERSION,
            "sid": packet.sid,
            "secret": packet.secret,
            "recv": packet.received,
            "resumed": packet.resumed,
            "heartbeat": packet.heartbeat,
            "grace": packet.grace,
        }
    elif isinstance(packet, Close):
        obj = {"t": "close", "code": packet.code, "reason": packet.reason}
    elif isinstance(packet, Probe):
        obj = {"t": "probe"}
    elif isinstance(packet, Failover):
        obj = {"t": "failover", "from": packet.first, "to": packet.last}
    else:  # pragma: no cover - the type says it all
        raise TypeError(packet)
    return obj


def _count(obj: dict, key: str) -> int:
    value = obj.get(key)
    if type(value) is not int or value < 0:
        raise ProtocolError(f"{key!r} must be a non-negative integer")
    return value


def _text(obj: dict, key: str, limit: int = 256) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(f"{key!r} must be a string of at most {limit} characters")
    checkText(value, key)
    return value


def checkText(value: str, key: str) -> None:
    """
    @raise ProtocolError: when C{value} (the client's C{key}) holds a lone
        surrogate (C{"\\ud800"} is valid JSON but no Unicode text).
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError(f"{key!r} is not valid Unicode text") from None


def _number(obj: dict, key: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ProtocolError(f"{key!r} must be a non-negative number")
    return float(value)


#: How deeply arrays and objects may nest in any JSON the gateway parses
#: from a client (session packets, long-polling bodies, admin API bodies).
#: The protocol needs 3 (a long-polling batch: an object, its list, the
#: packets); anything deeper is refused before it is parsed, so that a body
#: such as C{[[[[...]]]]} costs a scan, not the parser's recursion.
MAX_JSON_DEPTH = 32

#: A backslash and the character it escapes (C{\\uXXXX} is C{\\u} and four
#: plain characters).
_ESCAPE = re.compile(rb"\\[\s\S]")
#: A JSON string, once its escapes are gone.
_STRING = re.compile(rb'"[^"]*"')
#: Keeps only brackets, as C{[} and C{]}.
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def _checkDepth(data: bytes, limit: int) -> None:
    """
    Refuse JSON text whose arrays and objects nest deeper than C{limit},
    without parsing it.  Linear in its length and all in C: escapes and
    strings are cut out (their brackets do not count), then the innermost
    pairs of brackets are removed C{limit} times; anything left over nests
    deeper (or does not match, which is no JSON either).

    A backslash outside a string is invalid JSON where it stands, so the
    parser stops there, before any bracket that cutting it out hid.

    @raise ProtocolError: when they nest too deeply.
    """
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    if b"\\" in data:
        data = _ESCAPE.sub(b"", data)
    if b'"' in data:
        data = _STRING.sub(b"", data)
    brackets = data.translate(_BRACKETS, _NOT_BRACKETS)
    run = b"[" * (limit + 1)  # so many opening brackets in a row nest so deep
    for _ in range(limit):
        if run in brackets:
            break
        shorter = brackets.replace(b"[]", b"")
        if not shorter:
            return
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    raise ProtocolError(f"arrays and objects nest deeper than {limit} levels (or its brackets do not match)")


def _refuseConstant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finiteFloat(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is too large a number")
    return value


#: The decoder of L{loadJSON}, built once (C{json.loads} with its hooks
#: builds one for every call).
_DECODER = json.JSONDecoder(parse_constant=_refuseConstant, parse_float=_finiteFloat)


def loadJSON(data: bytes | str, maxDepth: int = MAX_JSON_DEPTH) -> object:
    """
    Parse JSON text from a client: strict JSON (no C{NaN} or C{Infinity},
    no number too large for a float, integers of at most 4300 digits),
    arrays and objects nested at most C{maxDepth} deep.

    @raise ProtocolError: for anything else, saying why; never any other
        exception, whatever the bytes.
    """
    if isinstance(data, str):
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError:
            raise ProtocolError("not valid Unicode text") from None
    _checkDepth(data, maxDepth)
    try:
        # UTF-8 only (json.loads would guess UTF-16 or UTF-32 from the bytes,
        # where the byte scan of the depth check would not be exact).
        text = data.decode("utf-8-sig")
        if text[:1] == "\ufeff":
            return json.loads(text)  # a second mark: json's own refusal of it
        return _DECODER.decode(text)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ProtocolError(f"arrays and objects nest deeper than {maxDepth} levels") from None
    except ValueError as error:  # UnicodeDecodeError is one
        raise ProtocolError(str(error)[:120]) from None


def decodeMessage(payload: bytes, isBinary: bool) -> Packet:
    """
    Decode one WebSocket message of the session protocol.

    @raise ProtocolError: for anything that is not a packet.
    """
    if not isBinary and payload[:1] == b"{":
        if payload[:15] == _ACK_PREFIX and payload[-1:] == b"}":
            # An ack as every client of the project writes it, read without
            # JSON's machinery (a message a turn per session); any other
            # spelling is JSON's to read.
            digits = payload[15:-1]
            if digits.isdigit() and len(digits) <= _MAX_SEQ_DIGITS and (digits[:1] != b"0" or digits == b"0"):
                return Ack(int(digits))
        try:
            obj = loadJSON(payload)
        except ProtocolError as error:
            raise ProtocolError(f"control packet is not valid JSON: {error}") from None
        packet = packetFromJSON(obj)
        if isinstance(packet, Data):
            raise ProtocolError("data packets on a WebSocket are not JSON")
        return packet
    colon = payload.find(b":", 0, _MAX_SEQ_DIGITS + 1)
    digits = payload[:colon]
    if colon <= 0 or not digits.isdigit():
        raise ProtocolError("data packet must start with its sequence number and ':'")
    seq = int(digits)
    if seq < 1:
        raise ProtocolError("sequence numbers start at 1")
    return Data(seq, payload[colon + 1 :], isBinary)


def dataToJSON(message: Data) -> dict:
    """
    @return: the long-polling JSON object of a data packet.
    """
    if message.isBinary:
        return {"t": "m", "s": message.seq, "b": base64.b64encode(message.payload).decode("ascii")}
    return {"t": "m", "s": message.seq, "d": message.payload.decode("utf-8")}


def packetFromJSON(obj: object) -> Packet:
    """
    Decode a packet's JSON object (a WebSocket control message, or any
    packet in a long-polling body).

    @raise ProtocolError: for anything that is not a packet.
    """
    if not isinstance(obj, dict):
        raise ProtocolError("a packet must be a JSON object")
    kind = obj.get("t")
    if kind == "m":
        seq = obj.get("s")
        if type(seq) is not int or seq < 1:
            raise ProtocolError("'s' must be a sequence number >= 1")
        if "d" in obj:
            text = obj["d"]
            if not isinstance(text, str):
                raise ProtocolError("'d' must be a string")
            try:
                return Data(seq, text.encode("utf-8"), False)
            except UnicodeEncodeError:
                raise ProtocolError("'d' is not valid Unicode text") from None
        raw = obj.get("b")
        if not isinstance(raw, str):
            raise ProtocolError("a data packet needs 'd' (text) or 'b' (base64)")
        try:
            return Data(seq, base64.b64decode(raw, validate=True), True)
        except ValueError:
            raise ProtocolError("'b' is not valid base64") from None
    if kind == "probe":
        return Probe()
    if kind == "ack":
        return Ack(_count(obj, "n"))
    if kind == "hello":
        if obj.get("v") != VERSION:
            raise ProtocolError(f"unsupported protocol version {obj.get('v')!r}")
        if "sid" not in obj:
            return Hello()
        return Hello(_text(obj, "sid"), _text(obj, "secret"), _count(obj, "recv"),
                     obj.get("probe") is True)
    if kind == "welcome":
        return Welcome(
            _text(obj, "sid"),
            _text(obj, "secret"),
            _count(obj, "recv"),
            bool(obj.get("resumed")),
            _number(obj, "heartbeat"),
            _number(obj, "grace"),
        )
    if kind == "close":
        code = _count(obj, "code")
        return Close(code, _text(obj, "reason", 1024))
    if kind == "failover":
        return Failover(_count(obj, "from"), _count(obj, "to"))
    raise ProtocolError(f"unknown packet type {kind!r}")


def shortId(sid: str | None) -> str:
    """
    @return: a session id as it may be logged: its first 8 characters and an
        ellipsis (ids are never logged in full), or C{"-"} for none.
    """
    if sid is None:
        return "-"
    return sid[:8] + "\N{HORIZONTAL ELLIPSIS}"


class Inbox:
    """
    The receiving half of one direction: which data messages were accepted.

    @ivar accepted: messages accepted in order; the next one must be
        C{accepted + 1}.
    """

    __slots__ = ("accepted",)

    def __init__(self, accepted: int = 0) -> None:
        self.accepted = accepted

    def receive(self, message: Data) -> bool:
        """
        @return: True when C{message} is the next one (the caller accepts it
            now, and must then call L{accept}), False for a duplicate.
        @raise ProtocolError: for a message beyond the next one (a gap: the
            sender skipped one, which an ordered transport never does).
        """
        if message.seq <= self.accepted:
            return False
        if message.seq != self.accepted + 1:
            raise ProtocolError(
                f"data packet {message.seq} arrived before {self.accepted + 1}"
            )
        return True

    def accept(self) -> int:
        """
        Count the message just received as accepted.

        @return: the new count.
        """
        self.accepted += 1
        return self.accepted


class Outbox:
    """
    The sending half of one direction: numbers outgoing messages and keeps
    them until acknowledged.

    Bounded by C{maxMessages} and C{maxBytes} (payload bytes) of
    unacknowledged messages; L{add} raises L{LimitExceeded} instead of going
    past either, and the caller decides what that means (the gateway ends
    the session; the client refuses the send).

    @ivar sent: messages numbered so far (the last sequence number used).
    @ivar acked: messages the peer has acknowledged.
    """

    __slots__ = ("sent", "acked", "_pending", "_bytes", "maxMessages", "maxBytes")

    def __init__(self, maxMessages: int, maxBytes: int) -> None:
        self.sent = 0
        self.acked = 0
        #: The unacknowledged messages; L{None} while there are none (a
        #: gateway holds an outbox per session, and most are empty most of
        #: the time: an empty deque costs its first block, 760 bytes).
        self._pending: deque[Data] | None = None
        self._bytes = 0
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes

    def __len__(self) -> int:
        pending = self._pending
        return 0 if pending is None else len(pending)

    @property
    def pendingBytes(self) -> int:
        """
        Payload bytes held, not yet acknowledged.
        """
        return self._bytes

    def room(self, size: int) -> bool:
        """
        @return: whether a message of C{size} bytes fits within the bounds.
        """
        return len(self) < self.maxMessages and self._bytes + size <= self.maxBytes

    def add(self, payload: bytes, isBinary: bool) -> Data:
        """
        Number a new message and keep it until acknowledged.

        @raise LimitExceeded: when it would exceed a bound.
        """
        if not self.room(len(payload)):
            raise LimitExceeded(
                f"more than {self.maxMessages} messages or {self.maxBytes} bytes "
                "unacknowledged"
            )
        self.sent += 1
        message = Data(self.sent, payload, isBinary)
        pending = self._pending
        if pending is None:
            pending = self._pending = deque()
        pending.append(message)
        self._bytes += len(payload)
        return message

    def ack(self, count: int) -> int:
        """
        The peer has received C{count} messages: forget those.

        @return: how many messages were newly acknowledged.
        @raise ProtocolError: when C{count} is more than was ever sent.
        """
        if count > self.sent:
            raise ProtocolError(f"acknowledged {count} messages, only {self.sent} were sent")
        newly = count - self.acked
        if newly <= 0:
            return 0
        pending = self._pending
        for _ in range(newly):
            self._bytes -= len(pending.popleft().payload)
        if not pending:
            self._pending = None
        self.acked = count
        return newly

    def unacknowledged(self) -> Iterator[Data]:
        """
        @return: the messages not yet acknowledged, in order.
        """
        return iter(self._pending or ())
