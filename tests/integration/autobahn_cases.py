"""
Run the Autobahn WebSocket test cases (kosoku, from PyPI) against one
server and print each case's verdicts as one JSON object:
C{{"1.1.1": ["OK", "OK"], ...}} (message exchange, closing handshake).

    python autobahn_cases.py ws://127.0.0.1:PORT [CASES [EXCLUDED]]

CASES and EXCLUDED are comma-separated case ids or globs (C{"1.*,9.7.1"});
no CASES runs them all.  Run by C{tests/integration/test_autobahn.py}, in a
process of its own (kosoku runs on asyncio).
"""

import asyncio
import json
import os
import sys

from kosoku import FailureError, run_fuzzingclient


async def main(url: str, cases: list[str], excluded: list[str]) -> dict:
    try:
        results = await run_fuzzingclient(url, cases=cases or None, exclude_cases=excluded or None,
                                          concurrency=4)
    except FailureError as e:
        results = e.results
    return {r.case_id: [r.behavior.value, r.behavior_close.value] for r in results}


if __name__ == "__main__":
    args = sys.argv[1:] + ["", ""]
    split = lambda text: [c for c in text.split(",") if c]  # noqa: E731
    print(json.dumps(asyncio.run(main(args[0], split(args[1]), split(args[2])))), flush=True)
    # kosoku's native runtime can abort while the interpreter shuts down
    # (SIGABRT after the results are out): leave without that shutdown.
    os._exit(0)
