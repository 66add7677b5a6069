"""
Tests for the move of a session from long-polling to WebSocket
(L{gateway.client._switch.Switcher}), through a SessionClient in auto mode.
"""

from __future__ import annotations

import pytest
from zope.interface.verify import verifyObject

from gateway.client import ClientState, StateDetail
from gateway.interfaces import IUpgradeOwner
from gateway.wire.protocol import Ack, Close, Data, Hello, controlToJSON
from tests.client.fakes import SECRET, SID, Harness, engine, pollingOpen, upgradeToProbe, welcomed


def test_autoUpgrade(a: Harness) -> None:
    """
    On long-polling the client tries a WebSocket: it sends the probe hello,
    and after the probe answer it polls no more, waits for the outstanding
    poll to end (taking in its messages), then resumes on the WebSocket with
    the count they make, and is open there (reported again, with transport
    "websocket", neither resumed nor reset: nothing dropped; the client's
    C{transport} names the WebSocket from then on, not before); what is sent
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
    assert a.client.transport == "polling"  # (until the session is open on the WebSocket)
    ws.welcome(received=0, resumed=True)
    ws.dataPacket(2, b"first on ws")
    a.flush()
    assert a.states[-1] == (ClientState.open, StateDetail(transport="websocket"))
    assert a.client.transport == "websocket"
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



def keepPolling(a: Harness, seconds: float, step: float = 5.0) -> None:
    """
    Let C{seconds} pass on the client's clock, answering its polls (empty)
    as the gateway does at its poll timeout, so that long-polling stays up.
    """
    while seconds > 0:
        a.advance(min(step, seconds))
        seconds -= step
        for poll in a.http.pending("poll"):
            poll.answer()
        a.flush()


def onPollingBehindARefusingProxy(a: Harness) -> None:
    """
    Connect in auto mode through a proxy that refuses the WebSocket
    handshake with 403: the client falls back to long-polling, and is open
    there.
    """
    a.client.connect()
    a.accept(deny=403)
    a.reactor.advance(a.states[-1][1].delay)
    pollingOpen(a)


def test_upgradeBackoffBehindARefusingProxy() -> None:
    """
    Behind a proxy that refuses WebSockets, the tries to move back to a
    WebSocket back off: the n-th waits between half and all of min(5 s * 2**n,
    300 s) (here the shortest: half); each is told to onUpgradeScheduled
    with why the WebSocket is unavailable (first the fallback's failure,
    then the last try's); even with the shortest delays, 4 tries come in
    the first minute on long-polling and 28 in the first hour; the session
    stays open on long-polling throughout.
    """
    a = Harness(transport="auto", jitter=0.0)
    onPollingBehindARefusingProxy(a)
    assert a.upgrades == [(2.5, "the gateway answered HTTP 403")]
    attempts = a.attempts
    tries: list[float] = []
    start = a.reactor.seconds()
    while a.reactor.seconds() - start < 3600:
        keepPolling(a, 0.5, step=0.5)
        if a.attempts > attempts:  # a try: the proxy refuses it as it did the first
            tries.append(a.reactor.seconds() - start)
            attempts = a.attempts
            a.refuse()
    delays = [d for d, _ in a.upgrades]
    assert delays[:9] == pytest.approx([2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 150.0, 150.0, 150.0])
    assert all(why is not None and "refused" in why for _, why in a.upgrades[1:])
    assert len([t for t in tries if t <= 60]) == 4
    assert len(tries) == 28
    assert a.client.state is ClientState.open and a.client.transport == "polling"
    assert [s for s, _ in a.states].count(ClientState.open) == 1  # no reconnect, no move


def test_upgradeBackoffResetsAfterAWorkingWebSocket() -> None:
    """
    A WebSocket that works starts the schedule again: after failed tries,
    an upgrade that succeeds, then a WebSocket that breaks, the next try
    comes after the first delay again, with the break as the reason.
    """
    a = Harness(transport="auto", jitter=1.0)
    onPollingBehindARefusingProxy(a)
    for _ in range(3):
        keepPolling(a, a.upgrades[-1][0])
        a.refuse()
    assert [d for d, _ in a.upgrades] == pytest.approx([5.0, 10.0, 20.0, 40.0])
    keepPolling(a, 40.0)
    ws = a.accept()
    ws.probe()
    a.flush()
    a.http.one("poll").answer()
    a.flush()
    ws.welcome(resumed=True)
    a.flush()
    assert a.client.transport == "websocket"
    a.drop(ws)
    a.reactor.advance(a.states[-1][1].delay)
    a.http.one("open").answer(welcomed(resumed=True))
    a.flush()
    assert a.client.transport == "polling"
    assert a.upgrades[-1] == (pytest.approx(5.0), "connection lost")


def test_upgradeDelayKeptAcrossAPollingReconnect() -> None:
    """
    A long-polling connection that drops and resumes keeps the time of the
    next try already drawn (and told): no longer delay is drawn for it.
    """
    a = Harness(transport="auto", jitter=1.0)
    onPollingBehindARefusingProxy(a)
    assert a.upgrades[-1][0] == 5.0
    bounds = len(a.bounds)
    a.advance(2.0)
    a.http.one("poll").fail()
    a.flush()
    delay = a.states[-1][1].delay
    a.reactor.advance(delay)
    a.http.one("open").answer(welcomed(resumed=True))
    a.flush()
    assert a.client.state is ClientState.open and a.client.transport == "polling"
    assert a.upgrades[-1][0] == pytest.approx(3.0 - delay)
    assert len(a.bounds) == bounds + 1  # the reconnect's delay, no upgrade delay
    attempts = a.attempts
    a.advance(a.upgrades[-1][0])
    assert a.attempts == attempts + 1  # the try, when it was due


def test_upgradeSchedule() -> None:
    """
    The engine's upgrade schedule, alone: a delay drawn is kept until its
    try starts, the next is longer, and a WebSocket that works starts again
    from the first (and forgets why the WebSocket was unavailable).
    """
    e = engine("auto")
    assert e.upgradeDelay(100.0) == 5.0
    assert e.upgradeDelay(103.0) == 2.0
    e.upgradeStarted()
    e.upgradeFailed("the gateway answered HTTP 403")
    assert e.upgradeDelay(110.0) == 10.0
    assert e.webSocketError == "the gateway answered HTTP 403"
    e.upgradeStarted()
    e.webSocketWorked()
    assert e.webSocketError is None
    assert e.upgradeDelay(200.0) == 5.0
