"""
Backends and pools: the live state the balancers and health checks work on,
and the operator's changes to it (drain, enable, weight; backends added and
retired by a configuration reload).

A backend's count of open connections has one owner: L{Backend.reserve}
hands out a L{ConnectionSlot} per connection, and only releasing that slot
(once, whatever happens after) takes the connection off the count, so a
connection can neither be forgotten by the count nor taken off it twice.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Collection, Sequence

from ..config.model import MAX_WEIGHT
from ..errors import BackendRetired, InvalidWeight, PoolError, UnknownBackend, UnknownPool

if TYPE_CHECKING:
    from ..config import BackendConfig
    from ..interfaces import IBalancer
    from .routing import KeySpec

__all__ = [
    "Backend",
    "ConnectionSlot",
    "NO_SLOT",
    "Pool",
    "MAX_WEIGHT",
    "checkWeight",
    "PoolError",
    "UnknownPool",
    "UnknownBackend",
    "BackendRetired",
    "InvalidWeight",
]


def checkWeight(value: object) -> int:
    """
    @return: C{value}, when it is an integer (not a boolean) from 1 to
        L{MAX_WEIGHT}.
    @raise InvalidWeight: otherwise, saying so.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WEIGHT:
        try:
            shown = json.dumps(value)  # the admin API's values come from JSON
        except (TypeError, ValueError):
            shown = repr(value)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise InvalidWeight(f"weight must be an integer from 1 to {MAX_WEIGHT}, not {shown}")
    return value


class ConnectionSlot:
    """
    One connection counted against a backend, from L{Backend.reserve} to
    L{release}.  Whoever holds the connection (a tunnel, a session's backend
    link, a connect attempt) holds its slot.

    @ivar backend: the backend it counts against (L{None} for L{NO_SLOT}).
    """

    __slots__ = ("backend", "_held")

    def __init__(self, backend: Backend | None, held: bool) -> None:
        """
        Made by L{Backend.reserve} (and once, for L{NO_SLOT}): a slot made
        elsewhere would not be on the count.
        """
        self.backend = backend
        self._held = held

    @property
    def held(self) -> bool:
        """
        Whether it is still on its backend's count (not released yet).
        """
        return self._held

    def release(self) -> None:
        """
        Take the connection off its backend's count; a slot already released
        is left alone, so that every path that ends a connection may release
        it without counting who did first.
        """
        if self._held:
            self._held = False
            self.backend._connections -= 1

    def __repr__(self) -> str:
        name = self.backend.name if self.backend is not None else None
        return f"<ConnectionSlot {name} {'held' if self._held else 'released'}>"


#: The slot of a holder that holds no connection yet: releasing it does
#: nothing, and its C{backend} is L{None}.
NO_SLOT = ConnectionSlot(None, False)


class Backend:
    """
    One backend WebSocket server and its live state.

    @ivar connections: connections this gateway has open to it (tunnels plus
        handshakes in progress): the slots of L{reserve} not yet released.
        Read-only.
    @ivar remote: connections other gateway nodes had open to it at their
        last heartbeat (with several nodes sharing Redis; 0 otherwise).
    @ivar healthy: false while health checks (active or passive) say it is
        down; a down backend gets no new connections.
    @ivar draining: true while an operator drains it, or once it is retired;
        no new connections.
    @ivar retired: removed from the configuration by a reload: draining, and
        taken out of its pool once its last connection ends.
    """

    __slots__ = (
        "name",
        "url",
        "host",
        "port",
        "secure",
        "weight",
        "maxConnections",
        "_connections",
        "remote",
        "healthy",
        "draining",
        "retired",
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
        self._connections = 0
        self.remote = 0
        self.healthy = True
        self.draining = False
        self.retired = False

    @property
    def connections(self) -> int:
        """
        Connections this gateway has open to it (see L{reserve}).
        """
        return self._connections

    def reserve(self) -> ConnectionSlot:
        """
        Count one more connection to this backend, whether or not it is
        available (the caller chose it).

        @return: the connection's slot, to release when the connection ends
            (or the attempt fails).
        """
        self._connections += 1
        return ConnectionSlot(self, True)

    def full(self) -> bool:
        """
        @return: whether the backend is at its connection limit, counting
            the connections of every gateway node.
        """
        return 0 < self.maxConnections <= self.connections + self.remote

    def available(self) -> bool:
        """
        @return: whether the backend may be given a new connection.
        """
        return self.healthy and not self.draining and not self.full()

    def __repr__(self) -> str:
        return (
            f"<Backend {self.name} {self.url} conns={self.connections}"
            f"{'' if self.healthy else ' down'}{' draining' if self.draining else ''}"
            f"{' retired' if self.retired else ''}>"
        )

    def drain(self) -> bool:
        """
        Give it no new connections; those it has are left alone.

        @return: whether it was not draining before.
        """
        was, self.draining = self.draining, True
        return not was

    def enable(self) -> bool:
        """
        Give it new connections again (when healthy and not full).

        @return: whether it was draining before.
        @raise BackendRetired: when it was removed from the configuration.
        """
        if self.retired:
            raise BackendRetired(
                f"backend {self.name!r} was removed from the configuration; add it back "
                "to the file and reload"
            )
        was, self.draining = self.draining, False
        return was

    def setWeight(self, weight: object) -> int:
        """
        Change its share of new connections.

        @return: the previous weight.
        @raise InvalidWeight: unless C{weight} is an integer from 1 to
            L{MAX_WEIGHT}.
        """
        was, self.weight = self.weight, checkWeight(weight)
        return was

    def sameAddress(self, config: BackendConfig) -> bool:
        """
        @return: whether C{config} names the same server (host, port, TLS).
        """
        return (self.host, self.port, self.secure) == (config.host, config.port, config.secure)

    @classmethod
    def fromConfig(cls, config: BackendConfig) -> Backend:
        """
        @return: a new backend, up and not draining, as C{config} describes.
        """
        return cls(
            config.name, config.host, config.port, secure=config.secure, weight=config.weight,
            maxConnections=config.maxConnections, url=config.url,
        )


class Pool:
    """
    Backends that serve the same application, with the balancer that spreads
    connections over them.

    @ivar affinity: the pool's key spec as configured, or L{None} (see
        L{gateway.config.PoolConfig}).
    @ivar keySpec: the same, parsed.
    @ivar failover: C{"replay"}, C{"notify"} or C{"close"}; with
        C{failoverWindow}, C{failoverTimeout}, C{drain}, C{drainRate} and
        C{rebalanceRate}, as in L{gateway.config.PoolConfig}.
    """

    failover = "replay"
    failoverWindow = 2.0
    failoverTimeout = 30.0
    drain = "move"
    drainRate = 20.0
    rebalanceRate = 2.0

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

    def get(self, name: str) -> Backend:
        """
        @return: the backend called C{name}.
        @raise UnknownBackend: when the pool has none.
        """
        backend = self.backend(name)
        if backend is None:
            raise UnknownBackend(f"pool {self.name!r} has no backend {name!r}")
        return backend

    def update(self, configs: Sequence[BackendConfig]) -> tuple[list[str], list[Backend]]:
        """
        Make the pool's backends those of C{configs} (a reload): add the new
        ones, retire those left out (draining, and taken out once their last
        connection ends, see L{prune}), bring back a retired one named again,
        and give the others the weight and connection limit the file gives
        them.  A backend drained by the operator stays drained.

        Call L{checkUpdate} first: this assumes it passed.

        @return: one line per change, and the backends newly retired.
        """
        changes: list[str] = []
        retired: list[Backend] = []
        wanted = {config.name: config for config in configs}
        for backend in self.backends:
            if backend.name not in wanted and not backend.retired:
                backend.retired = True
                if backend.drain():
                    retired.append(backend)
                changes.append(f"pool {self.name}: backend {backend.name} removed (draining)")
        for config in configs:
            backend = self.backend(config.name)
            if backend is None:
                self.backends.append(Backend.fromConfig(config))
                changes.append(f"pool {self.name}: backend {config.name} added")
                continue
            if backend.retired:
                backend.retired = False
                backend.draining = False
                changes.append(f"pool {self.name}: backend {config.name} added back")
            if backend.weight != config.weight:
                changes.append(
                    f"pool {self.name}: backend {config.name} weight {backend.weight} -> {config.weight}"
                )
                backend.weight = config.weight
            if backend.maxConnections != config.maxConnections:
                changes.append(
                    f"pool {self.name}: backend {config.name} max_connections "
                    f"{backend.maxConnections} -> {config.maxConnections}"
                )
                backend.maxConnections = config.maxConnections
        return changes, retired

    def checkUpdate(self, configs: Sequence[BackendConfig]) -> str | None:
        """
        @return: why L{update} with C{configs} is refused (a backend whose
            name is kept but whose address changed: the old server's
            connections and affinity records would be taken for the new
            one's), or L{None}.
        """
        for config in configs:
            backend = self.backend(config.name)
            if backend is not None and not backend.sameAddress(config):
                return (
                    f"pool {self.name}: backend {config.name!r} now has the URL {config.url!r} "
                    f"instead of {backend.url!r}: give the new server another name"
                )
        return None

    def prune(self) -> list[Backend]:
        """
        Take out the retired backends whose last connection has ended.

        @return: the backends taken out.
        """
        gone = [b for b in self.backends if b.retired and b.connections <= 0]
        if gone:
            self.backends = [b for b in self.backends if b not in gone]
        return gone

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
        if all(b.draining for b in self.backends):
            return f"every backend of pool {self.name!r} is draining"
        if all(b.full() for b in self.backends if b.healthy and not b.draining) and any(
            b.healthy and not b.draining for b in self.backends
        ):
            return f"every backend of pool {self.name!r} is at its connection limit"
        return f"no backend of pool {self.name!r} is up"
