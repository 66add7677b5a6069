"""
Tests for the acks and silence checks of L{gateway.client._heartbeat}, on a
SessionClient's WebSocket.
"""

from __future__ import annotations

from gateway.client import ClientState
from gateway.wire.protocol import Ack, Hello
from tests.client.fakes import HEARTBEAT, SECRET, SID, Harness


def test_acksCoalesced(h: Harness) -> None:
    """
    Data packets that arrive in one reactor turn get one cumulative ack.
    """
    gateway = h.open()
    for seq in range(1, 6):
        gateway.dataPacket(seq, b"m%d" % seq)
    h.flush()
    assert len(h.messages) == 5
    assert gateway.of(Ack) == [Ack(5)]



def test_heartbeatAckAfterSilence(h: Harness) -> None:
    """
    When the client has sent nothing for `heartbeat` seconds it sends an
    ack; sending data postpones it.
    """
    gateway = h.open()
    h.advance(HEARTBEAT - 0.5)
    assert gateway.of(Ack) == []
    h.advance(0.5)
    assert gateway.of(Ack) == [Ack(0)]
    h.advance(5)
    h.client.send("x")
    gateway.ack(1)  # (and the gateway is not silent)
    h.flush()
    h.advance(HEARTBEAT - 0.5)
    assert gateway.of(Ack) == [Ack(0)]
    h.advance(0.5)
    assert gateway.of(Ack) == [Ack(0), Ack(0)]



def test_deadGatewayDetected(h: Harness) -> None:
    """
    When nothing arrives for 2 * heartbeat + 1 seconds the client drops
    the connection and resumes; anything that arrives postpones it.
    """
    gateway = h.open()
    h.advance(15)
    gateway.ack(0)
    h.flush()
    h.advance(2 * HEARTBEAT + 1 - 0.5)
    assert h.client.state is ClientState.open
    h.advance(0.5)
    state, detail = h.states[-1]
    assert state is ClientState.reconnecting
    assert "21 s" in detail.error
    assert gateway.transport.disconnecting
    assert h.reconnect().packets == [Hello(SID, SECRET, 0)]

