"""
The access log: one JSON line per tunnel or session that ends, appended to a
file or written to standard output (C{[access_log]} in the configuration;
off by default).

Writing must never hold the reactor: a disk under pressure, or a pipe whose
reader is slow (standard output under a container runtime), can block a
C{write} for as long as it likes.  So the lines are written by one thread
of the log's own (a L{ThreadPool} of one, not the reactor's shared pool,
which name resolution needs), a batch at a time: while a batch is being
written, the lines that end meanwhile wait in memory, and those past
C{max_buffer_bytes} (what waits plus what is being written) are dropped and
counted.  The count is logged (one line per L{DROP_LOG_INTERVAL} at most),
and written to the access log itself once there is room again, as a line
C{{"dropped": N}}.  The reactor's part per line is a C{json.dumps} and an
append; nothing in it waits.

twisted.logger was the other choice: its file observers write in the
reactor's thread, which is what this avoids.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ..errors import ConfigError
from ..interfaces import IAccessLog

__all__ = ["AccessLog", "NoAccessLog", "DROP_LOG_INTERVAL", "STDOUT"]

#: The path that means standard output.
STDOUT = "-"

#: Lines dropped at the bound are logged at most once per this many seconds.
DROP_LOG_INTERVAL = 10.0


@implementer(IAccessLog)
class NoAccessLog:
    """
    The access log when there is none: every record is forgotten.
    """

    def connectionEnded(self, record: dict) -> None:
        """
        Forget C{record}.
        """

    def stop(self) -> Deferred:
        """
        @return: a fired L{Deferred}: nothing to write.
        """
        return succeed(None)


@implementer(IAccessLog)
class AccessLog:
    """
    Appends one JSON line per record, written by a thread of its own.

    @ivar written: lines written so far.
    @ivar dropped: lines dropped at C{maxBufferBytes} so far.
    """

    log = Logger()

    def __init__(self, path: str, maxBufferBytes: int, reactor: Any,
                 run: Callable[..., Deferred] | None = None) -> None:
        """
        Open the file now (before twistd drops privileges, as its own log
        file is).

        @param path: a file, appended to (created with mode 0640), or
            L{STDOUT}.
        @param maxBufferBytes: the most bytes of lines waiting or being
            written.
        @param run: runs a function with arguments away from the reactor's
            thread and returns a L{Deferred} of its result (by default, the
            log's own thread); tests give a synchronous one.
        @raise ConfigError: when the file cannot be opened.
        """
        self.path = path
        self.maxBufferBytes = maxBufferBytes
        self.reactor = reactor
        self.written = 0
        self.dropped = 0
        self._buffer: list[bytes] = []
        self._lines = 0
        self._held = 0
        self._writing: Deferred | None = None
        self._unreported = 0
        self._lastDropLog: float | None = None
        self._stopped = False
        if path == STDOUT:
            self._fd, self._owned = sys.stdout.fileno(), False
        else:
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            except OSError as error:
                raise ConfigError(f"access_log.path: cannot open {path!r}: {error.strerror}") from None
            self._owned = True
        self._threads: ThreadPool | None = None
        if run is None:
            # Started at the first write, not here: twistd forks to
            # daemonize after building the service, and threads do not
            # survive a fork.
            threads = self._threads = ThreadPool(minthreads=1, maxthreads=1, name="txgateway-access-log")

            def run(function, *args):
                if not threads.started:
                    threads.start()
                return deferToThreadPool(reactor, threads, function, *args)

        self._run = run

    def connectionEnded(self, record: dict) -> None:
        """
        Queue C{record} as one line; start writing unless a batch is being
        written.  Past the bound, drop it and count it.
        """
        if self._stopped:
            return
        stamp = datetime.fromtimestamp(self.reactor.seconds(), timezone.utc)
        record = {"time": stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"), **record}
        line = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"
        if self._held + len(line) > self.maxBufferBytes:
            self._drop()
            return
        if self._unreported and self._held + len(line) + 32 <= self.maxBufferBytes:
            note = b'{"dropped":%d}\n' % self._unreported
            self._unreported = 0
            self._queue(note)
        self._queue(line)
        if self._writing is None:
            self._flush()

    def _queue(self, line: bytes) -> None:
        self._buffer.append(line)
        self._lines += 1
        self._held += len(line)

    def _drop(self) -> None:
        self.dropped += 1
        self._unreported += 1
        now = self.reactor.seconds()
        if self._lastDropLog is None or now - self._lastDropLog >= DROP_LOG_INTERVAL:
            self._lastDropLog = now
            self.log.warn(
                "access log: {path} does not keep up: {n} line(s) dropped at max_buffer_bytes "
                "({bound} bytes) since start-up", path=self.path, n=self.dropped, bound=self.maxBufferBytes,
            )

    def _flush(self) -> None:
        chunk, lines = b"".join(self._buffer), self._lines
        self._buffer, self._lines = [], 0
        writing = self._writing = self._run(_writeAll, self._fd, chunk)
        writing.addCallbacks(self._written, self._failed, callbackArgs=(len(chunk), lines),
                             errbackArgs=(len(chunk),))

    def _written(self, _: None, size: int, lines: int) -> None:
        self._writing = None
        self._held -= size
        self.written += lines
        if self._buffer:
            self._flush()

    def _failed(self, failure, size: int) -> None:
        self._writing = None
        self._held -= size
        self.log.error("access log: cannot write to {path}: {error}", path=self.path,
                       error=failure.getErrorMessage())
        if self._buffer:
            self._flush()

    async def _stop(self) -> None:
        if self._buffer and self._writing is None:
            self._flush()
        while self._writing is not None:
            await self._writing
        if self._owned:
            os.close(self._fd)
        if self._threads is not None and self._threads.started:
            self._threads.stop()

    def stop(self) -> Deferred:
        """
        Write what is queued, close the file and end the thread.

        @return: L{Deferred} firing once done.
        """
        if self._stopped:
            return succeed(None)
        self._stopped = True
        return Deferred.fromCoroutine(self._stop())


def _writeAll(fd: int, data: bytes) -> None:
    """
    Write all of C{data} to C{fd} (in the log's thread).
    """
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
