"""
When and how a session on long-polling moves to a WebSocket
(docs/protocol.md, "Switching transports"), in auto mode.

A L{Switcher} belongs to the session driver (L{gateway.client._driver}).
After the upgrade backoff's delay it starts an L{Upgrade
<gateway.client._upgrade.Upgrade>} (one probe of a WebSocket); when the
probe comes back it pauses the long-polling link and waits (up to
C{upgradeTimeout}) for its outstanding poll and send to end, aborting a
held poll but never a send; once the link is quiet it hands the WebSocket
to the driver.  An upgrade that fails leaves the session on long-polling
and is tried again after a longer delay (the engine's upgrade backoff, from
C{upgradeDelay} doubling up to C{maxUpgradeDelay}; a long-polling reconnect
keeps the time drawn).  Each time it schedules a try it tells the
application (C{onUpgradeScheduled}) when, and why the WebSocket is
unavailable.  It is the upgrades' L{IUpgradeOwner}.
"""

from __future__ import annotations

from typing import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from ..interfaces import IUpgradeOwner
from ._dialer import Dialer
from ._engine import SessionEngine
from ._polling import PollingLink
from ._state import shortId
from ._upgrade import Upgrade
from ._websocket import ClientProtocol

__all__ = ["Switcher"]


@implementer(IUpgradeOwner)
class Switcher:
    """
    See the module docstring.
    """

    log = Logger()

    def __init__(
        self,
        engine: SessionEngine,
        dialer: Dialer,
        clock: IReactorTime,
        upgradeTimeout: float,
        *,
        link: Callable[[], PollingLink | None],
        switch: Callable[[ClientProtocol], None],
        scheduled: Callable[[float, str | None], None],
    ) -> None:
        """
        @param link: the driver's current long-polling link, if any.
        @param switch: hands the probed WebSocket to the driver, which
            leaves long-polling and resumes on it.
        @param scheduled: told C{(delay, why)} each time a try is scheduled:
            seconds until it, and why the WebSocket is unavailable.
        """
        self._engine = engine
        self._dialer = dialer
        self._clock = clock
        self._upgradeTimeout = upgradeTimeout
        self._link = link
        self._switch = switch
        self._scheduled = scheduled
        self._upgradeCall: IDelayedCall | None = None
        self._upgrade: Upgrade | None = None
        self._switchCall: IDelayedCall | None = None

    @property
    def underWay(self) -> bool:
        """
        An upgrade is probing, or waits to switch.
        """
        return self._upgrade is not None

    def schedule(self) -> None:
        """
        In auto mode, on an open long-polling session: try a WebSocket
        when the upgrade backoff says (L{SessionEngine.upgradeDelay}).
        """
        if (
            not self._engine.upgradeWanted()
            or self._link() is None
            or self._upgrade is not None
            or self._upgradeCall is not None
        ):
            return
        engine = self._engine
        delay = engine.upgradeDelay(self._clock.seconds())
        self._upgradeCall = self._clock.callLater(delay, self._start)
        why = engine.webSocketError
        self.log.info(
            "session {sid} on long-polling: WebSocket unavailable ({why}); next try in {delay:.1f} s",
            sid=shortId(engine.sid), why=why or "not tried", delay=delay,
        )
        self._scheduled(delay, why)

    def linkIdle(self, link: PollingLink) -> None:
        """
        The paused link has nothing outstanding: switch, if the probe is
        back.
        """
        if link is self._link() and self._upgrade is not None and self._upgrade.probed:
            self._switchNow()

    def cancel(self) -> None:
        """
        Abandon the upgrade under way, if any; long-polling carries on.
        """
        call, self._switchCall = self._switchCall, None
        if call is not None and call.active():
            call.cancel()
        upgrade, self._upgrade = self._upgrade, None
        if upgrade is not None:
            upgrade.cancel()
            link = self._link()
            if link is not None and link.paused:
                link.resume()

    def stop(self) -> None:
        """
        The link is gone: abandon the upgrade under way and the next one.
        """
        self.cancel()
        call, self._upgradeCall = self._upgradeCall, None
        if call is not None and call.active():
            call.cancel()

    def _start(self) -> None:
        engine = self._engine
        self._upgradeCall = None
        engine.upgradeStarted()
        if self._link() is None or not engine.welcomed or engine.closing:
            return
        self.log.debug("session {sid}: probing a WebSocket", sid=shortId(engine.sid))
        upgrade = self._upgrade = self._dialer.upgrade(self, engine.hello(probe=True))
        upgrade.start()

    # IUpgradeOwner.

    def upgradeProbed(self, upgrade: Upgrade) -> None:
        """
        The probe came back: poll no more, and switch once the outstanding
        poll and send have ended (the poll within C{upgradeTimeout}).
        """
        link = self._link()
        if upgrade is not self._upgrade or link is None:
            return
        self.log.debug("session {sid}: probe answered", sid=shortId(self._engine.sid))
        self._switchCall = self._clock.callLater(self._upgradeTimeout, self._switchOverdue)
        link.pause()

    def upgradeFailed(self, upgrade: Upgrade, why: str) -> None:
        """
        The upgrade did not work: stay on long-polling, try again later.
        """
        if upgrade is not self._upgrade:
            return
        self._engine.upgradeFailed(why)
        self.cancel()
        self.schedule()

    def _switchOverdue(self) -> None:
        """
        The outstanding poll did not end within C{upgradeTimeout} (the
        gateway holds a poll with nothing to send for its poll timeout):
        abort it, as an aborted poll loses nothing.  A send still in flight
        is never aborted (it might reach the gateway after the WebSocket's
        resume and take the session back): the upgrade is given up.
        """
        self._switchCall = None
        link, upgrade = self._link(), self._upgrade
        if link is None or upgrade is None:
            return
        if link.sending:
            self.upgradeFailed(upgrade, "a long-polling send did not finish in time")
        else:
            link.abortPoll()

    def _switchNow(self) -> None:
        """
        Long-polling is quiet: hand the probed WebSocket to the driver.
        """
        upgrade, self._upgrade = self._upgrade, None
        assert upgrade is not None
        call, self._switchCall = self._switchCall, None
        if call is not None and call.active():
            call.cancel()
        self._switch(upgrade.handOver())
