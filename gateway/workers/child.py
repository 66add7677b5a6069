"""
The worker's side: a worker is a C{twistd -n gateway} process started by
the supervisor (L{gateway.workers.supervisor}) with the same options, told
by its environment (L{SETUP_VARIABLE}) that it is worker N, which inherited
file descriptors are the listeners to adopt, and where its private admin
socket goes.

It logs as JSON records on its standard output (L{workerLogObserver}, given
to twistd as C{--logger}), which the supervisor reads and logs as its own
with the worker's number; it says it is ready (every listener adopted, its
admin socket bound) on the control pipe (L{CONTROL_FD}); and it stops, as on
SIGTERM, when its standard input (a pipe from the supervisor) closes, so
that no worker outlives a supervisor that was killed.
"""

from __future__ import annotations

import io
import json
import os
import signal
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from twisted.application.service import Service
from twisted.internet import abstract, fdesc
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger, jsonFileLogObserver
from zope.interface import implementer

from ..config import GatewayConfig
from ..edge.proxy import proxiedEndpoint, proxiedListening
from .sockets import FAMILIES, adoptedEndpoint

if TYPE_CHECKING:
    from ..service import GatewayService

__all__ = [
    "SETUP_VARIABLE",
    "NUMBER_VARIABLE",
    "CONTROL_FD",
    "FIRST_SOCKET_FD",
    "WorkerSetup",
    "workerSetup",
    "workerConfig",
    "startWorker",
    "workerLogObserver",
    "RECORD_SEPARATOR",
    "DRAIN",
]

#: The environment variable that makes a C{twistd gateway} process a worker
#: (JSON: L{WorkerSetup}).
SETUP_VARIABLE = "TXGATEWAY_WORKER_SETUP"
#: The environment variable holding the worker's number (0 to N-1), for
#: whatever runs in it and wants to say which worker it is (metrics labels).
NUMBER_VARIABLE = "TXGATEWAY_WORKER"
#: The worker writes its state to the supervisor on this descriptor.
CONTROL_FD = 3
#: The listeners are inherited from this descriptor on, in C{listen} order.
FIRST_SOCKET_FD = 4
#: The supervisor's command (a line on the worker's standard input) to stop
#: accepting, before a stop.
DRAIN = b"drain"
#: What starts each JSON log record on a worker's standard output.
RECORD_SEPARATOR = "\x1e"


@dataclass(frozen=True)
class WorkerSetup:
    """
    What the supervisor tells a worker.

    @ivar number: the worker's number, 0 to N-1 (a replacement keeps the
        number of the worker it replaces).
    @ivar generation: how many workers held this number before it.
    @ivar sockets: C{(descriptor, family, description)} of each listener.
    @ivar admin: the path of the worker's private admin socket, or L{None}
        without an admin API.
    """

    number: int
    generation: int
    sockets: tuple[tuple[int, str, str], ...]
    admin: str | None = None

    def encode(self) -> str:
        """
        @return: the value of L{SETUP_VARIABLE} for this set-up.
        """
        return json.dumps({"number": self.number, "generation": self.generation,
                           "sockets": [list(s) for s in self.sockets], "admin": self.admin})


def workerSetup(environ: dict[str, str]) -> WorkerSetup | None:
    """
    @return: this process's set-up as a worker, or L{None} when it is not one.
    @raise ValueError: when L{SETUP_VARIABLE} is set but not understood.
    """
    text = environ.get(SETUP_VARIABLE)
    if text is None:
        return None
    data = json.loads(text)
    sockets = tuple((int(fd), str(family), str(description))
                    for fd, family, description in data["sockets"])
    for _, family, _ in sockets:
        if family not in FAMILIES:
            raise ValueError(f"unknown address family {family!r}")
    admin = data.get("admin")
    return WorkerSetup(int(data["number"]), int(data["generation"]), sockets,
                       None if admin is None else str(admin))


def workerConfig(config: GatewayConfig, setup: WorkerSetup) -> GatewayConfig:
    """
    @return: C{config} as a worker runs it: one process (it supervises
        none), its admin API on its private socket (the supervisor serves the
        configured one), and a Redis node id of its own when the file sets
        one (the workers are the map's nodes).
    """
    config = replace(config, workers=1)
    if config.admin is not None and setup.admin is not None:
        config = replace(config, admin=replace(config.admin, listen=f"unix:{setup.admin}:mode=600"))
    options = dict(config.sessionMap.options)
    if options.get("node_id"):
        options["node_id"] = f"{options['node_id']}-w{setup.number}"
        config = replace(config, sessionMap=replace(config.sessionMap,
                                                    options=tuple(sorted(options.items()))))
    return config


class _SupervisorPipe(abstract.FileDescriptor):
    """
    Reads the worker's standard input, a pipe from the supervisor: each line
    is a command (L{DRAIN}), and its end means the supervisor is gone.
    """

    def __init__(self, reactor, fd: int, command, gone) -> None:
        super().__init__(reactor)
        self.fd = fd
        self._command = command
        self._gone = gone
        self._partial = b""
        fdesc.setNonBlocking(fd)

    def fileno(self) -> int:
        """
        @return: the descriptor read.
        """
        return self.fd

    def doRead(self):
        """
        Read what the supervisor wrote (or its end).
        """
        return fdesc.readFromFD(self.fd, self._received)

    def _received(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-64:]  # commands are short: bounded
        for line in lines:
            self._command(line.strip())

    def connectionLost(self, reason) -> None:
        """
        The supervisor is gone.
        """
        abstract.FileDescriptor.connectionLost(self, reason)
        self._gone()


class _SupervisorLink(Service):
    """
    A worker's ties to its supervisor, started with the worker's gateway
    service (so that building the service, as a test does, touches no
    descriptor): the control pipe it says it is ready on, the standard input
    whose end stops it, and SIGTERM taken once.
    """

    log = Logger()

    def __init__(self, gateway: GatewayService, setup: WorkerSetup, reactor) -> None:
        self.gateway = gateway
        self.setup = setup
        self.reactor = reactor
        self._pipe: _SupervisorPipe | None = None

    def startService(self) -> None:
        """
        Watch the pipes, and say when the gateway listens.
        """
        super().startService()
        fdesc.setNonBlocking(CONTROL_FD)
        self._pipe = _SupervisorPipe(self.reactor, 0, self._command, self._supervisorGone)
        self._pipe.startReading()
        # Once the reactor runs: its signal handlers are installed, and the
        # gateway service has started listening.
        self.reactor.callWhenRunning(_stopOnce)
        self.reactor.callWhenRunning(self._watchReady)

    def _watchReady(self) -> None:
        Deferred.fromCoroutine(self._ready()).addErrback(
            lambda f: self._tell({"ready": False, "error": f.getErrorMessage()})
        )

    def stopService(self) -> None:
        """
        Stop reading the supervisor's pipe.
        """
        super().stopService()
        if self._pipe is not None:
            self._pipe.stopReading()
            self._pipe = None

    def _tell(self, message: dict) -> None:
        fdesc.writeToFD(CONTROL_FD, json.dumps(message).encode("utf-8") + b"\n")

    async def _ready(self) -> None:
        await self.gateway.whenListening()
        if self.gateway.admin is not None:
            await self.gateway.admin.whenListening()
        self._tell({"ready": True, "pid": os.getpid()})

    def _command(self, line: bytes) -> None:
        if line == DRAIN:
            self.log.info("worker {n}: draining: no new connections; open ones carry on until"
                          " the stop", n=self.setup.number)
            self.gateway.stopAccepting().addErrback(
                lambda f: self.log.failure("worker {n}: stopping listening failed", f,
                                           n=self.setup.number))

    def _supervisorGone(self) -> None:
        self._pipe = None
        if self.reactor.running:
            self.log.warn("worker {n}: the supervisor is gone; stopping", n=self.setup.number)
            self.reactor.stop()


def startWorker(service: GatewayService, setup: WorkerSetup, reactor) -> None:
    """
    Make C{service} a worker: it accepts on the inherited listeners, knows
    its number (C{service.worker}), and, once started, tells the supervisor
    when it listens and stops when the supervisor is gone.
    """
    service.worker = setup.number
    service.endpoints = [(description, _adopted(service, reactor, fd, family, description))
                         for fd, family, description in setup.sockets]
    _SupervisorLink(service, setup, reactor).setServiceParent(service)


def _adopted(service: GatewayService, reactor, fd: int, family: str, description: str):
    """
    @return: the endpoint that accepts on the inherited listener C{fd},
        bound from C{description}; for a C{haproxy:} listener, each of its
        connections reads a PROXY header first, from the peers the service
        trusts with them, as in one process.
    """
    inner = proxiedEndpoint(description)
    if inner is None:
        return adoptedEndpoint(reactor, fd, family, description)
    proxied = service.proxied
    listening = proxiedListening(reactor, trusted=proxied.trusted, timeout=proxied.timeout,
                                 dropped=proxied.dropped)
    return adoptedEndpoint(listening, fd, family, inner)


def _stopOnce() -> None:
    """
    Take SIGTERM and SIGINT once: a signal sent to the whole process group
    (Ctrl-C in a terminal, C{timeout}, systemd's default C{KillMode}) reaches
    a worker both directly and through its supervisor, and the reactor's own
    handler would try to stop a stopping reactor the second time.
    """
    taken: list[int] = []
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue

        def handler(signum, frame, previous=previous, taken=taken):
            if not taken:
                taken.append(signum)
                previous(signum, frame)

        signal.signal(number, handler)


def workerLogObserver(stream=None):
    """
    The log observer of a worker (twistd's C{--logger}): every event as a
    JSON record on the process's standard output, which the supervisor
    reads (twistd redirects C{sys.stdout} into the log, so the descriptor is
    written to directly).

    A failure is written as its traceback text, appended to the message:
    Twisted's JSON form of a failure keeps its frames but not the
    exception's value.

    @param stream: where to write (tests); the standard output's descriptor
        by default.
    """
    if stream is None:
        stream = io.open(1, "w", encoding="utf-8", closefd=False, buffering=1)
    write = jsonFileLogObserver(stream, recordSeparator=RECORD_SEPARATOR)

    @implementer(ILogObserver)
    def observe(event: dict) -> None:
        failure = event.get("log_failure")
        if failure is not None:
            event = dict(event)
            del event["log_failure"]
            try:
                text = failure.getTraceback().rstrip("\n")
            except Exception:
                text = repr(failure)
            event["log_format"] = (event.get("log_format") or "") + "\n{worker_traceback}"
            event["worker_traceback"] = text
        write(event)

    return observe
