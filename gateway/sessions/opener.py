"""
Opening sessions' backend connections (L{SessionOpener}): a new session's
first one, a takeover's (L{SessionOpener.reopen}) and the next one after a
failover or a move (L{SessionOpener.relink}), all through one link opener
and one "this backend first" step.

The composition root (L{gateway.service}) makes one and gives it to the
session registry and to the cluster; nothing else opens backend links for
sessions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from zope.interface import implementer

from ..backends.link import connectToPool, openBackendLink
from ..errors import BackendRefused, BackendUnreachable, NoBackendAvailable, ProtocolError
from ..interfaces import IConnectObserver, ISessionOpener
from ..wire.forwarded import clientHeaders, forwardedHeaders

if TYPE_CHECKING:
    from ..backends.pool import Backend, ConnectionSlot, Pool
    from ..config import GatewayConfig
    from .session import Session

__all__ = ["SessionOpener"]


@implementer(ISessionOpener)
class SessionOpener:
    """
    Opens the backend links of one gateway's sessions, and reports each
    connect to passive health (an L{IConnectObserver}).

    @ivar pools: the gateway's pools by name (the service's own mapping,
        which a reload changes in place).
    """

    def __init__(self, reactor, config: GatewayConfig, pools: Mapping[str, Pool], sessionMap,
                 trustedProxies, health: IConnectObserver) -> None:
        self.reactor = reactor
        self.config = config
        self.pools = pools
        self.sessionMap = sessionMap
        self.trustedProxies = trustedProxies
        self.health = health

    def pool(self, name: str) -> Pool | None:
        """
        @return: the pool called C{name}, if any.
        """
        return self.pools.get(name)

    async def open(self, route, headers: dict[str, str]) -> tuple[Backend, Any, tuple]:
        """
        Connect a new session's backend link for C{route} (a
        L{gateway.site.Route}) with C{headers} first, then the forwarded
        headers, the cookies, C{Authorization} and C{User-Agent}.

        @return: the backend (holding the link's slot), the unbound link,
            and the C{(target, headers, origin)} the session's next backend
            connections are opened with.
        @raise NoBackendAvailable: when no backend can be had.
        @raise gateway.errors.BackendRefused: when the backend refused the
            handshake (passed on to the client; the session does not open).
        """
        head = route.head
        headers = self._backendHeaders(route, headers)
        header = head.get(b"origin")
        origin = header.decode("latin-1") if header else None
        connect = self._linkOpener(head.target, headers, origin)
        slot, link = await connectToPool(route.pool, route.key, route.sticky, self.sessionMap, self.health,
                                         connect)
        return slot.backend, link, (head.target, headers, origin)

    def _linkOpener(self, target: bytes, headers: dict[str, str], origin: str | None):
        """
        @return: C{connect(slot, timeout=None)}, opening a session's
            backend link (which holds C{slot}) for request target C{target}
            with C{headers} (the connect timeout unless C{timeout} is given).
        """

        def connect(slot: ConnectionSlot, timeout: float | None = None):
            return openBackendLink(
                self.reactor, slot, target, headers,
                connectTimeout=timeout or self.config.timeouts.connect,
                maxMessageBytes=self.config.session.maxMessageBytes,
                origin=origin,
                maxHeadBytes=self.config.limits.maxHeaderBytes,
            )

        return connect

    async def _linkTo(self, pool: Pool, connect, prefer: Backend | None, *, only: bool = False,
                      timeout: float | None = None, exclude=()) -> tuple[Backend, Any]:
        """
        Connect to C{prefer} while it is available (with C{only}, to it or
        nothing), else to a backend of C{pool} the balancer chooses, other
        than those in C{exclude}.

        @raise NoBackendAvailable: when no backend can be had.
        """
        if prefer is not None and (only or prefer.available()):
            slot = prefer.reserve()
            try:
                return prefer, await connect(slot, timeout)
            except BackendRefused as e:
                slot.release()
                self.health.answered(pool, prefer, e.status)  # an answer, not a failed connect
                raise
            except (BackendUnreachable, ProtocolError, OSError) as e:
                slot.release()
                if only:
                    raise NoBackendAvailable(f"backend {prefer.name}: {e}") from None
                self.health.connectFailed(pool, prefer, str(e))
        slot, link = await connectToPool(pool, None, False, self.sessionMap, self.health, connect,
                                         exclude=exclude)
        return slot.backend, link

    async def reopen(self, pool: Pool, name: str, target: bytes, headers: dict[str, str],
                     origin: str | None) -> tuple[Backend, Any]:
        """
        Open a backend link for a session taken over from another node: to
        backend C{name} while it is available, else as for a new session.

        @raise NoBackendAvailable: when no backend can be had.
        """
        return await self._linkTo(pool, self._linkOpener(target, headers, origin), pool.backend(name))

    async def relink(self, session: Session, prefer: Backend | None, avoid: Backend | None,
                     window: float | None, force: bool = False) -> tuple[Backend, Any]:
        """
        Open the next backend connection of C{session} (a failover or a
        move), with its resume headers
        (L{gateway.sessions.upstream.Upstream.resumeHeaders}): to C{prefer} when
        given (only C{prefer}, within a failover window of C{window} seconds
        left; with C{force}, even while it drains), else to a backend the
        balancer chooses, other than C{avoid} when another will do.

        @return: the backend and the link (holding the connection's slot,
            which it releases when closed), not yet bound.
        @raise NoBackendAvailable: when no backend can be had now.
        """
        pool = session.pool
        upstream = session.upstream
        target, _, origin = upstream.origin
        only = force or window is not None  # that backend or nothing, this time
        if prefer is not None and (prefer not in pool.backends or (window is not None and prefer.draining)):
            if only:
                raise NoBackendAvailable(f"backend {prefer.name} takes no sessions now")
            prefer = None
        timeout = None if window is None else max(0.1, min(window, self.config.timeouts.connect))
        exclude = [avoid] if avoid is not None and any(
            b.available() for b in pool.backends if b is not avoid) else []
        return await self._linkTo(pool, self._linkOpener(target, upstream.resumeHeaders(), origin),
                                  prefer, only=only, timeout=timeout, exclude=exclude)

    def _backendHeaders(self, route, first: dict[str, str]) -> dict[str, str]:
        head = route.head
        headers = dict(first)
        for name, value in forwardedHeaders(head, route.peer, route.secure, self.trustedProxies):
            headers[name.decode("ascii")] = value.decode("latin-1")
        # Only these three are copied, and not when the client named one in Connection.
        passed: dict[bytes, list[bytes]] = {}
        for name, value in clientHeaders(head):
            passed.setdefault(name.lower(), []).append(value)
        cookies = passed.get(b"cookie")
        if cookies:
            headers["Cookie"] = "; ".join(c.decode("latin-1") for c in cookies)
        for name in (b"authorization", b"user-agent"):
            value = passed.get(name, [None])[0]
            if value is not None:
                headers[name.decode("ascii").title()] = value.decode("latin-1")
        return headers
