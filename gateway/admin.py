"""
The admin API: JSON over HTTP on a listener of its own, every request
carrying the bearer token of the C{[admin]} table.

It only translates: requests become calls to the node's operator surface
(L{gateway.interfaces.IOperator}: C{drainBackend}, C{enableBackend},
C{setWeight}, C{reload}, the pools), which the gateway service provides, and
its state becomes JSON; C{GET /metrics} answers with the node's metrics
in the Prometheus text format (L{gateway.metrics.scrape}).
docs/operations.md ("Admin API") describes every endpoint.  Requests are
bounded and answered with the helpers of L{gateway.web}.
"""

from __future__ import annotations

import hmac
import json
import math
from collections import Counter, OrderedDict
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http import RESPONSES
from twisted.web.resource import Resource
from twisted.web.server import Request

from .config import Limits, Timeouts
from .errors import ConfigError, NothingToReload, ProtocolError
from .engineio.views import LIST_LIMIT, byBackend, countEngines, listEngines
from .interfaces import ISessionView
from .sessions.states import SessionState
from .statuspage import StatusPage
from .backends.pool import BackendRetired, InvalidWeight, PoolError, UnknownBackend, UnknownPool
from .metrics.scrape import renderMetrics
from .web import BoundedSite, SiteListener, respondJSON
from .wire.http1 import errorPayload
from .wire.protocol import loadJSON

if TYPE_CHECKING:
    from .backends.pool import Backend, Pool
    from .interfaces import IOperator

__all__ = [
    "AdminService",
    "AdminResource",
    "AdminSite",
    "MAX_BODY_BYTES",
    "IDLE_TIMEOUT",
    "REFUSAL_LOG_INTERVAL",
    "AUTH_FAILURE_LIMIT",
    "AUTH_FAILURE_WINDOW",
    "AUTH_BLOCK_TIME",
    "AUTH_TABLE_SIZE",
    "AuthFailures",
    "describeBackend",
    "describePool",
    "countSessions",
]

#: The largest admin request body, in bytes; larger gets 413 before it is read.
MAX_BODY_BYTES = 65536
#: Seconds an admin connection may stay idle before it is closed.
IDLE_TIMEOUT = 60.0
#: Refused (unauthenticated) requests are logged at most once per this many
#: seconds, with the number refused since the last line.
REFUSAL_LOG_INTERVAL = 60.0
#: Failed authentications from one client address within
#: L{AUTH_FAILURE_WINDOW} seconds after which that address is answered 429
#: (with C{Retry-After}, the token not checked) for L{AUTH_BLOCK_TIME}
#: seconds.
AUTH_FAILURE_LIMIT = 10
AUTH_FAILURE_WINDOW = 60.0
AUTH_BLOCK_TIME = 60.0
#: Client addresses whose failures are remembered at most; past it the
#: address that failed least recently is forgotten.
AUTH_TABLE_SIZE = 4096

def describeBackend(backend: Backend, socketio: int = 0) -> dict[str, Any]:
    """
    @param socketio: the Socket.IO sessions this node has on it.
    @return: the JSON form of a backend: C{name}, C{url}, C{state}
        (C{"healthy"} or C{"down"}), C{draining}, C{removed} (taken out of
        the file, leaving once its connections end), C{available} (may get a
        new connection now), C{weight}, C{connections}, C{socketio} (of
        those, the Socket.IO sessions' server connections) and C{limit} (its
        C{max_connections}, L{None} for no limit).
    """
    return {
        "name": backend.name,
        "url": backend.url,
        "state": "healthy" if backend.healthy else "down",
        "draining": backend.draining,
        "removed": backend.retired,
        "available": backend.available(),
        "weight": backend.weight,
        "connections": backend.connections,
        "socketio": socketio,
        "other_nodes": backend.remote,
        "limit": backend.maxConnections or None,
    }


def describePool(pool: Pool, socketio: Mapping[tuple[str, str], int] | None = None) -> dict[str, Any]:
    """
    @param socketio: the node's Socket.IO sessions by pool and backend name
        (L{gateway.engineio.views.byBackend}).
    @return: the JSON form of a pool: C{name} and C{backends}.
    """
    counts = socketio or {}
    return {"name": pool.name,
            "backends": [describeBackend(b, counts.get((pool.name, b.name), 0)) for b in pool.backends]}


def _counts(counter: Counter) -> dict[str, int]:
    return {
        "sessions": sum(counter.values()),
        "attached": counter["attached"],
        "detached": counter["detached"],
    }


def countSessions(sessions: Iterable[ISessionView]) -> dict[str, Any]:
    """
    @param sessions: the node's sessions, as the admin API reads them
        (L{ISessionView}: L{gateway.sessions.session.Session}s).
    @return: C{sessions}, C{attached} and C{detached} counts for the node,
        and the same by pool and, within each, by backend (sessions whose
        backend connection is gone are counted in their pool only); for the
        node, also the sessions between backends (C{switching}), those
        paused by flow control (C{paused}), and the failovers and moves of
        the sessions it holds.
    """
    total: Counter = Counter()
    extra: Counter = Counter()
    byPool: dict[str, Counter] = {}
    byBackend: dict[str, dict[str, Counter]] = {}
    for session in sessions:
        if session.state is SessionState.ENDED:
            continue
        state = session.state.value
        pool = session.pool.name if session.pool is not None else None
        backend = session.backend.name if session.backend is not None else None
        total[state] += 1
        extra["switching"] += session.switching is not None
        extra["paused"] += session.paused
        extra["failovers"] += session.failovers
        extra["moves"] += session.moves
        if pool is None:
            continue
        byPool.setdefault(pool, Counter())[state] += 1
        if backend is not None:
            byBackend.setdefault(pool, {}).setdefault(backend, Counter())[state] += 1
    return {
        **_counts(total),
        **{key: extra[key] for key in ("switching", "paused", "failovers", "moves")},
        "pools": {
            pool: {
                **_counts(counter),
                "backends": {
                    name: _counts(c) for name, c in sorted(byBackend.get(pool, {}).items())
                },
            }
            for pool, counter in sorted(byPool.items())
        },
    }


class _BadRequest(Exception):
    """
    A request the admin API refuses: C{status} and a message for the body.
    """

    def __init__(self, status: int, message: str, headers: tuple = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class AuthFailures:
    """
    Failed admin authentications by client address, in a bounded table: an
    address with L{AUTH_FAILURE_LIMIT} failures within
    L{AUTH_FAILURE_WINDOW} seconds is blocked for L{AUTH_BLOCK_TIME}
    seconds.  Pure: the caller tells the time.
    """

    def __init__(
        self,
        limit: int = AUTH_FAILURE_LIMIT,
        window: float = AUTH_FAILURE_WINDOW,
        blockTime: float = AUTH_BLOCK_TIME,
        size: int = AUTH_TABLE_SIZE,
    ) -> None:
        self.limit = limit
        self.window = window
        self.blockTime = blockTime
        self.size = size
        #: address -> [window start, failures in it, blocked until (or 0)],
        #: the address that failed least recently first.
        self._table: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def blocked(self, address: str, now: float) -> float:
        """
        @return: the seconds C{address} stays blocked, 0 when it is not.
        """
        entry = self._table.get(address)
        if entry is None or not entry[2]:
            return 0.0
        if now < entry[2]:
            return entry[2] - now
        del self._table[address]
        return 0.0

    def failed(self, address: str, now: float) -> None:
        """
        Count a failure from C{address}; block it at the limit.
        """
        entry = self._table.pop(address, None)
        if entry is None or now - entry[0] >= self.window:
            entry = [now, 0.0, 0.0]
        entry[1] += 1
        if entry[1] >= self.limit:
            entry[2] = now + self.blockTime
        self._table[address] = entry
        while len(self._table) > self.size:
            self._table.popitem(last=False)

    def succeeded(self, address: str) -> None:
        """
        Forget the failures of C{address}, which gave the right token.
        """
        self._table.pop(address, None)

    def blockedNow(self, now: float) -> int:
        """
        @return: how many addresses are blocked at C{now}.
        """
        return sum(1 for entry in self._table.values() if entry[2] > now)


class AdminResource(Resource):
    """
    Every admin endpoint, behind the token check.  The path is matched here
    (the resource is a leaf) so that an unauthenticated request learns
    nothing about which paths exist.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, gateway: IOperator, clock: Any) -> None:
        """
        @param gateway: the node's operator surface; its
            C{config.admin.token} is read on every request, so a reload can
            change it.
        @param clock: tells the time (L{IReactorTime}), for rate-limited logs.
        """
        super().__init__()
        self.gateway = gateway
        self.clock = clock
        self.failures = AuthFailures()
        #: Requests refused (401 or 429) and answered 429, since start-up.
        self.refusedTotal = 0
        self.limitedTotal = 0
        self._refused = 0
        self._limited = 0
        self._last: Any = None
        self._refusalLogged: float | None = None
        self._refusalTimer: Any = None

    def render(self, request: Request) -> bytes:
        """
        Check the token, then answer the request, always with JSON.
        """
        try:
            self._authenticate(request)
            if request.postpath in ([b"metrics"], [b"metrics", b""]) and request.method in (b"GET", b"HEAD"):
                return renderMetrics(request, self.gateway.metrics.registry)
            status, payload = self._dispatch(request)
        except _BadRequest as refusal:
            for name, value in refusal.headers:
                request.setHeader(name, value)
            status, payload = refusal.status, _error(refusal.status, refusal.message)
        except Exception:
            self.log.failure("admin request {method} {path} failed",
                             method=request.method, path=request.uri)
            status, payload = 500, _error(500, "the gateway failed to answer; see its log")
        return respondJSON(request, status, payload, reason=_REASONS.get(status), indent=2)

    def _authenticate(self, request: Request) -> None:
        address = request.getClientAddress()
        peer = str(getattr(address, "host", None) or "unix")
        now = self.clock.seconds()
        wait = self.failures.blocked(peer, now)
        if wait:
            self._logRefusal(address, limited=True)
            raise _BadRequest(
                429,
                "too many requests without a valid admin token from this address; retry later",
                ((b"Retry-After", b"%d" % math.ceil(wait)),),
            )
        admin = self.gateway.config.admin
        values = request.requestHeaders.getRawHeaders(b"authorization") or []
        if admin is not None and len(values) == 1:
            scheme, _, credentials = values[0].strip().partition(b" ")
            if scheme.lower() == b"bearer" and hmac.compare_digest(
                credentials.strip(), admin.token.encode("ascii")
            ):
                self.failures.succeeded(peer)
                return
        self.failures.failed(peer, now)
        self._logRefusal(address)
        raise _BadRequest(
            401,
            "a valid admin token is required: Authorization: Bearer TOKEN",
            ((b"WWW-Authenticate", b'Bearer realm="txgateway admin"'),),
        )

    def _logRefusal(self, address: Any, limited: bool = False) -> None:
        """
        Count a refused request; log refusals at most one line per
        L{REFUSAL_LOG_INTERVAL}, with the number refused since the last line
        (those refused meanwhile are logged when the interval ends).
        """
        self._refused += 1
        self.refusedTotal += 1
        if limited:
            self._limited += 1
            self.limitedTotal += 1
        self._last = address
        now = self.clock.seconds()
        if self._refusalLogged is None or now - self._refusalLogged >= REFUSAL_LOG_INTERVAL:
            self._writeRefusals()
        elif self._refusalTimer is None:
            self._refusalTimer = self.clock.callLater(
                self._refusalLogged + REFUSAL_LOG_INTERVAL - now, self._refusalsDue
            )

    def _refusalsDue(self) -> None:
        self._refusalTimer = None
        if self._refused:
            self._writeRefusals()

    def _writeRefusals(self) -> None:
        if self._refusalTimer is not None and self._refusalTimer.active():
            self._refusalTimer.cancel()
        self._refusalTimer = None
        now = self.clock.seconds()
        self.log.warn(
            "admin API: {n} request(s) without a valid token refused, the last from {peer}"
            " ({limited} of them with 429; {total} refused since start-up;"
            " {blocked} address(es) blocked now)",
            n=self._refused, peer=getattr(self._last, "host", self._last),
            limited=self._limited, total=self.refusedTotal,
            blocked=self.failures.blockedNow(now),
        )
        self._refused = self._limited = 0
        self._refusalLogged = now

    def stop(self) -> None:
        """
        Log the refusals not logged yet, and cancel the timer that would.
        """
        if self._refused:
            self._writeRefusals()
        elif self._refusalTimer is not None:
            if self._refusalTimer.active():
                self._refusalTimer.cancel()
            self._refusalTimer = None

    def _backend(self, pool: str, backend: Backend) -> dict[str, Any]:
        """
        @return: C{backend} of C{pool} described, with its Socket.IO
            sessions counted.
        """
        engines = byBackend(self.gateway.engines.sessions.values())
        return describeBackend(backend, engines.get((pool, backend.name), 0))

    def _dispatch(self, request: Request) -> tuple[int, Any]:
        method = request.method
        path = _segments(request.postpath)
        gateway = self.gateway
        try:
            match path:
                case ["pools"]:
                    _allow(method, b"GET")
                    engines = byBackend(gateway.engines.sessions.values())
                    return 200, {"pools": [describePool(p, engines) for p in gateway.pools.values()]}
                case ["pools", pool]:
                    _allow(method, b"GET")
                    return 200, describePool(gateway.pool(pool), byBackend(gateway.engines.sessions.values()))
                case ["pools", pool, "backends", name]:
                    _allow(method, b"GET")
                    return 200, self._backend(pool, gateway.pool(pool).get(name))
                case ["pools", pool, "backends", name, "drain"]:
                    _allow(method, b"POST")
                    return 200, self._backend(pool, gateway.drainBackend(pool, name))
                case ["pools", pool, "backends", name, "enable"]:
                    _allow(method, b"POST")
                    return 200, self._backend(pool, gateway.enableBackend(pool, name))
                case ["pools", pool, "backends", name, "weight"]:
                    _allow(method, b"POST")
                    gateway.pool(pool).get(name)  # 404 before 400
                    weight = _weightFrom(request)
                    return 200, self._backend(pool, gateway.setWeight(pool, name, weight))
                case ["sessions"]:
                    _allow(method, b"GET")
                    counts = countSessions(list(gateway.sessions.sessions.values()))
                    counts["mover"] = gateway.mover.state()
                    counts["socketio"] = countEngines(list(gateway.engines.sessions.values()))
                    return 200, counts
                case ["sessions", "socketio"]:
                    _allow(method, b"GET")
                    return 200, listEngines(list(gateway.engines.sessions.values()),
                                            gateway.reactor.seconds(), gateway.engines.cluster.node,
                                            **_listing(request))
                case ["nodes"]:
                    _allow(method, b"GET")
                    return 200, gateway.sessions.cluster.nodes()
                case ["reload"]:
                    _allow(method, b"POST")
                    done = gateway.reload()
                    return 200, {
                        "changes": list(done.changes),
                        "restart_needed": list(done.restartNeeded),
                    }
        except (UnknownPool, UnknownBackend) as error:
            raise _BadRequest(404, str(error)) from None
        except BackendRetired as error:
            raise _BadRequest(409, str(error)) from None
        except InvalidWeight as error:
            raise _BadRequest(400, str(error)) from None
        except ConfigError as error:
            raise _BadRequest(409 if isinstance(error, NothingToReload) else 400, str(error)) from None
        except PoolError as error:
            raise _BadRequest(400, str(error)) from None
        raise _BadRequest(404, f"no such admin endpoint: {'/' + '/'.join(path)!r}")


def _error(status: int, message: str) -> dict[str, Any]:
    """
    @return: the JSON body of an error, as the gateway's port gives them
        (with twisted.web's reason phrases).
    """
    return errorPayload(status, message, reasons=_REASONS)


#: twisted.web's reason phrases, and the one it lacks.
_REASONS = {**RESPONSES, 429: b"Too Many Requests"}


def _segments(postpath: list[bytes]) -> list[str]:
    """
    @return: the path's segments (already percent-decoded by twisted.web)
        as text, without a trailing empty one.
    @raise _BadRequest: 400 when a segment is not UTF-8.
    """
    segments = list(postpath)
    if segments and segments[-1] == b"":
        segments.pop()
    try:
        return [segment.decode("utf-8") for segment in segments]
    except UnicodeDecodeError:
        raise _BadRequest(400, "the path must be UTF-8 (percent-encoded)") from None


def _allow(method: bytes, allowed: bytes) -> None:
    """
    @raise _BadRequest: 405 with C{Allow} unless C{method} is C{allowed}.
    """
    if method != allowed:
        raise _BadRequest(
            405,
            f"use {allowed.decode('ascii')} here, not {method.decode('latin-1')}",
            ((b"Allow", allowed),),
        )


def _listing(request: Request) -> dict[str, Any]:
    """
    @return: the C{pool}, C{backend} and C{limit} a listing's query asks
        for (each at most once).
    @raise _BadRequest: 400 for another parameter, one given twice, or a
        limit that is not a whole number from 1 to L{LIST_LIMIT}.
    """
    args = request.args or {}
    asked: dict[str, Any] = {}
    for name, values in args.items():
        key = name.decode("latin-1")
        if key not in ("pool", "backend", "limit"):
            raise _BadRequest(400, f"unknown query parameter {key!r}; use pool, backend or limit")
        if len(values) != 1:
            raise _BadRequest(400, f"give {key} once")
        try:
            asked[key] = values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise _BadRequest(400, f"{key} must be UTF-8 (percent-encoded)") from None
    if "limit" in asked:
        limit = asked["limit"]
        if not (limit.isascii() and limit.isdigit() and 1 <= int(limit) <= LIST_LIMIT):
            raise _BadRequest(400, f"limit must be a whole number from 1 to {LIST_LIMIT}, not {limit!r}")
        asked["limit"] = int(limit)
    return asked


def _weightFrom(request: Request) -> object:
    """
    @return: the C{weight} of a C{{"weight": N}} body (checked by the
        service).
    @raise _BadRequest: 400 for any other body.
    """
    example = 'a JSON object such as {"weight": 3}'
    raw = request.content.read() if request.content is not None else b""
    try:
        body = loadJSON(raw)
    except ProtocolError as error:
        raise _BadRequest(400, f"the body must be {example}: {error}") from None
    if not isinstance(body, dict):
        raise _BadRequest(400, f"the body must be {example}")
    unknown = sorted(set(body) - {"weight"})
    if unknown:
        raise _BadRequest(400, f"unknown key {unknown[0]!r} in the body; it must be {example}")
    if "weight" not in body:
        raise _BadRequest(400, f"the body has no weight; it must be {example}")
    return body["weight"]


class AdminSite(BoundedSite):
    """
    The admin API's site: request bodies bounded by L{MAX_BODY_BYTES},
    heads and bodies by the gateway's deadlines (L{BoundedSite}), idle
    connections closed after L{IDLE_TIMEOUT}, no access log; the status
    page's files (L{gateway.statuspage}) served without the token.
    """

    noisy = False

    def __init__(self, resource: AdminResource, reactor: Any, timeouts: Timeouts = Timeouts(),
                 limits: Limits = Limits()) -> None:
        super().__init__(resource, maxBodyBytes=MAX_BODY_BYTES, timeout=IDLE_TIMEOUT, reactor=reactor,
                         headTimeout=timeouts.handshake, bodyTimeout=timeouts.requestBody,
                         minBodyRate=limits.minBodyRate)
        self.statusPage = StatusPage()

    def getResourceFor(self, request: Request) -> Any:
        """
        @return: the status page for its own paths (they hold no data, so
            they need no token: a browser cannot send one on a page load),
            the admin resource for every other.
        """
        resource = super().getResourceFor(request)
        return self.statusPage if self.statusPage.serves(request.postpath) else resource

    def tooLarge(self, request: Request, limit: int) -> bytes:
        """
        @return: the whole 413 response to a request whose body is over
            C{limit} bytes, the connection closed.
        """
        body = json.dumps(_error(413, f"the request body is larger than {limit} bytes")).encode("utf-8")
        return (
            b"HTTP/1.1 413 Request Entity Too Large\r\n"
            b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def log(self, request: Request) -> None:
        """
        No access log: operator actions are logged by the service.
        """


class AdminService(SiteListener):
    """
    The admin API's listener, a child of the gateway service: bound with
    the gateway's listeners, closed when it stops.
    """

    log = Logger()
    what = "admin API"
    everyInterface = (
        "admin API: {description} listens on every interface, so anyone who can reach"
        " port {port} can try tokens; unless a firewall keeps it private, add"
        " interface=127.0.0.1 (or a private address) or use a Unix socket"
        " (unix:/run/txgateway/admin.sock)"
    )

    def __init__(self, gateway: IOperator, endpoint: Any) -> None:
        """
        @param gateway: the node's operator surface (and its reactor,
            C{config.admin} and C{exitOnListenFailure}).
        @param endpoint: the server endpoint to listen on.
        """
        self.resource = AdminResource(gateway, gateway.reactor)
        super().__init__(
            gateway, endpoint,
            gateway.config.admin.listen if gateway.config.admin else str(endpoint),
            AdminSite(self.resource, gateway.reactor, gateway.config.timeouts, gateway.config.limits),
        )

    def stopService(self) -> Deferred | None:
        """
        Stop listening (admin connections already open are left to finish).
        """
        self.resource.stop()
        return super().stopService()
