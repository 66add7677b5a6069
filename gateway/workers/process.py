"""
One worker process as the supervisor sees it: L{WorkerProcess}, the
C{ProcessProtocol} that reads the worker's log records and its control
messages, and tells when it is ready and when it has ended.

Each record a worker logs (JSON, see L{gateway.workers.child}) is logged
again by the supervisor, with its level, time and fields, labelled with the
worker's number and process id (C{log_system}, which twistd's text log
shows between brackets, and a C{worker} field).  Anything else the worker
writes (a traceback on standard error before logging began) is logged line
by line with the same label.  Lines are bounded (L{MAX_LINE}): the end of
a longer one is dropped, and said to be.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.logger import LogLevel, Logger, eventFromJSON, globalLogPublisher

from .child import CONTROL_FD, DRAIN, RECORD_SEPARATOR

__all__ = ["WorkerProcess", "MAX_LINE", "LineBuffer"]

#: The longest line (a log record, a control message) read from a worker.
MAX_LINE = 1024 * 1024


class LineBuffer:
    """
    Splits a stream into lines, each at most C{limit} bytes (the rest of a
    longer line is dropped and the line marked as cut).
    """

    def __init__(self, limit: int = MAX_LINE) -> None:
        self.limit = limit
        self._partial = bytearray()
        self._cut = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        """
        @return: the lines completed by C{data}, each with whether it was cut.
        """
        lines = []
        while data:
            head, newline, data = data.partition(b"\n")
            room = self.limit - len(self._partial)
            if len(head) > room:
                head = head[:max(room, 0)]
                self._cut = True
            self._partial += head
            if not newline:
                break
            lines.append((bytes(self._partial), self._cut))
            self._partial.clear()
            self._cut = False
        return lines

    def flush(self) -> list[tuple[bytes, bool]]:
        """
        @return: what is left, as a last line (when there is anything).
        """
        if not self._partial:
            return []
        line = (bytes(self._partial), self._cut)
        self._partial.clear()
        self._cut = False
        return [line]


class WorkerProcess(ProcessProtocol):
    """
    A worker, from the supervisor's side.

    @ivar number: the worker's number.
    @ivar generation: how many workers held that number before it.
    @ivar started: when it was started (the supervisor's clock).
    @ivar ended: fires with C{(exit code, signal)} once the process is gone.
    @ivar state: C{"starting"}, C{"ready"}, C{"stopping"} or C{"ended"}.
    """

    log = Logger()

    def __init__(self, number: int, generation: int, started: float, publisher=None) -> None:
        self.number = number
        self.generation = generation
        self.started = started
        self.state = "starting"
        #: Whether it listens (the pid), or why it never will (a Failure);
        #: L{None} until known.
        self.outcome: object = None
        self._waiting: list[Deferred] = []
        self.ended: Deferred = Deferred()
        self.exit: tuple[int | None, int | None] | None = None
        self._publish = publisher or globalLogPublisher
        self._pid: int | None = None
        self._buffers = {1: LineBuffer(), 2: LineBuffer(), CONTROL_FD: LineBuffer()}

    @property
    def pid(self) -> int | None:
        """
        The worker's process id (kept once it has ended, for the log).
        """
        if self._pid is None and self.transport is not None:
            self._pid = self.transport.pid
        return self._pid

    def connectionMade(self) -> None:
        """
        The process is started: keep its pid for the log.
        """
        self._pid = self.transport.pid

    def whenReady(self) -> Deferred:
        """
        @return: a new L{Deferred} firing with the worker's process id once
            it listens, or failing when it says it cannot or ends first;
            each observer (the log, a rolling restart with its timeout) has
            its own.
        """
        d: Deferred = Deferred()
        if self.outcome is None:
            self._waiting.append(d)
        else:
            self._fire(d)
        return d

    def _fire(self, d: Deferred) -> None:
        if isinstance(self.outcome, Failure):
            d.errback(self.outcome)
        else:
            d.callback(self.outcome)

    def _decided(self, outcome: object) -> None:
        if self.outcome is not None:
            return
        self.outcome = outcome
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            self._fire(d)

    def label(self) -> str:
        """
        @return: how its log lines are labelled: C{worker N/PID}.
        """
        return f"worker {self.number}/{self.pid or '-'}"

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        """
        Its log records (1), other output (2) or control messages (3).
        """
        buffer = self._buffers.get(childFD)
        if buffer is None:
            return
        for line, cut in buffer.feed(data):
            self._line(childFD, line, cut)

    def _line(self, fd: int, line: bytes, cut: bool) -> None:
        if fd == CONTROL_FD:
            self._control(line)
            return
        text = line.decode("utf-8", "replace")
        if fd == 1 and text.startswith(RECORD_SEPARATOR) and not cut:
            try:
                event = eventFromJSON(text[len(RECORD_SEPARATOR):])
            except ValueError:
                event = None
            if isinstance(event, dict):
                self._relay(event)
                return
        self._relay({
            "log_format": "{line}", "line": text + (" [cut]" if cut else ""),
            "log_level": LogLevel.info if fd == 1 else LogLevel.warn,
            "log_namespace": "gateway.workers.process",
        })

    def _relay(self, event: dict) -> None:
        level = event.get("log_level")
        name = getattr(level, "name", "info")
        namespace = event.get("log_namespace", "log")
        event["log_system"] = f"{self.label()} {namespace}#{name}"
        event["worker"] = self.number
        self._publish(event)

    def _control(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return
        if not isinstance(message, dict) or "ready" not in message:
            return
        if self.outcome is not None:
            return
        if message["ready"] is True:
            if self.state == "starting":
                self.state = "ready"
            self._decided(self.pid)
        else:
            self._decided(Failure(RuntimeError(str(message.get("error", "not ready"))[:500])))

    def drain(self) -> None:
        """
        Tell the worker to stop accepting (its connections carry on).
        """
        if self.transport is not None and self.exit is None:
            self.transport.writeToChild(0, DRAIN + b"\n")

    def signal(self, number: int) -> None:
        """
        Send the worker signal C{number}, unless it has ended.
        """
        if self.transport is not None and self.exit is None:
            try:
                self.transport.signalProcess(number)
            except Exception:  # ProcessExitedAlready, or gone meanwhile
                pass

    def processEnded(self, reason) -> None:
        """
        Log what is left of its output, and fire L{ended}.
        """
        for fd, buffer in self._buffers.items():
            for line, cut in buffer.flush():
                self._line(fd, line, cut)
        value = reason.value
        self.exit = (getattr(value, "exitCode", None), getattr(value, "signal", None))
        self.state = "ended"
        if self.outcome is None:
            code, sig = self.exit
            self._decided(Failure(RuntimeError(
                f"worker {self.number} exited before it was ready ("
                + (f"signal {sig}" if sig else f"status {code}") + ")"
            )))
        self.ended.callback(self.exit)
