"""
Tests for one probe of a WebSocket from long-polling
(L{gateway.client._upgrade.Upgrade}), through a SessionClient in auto mode.
"""

from __future__ import annotations

from zope.interface.verify import verifyObject

from gateway.client import ClientState
from gateway.interfaces import IWebSocketOwner
from gateway.wire.protocol import Data, Hello
from tests.client.fakes import SECRET, SID, Harness, upgradeToProbe


def test_autoUpgradeProbeTimeout(a: Harness) -> None:
    """
    A probe that does not come back within upgradeTimeout: the WebSocket is
    dropped, the session stays on long-polling, and the next upgrade comes
    after a longer backoff.
    """
    ws = upgradeToProbe(a)
    bound = a.bounds[-1]
    a.advance(5)
    assert ws.transport.disconnecting or ws.closeCode is not None
    assert a.client.transport == "polling"
    assert a.client.state is ClientState.open
    assert a.bounds[-1] == 2 * bound
    a.http.one("poll").answer(Data(1, b"still polling", False))
    a.flush()
    assert a.http.one("poll").body["ack"] == 1



def test_autoUpgradeRefusedProbe(a: Harness) -> None:
    """
    A probe refused by the gateway (a close code) leaves the session on
    long-polling; its poll carries on.
    """
    ws = upgradeToProbe(a)
    a.closeWith(ws, 4404, "unknown")
    assert a.client.transport == "polling"
    assert a.client.state is ClientState.open
    assert len(a.http.pending("poll")) == 1



def test_upgradeProvidesIWebSocketOwner(a: Harness) -> None:
    """
    An upgrade owns its probe's WebSocket until the driver takes it over:
    it provides IWebSocketOwner, with the upgrade's timeout as the bound on
    the probe's closing handshake.
    """
    upgrade = a.client._dialer.upgrade(a.client._driver._switcher, Hello(SID, SECRET, 0, True))
    assert verifyObject(IWebSocketOwner, upgrade)
    assert upgrade.closeTimeout == 5.0 and upgrade.attempt == 0
