"""
Transparent mode against the Autobahn WebSocket test cases (kosoku, from
PyPI, run by C{autobahn_cases.py} in a process of its own): every case run
against an echo backend directly and through a real C{twistd gateway} must
get the same verdicts, so that the gateway changes nothing a client or a
backend can see of RFC 6455.

The client-facing WebSockets' reading fast path (L{gateway.transports.lean})
gets the same cases: an echo server on it must get the verdicts of an
Autobahn echo server without it.

The non-compression cases (1 to 10, about 300) run on every run; the
compression cases (12 and 13, permessage-deflate, several hundred more)
take minutes, and run with::

    TXGATEWAY_AUTOBAHN_CASES='12.*,13.*' .venv/bin/python -m pytest tests/integration/test_autobahn.py -s
"""

from __future__ import annotations

import collections
import json
import os
import sys
from pathlib import Path

import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import utils

from gateway.transports.lean import DirectMessages

HERE = Path(__file__).parent
#: Cases to run (comma-separated ids or globs); all but compression by default.
CASES = os.environ.get("TXGATEWAY_AUTOBAHN_CASES", "")
EXCLUDED = "" if CASES else "12.*,13.*"
PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}


async def verdicts(url: str) -> dict[str, list[str]]:
    """
    @return: each case's verdicts against C{url}.
    """
    running = utils.getProcessOutputAndValue(
        sys.executable, [str(HERE / "autobahn_cases.py"), url, CASES, EXCLUDED], env=dict(os.environ))
    # A process ended by a signal fails with (out, err, signal), not an exception.
    running.addErrback(lambda f: (*f.value[:2], f"signal {f.value[2]}") if isinstance(f.value, tuple) else f)
    out, err, code = await running
    assert code == 0, f"autobahn_cases.py ended with {code}: {err.decode()[-2000:]}"
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest_twisted.ensureDeferred
async def test_sameVerdictsDirectAndThroughTheGateway(echo_backends, gateway_process):
    """
    Every case passes against the echo backend directly, and gets the same
    verdicts, message exchange and closing handshake, through the gateway.
    """
    [backend] = await echo_backends(1)
    direct = await verdicts(f"ws://127.0.0.1:{backend.port}")
    gateway = await gateway_process("--backend", f"ws://127.0.0.1:{backend.port}")
    through = await verdicts(f"ws://127.0.0.1:{gateway.port}")
    counts = collections.Counter(tuple(v) for v in through.values())
    print(f"\nAutobahn cases: {len(direct)} direct, {len(through)} through the gateway; "
          f"through the gateway: {dict(counts)}")
    assert direct and set(direct) == set(through)
    assert all(set(v) <= PASSING for v in direct.values()), {k: v for k, v in direct.items()
                                                              if not set(v) <= PASSING}
    differ = {case: (direct[case], through[case]) for case in direct if direct[case] != through[case]}
    assert differ == {}


class AutobahnEcho(WebSocketServerProtocol):
    """
    Autobahn's server, echoing every message.
    """

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class LeanEcho(DirectMessages, AutobahnEcho):
    """
    The same on the client-facing WebSockets' fast paths.
    """


def listenEcho(protocol):
    """
    @return: the listening port of an echo server of C{protocol}, with the
        size bound of the project's test echo backends (64 MiB: the cases
        send up to 16 MiB).
    """
    from twisted.internet import reactor

    factory = WebSocketServerFactory()
    factory.protocol = protocol
    factory.setProtocolOptions(maxMessagePayloadSize=64 << 20, maxFramePayloadSize=64 << 20,
                               autoPingInterval=0)
    return reactor.listenTCP(0, factory, interface="127.0.0.1")


@pytest_twisted.ensureDeferred
async def test_fastPathSameVerdicts():
    """
    An echo server reading and writing on the fast paths gets every case's
    verdict of Autobahn's own echo server.
    """
    ports = [listenEcho(AutobahnEcho), listenEcho(LeanEcho)]
    try:
        plain, lean = [await verdicts(f"ws://127.0.0.1:{p.getHost().port}") for p in ports]
    finally:
        for port in ports:
            await port.stopListening()
    counts = collections.Counter(tuple(v) for v in lean.values())
    print(f"\nAutobahn cases: {len(plain)} against Autobahn's echo, {len(lean)} against the fast path's; "
          f"the fast path's: {dict(counts)}")
    assert plain and set(plain) == set(lean)
    assert all(set(v) <= PASSING for v in lean.values()), {k: (v, plain[k]) for k, v in lean.items()
                                                            if not set(v) <= PASSING}
    # Where a case's verdict hangs on timing (4.2.3: whether the echo of a
    # message leaves before the next frame fails the connection), OK and
    # NON-STRICT differ between runs of the same server; nothing else may.
    strictness = {"NON-STRICT": "OK"}
    differ = {case: (plain[case], lean[case]) for case in plain
              if [strictness.get(v, v) for v in plain[case]] != [strictness.get(v, v) for v in lean[case]]}
    assert differ == {}
