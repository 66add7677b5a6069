"""
L{gateway.edge.accesslog}: one JSON line per record, written a batch at a
time away from the reactor, bounded by C{max_buffer_bytes} (dropped lines
counted, logged, and noted in the log once there is room), flushed and
closed at stop.
"""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from gateway.edge.accesslog import AccessLog, NoAccessLog
from gateway.errors import ConfigError
from gateway.interfaces import IAccessLog


class Writes:
    """
    Runs each write when told (L{finish}), as the log's thread would.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred, object, tuple]] = []

    def __call__(self, function, *args) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append((d, function, args))
        return d

    def finish(self) -> None:
        d, function, args = self.pending.pop(0)
        d.callback(function(*args))


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_interfaces(tmp_path) -> None:
    """
    Both provide L{IAccessLog}.
    """
    assert verifyObject(IAccessLog, NoAccessLog())
    assert verifyObject(IAccessLog, AccessLog(str(tmp_path / "a.log"), 4096, Clock(), run=lambda f, *a: succeed(f(*a))))


def test_oneLinePerRecord(tmp_path) -> None:
    """
    Each record is one compact JSON line, with the time (UTC) first.
    """
    clock = Clock()
    clock.advance(1_764_873_684.5)
    path = tmp_path / "access.log"
    log = AccessLog(str(path), 4096, clock, run=lambda f, *a: succeed(f(*a)))
    log.connectionEnded({"event": "tunnel", "client": "203.0.113.7", "path": "/ch\u00e4t"})
    log.connectionEnded({"event": "session", "close_code": 4000})
    assert lines(path) == [
        {"time": "2025-12-04T18:41:24.500Z", "event": "tunnel", "client": "203.0.113.7", "path": "/ch\u00e4t"},
        {"time": "2025-12-04T18:41:24.500Z", "event": "session", "close_code": 4000},
    ]
    assert path.read_bytes().isascii() and log.written == 2
    assert (path.stat().st_mode & 0o777) == 0o640


def test_batchesWhileWriting(tmp_path) -> None:
    """
    While a batch is being written, lines wait, then go as one batch.
    """
    path = tmp_path / "access.log"
    writes = Writes()
    log = AccessLog(str(path), 4096, Clock(), run=writes)
    log.connectionEnded({"n": 1})
    log.connectionEnded({"n": 2})
    log.connectionEnded({"n": 3})
    assert len(writes.pending) == 1
    writes.finish()
    assert len(writes.pending) == 1
    writes.finish()
    assert [r["n"] for r in lines(path)] == [1, 2, 3] and log.written == 3


def test_boundDropsAndNotes(tmp_path) -> None:
    """
    Past C{maxBufferBytes} (waiting plus being written) a line is dropped
    and counted, never waited for; once there is room, the count is noted
    in the log before the next line.
    """
    path = tmp_path / "access.log"
    writes = Writes()
    log = AccessLog(str(path), 4096, Clock(), run=writes)
    big = {"pad": "x" * 1500}
    for _ in range(5):
        log.connectionEnded(big)
    assert log.dropped == 3
    writes.finish()
    writes.finish()
    log.connectionEnded({"n": "after"})
    writes.finish()
    records = lines(path)
    assert len(records) == 4 and records[2] == {"dropped": 3} and records[3]["n"] == "after"


def test_stopFlushesAndCloses(tmp_path) -> None:
    """
    C{stop} waits for the batch being written, writes what waits, closes
    the file; records after it are forgotten.
    """
    path = tmp_path / "access.log"
    writes = Writes()
    log = AccessLog(str(path), 4096, Clock(), run=writes)
    log.connectionEnded({"n": 1})
    log.connectionEnded({"n": 2})
    stopped = log.stop()
    assert not stopped.called
    writes.finish()
    writes.finish()
    assert stopped.called and [r["n"] for r in lines(path)] == [1, 2]
    log.connectionEnded({"n": 3})
    assert writes.pending == [] and log.stop().called


def test_writeFailureLogged(tmp_path) -> None:
    """
    A failed write is logged; later lines are still written.
    """
    path = tmp_path / "access.log"
    calls: list = []

    def run(function, *args):
        calls.append(args)
        if len(calls) == 1:
            from twisted.internet.defer import fail

            return fail(OSError(28, "No space left on device"))
        return succeed(function(*args))

    log = AccessLog(str(path), 4096, Clock(), run=run)
    log.connectionEnded({"n": 1})
    log.connectionEnded({"n": 2})
    assert [r["n"] for r in lines(path)] == [2]


def test_unopenable(tmp_path) -> None:
    """
    A file that cannot be opened is a one-line L{ConfigError} naming the key.
    """
    with pytest.raises(ConfigError) as caught:
        AccessLog(str(tmp_path / "missing" / "access.log"), 4096, Clock())
    assert str(caught.value).startswith("access_log.path: cannot open ")


@pytest_twisted.ensureDeferred
async def test_realThread(tmp_path) -> None:
    """
    By default lines are written by a thread of the log's own (started at
    the first write, ended at stop), and arrive in the file.
    """
    from twisted.internet import reactor

    path = tmp_path / "access.log"
    log = AccessLog(str(path), 4096, reactor)
    for n in range(20):
        log.connectionEnded({"n": n})
    await log.stop()
    assert [r["n"] for r in lines(path)] == list(range(20))
