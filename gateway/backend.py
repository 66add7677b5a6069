"""
Connections to backends: the one place that turns a L{Backend} into a
client endpoint (plain TCP for C{ws://}, TLS for C{wss://}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint

if TYPE_CHECKING:
    from .pool import Backend

__all__ = ["backendEndpoint", "hostHeader"]


def backendEndpoint(reactor, backend: Backend, timeout: float) -> IStreamClientEndpoint:
    """
    @param reactor: the reactor to connect with.
    @param backend: where to connect.
    @param timeout: seconds a TCP connect may take.
    @return: an endpoint that connects to C{backend}, through TLS (with the
        backend's host name verified) when its URL is C{wss://}.
    """
    endpoint: IStreamClientEndpoint = HostnameEndpoint(
        reactor, backend.host, backend.port, timeout=timeout
    )
    if backend.secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(backend.host), endpoint)
    return endpoint


def hostHeader(backend: Backend) -> bytes:
    """
    @return: the C{Host} header value for requests to C{backend}.
    """
    host = backend.host
    if ":" in host:
        host = f"[{host}]"
    default = 443 if backend.secure else 80
    if backend.port == default:
        return host.encode("idna")
    return f"{host}:{backend.port}".encode("idna")
