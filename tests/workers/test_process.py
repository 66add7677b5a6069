"""
Tests for L{gateway.workers.process}: a worker's log and state as the
supervisor reads them.
"""

from __future__ import annotations

from twisted.internet.error import ProcessTerminated
from twisted.logger import LogLevel, eventAsJSON
from twisted.python.failure import Failure

from gateway.workers.process import LineBuffer, WorkerProcess

from .fakes import FakeTransport


def worker() -> tuple[WorkerProcess, list[dict]]:
    events: list[dict] = []
    process = WorkerProcess(3, 0, 0.0, publisher=events.append)
    process.makeConnection(FakeTransport(4242))
    return process, events


def test_lineBufferBounded() -> None:
    """
    Lines come out whole across reads; a line longer than the bound is cut
    to it and marked, and the next line is whole again.
    """
    buffer = LineBuffer(limit=8)
    assert buffer.feed(b"ab") == []
    assert buffer.feed(b"c\nde") == [(b"abc", False)]
    assert buffer.feed(b"fghijklmnop") == []
    assert buffer.feed(b"q\nok\n") == [(b"defghijk", True), (b"ok", False)]
    assert buffer.feed(b"tail") == []
    assert buffer.flush() == [(b"tail", False)]
    assert buffer.flush() == []


def test_recordRelayed() -> None:
    """
    A JSON log record from the worker is logged again with its level,
    namespace and fields, labelled with the worker's number and pid.
    """
    process, events = worker()
    record = {"log_format": "hello {who}", "who": "you", "log_level": LogLevel.warn,
              "log_namespace": "gateway.thing", "log_time": 12.5}
    process.childDataReceived(1, b"\x1e" + eventAsJSON(record).encode() + b"\n")
    [event] = events
    assert event["who"] == "you"
    assert event["log_level"] is LogLevel.warn
    assert event["log_time"] == 12.5
    assert event["worker"] == 3
    assert event["log_system"] == "worker 3/4242 gateway.thing#warn"


def test_textRelayed() -> None:
    """
    What is not a log record (a traceback on standard error before logging
    began) is logged line by line with the same label.
    """
    process, events = worker()
    process.childDataReceived(2, b"Traceback (most recent call last):\n  boom")
    process.processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert [e["line"] for e in events] == ["Traceback (most recent call last):", "  boom"]
    assert all(e["log_level"] is LogLevel.warn for e in events)
    assert events[0]["log_system"].startswith("worker 3/4242 ")


def test_readyAndEnded() -> None:
    """
    C{ready} fires when the worker says it listens; C{ended} with its exit.
    """
    process, _ = worker()
    fired: list = []
    process.whenReady().addCallback(fired.append)
    process.childDataReceived(3, b'{"ready": true}\n')
    assert fired == [4242] and process.state == "ready"
    process.processEnded(Failure(ProcessTerminated(exitCode=None, signal=9)))
    assert process.ended.result == (None, 9)
    assert process.state == "ended"


def test_endedBeforeReady() -> None:
    """
    A worker that ends before it listens fails C{ready}, saying how it ended.
    """
    process, _ = worker()
    failures: list = []
    process.whenReady().addErrback(failures.append)
    process.processEnded(Failure(ProcessTerminated(exitCode=1)))
    assert "exited before it was ready (status 1)" in failures[0].getErrorMessage()


def test_notReady() -> None:
    """
    A worker that says it cannot listen fails C{ready} with its reason;
    garbage on the control pipe is ignored.
    """
    process, _ = worker()
    failures: list = []
    process.whenReady().addErrback(failures.append)
    process.childDataReceived(3, b"not json\n[1]\n")
    assert not failures
    process.childDataReceived(3, b'{"ready": false, "error": "cannot listen"}\n')
    assert failures[0].getErrorMessage() == "cannot listen"


def test_failureRelayed() -> None:
    """
    A failure a worker logs reaches the supervisor's log with its traceback
    and the exception's value (which Twisted's JSON form of a failure drops).
    """
    import io

    from twisted.logger import formatEventAsClassicLogText

    from gateway.workers.child import workerLogObserver

    stream = io.StringIO()
    observer = workerLogObserver(stream)
    try:
        1 / 0
    except ZeroDivisionError:
        observer({"log_format": "sweep {n} failed", "n": 2, "log_level": LogLevel.critical,
                  "log_namespace": "gateway.x", "log_time": 1.0, "log_failure": Failure()})
    process, events = worker()
    process.childDataReceived(1, stream.getvalue().encode())
    [event] = events
    text = formatEventAsClassicLogText(event)
    assert "[worker 3/4242 gateway.x#critical] sweep 2 failed" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "Traceback" in text
