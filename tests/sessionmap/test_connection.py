"""
Tests for L{gateway.sessionmap._connection}: the connection plumbing the
map and the subscription share sits below both, so the session map's
modules import one another one way only; and the map's connections parse
every reply as soon as it arrives.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

import gateway.sessionmap
from gateway.sessionmap._connection import setUpProtocol

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
