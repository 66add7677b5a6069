"""
The operator's surface against a real C{twistd gateway}: the admin token
file's mode, an admin listener on every interface, failed admin
authentications, and the log of connections dropped at the limits.
"""

from __future__ import annotations

import re
import sys

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from gateway.admin import AUTH_FAILURE_LIMIT
from gateway.admission import DROP_LOG_INTERVAL, DroppedConnections
from gateway.testing import projectEnvironment, rawExchange, startProcess

from .helpers import TOKEN, LineWatcher, admin, startGateway

BACKEND = "ws://127.0.0.1:9"


def adminRequest(token: str) -> bytes:
    return (f"GET /pools HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Authorization: Bearer {token}\r\n\r\n").encode()


@pytest_twisted.ensureDeferred
async def test_token_file_open_to_others_is_refused(tmp_path, gateway_process):
    """
    A token file with mode 0644 ends twistd with one line naming the file
    and C{chmod 600 FILE}, a non-zero status and no traceback; with mode
    0600 the same file starts the admin API, which serves the token.
    """
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile=", "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--backend", BACKEND,
               "--admin", "tcp:0:interface=127.0.0.1", "--admin-token-file", str(token)]
    process = await startProcess(command, r"gateway: ", env=projectEnvironment(), cwd=str(tmp_path))
    assert await process.wait() not in (0, None)
    errors = [line for line in process.output.splitlines() if "gateway:" in line]
    assert errors == [f"gateway: --admin-token-file: {token} is open to group or others "
                      f"(mode 0644); run chmod 600 {token}"]
    assert "Traceback" not in process.output and TOKEN not in process.output
    token.chmod(0o600)
    gateway = await gateway_process("--backend", BACKEND, "--admin", "tcp:0:interface=127.0.0.1",
                                    "--admin-token-file", str(token))
    [port] = re.findall(r"admin API listening on 127\.0\.0\.1:(\d+)", gateway.output)
    assert (await admin(int(port), "GET", "/pools"))[0] == 200


@pytest_twisted.ensureDeferred
async def test_admin_on_every_interface_warns(tmp_path, gateway_process):
    """
    C{--admin tcp:0} (every interface) starts, with one warning naming the
    endpoint and suggesting C{interface=127.0.0.1} or a Unix socket; the API
    answers.  With C{interface=127.0.0.1} there is no warning.
    """
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    gateway = await gateway_process("--backend", BACKEND, "--admin", "tcp:0",
                                    "--admin-token-file", str(token))
    watcher = LineWatcher(gateway)
    line = await watcher.wait(r"listens on every interface", 0)
    assert "admin API: tcp:0 listens on every interface" in line
    assert "interface=127.0.0.1" in line and "unix:" in line
    [port] = re.findall(r"admin API listening on 0\.0\.0\.0:(\d+)", gateway.output)
    assert (await admin(int(port), "GET", "/pools"))[0] == 200
    assert len(watcher.matching(r"every interface")) == 1
    private, _, _, _ = await startGateway(gateway_process, tmp_path,
                                          f'[[pool.chat.backend]]\nurl = "{BACKEND}"\n')
    assert "every interface" not in private.output


class _Collect(Protocol):
    def connectionMade(self) -> None:
        self.received = b""
        self.transport.write(self.factory.payload)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.factory.done.callback(self.received)


async def exchangeFrom(source: str, port: int, payload: bytes) -> bytes:
    """
    L{rawExchange} from the local address C{source}.
    """
    factory = Factory.forProtocol(_Collect)
    factory.payload, factory.done = payload, Deferred()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=10, bindAddress=(source, 0))
    await endpoint.connect(factory)
    return await factory.done.addTimeout(10, reactor)


@pytest_twisted.ensureDeferred
async def test_wrong_tokens_limited(tmp_path, gateway_process):
    """
    Wrong tokens from one address: the first L{AUTH_FAILURE_LIMIT} get 401,
    then every request from it (the right token too) gets 429 with
    C{Retry-After}; all are counted, in one log line while they come and one
    more with the count at stop; another address is still served.
    """
    process, port, watcher, _ = await startGateway(
        gateway_process, tmp_path, f'[[pool.chat.backend]]\nurl = "{BACKEND}"\n')
    answers = [await rawExchange(port, adminRequest("wrong-token-0123456789")) for _ in range(50)]
    assert all(a.startswith(b"HTTP/1.1 401 ") for a in answers[:AUTH_FAILURE_LIMIT])
    assert all(a.startswith(b"HTTP/1.1 429 Too Many Requests") for a in answers[AUTH_FAILURE_LIMIT:])
    assert re.search(rb"\r\nRetry-After: (5\d|60)\r\n", answers[-1])
    assert b'"status": 429' in answers[-1]
    right = await rawExchange(port, adminRequest(TOKEN))
    assert right.startswith(b"HTTP/1.1 429 ")
    served = await exchangeFrom("127.0.0.2", port, adminRequest(TOKEN))
    assert served.startswith(b"HTTP/1.1 200 ")
    assert len(watcher.matching(r"without a valid token refused")) == 1
    process.signal("TERM")
    assert await process.wait() == 0
    lines = watcher.matching(r"without a valid token refused")
    assert len(lines) == 2
    assert "admin API: 50 request(s) without a valid token refused" in lines[1]
    assert "(41 of them with 429; 51 refused since start-up; 1 address(es) blocked now)" in lines[1]
    assert TOKEN not in process.output


@pytest_twisted.ensureDeferred
async def test_dropped_connections_log_rate_limited(tmp_path, gateway_process):
    """
    At C{limits.max_connections} every further connection gets 503, and the
    log has one line while they come plus one with the count at stop,
    rather than a line each; a client is served again once a slot is free.
    """
    process, port, watcher, _ = await startGateway(
        gateway_process, tmp_path, f'[limits]\nmax_connections = 1\n'
                                   f'[[pool.chat.backend]]\nurl = "{BACKEND}"\n')
    held = Factory.forProtocol(Protocol)
    holder = await TCP4ClientEndpoint(reactor, "127.0.0.1", process.port).connect(held)
    health = b"GET /_gateway/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    answers = [await rawExchange(process.port, health) for _ in range(30)]
    assert all(a.startswith(b"HTTP/1.1 503 ") for a in answers)
    assert len(watcher.matching(r"connection\(s\) dropped")) == 1
    holder.transport.loseConnection()
    for _ in range(200):
        answer = await rawExchange(process.port, health)
        if not answer.startswith(b"HTTP/1.1 503 "):
            break
    assert answer.startswith(b"HTTP/1.1 200 ")
    process.signal("TERM")
    assert await process.wait() == 0
    lines = watcher.matching(r"connection\(s\) dropped")
    assert len(lines) == 2
    n, total = re.search(r"gateway: (\d+) connection\(s\) dropped \(max_connections \1\); "
                         r"(\d+) since start-up", lines[1]).group(1, 2)
    assert int(total) == int(n) + 1 >= 30


def test_dropped_counted_once_per_interval() -> None:
    """
    L{DroppedConnections} logs the first drop at once and the rest at most
    once per L{DROP_LOG_INTERVAL}, with the count by reason since the last
    line; Twisted's accept errors are counted, not logged, and its other
    events pass on.
    """
    clock = Clock()
    dropped = DroppedConnections(clock)
    port = type("Port", (), {})()
    from twisted.logger import Logger

    port._logger = Logger(namespace="twisted.internet.tcp.Port")
    dropped.watch(port)
    with capturedLogs() as events:
        for _ in range(3):
            dropped.dropped("max_connections")
            port._logger.info("EMFILE encountered; releasing reserved file descriptor.")
            port._logger.info("EMFILE recovery: Closed socket from {address}", address="x")
            port._logger.info("Re-reserving EMFILE recovery file descriptor.")
            port._logger.info("Could not accept new connection ({acceptError})", acceptError="ENFILE")
        port._logger.info("something else")
        clock.advance(DROP_LOG_INTERVAL)
        clock.advance(DROP_LOG_INTERVAL)
        dropped.dropped("EMFILE")
        dropped.stop()
    lines = [e for e in events if "dropped" in e.get("log_format", "")]
    assert [(e["n"], e["reasons"], e["total"]) for e in lines] == [
        (1, "max_connections 1", 1), (8, "EMFILE 3, ENFILE 3, max_connections 2", 9),
        (1, "EMFILE 1", 10),
    ]
    assert [e["log_format"] for e in events if "EMFILE" in e.get("log_format", "")
            or "accept" in e.get("log_format", "")] == []
    assert any(e.get("log_format") == "something else" for e in events)
    assert not clock.getDelayedCalls()
