"""
Worker processes: C{twistd gateway --workers N} (or C{workers = N} in the
file) runs a supervisor (L{gateway.workers.supervisor.Supervisor}) that
binds the listeners and hands them down to N C{twistd gateway} worker
processes, restarts a worker that dies, passes SIGTERM and SIGHUP on,
replaces the workers one at a time on SIGUSR2 (a rolling restart) and
serves the admin API for all of them (L{gateway.workers.admin}).

docs/operations.md ("Workers", "Rolling restarts") is the operator's view.
Inside, by job: L{gateway.workers.backoff} (the restart policy, pure),
L{gateway.workers.sockets} (the shared listeners), L{gateway.workers.child}
(the worker's side), L{gateway.workers.process} (a worker from the
supervisor's side: its log and its state).
"""

from .child import NUMBER_VARIABLE, WorkerSetup, startWorker, workerConfig, workerSetup
from .supervisor import RollingRestartRunning, Supervisor, checkWorkers

__all__ = [
    "Supervisor",
    "RollingRestartRunning",
    "checkWorkers",
    "NUMBER_VARIABLE",
    "WorkerSetup",
    "workerSetup",
    "workerConfig",
    "startWorker",
]
