"""
The node's Socket.IO sessions as the admin API shows them
(L{gateway.engineio.views}): counted by pool, backend and transport, and
listed oldest first, on real sessions over fake transports and a Clock.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.backends.pool import Backend
from gateway.engineio.engine import EngineSession, EngineSettings
from gateway.engineio.views import LIST_LIMIT, countEngines, listEngines
from gateway.interfaces import IEngineView

from .fakes import FakeTransport, FakeUpstream

ONE, TWO = Backend("sio-1", "127.0.0.1", 1), Backend("sio-2", "127.0.0.1", 2)


def engines(clock: Clock) -> list[EngineSession]:
    """
    @return: five sessions opened a second apart: two polling on sio-1 (the
        second being upgraded), one over WebSocket on sio-1, one over
        WebSocket on sio-2 of pool C{app}, and one of pool C{chat} that has
        closed.
    """
    made = []
    for n, (kind, pool, backend) in enumerate([
        ("polling", "app", ONE), ("polling", "app", ONE), ("websocket", "app", ONE),
        ("websocket", "app", TWO), ("polling", "chat", ONE),
    ]):
        engine = EngineSession(f"sid{n}-0123456789abcdef", EngineSettings(), clock, FakeTransport(kind),
                               lambda engine: None, pool=pool, backend=backend, address=f"10.0.0.{n}")
        engine.start(FakeUpstream())
        made.append(engine)
        clock.advance(1)
    made[1].upgradeStarted(FakeTransport("websocket"))
    made[4].close("gone", notify=False)
    return made


def test_sessionIsAView() -> None:
    """
    An Engine.IO session provides what the admin API and the metrics read
    (L{IEngineView}), and remembers its pool, server, client and opening.
    """
    clock = Clock()
    clock.advance(7)
    engine = EngineSession("sid", EngineSettings(), clock, FakeTransport("polling"), lambda e: None,
                           pool="app", backend=ONE, address="10.0.0.9")
    assert verifyObject(IEngineView, engine)
    assert (engine.pool, engine.backend, engine.address, engine.opened) == ("app", ONE, "10.0.0.9", 7)


def test_counted() -> None:
    """
    Live sessions are counted for the node and by pool and backend, over
    each transport; an upgrading one is still polling (and counted as
    upgrading); a closed one is not counted.
    """
    counted = countEngines(engines(Clock()))
    assert counted == {
        "sessions": 4, "polling": 2, "websocket": 2, "upgrading": 1,
        "pools": {"app": {"sessions": 4, "polling": 2, "websocket": 2, "backends": {
            "sio-1": {"sessions": 3, "polling": 2, "websocket": 1},
            "sio-2": {"sessions": 1, "polling": 0, "websocket": 1},
        }}},
    }
    assert countEngines([]) == {"sessions": 0, "polling": 0, "websocket": 0, "upgrading": 0, "pools": {}}


def test_listed() -> None:
    """
    The listing has the live sessions, the oldest first, each with its sid
    cut to 8 characters, transport, client address, pool, backend, age,
    what waits for it and the node; it filters by pool and backend, and
    lists at most C{limit} while counting them all.
    """
    clock = Clock()
    made = engines(clock)
    made[0].send("x" * 9)  # no poll held: it waits
    listing = listEngines(made, clock.seconds(), "node-a")
    assert (listing["count"], listing["listed"]) == (4, 4)
    assert listing["sessions"][0] == {
        "sid": "sid0-012\N{HORIZONTAL ELLIPSIS}", "transport": "polling", "upgrading": False,
        "address": "10.0.0.0", "pool": "app", "backend": "sio-1", "age": 5.0, "waiting": 10,
        "node": "node-a",
    }
    assert [(e["sid"][:4], e["upgrading"], e["age"], e["waiting"]) for e in listing["sessions"]] == [
        ("sid0", False, 5.0, 10), ("sid1", True, 4.0, 0), ("sid2", False, 3.0, 0), ("sid3", False, 2.0, 0)]
    assert all("0123456789abcdef" not in e["sid"] for e in listing["sessions"])
    assert listEngines(made, clock.seconds(), "n", backend="sio-2")["count"] == 1
    assert listEngines(made, clock.seconds(), "n", pool="chat")["count"] == 0
    limited = listEngines(made, clock.seconds(), "n", limit=2)
    assert (limited["count"], limited["listed"], [e["sid"][:4] for e in limited["sessions"]]) == (
        4, 2, ["sid0", "sid1"])
    assert LIST_LIMIT == 1000
