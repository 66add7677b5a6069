"""
C{python -m gateway.client URL [--transport auto|websocket|polling]
[--max-delay S] [--expect N]}: send standard input lines
over a C{txgateway.v1} session, print what comes back (see
L{gateway.client._cli}).
"""

import sys

from twisted.internet.task import react

from ._cli import main

if __name__ == "__main__":
    react(main, sys.argv[1:])
