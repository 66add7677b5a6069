"""
Child processes for tests: a real C{redis-server} that can be killed and
restarted on its port (L{RedisServer}), any process started and waited for
by a line of its output (L{startProcess}, L{RunningProcess}), and what a
C{twistd -n gateway} child needs (L{projectEnvironment},
L{GatewayProcess}).

Nothing here imports the reactor at import time: pytest-twisted chooses it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Sequence

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from ._certificates import CertificateFiles
from ._network import LOCALHOST

__all__ = [
    "GatewayProcess",
    "RedisServer",
    "RunningProcess",
    "projectEnvironment",
    "redisServerBinary",
    "startProcess",
    "tlsArguments",
]


def redisServerBinary() -> str:
    """
    @return: the path of C{redis-server}.
    @raise pytest.fail.Exception: when it is missing (never a skip: the
        README's test command installs it).
    """
    path = shutil.which("redis-server")
    if path is None:
        pytest.fail("redis-server is not installed: run the test command from README.md, "
                    "which installs it (apt-get install redis-server)")
    return path


def tlsArguments(tls: CertificateFiles) -> list[str]:
    """
    @return: the C{redis-server} arguments (or, without their C{--},
        configuration lines) that make it speak TLS with C{tls}'s server
        certificate: client certificates are checked when given and not
        required (C{tls-auth-clients optional}; a later C{yes} requires
        them), and the connections it makes itself (a replica's to its
        master, a Sentinel's to the servers and the other Sentinels) are
        TLS too (C{tls-replication yes}), presenting the same certificate.
    """
    return ["--tls-cert-file", tls.cert, "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca,
            "--tls-auth-clients", "optional", "--tls-replication", "yes"]


class RedisServer:
    """
    A real C{redis-server} process on 127.0.0.1, on a port chosen at random
    and retried until one binds (redis cannot listen on port 0 and report
    it), so that it can be killed and restarted on the same port.

    @ivar args: more command-line arguments (C{("--replicaof", host,
        port)} for a replica), after those that set the port and TLS.
    @ivar tls: with certificates, the server speaks TLS only, on its port
        (C{--tls-port}, and C{--port 0}; see L{tlsArguments}).
    """

    #: The log line that says the server is ready.
    READY = "Ready to accept connections"

    def __init__(self, directory: str, args: Sequence[str] = (),
                 tls: CertificateFiles | None = None) -> None:
        self.directory = directory
        self.args = tuple(args)
        self.tls = tls
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """
        The C{redis://} (or, with TLS, C{rediss://}) URL of the server.
        """
        return f"{'rediss' if self.tls else 'redis'}://{LOCALHOST}:{self.port}/0"

    def start(self, attempts: int = 20) -> None:
        """
        Start the server, on its previous port when it had one.
        """
        binary = redisServerBinary()
        for _ in range(attempts):
            port = self.port or random.randint(20000, 60000)
            logfile = os.path.join(self.directory, f"redis-{port}.log")
            if os.path.exists(logfile):
                os.remove(logfile)  # readiness is read from a fresh log
            process = subprocess.Popen(
                self.command(binary, port, logfile),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if self._waitReady(process, port, logfile, self.READY):
                self.process, self.port = process, port
                return
            process.kill()
            process.wait()
        raise RuntimeError(f"redis-server did not start after {attempts} attempts")

    def command(self, binary: str, port: int, logfile: str) -> list[str]:
        """
        @return: the command line that starts the server on C{port}.
        """
        listen = ["--port", str(port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(port), *tlsArguments(self.tls)]
        return [binary, "--bind", LOCALHOST, *listen, "--save", "",
                "--appendonly", "no", "--dir", self.directory, "--logfile", logfile, *self.args]

    @staticmethod
    def _waitReady(process: subprocess.Popen, port: int, logfile: str, ready: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                with open(logfile) as f:
                    text = f.read()
            except FileNotFoundError:
                text = ""
            if ready in text:
                return True
            if "Address already in use" in text or "Could not create server TCP" in text:
                return False
            time.sleep(0.02)  # a synchronous fixture, outside the reactor
        return False

    def kill(self) -> None:
        """
        SIGKILL the server (its port is kept for L{start}).
        """
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        """
        SIGTERM the server and wait for it.
        """
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


class _WatchedProcess(ProcessProtocol):
    """
    Collects a child's output line by line and fires C{ready} on the first
    line matching a pattern.
    """

    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.ready: Deferred = Deferred()
        self.ended: Deferred = Deferred()
        self.lines: list[str] = []
        self._partial = b""

    def outReceived(self, data: bytes) -> None:
        self._partial += data
        *lines, self._partial = self._partial.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if not self.ready.called:
                match = self.pattern.search(line)
                if match:
                    self.ready.callback(match)

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if self._partial:
            self.outReceived(b"\n")
        code = getattr(reason.value, "exitCode", None)
        if code is None and getattr(reason.value, "signal", None):
            code = -reason.value.signal
        self.ended.callback(code)  # first: a readiness failure must see it ended
        if not self.ready.called:
            tail = "\n".join(self.lines[-20:])
            self.ready.errback(RuntimeError(f"process exited ({code}) before it was ready:\n{tail}"))


@dataclass
class RunningProcess:
    """
    A child process started by L{startProcess}.

    @ivar match: the match of the readiness pattern.
    """

    protocol: _WatchedProcess
    transport: object
    match: object

    @property
    def output(self) -> str:
        """
        Everything it printed so far.
        """
        return "\n".join(self.protocol.lines)

    def signal(self, name: str) -> None:
        """
        Send a signal (C{"TERM"}, C{"KILL"}...) if it still runs.
        """
        if not self.protocol.ended.called:
            # Twisted knows only a few signals by name.
            self.transport.signalProcess(getattr(signal, f"SIG{name}", name))

    async def wait(self, timeout: float = 30.0) -> int | None:
        """
        @return: its exit code once it has exited (within C{timeout}), or
            minus the number of the signal that ended it.
        """
        from twisted.internet import reactor

        ended = self.protocol.ended
        if ended.called:
            return ended.result
        waiter: Deferred = Deferred()
        ended.addBoth(lambda code: (waiter.callback(code), code)[1])
        return await waiter.addTimeout(timeout, reactor)


async def startProcess(args: Sequence[str], ready: str, *, env: dict | None = None,
                       cwd: str | None = None, timeout: float = 30.0) -> RunningProcess:
    """
    Start a child process and wait for a line of its output matching
    C{ready} (a regular expression).
    """
    from twisted.internet import reactor

    protocol = _WatchedProcess(ready)
    environment = dict(os.environ if env is None else env)
    transport = reactor.spawnProcess(protocol, args[0], list(args), env=environment, path=cwd)
    process = RunningProcess(protocol, transport, None)
    try:
        process.match = await protocol.ready.addTimeout(timeout, reactor)
    except BaseException:
        process.signal("KILL")
        raise
    return process


def projectEnvironment() -> dict:
    """
    The environment for a child Python that must import this package (and
    find its twistd drop-in) whether or not it is installed.
    """
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class GatewayProcess(RunningProcess):
    """
    A C{twistd -n gateway} child process.
    """

    port: int = 0

    @property
    def url(self) -> str:
        """
        Its C{ws://} URL.
        """
        return f"ws://{LOCALHOST}:{self.port}"
