"""
Fake worker processes for the supervisor's unit tests: real
L{WorkerProcess} protocols on a transport that records signals, driven by
the test (ready, death) instead of by a child process.
"""

from __future__ import annotations

import signal

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.python.failure import Failure

from gateway.workers.process import WorkerProcess

__all__ = ["FakeTransport", "Spawner", "ready", "die"]


class FakeTransport:
    """
    A process transport that records the signals sent to it.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[int] = []

    def signalProcess(self, number: int) -> None:
        self.signals.append(number)


class Spawner:
    """
    The supervisor's C{spawn}: makes fake workers and records, in
    C{events}, each start and each signal, in order.
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.workers: list[WorkerProcess] = []
        self.events: list[tuple] = []
        self._pid = 100

    def __call__(self, number: int, generation: int) -> WorkerProcess:
        self._pid += 1
        worker = WorkerProcess(number, generation, self.clock.seconds(), publisher=lambda e: None)
        transport = FakeTransport(self._pid)
        events = self.events

        def record(sig: int, worker=worker) -> None:
            FakeTransport.signalProcess(transport, sig)
            events.append(("signal", worker.number, worker.generation, signal.Signals(sig).name))

        transport.signalProcess = record
        transport.writeToChild = lambda fd, data, worker=worker: events.append(
            ("write", worker.number, worker.generation, data))
        worker.makeConnection(transport)
        self.workers.append(worker)
        self.events.append(("start", number, generation))
        return worker

    def current(self, number: int, generation: int) -> WorkerProcess:
        [worker] = [w for w in self.workers if (w.number, w.generation) == (number, generation)]
        return worker


def ready(worker: WorkerProcess) -> None:
    """
    The worker says it listens.
    """
    worker.childDataReceived(3, b'{"ready": true, "pid": 1}\n')


def die(worker: WorkerProcess, sig: int | None = None, code: int = 0) -> None:
    """
    The worker's process ends: by signal C{sig}, or with status C{code}.
    """
    if sig is not None:
        reason = ProcessTerminated(exitCode=None, signal=sig)
    elif code:
        reason = ProcessTerminated(exitCode=code)
    else:
        reason = ProcessDone(0)
    worker.processEnded(Failure(reason))
