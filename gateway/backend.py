"""
Connections to backends: the one place that turns a L{Backend} into a
client endpoint (plain TCP for C{ws://}, TLS for C{wss://}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Awaitable, Callable, Protocol, TypeVar

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint

from .errors import BackendUnreachable, NoBackendAvailable, ProtocolError

if TYPE_CHECKING:
    from .interfaces import ISessionMap
    from .pool import Backend, Pool

__all__ = ["backendEndpoint", "hostHeader", "connectToPool", "ConnectObserver"]

T = TypeVar("T")


class ConnectObserver(Protocol):
    """
    Told how each connect attempt went (passive health checks).
    """

    def connectFailed(self, pool: Pool, backend: Backend, reason: str) -> None:
        """
        An attempt to C{backend} failed.
        """

    def connectSucceeded(self, pool: Pool, backend: Backend) -> None:
        """
        An attempt to C{backend} succeeded.
        """


async def connectToPool(
    pool: Pool,
    key: bytes | None,
    sticky: bool,
    sessionMap: ISessionMap,
    observer: ConnectObserver,
    connect: Callable[[Backend], Awaitable[T]],
) -> tuple[Backend, T]:
    """
    Choose a backend of C{pool} and connect to it, trying the next candidate
    when one cannot be reached, up to C{pool.connectAttempts} backends.

    With C{sticky}, the backend recorded for C{key} in the session map is
    tried first while it is available, and the backend that worked is
    recorded.

    @param connect: makes one attempt; fails with L{BackendUnreachable},
        L{ProtocolError} or L{OSError} when that backend cannot serve.
    @return: the backend, holding one connection slot for the caller to
        release (C{connections -= 1}) when done, and what C{connect}
        returned.
    @raise NoBackendAvailable: with a reason safe to show a client.
    """
    exclude: set[Backend] = set()
    lastError: Exception | None = None
    backend = None
    if sticky:
        name = await sessionMap.getAffinity(pool.name, key)
        if name is not None:
            recorded = pool.backend(name)
            if recorded is not None and recorded.available():
                backend = recorded
    for _ in range(pool.connectAttempts):
        if backend is None:
            backend = pool.choose(key, exclude)
        if backend is None:
            break
        backend.connections += 1
        try:
            result = await connect(backend)
        except (BackendUnreachable, ProtocolError, OSError) as e:
            backend.connections -= 1
            lastError = e
            observer.connectFailed(pool, backend, str(e))
            exclude.add(backend)
            backend = None
            continue
        except BaseException:
            backend.connections -= 1
            raise
        observer.connectSucceeded(pool, backend)
        if sticky:
            await sessionMap.setAffinity(pool.name, key, backend.name, pool.affinityTtl)
        return backend, result
    if lastError is not None:
        raise NoBackendAvailable(f"no backend of pool {pool.name!r} could be reached ({lastError})")
    raise NoBackendAvailable(pool.noneAvailableReason())


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
