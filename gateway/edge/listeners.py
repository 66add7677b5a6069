"""
The gateway's client listeners as endpoints: an endpoint string parsed
into a server endpoint (nothing bound), a C{haproxy:} one with the PROXY
header read first (L{gateway.edge.proxy}), and a listen backlog for TCP and
TLS listeners that set none.  Used by the service, and by a supervisor of
workers, which binds the same listeners for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.internet.endpoints import serverFromString

from ..errors import ConfigError
from ..wire.forwarded import TrustedProxies
from .proxy import proxiedEndpoint, proxyEndpoint

__all__ = ["ProxyHeaders", "parseEndpoint", "DEFAULT_BACKLOG", "withBacklog"]


@dataclass(frozen=True)
class ProxyHeaders:
    """
    What a C{haproxy:} listener is given (L{gateway.edge.proxy.proxyEndpoint}).
    """

    trusted: TrustedProxies
    timeout: float
    dropped: Callable[[str], None]


def parseEndpoint(reactor, key: str, description: str, backlog: bool = False,
                   proxied: ProxyHeaders | None = None, mayProxy: bool = False):
    """
    @param backlog: add a listen backlog (L{withBacklog}).
    @param proxied: for a C{haproxy:} listener, who may send PROXY headers
        (without it, the endpoint is only checked).
    @param mayProxy: whether C{description} may be a C{haproxy:} listener
        (the clients' listeners; not the admin API's).
    @return: the server endpoint C{description} names (nothing is bound).
    @raise ConfigError: naming C{key} when it is not a usable endpoint.
    """

    def parse(reactor, description: str):
        return serverFromString(reactor, withBacklog(description) if backlog else description)

    try:
        inner = proxiedEndpoint(description)
        if inner is None:
            return parse(reactor, description)
        if not mayProxy:
            raise ConfigError(f"{key}: {description!r}: only the gateway's listen endpoints read PROXY headers")
        if proxied is None:
            proxied = ProxyHeaders(TrustedProxies(), 1.0, lambda reason: None)
        return proxyEndpoint(reactor, inner, trusted=proxied.trusted, timeout=proxied.timeout,
                             dropped=proxied.dropped, parse=parse)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{key}: {description!r} is not a usable endpoint: {e}") from None


#: The listen backlog of TCP and TLS listeners that do not set one (nginx's
#: default; Twisted's own, 50, drops connections in a burst of handshakes).
DEFAULT_BACKLOG = 511


def withBacklog(description: str) -> str:
    """
    @return: the endpoint string C{description}, with C{backlog=511} added
        when it is a TCP or TLS listener that does not set a backlog.
    """
    kind = description.split(":", 1)[0].lower()
    if kind in ("tcp", "tcp6", "ssl") and "backlog=" not in description:
        return f"{description}:backlog={DEFAULT_BACKLOG}"
    return description
