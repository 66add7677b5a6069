"""
Transparent mode against the Autobahn WebSocket test cases (kosoku, from
PyPI, run by C{autobahn_cases.py} in a process of its own): every case run
against an echo backend directly and through a real C{twistd gateway} must
get the same verdicts, so that the gateway changes nothing a client or a
backend can see of RFC 6455.

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
from twisted.internet import utils

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
