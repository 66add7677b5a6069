"""
Backends and pools: the live state the balancers and health checks work on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Collection, Sequence

if TYPE_CHECKING:
    from .interfaces import IBalancer
    from .routing import KeySpec

__all__ = ["Backend", "Pool"]


class Backend:
    """
    One backend WebSocket server and its live state.

    @ivar connections: connections this gateway has open to it (tunnels plus
        handshakes in progress).
    @ivar healthy: false while health checks (active or passive) say it is
        down; a down backend gets no new connections.
    @ivar draining: true while an operator drains it; no new connections.
    """

    __slots__ = (
        "name",
        "url",
        "host",
        "port",
        "secure",
        "weight",
        "maxConnections",
        "connections",
        "healthy",
        "draining",
    )

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        *,
        secure: bool = False,
        weight: int = 1,
        maxConnections: int = 0,
        url: str | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.secure = secure
        self.weight = weight
        self.maxConnections = maxConnections
        self.url = url or f"{'wss' if secure else 'ws'}://{host}:{port}"
        self.connections = 0
        self.healthy = True
        self.draining = False

    def full(self) -> bool:
        """
        @return: whether the backend is at its connection limit.
        """
        return 0 < self.maxConnections <= self.connections

    def available(self) -> bool:
        """
        @return: whether the backend may be given a new connection.
        """
        return self.healthy and not self.draining and not self.full()

    def __repr__(self) -> str:
        return (
            f"<Backend {self.name} {self.url} conns={self.connections}"
            f"{'' if self.healthy else ' down'}{' draining' if self.draining else ''}>"
        )


class Pool:
    """
    Backends that serve the same application, with the balancer that spreads
    connections over them.

    @ivar affinity: the pool's key spec as configured, or L{None} (see
        L{gateway.config.PoolConfig}).
    @ivar keySpec: the same, parsed.
    """

    def __init__(
        self,
        name: str,
        backends: Sequence[Backend],
        balancer: IBalancer,
        *,
        affinity: str | None = None,
        affinityTtl: float = 3600.0,
        connectAttempts: int = 3,
        keySpec: KeySpec | None = None,
    ) -> None:
        self.name = name
        self.backends = list(backends)
        self.balancer = balancer
        self.affinity = affinity
        self.affinityTtl = affinityTtl
        self.connectAttempts = connectAttempts
        self.keySpec = keySpec

    def backend(self, name: str) -> Backend | None:
        """
        @return: the backend called C{name}, or L{None}.
        """
        for b in self.backends:
            if b.name == name:
                return b
        return None

    def choose(
        self, key: bytes | None, exclude: Collection[Backend] = ()
    ) -> Backend | None:
        """
        Ask the balancer for an available backend.
        """
        return self.balancer.choose(self.backends, key, exclude)

    def noneAvailableReason(self) -> str:
        """
        @return: a sentence, safe to show a client, saying why no backend of
            this pool can take a connection.
        """
        if not self.backends:
            return f"pool {self.name!r} has no backends"
        if all(b.full() for b in self.backends if b.healthy and not b.draining) and any(
            b.healthy and not b.draining for b in self.backends
        ):
            return f"every backend of pool {self.name!r} is at its connection limit"
        return f"no backend of pool {self.name!r} is up"
