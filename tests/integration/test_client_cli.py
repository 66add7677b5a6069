"""
C{python -m gateway.client URL} as users run it: a child process reading
lines on its standard input, through a real gateway to a real backend, with
its connection cut while it works.
"""

from __future__ import annotations

import sys

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from .helpers import CLI, pause
from gateway.testing import CuttingRelay, projectEnvironment, waitUntil

LINES = 500


@pytest_twisted.ensureDeferred
async def test_cli_echoes_every_line_once_across_cuts(echo_backends, make_gateway):
    """
    Every input line is sent once and its echo printed once, in order, even
    with the connection cut several times; at the end of input the client
    waits for the acknowledgements (and, with --expect, the replies), closes
    the session and exits 0.
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    relay = CuttingRelay(gateway.port)
    port = await relay.start()
    lines = [f"line {i}" for i in range(LINES)]
    cli = CLI(lines)
    args = [sys.executable, "-m", "gateway.client", f"ws://127.0.0.1:{port}/cli",
            "--max-delay", "0.1", "--expect", str(LINES)]
    reactor.spawnProcess(cli, args[0], args, env=projectEnvironment())
    await waitUntil(lambda: backends[0].factory.received, timeout=30)
    for _ in range(5):
        relay.cut()
        await Deferred.fromCoroutine(pause(0.02))
    code = await cli.ended.addTimeout(60, reactor)
    assert code == 0, cli.err.decode()
    assert cli.out.decode().splitlines() == lines
    assert [m.decode() for m in backends[0].factory.received] == lines
    await relay.stop()


