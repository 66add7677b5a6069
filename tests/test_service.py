"""
L{gateway.service} without the network: what it builds from a
configuration.
"""

from __future__ import annotations

import pytest

from gateway.service import DEFAULT_BACKLOG, withBacklog


@pytest.mark.parametrize(
    "given, expected",
    [
        ("tcp:8080", f"tcp:8080:backlog={DEFAULT_BACKLOG}"),
        ("tcp:0:interface=127.0.0.1", f"tcp:0:interface=127.0.0.1:backlog={DEFAULT_BACKLOG}"),
        ("ssl:8443:privateKey=k.pem", f"ssl:8443:privateKey=k.pem:backlog={DEFAULT_BACKLOG}"),
        ("tcp:8080:backlog=64", "tcp:8080:backlog=64"),
        ("unix:/run/gw.sock", "unix:/run/gw.sock"),
    ],
)
def test_withBacklog(given: str, expected: str) -> None:
    """
    TCP and TLS listeners get a backlog of 511 unless they set one (Twisted's
    default of 50 drops connections in a burst of handshakes); other
    endpoints are left as they are.
    """
    assert withBacklog(given) == expected


def test_serviceListenersUseBacklog() -> None:
    """
    The service's listeners are built from the endpoint strings with the
    backlog added.
    """
    from twisted.internet.testing import MemoryReactorClock

    from gateway.config import GatewayConfig
    from gateway.service import GatewayService

    reactor = MemoryReactorClock()
    service = GatewayService(GatewayConfig(listen=("tcp:0:interface=127.0.0.1",), demo=True), reactor)
    [(description, endpoint)] = service.endpoints
    endpoint.listen(service.factory)
    [(port, factory, backlog, interface)] = reactor.tcpServers
    assert backlog == DEFAULT_BACKLOG and interface == "127.0.0.1"
