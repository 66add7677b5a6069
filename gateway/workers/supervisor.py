"""
The supervisor: the process C{twistd gateway --workers N} runs when N > 1.

It binds every listener (L{gateway.workers.sockets}: the workers inherit the
sockets, so ports stay bound while workers come and go), starts N worker
processes (C{twistd -n gateway} with the same options, see
L{gateway.workers.child}) with C{reactor.spawnProcess}, logs what they log,
labelled with their number, and:

  - starts again a worker that died, after a delay that grows while it
    keeps dying soon after its start (L{gateway.workers.backoff});
  - on SIGTERM (or SIGINT), stops every worker as a single gateway stops
    (SIGTERM: listeners closed, tunnels closed at a frame boundary, sessions
    told to resume elsewhere), waits for them within their shutdown
    deadline, then closes the listeners;
  - on SIGHUP (with C{--config}), has every worker reload the file;
  - on SIGUSR2, and through the admin API, replaces the workers one at a
    time (L{Supervisor.rollingRestart}): each replacement listens before the
    worker it replaces is told to stop.

Nothing here blocks: processes are watched through their pipes, timers run
on the reactor (an L{IReactorTime}, so the logic is tested with a Clock and
fake processes, see C{spawn}).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from dataclasses import replace
from typing import Callable

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import GatewayConfig
from ..errors import ConfigError, GatewayError
from ..edge.listeners import withBacklog
from ..service import STOP_MARGIN
from ..tcp import forgetExitSignal, hostAndPort, listenFailure
from .backoff import RestartBackoff
from .child import (
    CONTROL_FD,
    FIRST_SOCKET_FD,
    NUMBER_VARIABLE,
    SETUP_VARIABLE,
    WorkerSetup,
)
from .process import WorkerProcess
from .sockets import SharedSocket, bindShared

__all__ = ["Supervisor", "RollingRestartRunning", "READY_TIMEOUT", "KILL_AFTER", "workerCommand",
           "checkWorkers"]

#: Seconds a new worker has to start listening; past it, it is killed (and,
#: in a rolling restart, the worker it was to replace is kept).
READY_TIMEOUT = 60.0
#: Seconds past a worker's own stop deadline (C{timeouts.shutdown} +
#: L{STOP_MARGIN}) after which a worker told to stop is killed.
KILL_AFTER = 2.0


class RollingRestartRunning(GatewayError):
    """
    A rolling restart was asked for while one is under way.
    """


def workerCommand(arguments: list[str]) -> list[str]:
    """
    @param arguments: the C{twistd gateway} options of the supervisor.
    @return: the command line of a worker: C{twistd -n gateway} with the
        same options, in the foreground, without a pid file, logging JSON
        records for the supervisor to read.
    """
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "--logger=gateway.workers.child.workerLogObserver",
            "gateway", *arguments]


class Supervisor(MultiService):
    """
    Runs C{config.workers} worker processes on shared listeners.

    @ivar workers: the current worker of each number (L{None} while one is
        waiting to be started again).
    @ivar live: every worker process still running, replaced ones included.
    @ivar restarts: how many times each number's worker was started again
        after it died.
    @ivar sockets: the shared listeners, once bound.
    """

    log = Logger()

    def __init__(self, config: GatewayConfig, arguments: list[str], reactor=None,
                 spawn: Callable[[int, int], WorkerProcess] | None = None) -> None:
        """
        @param arguments: the options every worker is started with.
        @param spawn: starts worker C{(number, generation)} and returns its
            L{WorkerProcess}; by default a real process (tests give fakes).
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as defaultReactor

            reactor = defaultReactor
        self.reactor = reactor
        self.config = config
        self.arguments = list(arguments)
        self.count = config.workers
        self.spawn = spawn or self._spawnProcess
        self.endpoints = []
        for description in config.listen:
            try:
                self.endpoints.append((description, serverFromString(reactor, withBacklog(description))))
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"listen: {description!r} is not a usable endpoint: {e}") from None
        self.sockets: list[SharedSocket] = []
        self.workers: list[WorkerProcess | None] = [None] * self.count
        self.live: set[WorkerProcess] = set()
        self.restarts = [0] * self.count
        self.backoffs = [RestartBackoff() for _ in range(self.count)]
        self._generations = [0] * self.count
        self._pending: dict[int, object] = {}
        self._rolling: Deferred | None = None
        self._ready: Deferred | None = None
        self._waitingReady: list[Deferred] = []
        self._signalsInstalled: dict[int, object] = {}
        self.runtimeDirectory: str | None = None
        self.stopping = False
        #: As for L{gateway.service.GatewayService}: set by C{twistd gateway}.
        self.exitOnListenFailure = False
        self.processSignals = False
        self.configLoader: Callable[[], GatewayConfig] | None = None
        self.stoppedCleanly: bool | None = None
        self.admin = None
        if config.admin is not None:
            from .admin import SupervisorAdmin

            try:
                endpoint = serverFromString(reactor, config.admin.listen)
            except (ValueError, KeyError, TypeError) as e:
                raise ConfigError(
                    f"admin.listen: {config.admin.listen!r} is not a usable endpoint: {e}"
                ) from None
            self.admin = SupervisorAdmin(self, endpoint)
            self.admin.setServiceParent(self)

    # -- start

    def privilegedStartService(self) -> None:
        """
        Bind the listeners (before twistd drops privileges).

        @raise SystemExit: under twistd, with one line, when one cannot be.
        """
        super().privilegedStartService()  # the admin API's listener first
        self._bind()

    def _bind(self) -> None:
        if self.sockets:
            return
        for description, endpoint in self.endpoints:
            binding = Deferred.fromCoroutine(bindShared(self.reactor, description, endpoint))
            failures: list[Failure] = []
            binding.addCallbacks(self.sockets.append, failures.append)
            if failures or not binding.called:
                why = listenFailure(failures[0].value) if failures else "did not bind at once"
                for shared in self.sockets:
                    shared.port.stopListening()
                self.sockets = []
                message = f"cannot listen on {description}: {why}"
                if self.exitOnListenFailure:
                    raise SystemExit(f"gateway: {message}")
                raise ConfigError(message)
        for shared in self.sockets:
            host, port = hostAndPort(shared.port.getHost())
            self.log.info(
                "gateway listening on {host}:{port} ({description}), shared by {n} workers",
                host=host, port=port, description=shared.description, n=self.count,
            )

    def startService(self) -> None:
        """
        Bind the listeners unless already bound, start every worker and,
        under twistd, take SIGHUP and SIGUSR2.
        """
        self._bind()
        super().startService()
        if self.config.admin is not None and self.runtimeDirectory is None:
            self.runtimeDirectory = tempfile.mkdtemp(prefix="txgateway-workers-")
        self._installSignals()
        for number in range(self.count):
            self._start(number)
        self._ready = DeferredList([w.whenReady() for w in self.workers if w is not None],
                                   consumeErrors=True)
        self._ready.addCallback(self._firstReady)

    def _firstReady(self, results) -> None:
        ready = sum(1 for ok, _ in results if ok)
        self.log.info("workers: {ready} of {n} ready", ready=ready, n=self.count)
        waiting, self._waitingReady = self._waitingReady, []
        for d in waiting:
            d.callback(ready)

    def whenReady(self) -> Deferred:
        """
        @return: L{Deferred} firing with the number of workers that started
            listening, once each of the first ones did or failed to.
        """
        d: Deferred = Deferred()
        if self._ready is not None and self._ready.called:
            d.callback(sum(1 for w in self.workers if w is not None and w.state == "ready"))
        else:
            self._waitingReady.append(d)
        return d

    def adminSocket(self, number: int, generation: int) -> str | None:
        """
        @return: where worker C{number} of C{generation} serves its admin
            API, or L{None} without one.
        """
        if self.runtimeDirectory is None:
            return None
        return os.path.join(self.runtimeDirectory, f"worker-{number}-{generation}.sock")

    def _spawnProcess(self, number: int, generation: int) -> WorkerProcess:
        worker = WorkerProcess(number, generation, self.reactor.seconds())
        setup = WorkerSetup(
            number, generation,
            tuple((FIRST_SOCKET_FD + i, s.family, s.description) for i, s in enumerate(self.sockets)),
            admin=self.adminSocket(number, generation),
        )
        environment = dict(os.environ)
        environment[SETUP_VARIABLE] = setup.encode()
        environment[NUMBER_VARIABLE] = str(number)
        childFDs: dict[int, object] = {0: "w", 1: "r", 2: "r", CONTROL_FD: "r"}
        for i, shared in enumerate(self.sockets):
            childFDs[FIRST_SOCKET_FD + i] = shared.fileno()
        command = workerCommand(self.arguments)
        self.reactor.spawnProcess(worker, command[0], command, env=environment, path=os.getcwd(),
                                  childFDs=childFDs)
        return worker

    def _start(self, number: int) -> WorkerProcess:
        """
        Start a worker for C{number}; it becomes that number's current one.
        """
        pending = self._pending.pop(number, None)
        if pending is not None and pending.active():
            pending.cancel()
        generation = self._generations[number]
        self._generations[number] += 1
        worker = self.spawn(number, generation)
        self.workers[number] = worker
        self.live.add(worker)
        worker.ended.addCallback(lambda exit: self._ended(worker, exit))
        worker.whenReady().addCallbacks(
            lambda pid: self.log.info("worker {n} (pid {pid}) is listening", n=number, pid=pid),
            lambda f: self._notReady(worker, f),
        )
        return worker

    def _notReady(self, worker: WorkerProcess, failure: Failure) -> None:
        self.log.error("worker {n} did not start: {why}", n=worker.number,
                       why=failure.getErrorMessage())
        # One that said it cannot listen is still running: end it (its end
        # then counts as a death).
        worker.signal(signal.SIGTERM)

    def _ended(self, worker: WorkerProcess, exit) -> None:
        self.live.discard(worker)
        code, sig = exit
        uptime = self.reactor.seconds() - worker.started
        how = f"signal {sig}" if sig else f"status {code}"
        current = self.workers[worker.number] is worker
        if worker.state == "stopping" or self.stopping or not current:
            self.log.info("worker {n} (pid {pid}) ended ({how})", n=worker.number, pid=worker.pid,
                          how=how)
            return
        self.workers[worker.number] = None
        delay = self.backoffs[worker.number].exited(uptime)
        self.log.error(
            "worker {n} (pid {pid}) died ({how}) after {uptime:.1f}s; starting it again in {delay:g}s",
            n=worker.number, pid=worker.pid, how=how, uptime=uptime, delay=delay,
        )
        self._pending[worker.number] = self.reactor.callLater(delay, self._restart, worker.number)

    def _restart(self, number: int) -> None:
        self._pending.pop(number, None)
        if self.stopping or self.workers[number] is not None:
            return
        self.restarts[number] += 1
        self._start(number)

    # -- rolling restart

    def rollingRestart(self) -> Deferred:
        """
        Replace every worker, one at a time, in number order: start the
        replacement, wait until it listens (L{READY_TIMEOUT}), tell the old
        worker to stop accepting, let it serve what it has for
        C{timeouts.drain} seconds (handshakes under way finish; its
        transparent tunnels then get the shutdown close), then stop it as SIGTERM stops a gateway and wait for
        it to end, before the next number.  A replacement that does not start stops the
        rolling restart, and the old worker keeps serving.

        @return: L{Deferred} firing with the number of workers replaced.
        @raise RollingRestartRunning: when one is under way.
        """
        if self._rolling is not None:
            raise RollingRestartRunning("a rolling restart is under way")
        if self.stopping:
            raise RollingRestartRunning("the gateway is stopping")
        rolling = Deferred.fromCoroutine(self._roll())

        def done(result):
            self._rolling = None
            return result

        self._rolling = rolling
        rolling.addBoth(done)
        return rolling

    @property
    def rolling(self) -> bool:
        """
        Whether a rolling restart is under way.
        """
        return self._rolling is not None

    async def _roll(self) -> int:
        self.log.info("rolling restart of {n} workers", n=self.count)
        replaced = 0
        for number in range(self.count):
            if self.stopping:
                break
            old = self.workers[number]
            new = self._start(number)
            try:
                await new.whenReady().addTimeout(READY_TIMEOUT, self.reactor)
            except Exception as e:
                if old is not None and old.exit is None:
                    self.workers[number] = old
                    new.state = "stopping"
                # else the number has no other worker: the replacement's end
                # is a death like any other, and it is started again.
                new.signal(signal.SIGKILL)
                self.log.error(
                    "rolling restart stopped at worker {n}: its replacement did not start ({why});"
                    " the running worker is kept",
                    n=number, why=str(e) or type(e).__name__,
                )
                raise
            if old is not None and old.exit is None:
                old.state = "stopping"
                old.drain()
                await deferLater(self.reactor, self.config.timeouts.drain)
                await self._stopWorker(old)
            replaced += 1
        self.log.info("rolling restart done: {replaced} of {n} workers replaced",
                      replaced=replaced, n=self.count)
        return replaced

    def _stopBound(self) -> float:
        return self.config.timeouts.shutdown + STOP_MARGIN + KILL_AFTER

    async def _stopWorker(self, worker: WorkerProcess) -> bool:
        """
        SIGTERM C{worker}, and SIGKILL it if it has not ended in time.

        @return: whether it ended by itself.
        """
        if worker.exit is not None:
            return True
        worker.state = "stopping"
        worker.signal(signal.SIGTERM)
        killed = []

        def kill() -> None:
            killed.append(True)
            self.log.error("worker {n} (pid {pid}) did not stop in {bound:g}s; killing it",
                           n=worker.number, pid=worker.pid, bound=self._stopBound())
            worker.signal(signal.SIGKILL)

        timer = self.reactor.callLater(self._stopBound(), kill)
        ended: Deferred = Deferred()
        worker.ended.addBoth(lambda result: (ended.callback(None), result)[1])
        await ended
        if timer.active():
            timer.cancel()
        return not killed

    # -- stop

    def stopService(self) -> Deferred:
        """
        Stop every worker (SIGTERM, SIGKILL past its deadline), then close
        the listeners.
        """
        self.stopping = True
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        self._removeSignals()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        await super().stopService()
        live = list(self.live)
        if live:
            self.log.info("stopping {n} workers", n=len(live))
        results = await DeferredList([Deferred.fromCoroutine(self._stopWorker(w)) for w in live])
        # Clean: every worker stopped within its deadline, which a worker
        # says by exiting with status 0 (one whose stop was given up on ends
        # by the SIGTERM it received, see docs/operations.md).
        clean = all(ok and result for ok, result in results) and all(
            w.exit is not None and w.exit[0] == 0 for w in live)
        for shared in self.sockets:
            await shared.port.stopListening()
        self.sockets = []
        if self.runtimeDirectory is not None:
            shutil.rmtree(self.runtimeDirectory, ignore_errors=True)
            self.runtimeDirectory = None
        self.stoppedCleanly = clean
        if clean and self.processSignals:
            forgetExitSignal(self.reactor, signal.SIGTERM)

    # -- signals

    def _installSignals(self) -> None:
        if not self.processSignals or self._signalsInstalled:
            return
        handlers = {signal.SIGUSR2: self._rollOnSignal}
        if self.configLoader is not None:
            handlers[signal.SIGHUP] = self._reloadOnSignal
        for number, handler in handlers.items():
            def handle(signum, frame, handler=handler):
                self.reactor.callFromThread(handler)

            self._signalsInstalled[number] = signal.signal(number, handle)

    def _removeSignals(self) -> None:
        for number, previous in self._signalsInstalled.items():
            signal.signal(number, previous or signal.SIG_DFL)
        self._signalsInstalled = {}

    def _rollOnSignal(self) -> None:
        self.log.info("SIGUSR2: rolling restart")
        try:
            self.rollingRestart().addErrback(lambda f: None)  # logged by _roll
        except RollingRestartRunning as e:
            self.log.warn("SIGUSR2 ignored: {why}", why=str(e))

    def _reloadOnSignal(self) -> None:
        self.log.info("SIGHUP: every worker reloads the configuration")
        self.reload()

    def reload(self) -> None:
        """
        Have every running worker reload the configuration (SIGHUP), and take
        the file's admin token here too (the supervisor checks it).
        """
        if not self.reloadAdmin():
            return
        for worker in list(self.live):
            if worker.state == "ready":
                worker.signal(signal.SIGHUP)

    def reloadAdmin(self) -> bool:
        """
        Read the file again for the admin token the supervisor checks.

        @return: whether the file could be read (a worker would fail to
            reload it too when it cannot: the error is logged once, here).
        """
        if self.configLoader is None:
            return True
        try:
            new = self.configLoader()
        except ConfigError as error:
            self.log.error("gateway: reload failed, nothing changed: {error}", error=error)
            return False
        admin = self.config.admin
        if admin is not None and new.admin is not None and admin.listen == new.admin.listen:
            self.config = replace(self.config, admin=new.admin)
        return True

_log = Logger()


def checkWorkers(config: GatewayConfig, reactor=None) -> None:
    """
    Check, once in the supervisor, what each worker would check when it
    builds its service (so that a mistake is one line at start-up, not a
    crash loop), that the session map is one the workers share (or that
    every route is C{protocol = "transparent"}, whose tunnels need none:
    then a pool's affinity records, each worker's own, are warned of), and
    that nothing is configured that workers do not support yet (the
    metrics listener).

    @raise ConfigError: naming the reason in one line.
    """
    from ..service import GatewayService

    probe = GatewayService(config, reactor)  # builds every part; binds nothing
    if config.metrics is not None:
        raise ConfigError(
            f"workers = {config.workers}: the metrics listener ({config.metrics.listen}) is one"
            " process's, and workers would each try to bind it: run one worker, or leave"
            " [metrics] / --metrics out"
        )
    if not probe.sessionMap.shared:
        if config.demo or not config.routes or any(r.protocol != "transparent" for r in config.routes):
            raise ConfigError(
                f"workers = {config.workers} needs a session map the workers share, and"
                f" {config.sessionMap.type!r} is one process's own (a session or an affinity"
                " record made on one worker would be unknown to the others):"
                " give --redis URL or [session_map] type = \"redis\", set protocol ="
                " \"transparent\" on every route (WebSocket tunnels only), or run one worker"
            )
        for pool in config.pools:
            if pool.affinity is not None and pool.balance != "hash":
                _log.warn(
                    "workers = {n} with the {kind!r} session map: pool {pool}'s {affinity}"
                    " affinity records are each worker's own (balance = \"hash\" agrees across"
                    " workers without them)",
                    n=config.workers, kind=config.sessionMap.type, pool=pool.name,
                    affinity=pool.affinity)
