"""
Tests for L{gateway.sessionmap._connection}: the connection plumbing the
map and the subscription share sits below both, so the session map's
modules import one another one way only; a Redis reply is judged missing
on the time the process had to read it (L{addReplyTimeout}); and the
map's connections parse every reply as soon as it arrives.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

import gateway.sessionmap
from gateway.sessionmap._connection import addReplyTimeout, setUpProtocol

PACKAGE = Path(gateway.sessionmap.__file__).parent


def importedSiblings(name: str) -> set[str]:
    """
    @return: the modules of L{gateway.sessionmap} that module C{name}
        imports, anywhere in it (in functions too).
    """
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway.sessionmap."):
            found.add(node.module.rpartition(".")[2])
    return found


def test_connectionImportsNoSibling() -> None:
    """
    C{_connection} imports no other module of the session map.
    """
    assert importedSiblings("_connection") == set()


def test_sharedDoesNotImportRedis() -> None:
    """
    C{_shared}, C{_subscription} and C{_shards} do not import C{redis},
    which imports them; the subscription takes the connection plumbing
    from C{_connection}.
    """
    for name in ("_shared", "_subscription", "_shards"):
        assert "redis" not in importedSiblings(name), name
    assert "_connection" in importedSiblings("_subscription")


def replyTimeout(timeout: float = 1.0):
    """
    @return: a Clock, and a L{Deferred} bounded by L{addReplyTimeout} on it.
    """
    clock = Clock()
    d: Deferred = Deferred()
    addReplyTimeout(d, timeout, clock)
    return clock, d


def outcome(d: Deferred) -> list:
    """
    @return: a list that gets C{d}'s result (a L{Failure} if it failed).
    """
    results: list = []
    d.addBoth(results.append)
    return results


def test_replyTimeoutFails() -> None:
    """
    A reply that does not come fails the L{Deferred} with Twisted's
    L{TimeoutError} (as C{addTimeout} would) once the timeout is due and
    the reactor has had one more turn; no timer is left behind.
    """
    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.advance(0.999)
    assert results == []
    clock.advance(0.001)
    assert len(results) == 1 and results[0].check(DeferredTimeout)
    assert clock.getDelayedCalls() == []


def test_replyTimeoutReadsFirst() -> None:
    """
    A reply that the reactor reads after its due timers, in the same
    turn as the timeout (a starved process: the reply waited in the
    socket), is taken, not judged missing.  C{Clock} runs calls due at
    the same time in the order they were made: the timeout, then the
    read, then the look made by the timeout, as a reactor's
    C{runUntilCurrent} and the I/O it polls next do.  Plain C{addTimeout}
    fails the same L{Deferred}.
    """
    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.callLater(1.0, d.callback, "OK")
    clock.advance(1.0)
    assert results == ["OK"]
    assert clock.getDelayedCalls() == []

    clock = Clock()
    plain: Deferred = Deferred()
    plain.addTimeout(1.0, clock)
    results = outcome(plain)
    clock.callLater(1.0, lambda: None if plain.called else plain.callback("OK"))
    clock.advance(1.0)
    assert results[0].check(DeferredTimeout)


def test_replyTimeoutStalledReactor() -> None:
    """
    When the reactor ran the timeout late (the process was paused or
    starved, 1.5 s here, and may not even have written the command), the
    wait is extended once by that delay, at most the timeout again: a
    reply read soon after the process runs again is taken, and a reply
    that never comes fails by then.
    """
    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.advance(2.5)  # due at 1.0, run at 2.5
    assert results == []
    clock.advance(0.1)
    d.callback("OK")
    assert results == ["OK"]
    assert clock.getDelayedCalls() == []

    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.advance(2.5)
    clock.advance(0.999)
    assert results == []
    clock.advance(0.001)  # 2.5 + min(1.5, 1.0)
    assert results[0].check(DeferredTimeout)

    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.advance(1.2)  # late by 0.2: 0.2 more
    clock.advance(0.199)
    assert results == []
    clock.advance(0.001)
    assert results[0].check(DeferredTimeout)


def test_replyTimeoutOnlyOnce() -> None:
    """
    The extension is given once: a second late look judges at once.
    """
    clock, d = replyTimeout(1.0)
    results = outcome(d)
    clock.advance(1.5)  # late by 0.5: looks again at 2.0
    clock.advance(5.0)  # ... run at 6.5
    assert results[0].check(DeferredTimeout)


def test_replyTimeoutCancelled() -> None:
    """
    A L{Deferred} cancelled by its caller fails with L{CancelledError}, not
    a timeout, and its timer is cancelled.
    """
    clock, d = replyTimeout(1.0)
    results = outcome(d)
    d.cancel()
    assert results[0].check(CancelledError) and not results[0].check(DeferredTimeout)
    assert clock.getDelayedCalls() == []


class _Watcher:
    """
    What a connection asks of its watcher when it sends a command: a
    clock and the metrics.
    """

    def __init__(self) -> None:
        self.reactor = Clock()
        self.metrics = SimpleNamespace(redisCommand=lambda *args: None)


def _protocol(cls: type):
    """
    @return: a txredisapi protocol of class C{cls} on a L{StringTransport},
        set up (as if it had joined the pool) and sending commands.
    """
    protocol = cls(charset="utf-8", convertNumbers=False)
    protocol.factory = SimpleNamespace(watcher=_Watcher())
    protocol.transport = StringTransport()
    protocol.connected = 1
    delayed: list = []
    protocol.callLater = lambda *args: delayed.append(args)
    return protocol, delayed


def txredisapi():
    """
    @return: the txredisapi module (imported here: it installs the reactor,
        which pytest-twisted has chosen by now).
    """
    import txredisapi as module

    return module


#: Replies to five GETs, each a bulk string, and an array of bulk strings.
REPLIES = b"$1\r\na\r\n$2\r\nbb\r\n$-1\r\n$0\r\n\r\n$5\r\nfive!\r\n*3\r\n$1\r\nx\r\n:7\r\n$2\r\nyz\r\n"

#: What they are parsed into.
PARSED = ["a", "bb", None, "", "five!", ["x", 7, "yz"]]


def _send(protocol, count: int) -> list:
    """
    Send C{count} GETs.

    @return: a list that gets their replies, in order.
    """
    results: list = []
    for i in range(count):
        protocol.execute_command("GET", f"k{i}").addBoth(results.append)
    return results


def test_bulkRepliesParsedAtOnce() -> None:
    """
    Every reply that arrived is parsed when it arrives: txredisapi's own
    parser hands on the first bulk string and leaves the rest for a call
    with no delay (one reactor iteration per bulk string, the transport
    paused meanwhile); the map's connections parse them all at once, and
    leave nothing for later.
    """
    stock, delayed = _protocol(txredisapi().BaseRedisProtocol)
    results = _send(stock, len(PARSED))
    stock.dataReceived(REPLIES)
    assert results == ["a"] and len(delayed) == 1

    protocol, delayed = _protocol(setUpProtocol())
    results = _send(protocol, len(PARSED))
    protocol.dataReceived(REPLIES)
    assert results == PARSED
    assert delayed == [] and not protocol.paused


def test_bulkRepliesInPieces() -> None:
    """
    The map's connections parse the same replies whatever the pieces they
    arrive in (cut at every byte, and one byte at a time).
    """
    for cut in range(1, len(REPLIES)):
        protocol, delayed = _protocol(setUpProtocol())
        results = _send(protocol, len(PARSED))
        protocol.dataReceived(REPLIES[:cut])
        protocol.dataReceived(REPLIES[cut:])
        assert results == PARSED, cut
        assert delayed == []
    protocol, delayed = _protocol(setUpProtocol())
    results = _send(protocol, len(PARSED))
    for i in range(len(REPLIES)):
        protocol.dataReceived(REPLIES[i:i + 1])
    assert results == PARSED
