"""
Tests for the move of a session from long-polling to WebSocket
(L{gateway.client._switch.Switcher}), through a SessionClient in auto mode.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from gateway.client import ClientState, StateDetail
from gateway.interfaces import IUpgradeOwner
from gateway.wire.protocol import Ack, Close, Data, Hello, controlToJSON
from tests.client.fakes import SECRET, SID, Harness, upgradeToProbe


def test_autoUpgrade(a: Harness) -> None:
    """
    On long-polling the client tries a WebSocket: it sends the probe hello,
    and after the probe answer it polls no more, waits for the outstanding
    poll to end (taking in its messages), then resumes on the WebSocket with
    the count they make, and is open there (reported again, with transport
    "websocket", neither resumed nor reset: nothing dropped); what is sent
    meanwhile goes on the WebSocket.
    """
    ws = upgradeToProbe(a)
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]
    ws.probe()
    a.flush()
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]  # the poll is still out
    a.client.send("during")
    a.flush()
    assert a.http.pending("send") == []
    a.http.one("poll").answer(Data(1, b"last polled", False))
    a.flush()
    assert a.http.pending() == []
    assert ws.packets[-1] == Hello(SID, SECRET, 1)
    assert a.client.transport == "websocket"
    ws.welcome(received=0, resumed=True)
    ws.dataPacket(2, b"first on ws")
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(transport="websocket"))
    assert ws.of(Data) == [Data(1, b"during", False)]
    assert a.messages == [("last polled", False), ("first on ws", False)]
    assert a.http.pending() == []



def test_autoUpgradeAbortsAHeldPoll(a: Harness) -> None:
    """
    After the probe, a poll the gateway holds (nothing to send) is aborted
    once upgradeTimeout has passed; the switch follows.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    poll = a.http.one("poll")
    a.advance(5)
    assert poll.cancelled
    assert ws.packets[-1] == Hello(SID, SECRET, 0)



def test_autoUpgradeWaitsForASend(a: Harness) -> None:
    """
    A send in flight is never aborted: the switch waits for its answer;
    if it takes longer than upgradeTimeout the upgrade is given up and
    long-polling carries on.
    """
    ws = upgradeToProbe(a)
    a.client.send("m1")
    a.flush()
    send = a.http.one("send")
    ws.probe()
    a.flush()
    a.http.one("poll").answer()
    a.flush()
    assert ws.packets == [Hello(SID, SECRET, 0, probe=True)]
    a.advance(5)
    assert not send.cancelled
    assert a.client.transport == "polling"
    assert len(a.http.pending("poll")) == 1
    send.answer(Ack(1))
    a.flush()
    assert a.client.bufferedAmount == 0



def test_autoUpgradeThenBreakFallsBackAgain(a: Harness) -> None:
    """
    After an upgrade, a broken WebSocket falls back to long-polling again.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    a.http.one("poll").answer()
    a.flush()
    ws.welcome(resumed=True)
    a.flush()
    a.drop(ws)
    a.reactor.advance(a.states[-1][1].delay)
    assert a.http.one("open").body == controlToJSON(Hello(SID, SECRET, 0))



def test_autoNoUpgradeWhileClosing(a: Harness) -> None:
    """
    close() abandons an upgrade under way: polling carries the close.
    """
    ws = upgradeToProbe(a)
    ws.probe()
    a.flush()
    a.client.close()
    a.flush()
    assert ws.transport.disconnecting or ws.closeCode is not None
    assert a.http.one("send").packets == [Close(1000, "")]
    assert a.client.transport == "polling"



def test_switcherProvidesIUpgradeOwner(a: Harness) -> None:
    """
    Upgrades report to the driver's switcher, an IUpgradeOwner.
    """
    assert verifyObject(IUpgradeOwner, a.client._driver._switcher)
