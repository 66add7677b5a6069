"""
An echo backend in a process of its own (the gateway's test echo server,
L{gateway.demo.EchoServerFactory}), so that a test can kill it with SIGKILL
and start it again on the same port.  Usage: C{python echo_server.py NAME
[PORT]}; it prints C{listening on PORT} once it listens on 127.0.0.1.
"""

import sys

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from gateway.demo import EchoServerFactory


def main() -> None:
    name = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    factory = EchoServerFactory(name)

    def listening(listener):
        print(f"listening on {listener.getHost().port}", flush=True)

    def failed(failure):
        print(f"cannot listen: {failure.getErrorMessage()}", flush=True)
        reactor.stop()

    d = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(factory)
    d.addCallbacks(listening, failed)
    reactor.run()


if __name__ == "__main__":
    main()
