"""
The gateway as operators run it: real C{twistd -n gateway} processes in front
of the seed set-up's backends (Python ``websockets`` echo servers, each its
own process).
"""

from __future__ import annotations

import os
import sys

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol

from gateway.testing import connectClient, startProcess

SEED = os.path.join(os.path.dirname(__file__), "seed_echo.py")


@pytest_twisted.async_yield_fixture
async def seed_backends():
    """
    C{await seed_backends(n)}: start C{n} seed echo servers as processes;
    killed at the end of the test.
    """
    started = []

    async def start(n: int):
        out = []
        for _ in range(n):
            process = await startProcess([sys.executable, SEED], r"listening on (\d+)")
            started.append(process)
            out.append(f"ws://127.0.0.1:{process.match.group(1)}")
        return out

    yield start
    for process in started:
        process.signal("KILL")
        await process.wait(10)


@pytest_twisted.ensureDeferred
async def test_seed_setup_behind_twistd_gateway(seed_backends, gateway_process):
    """
    Three seed echo servers behind C{twistd gateway --balance hash} (the
    job of nginx C{ip_hash}): clients from 30 addresses are all answered;
    on SIGTERM every client gets a 1001 close and the process exits with
    status 0.
    """
    urls = await seed_backends(3)
    args = []
    for url in urls:
        args += ["--backend", url]
    gateway = await gateway_process(*args, "--balance", "hash")
    clients = await gatherResults([
        Deferred.fromCoroutine(connectClient(gateway.url, bindAddress=f"127.0.3.{i + 1}"))
        for i in range(30)
    ])
    for i, client in enumerate(clients):
        client.send(f"hello {i}")
    for i, client in enumerate(clients):
        assert await client.receive() == (f"Echo: hello {i}".encode(), False)
    gateway.signal("TERM")
    for client in clients:
        wasClean, code, reason = await client.closed.addTimeout(10, reactor)
        assert (code, reason) == (1001, "gateway shutting down")
    # Shut down cleanly within timeouts.shutdown: an orderly end, status 0.
    assert await gateway.wait() == 0


@pytest_twisted.ensureDeferred
async def test_demo_process(gateway_process):
    """
    C{twistd -n gateway --demo} serves the demo with its own echo backends,
    and exits with status 0 on SIGTERM.
    """
    gateway = await gateway_process("--demo")
    client = await connectClient(gateway.url, path="/echo")
    client.send("hi")
    payload, _ = await client.receive()
    assert payload.startswith(b"backend-") and payload.endswith(b": hi")
    await client.close().addTimeout(10, reactor)
    gateway.signal("TERM")
    assert await gateway.wait() == 0


@pytest_twisted.ensureDeferred
async def test_port_in_use_is_one_line_and_non_zero(tmp_path):
    """
    A listener that cannot be bound (port in use) ends twistd with one line
    naming the endpoint, a non-zero status and no traceback.
    """
    from gateway.testing import projectEnvironment

    taken = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    try:
        port = taken.getHost().port
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "gateway", "--listen", f"tcp:{port}:interface=127.0.0.1",
                   "--backend", "ws://127.0.0.1:9"]
        process = await startProcess(command, r"gateway: cannot listen", env=projectEnvironment(),
                                     cwd=str(tmp_path))
        code = await process.wait()
        assert code not in (0, None)
        errors = [line for line in process.output.splitlines() if "gateway:" in line]
        assert len(errors) == 1
        assert errors[0].endswith(
            f"gateway: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "[Errno 98] Address already in use"
        )
        assert "Traceback" not in process.output
    finally:
        await taken.stopListening()


@pytest_twisted.ensureDeferred
async def test_redis_unreachable_is_one_line_and_non_zero(tmp_path):
    """
    Redis unreachable at start-up (nothing listens on its port) ends twistd
    with one line naming the server and why, a non-zero status (what
    C{Restart=on-failure} goes by), its pidfile removed and no traceback.
    """
    from gateway.testing import projectEnvironment

    closed = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
    port = closed.getHost().port
    await closed.stopListening()
    pidfile = tmp_path / "gateway.pid"
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
               "-n", f"--pidfile={pidfile}", "gateway", "--listen", "tcp:0:interface=127.0.0.1",
               "--demo", "--redis", f"redis://127.0.0.1:{port}"]
    process = await startProcess(command, r"gateway: cannot use Redis", env=projectEnvironment(),
                                 cwd=str(tmp_path))
    code = await process.wait()
    assert code == 1, process.output
    errors = [line for line in process.output.splitlines() if "gateway: " in line]
    assert len(errors) == 1, process.output
    assert errors[0].endswith(f"gateway: cannot use Redis at redis://127.0.0.1:{port}/0: could not connect:"
                              " Connection was refused by other side: 111: Connection refused."), errors[0]
    assert "Traceback" not in process.output
    assert not pidfile.exists()
