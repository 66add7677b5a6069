"""
Tests for the client's long-polling adapter (L{gateway.client._polling}),
through a SessionClient in polling mode whose requests a fake agent answers.
"""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from gateway.client import ClientState, SessionClient, SessionClosed, StateDetail
from gateway.wire.protocol import Ack, Close, Data, Hello, controlToJSON
from tests.client.fakes import (
    HEARTBEAT,
    NEW_SID,
    SECRET,
    SID,
    Harness,
    failure,
    pollingOpen,
    result,
    toJSON,
    welcomed,
)


def test_pollingOpenThenPoll(p: Harness) -> None:
    """
    Over long-polling the client POSTs its hello with txgw=open (a JSON body
    sent as text/plain, a unique n in the URL, the extra headers), is open
    on the welcome (detail.transport "polling"), then polls with its
    session, secret and ack; no WebSocket is tried.
    """
    h = Harness(transport="polling", headers={"Authorization": "Bearer t"})
    h.client.connect()
    opening = h.http.one("open")
    assert opening.method == b"POST"
    assert opening.uri.startswith("http://gateway.example:8080/chat?txgw=open&n=")
    assert opening.body == {"t": "hello", "v": 1}
    assert opening.headers.getRawHeaders("content-type") == ["text/plain"]
    assert opening.headers.getRawHeaders("authorization") == ["Bearer t"]
    opening.answer(welcomed())
    h.flush()
    assert h.states == [(ClientState.open, StateDetail(transport="polling"))]
    assert h.client.transport == "polling"
    poll = h.http.one("poll")
    assert poll.body == {"sid": SID, "secret": SECRET, "ack": 0}
    assert len({r.nonce for r in h.http.requests}) == len(h.http.requests)
    assert h.attempts == 0
    h.client.abort()
    assert poll.cancelled



def test_pollingHttpsURL() -> None:
    """
    A wss:// URL polls over https://, and an http:// URL is the same route
    as ws://.
    """
    h = Harness(transport="polling")
    h.client = SessionClient("wss://gateway.example/chat?room=1", reactor=h.reactor,
                             transport="polling")
    h.client._dialer.agent = h.http
    h.client.connect()
    assert h.http.one("open").uri.startswith("https://gateway.example/chat?room=1&txgw=open&n=")
    assert SessionClient("http://gateway.example/x", reactor=Clock())._dialer.wsURL == (
        "ws://gateway.example/x"
    )



def test_pollingReceivesAndAcknowledgesWithTheNextPoll(p: Harness) -> None:
    """
    Data in a poll answer reaches onMessage once each, in order (text and
    binary); the next poll carries the ack (no separate ack is sent); a
    replayed duplicate is dropped; an empty answer just polls again.
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"one", False), Data(2, b"\x00\xff", True))
    p.flush()
    assert p.messages == [("one", False), (b"\x00\xff", True)]
    poll = p.http.one("poll")
    assert poll.body["ack"] == 2
    poll.answer(Data(2, b"\x00\xff", True), Data(3, b"three", False), Ack(0))
    p.flush()
    assert p.messages[-1] == ("three", False)
    assert len(p.messages) == 3
    p.http.one("poll").answer()
    p.flush()
    assert p.http.one("poll").body["ack"] == 3
    assert p.http.pending("send") == []



def test_pollingOpenAnswerCarriesTheReplay(p: Harness) -> None:
    """
    The open answer's packets after the welcome are processed before the
    first poll, which therefore already acknowledges them.
    """
    p.client.connect()
    p.http.one("open").answer(welcomed(), Data(1, b"a", False), Data(2, b"b", False))
    p.flush()
    assert p.messages == [("a", False), ("b", False)]
    assert p.http.one("poll").body["ack"] == 2



def test_pollingOneSendInFlightAndBatches() -> None:
    """
    At most one send is in flight; what is sent meanwhile waits and goes in
    the next send, in order, up to maxBatchMessages packets.  A send's
    answer (the gateway's ack) acknowledges.
    """
    h = Harness(transport="polling", maxBatchMessages=2)
    pollingOpen(h)
    h.client.send("a")
    h.client.send(b"\x01")
    h.flush()
    first = h.http.one("send")
    assert first.body["sid"] == SID and first.body["secret"] == SECRET
    assert first.packets == [Data(1, b"a", False), Data(2, b"\x01", True)]
    assert first.body["packets"][1] == {"t": "m", "s": 2, "b": "AQ=="}
    for text in ("c", "d", "e"):
        h.client.send(text)
    h.flush()
    assert len(h.http.pending("send")) == 1
    acked = h.client.whenAcknowledged()
    first.answer(Ack(2))
    h.flush()
    assert h.client.bufferedAmount == 3
    second = h.http.one("send")
    assert second.packets == [Data(3, b"c", False), Data(4, b"d", False)]
    second.answer(Ack(4))
    h.flush()
    third = h.http.one("send")
    assert third.packets == [Data(5, b"e", False)]
    third.answer(Ack(5))
    h.flush()
    assert result(acked) is None
    assert h.http.pending("send") == []



def test_pollingSendBodyBound() -> None:
    """
    A send's body stays within maxBodyBytes: two packets go together when
    their body is exactly at the bound, and apart when it is one byte
    less (a single larger packet still goes, alone).
    """
    packets = [toJSON(Data(seq, b"x" * 40, False)) for seq in (2, 3)]
    two = len(json.dumps({"sid": SID, "secret": SECRET, "packets": packets},
                         separators=(",", ":")))
    for bound, expected in ((two, [1, 2, 1]), (two - 1, [1, 1, 1, 1])):
        h = Harness(transport="polling", maxBodyBytes=bound)
        pollingOpen(h)
        for _ in range(4):
            h.client.send("x" * 40)
            h.flush()
        sends = []
        while h.http.pending("send"):
            send = h.http.one("send")
            assert len(send.raw) <= bound
            sends.append(len(send.packets))
            send.answer(Ack(sum(sends)))
            h.flush()
        assert sends == expected
        h.client.send("y" * 2 * bound)
        h.flush()
        assert h.http.one("send").packets == [Data(5, b"y" * 2 * bound, False)]



def test_pollingClosedPacketActsAsACloseCode(p: Harness) -> None:
    """
    The gateway's {"t":"closed"} packet counts as a WebSocket close with its
    code: 1001 makes the client resume (txgw=open with a resume hello).
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"one", False), {"t": "closed", "code": 1001, "reason": "bye"})
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.code, detail.transport) == (1001, "polling")
    p.reactor.advance(detail.delay)
    reopen = p.http.one("open")
    assert reopen.body == controlToJSON(Hello(SID, SECRET, 1))
    reopen.answer(welcomed(resumed=True))
    p.flush()
    assert p.states[-1] == (ClientState.open, StateDetail(resumed=True, transport="polling"))



def test_pollingClosed4001Closes(p: Harness) -> None:
    """
    closed 4001 (another connection took the session over) stops the
    client, as on a WebSocket.
    """
    pollingOpen(p)
    p.http.one("poll").answer({"t": "closed", "code": 4001, "reason": "replaced"})
    p.flush()
    assert p.client.state is ClientState.closed
    assert "4001" in p.states[-1][1].error



@pytest.mark.parametrize(
    "status,code", [(404, 4404), (410, 4410), (403, 4403), (409, 4409), (400, 4400)]
)
def test_pollingRefusalCodesRestart(p: Harness, status: int, code: int) -> None:
    """
    An HTTP error's JSON code counts as a close code: the restart codes
    drop the old session (reset) and open a new one with txgw=open.
    """
    pollingOpen(p)
    p.client.send("lost")
    p.flush()
    p.http.one("send").refuse(status, code)
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert (detail.reset, detail.dropped, detail.code) == (True, 1, code)
    assert p.http.pending() == []  # the poll was aborted with the link
    p.reactor.advance(detail.delay)
    p.http.one("open").answer(welcomed(sid=NEW_SID))
    p.flush()
    assert p.states[-1][1].reset and p.client.sessionId == NEW_SID



def test_pollingRefusalWithoutCode(p: Harness) -> None:
    """
    An HTTP error without a session code counts as the status of a
    WebSocket handshake would: a 4xx before the first session is final;
    503 with 4503 is retried.
    """
    connected = p.client.connect()
    p.http.one("open").refuse(503, 4503)
    assert p.states[-1][0] is ClientState.reconnecting
    p.reactor.advance(p.states[-1][1].delay)
    p.http.one("open").refuse(404, body=b"<html>not found</html>")
    assert failure(connected).check(SessionClosed)
    assert p.client.state is ClientState.closed
    assert "HTTP 404" in p.states[-1][1].error



@pytest.mark.parametrize("body", [None, b'{"error":"Payload Too Large","status":413}'])
def test_polling413Closes(p: Harness, body: bytes | None) -> None:
    """
    413 (code 1009: a body or batch too large for the gateway) stops the
    client: resending would fail again.  A 413 without a code counts the
    same.
    """
    pollingOpen(p)
    p.client.send("big")
    p.flush()
    p.http.one("send").refuse(413, 1009, body=body)
    state, detail = p.states[-1]
    assert state is ClientState.closed
    assert detail.code == 1009 and "1009" in detail.error and "gateway" in detail.error



def test_pollingFailureResumesAndResends(p: Harness) -> None:
    """
    A failed request ends the link: the other requests are aborted, and
    the client resumes with txgw=open, then sends again exactly what the
    welcome does not acknowledge.
    """
    pollingOpen(p)
    p.client.send("m1")
    p.flush()
    send = p.http.one("send")
    p.client.send("m2")
    p.http.one("poll").fail()
    assert send.cancelled
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert detail.error == "request failed: Connection to the other side was lost in a non-clean fashion."
    p.reactor.advance(detail.delay)
    p.http.one("open").answer(welcomed(received=1, resumed=True))
    p.flush()
    assert p.http.one("send").packets == [Data(2, b"m2", False)]



def test_pollingRequestTimeout(p: Harness) -> None:
    """
    A poll unanswered for twice the heartbeat plus connectTimeout counts
    as a dead connection.
    """
    pollingOpen(p)
    poll = p.http.one("poll")
    p.advance(2 * HEARTBEAT + 10 - 0.5)
    assert p.client.state is ClientState.open
    p.advance(0.5)
    assert poll.cancelled
    state, detail = p.states[-1]
    assert state is ClientState.reconnecting
    assert "in time" in detail.error



def test_pollingNoWelcome(p: Harness) -> None:
    """
    An open answer that does not start with welcome is a protocol error;
    an unanswered open is abandoned after connectTimeout.
    """
    p.client.connect()
    p.http.one("open").answer(Ack(0))
    assert "protocol error" in p.states[-1][1].error
    p.reactor.advance(p.states[-1][1].delay)
    opening = p.http.one("open")
    p.advance(10)
    assert opening.cancelled
    assert "no welcome within 10 s" in p.states[-1][1].error



def test_pollingAnswerBound() -> None:
    """
    An answer larger than maxAnswerBytes stops the client (as a 1009 close
    would), whether its length is announced or not; one at the limit is
    read.
    """
    body = json.dumps({"packets": [toJSON(welcomed())]}).encode()
    for announce in (True, False):
        h = Harness(transport="polling", maxAnswerBytes=len(body))
        h.client.connect()
        h.http.one("open").answer(welcomed(), announce=announce)
        assert h.client.state is ClientState.open
        h.http.one("poll").answer(Data(1, b"x" * len(body), False), announce=announce)
        state, detail = h.states[-1]
        assert state is ClientState.closed
        assert detail.code == 1009 and "larger than" in detail.error



def test_pollingIncomingMessageBound() -> None:
    """
    A data message larger than a WebSocket would accept (maxMessageBytes
    plus 20) is refused on long-polling too.
    """
    h = Harness(transport="polling", maxMessageBytes=30)
    pollingOpen(h)
    h.http.one("poll").answer(Data(1, b"x" * 50, False), Data(2, b"x" * 51, False))
    assert h.messages == [("x" * 50, False)]
    assert h.client.state is ClientState.closed
    assert h.states[-1][1].code == 1009



def test_pollingGatewayCloseEndsTheSession(p: Harness) -> None:
    """
    The gateway's close packet in a poll answer: the client delivers what
    came before it, polls no more, sends an ack for everything, and is
    closed with the backend's code and reason once that send is answered.
    """
    pollingOpen(p)
    p.http.one("poll").answer(Data(1, b"last", False), Close(1000, "bye"))
    p.flush()
    assert p.messages == [("last", False)]
    assert p.http.pending("poll") == []
    ack = p.http.one("send")
    assert ack.packets == [Ack(1)]
    assert p.client.state is ClientState.open
    ack.answer(Ack(0))
    p.flush()
    state, detail = p.states[-1]
    assert state is ClientState.closed
    assert (detail.code, detail.reason, detail.error) == (1000, "bye", None)



def test_pollingClientClose(p: Harness) -> None:
    """
    close() over long-polling: once everything is acknowledged the close
    packet goes in a send; closed 4000 in the poll answer ends the client.
    """
    pollingOpen(p)
    p.client.send("a")
    closing = p.client.close()
    p.flush()
    send = p.http.one("send")
    assert send.packets == [Data(1, b"a", False)]
    send.answer(Ack(1))
    p.flush()
    assert p.http.one("send").packets == [Close(1000, "")]
    p.http.one("send").answer(Ack(1))
    p.http.one("poll").answer({"t": "closed", "code": 4000, "reason": "session ended"})
    detail = result(closing)
    assert (detail.code, detail.error, detail.transport) == (4000, None, "polling")

