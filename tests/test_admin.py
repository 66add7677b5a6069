"""
Tests for L{gateway.admin}: every endpoint through L{DummyRequest} against a
gateway service that is built but not started (a L{MemoryReactorClock}),
and the listener's bounds (body size, idle connections) on real sockets of
127.0.0.1 and on a L{Clock}.
"""

from __future__ import annotations

import json
from io import BytesIO
from types import SimpleNamespace

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.web.test.requesthelper import DummyRequest

import gateway.admin
from gateway.admin import (
    AUTH_BLOCK_TIME,
    AUTH_FAILURE_LIMIT,
    AUTH_FAILURE_WINDOW,
    AUTH_TABLE_SIZE,
    AuthFailures,
    IDLE_TIMEOUT,
    MAX_BODY_BYTES,
    REFUSAL_LOG_INTERVAL,
    AdminResource,
    AdminService,
    AdminSite,
    countSessions,
)
from gateway.config import AdminConfig, BackendConfig, GatewayConfig, PoolConfig, RouteConfig
from gateway.backends.pool import MAX_WEIGHT
from gateway.engineio.engine import EngineSession, EngineSettings
from gateway.service import GatewayService
from gateway.sessions.states import SessionState
from gateway.testing import rawExchange

from .engineio.fakes import FakeTransport

TOKEN = "s3cret-admin-token-0123456789"


def backendConfig(port: int, **kwargs) -> BackendConfig:
    """
    @return: a backend on 127.0.0.1:C{port}, named C{b<port>}.
    """
    return BackendConfig(name=f"b{port}", url=f"ws://127.0.0.1:{port}", host="127.0.0.1",
                         port=port, secure=False, **kwargs)


def makeConfig(**kwargs) -> GatewayConfig:
    """
    @return: one pool C{chat} of backends C{b1} and C{b2} (weight 2, at most
        5 connections), with the admin API on port 0 of 127.0.0.1.
    """
    pool = PoolConfig(name="chat", backends=(backendConfig(1), backendConfig(2, weight=2, maxConnections=5)))
    values = dict(
        listen=("tcp:0:interface=127.0.0.1",),
        pools=(pool,),
        routes=(RouteConfig(prefix="/", pool="chat"),),
        admin=AdminConfig(listen="tcp:0:interface=127.0.0.1", token=TOKEN),
    )
    values.update(kwargs)
    return GatewayConfig(**values)


@pytest.fixture
def service() -> GatewayService:
    """
    A gateway service on a L{MemoryReactorClock}, built and not started.
    """
    return GatewayService(makeConfig(), MemoryReactorClock())


def call(resource: AdminResource, method: str, path: str, body: bytes | None = None,
         token: str | None = TOKEN, authorization: list[bytes] | None = None):
    """
    Render one request.

    @return: C{(status, request, parsed JSON body)}.
    """
    segments = [s.encode() for s in path.lstrip("/").split("/")]
    request = DummyRequest(segments)
    request.method = method.encode()
    request.content = BytesIO(body or b"")
    request.client = IPv4Address("TCP", "127.0.0.9", 4000)
    if authorization is not None:
        request.requestHeaders.setRawHeaders(b"authorization", authorization)
    elif token is not None:
        request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
    output = resource.render(request)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]
    assert request.responseHeaders.getRawHeaders(b"content-length") == [b"%d" % len(output)]
    return request.responseCode, request, json.loads(output)


@pytest.fixture
def admin(service: GatewayService) -> AdminResource:
    """
    The admin resource of C{service}.
    """
    return AdminResource(service, service.reactor)


def test_exports() -> None:
    """
    The module exports what it promises, and the service builds its admin
    listener from the C{[admin]} table.
    """
    for name in gateway.admin.__all__:
        assert hasattr(gateway.admin, name)
    service = GatewayService(makeConfig(), MemoryReactorClock())
    assert isinstance(service.admin, AdminService)
    assert service.admin.parent is service
    assert GatewayService(makeConfig(admin=None), MemoryReactorClock()).admin is None


# -- the token


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        [b"Bearer wrong-token-0123456789"],
        [f"Basic {TOKEN}".encode()],
        [f"Bearer {TOKEN}x".encode()],
        [f"Bearer {TOKEN[:-1]}".encode()],
        [f"Bearer {TOKEN}".encode(), f"Bearer {TOKEN}".encode()],
        [b"Bearer"],
    ],
    ids=["none", "wrong", "basic", "longer", "shorter", "twice", "empty"],
)
@pytest.mark.parametrize("path", ["/pools", "/nowhere", "/reload"])
def test_tokenRequired(admin: AdminResource, service: GatewayService,
                       authorization: list[bytes] | None, path: str) -> None:
    """
    Without exactly one C{Authorization: Bearer TOKEN} header with the
    right token, every path (existing or not) gets 401 with a JSON body and
    C{WWW-Authenticate}, and nothing is done.
    """
    status, request, body = call(admin, "POST" if path == "/reload" else "GET", path,
                                 token=None, authorization=authorization)
    assert status == 401
    assert body == {"error": "Unauthorized", "status": 401,
                    "message": "a valid admin token is required: Authorization: Bearer TOKEN"}
    assert request.responseHeaders.getRawHeaders(b"www-authenticate") == [
        b'Bearer realm="txgateway admin"'
    ]


def test_tokenSchemeAnyCase(admin: AdminResource) -> None:
    """
    The scheme is matched in any case (RFC 7235), the token exactly.
    """
    status, _, _ = call(admin, "GET", "/pools", authorization=[f"bearer {TOKEN}".encode()])
    assert status == 200


def test_tokenReadOnEveryRequest(admin: AdminResource, service: GatewayService) -> None:
    """
    The token is read from the service's configuration on each request, so
    a reload that changes it takes effect at once.
    """
    from dataclasses import replace

    service.config = replace(service.config, admin=AdminConfig(listen="tcp:0", token="n" * 16))
    assert call(admin, "GET", "/pools")[0] == 401
    assert call(admin, "GET", "/pools", token="n" * 16)[0] == 200


def test_refusalsLoggedAtMostOncePerInterval(service: GatewayService) -> None:
    """
    Refused requests are logged at most once per L{REFUSAL_LOG_INTERVAL},
    with the number refused since the last line and the last peer; those
    refused within an interval are logged when it ends, and when the
    listener stops.
    """
    clock = Clock()
    resource = AdminResource(service, clock)
    with capturedLogs() as events:
        for _ in range(3):
            call(resource, "GET", "/pools", token="wrong")
        clock.advance(REFUSAL_LOG_INTERVAL - 1)
        call(resource, "GET", "/pools", token="wrong")
        clock.advance(1)
        call(resource, "GET", "/pools", token="wrong")
        clock.advance(REFUSAL_LOG_INTERVAL)
        clock.advance(REFUSAL_LOG_INTERVAL)
        call(resource, "GET", "/pools", token="wrong")
        call(resource, "GET", "/pools", token="wrong")
        resource.stop()
    lines = [e for e in events if "without a valid token" in e.get("log_format", "")]
    assert [(e["n"], e["peer"], e["total"]) for e in lines] == [
        (1, "127.0.0.9", 1), (3, "127.0.0.9", 4), (1, "127.0.0.9", 5), (1, "127.0.0.9", 6),
        (1, "127.0.0.9", 7),
    ]
    assert not clock.getDelayedCalls()


def callFrom(resource: AdminResource, host: str, token: str = TOKEN):
    """
    One C{GET /pools} from C{host}.

    @return: C{(status, request, body)}.
    """
    request = DummyRequest([b"pools"])
    request.method = b"GET"
    request.client = IPv4Address("TCP", host, 4000)
    request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
    output = resource.render(request)
    return request.responseCode, request, json.loads(output)


def test_failuresRateLimitedByAddress(service: GatewayService) -> None:
    """
    After L{AUTH_FAILURE_LIMIT} wrong tokens from one address within
    L{AUTH_FAILURE_WINDOW}, that address gets 429 with C{Retry-After} for
    L{AUTH_BLOCK_TIME} seconds, even with the right token (it is not
    checked); another address is still served, and the first is once the
    block ends.  Every refusal is counted.
    """
    clock = Clock()
    resource = AdminResource(service, clock)
    for _ in range(AUTH_FAILURE_LIMIT):
        assert callFrom(resource, "10.0.0.1", "wrong")[0] == 401
    status, request, body = callFrom(resource, "10.0.0.1")
    assert status == 429
    assert request.responseMessage == b"Too Many Requests"
    assert request.responseHeaders.getRawHeaders(b"retry-after") == [b"%d" % AUTH_BLOCK_TIME]
    assert body == {"error": "Too Many Requests", "status": 429, "message":
                    "too many requests without a valid admin token from this address; retry later"}
    assert callFrom(resource, "10.0.0.2")[0] == 200
    clock.advance(AUTH_BLOCK_TIME - 0.5)
    status, request, _ = callFrom(resource, "10.0.0.1")
    assert (status, request.responseHeaders.getRawHeaders(b"retry-after")) == (429, [b"1"])
    clock.advance(0.5)
    assert callFrom(resource, "10.0.0.1")[0] == 200
    assert (resource.refusedTotal, resource.limitedTotal) == (AUTH_FAILURE_LIMIT + 2, 2)
    resource.stop()


def test_failuresOutsideTheWindow(service: GatewayService) -> None:
    """
    Failures further apart than L{AUTH_FAILURE_WINDOW} do not add up, and
    the right token forgets an address's failures.
    """
    clock = Clock()
    resource = AdminResource(service, clock)
    for _ in range(3):
        for _ in range(AUTH_FAILURE_LIMIT - 1):
            assert callFrom(resource, "10.0.0.1", "wrong")[0] == 401
        clock.advance(AUTH_FAILURE_WINDOW)
    for _ in range(AUTH_FAILURE_LIMIT - 1):
        assert callFrom(resource, "10.0.0.1", "wrong")[0] == 401
    assert callFrom(resource, "10.0.0.1")[0] == 200
    assert len(resource.failures) == 0
    assert callFrom(resource, "10.0.0.1", "wrong")[0] == 401
    assert callFrom(resource, "10.0.0.1")[0] == 200
    resource.stop()


def test_failureTableBounded() -> None:
    """
    L{AuthFailures} remembers at most C{size} addresses: the one that failed
    least recently goes first.
    """
    failures = AuthFailures(limit=2, window=10, blockTime=5, size=3)
    for host in ("a", "b", "c"):
        failures.failed(host, 0)
    failures.failed("a", 1)
    assert failures.blocked("a", 1) == 5
    failures.failed("d", 2)
    assert len(failures) == 3
    failures.failed("b", 2)
    assert failures.blocked("b", 2) == 0
    assert failures.blockedNow(2) == 1
    assert failures.blocked("a", 6) == 0
    assert len(failures) == 2
    assert len(AuthFailures()._table) == 0 and AuthFailures().size == AUTH_TABLE_SIZE


# -- pools and backends


def test_pools(admin: AdminResource, service: GatewayService) -> None:
    """
    C{GET /pools} lists every pool and its backends: state, draining,
    removed, available, weight, connections and limit (C{null} for none).
    """
    service.pools["chat"].backends[0].healthy = False
    for _ in range(3):
        service.pools["chat"].backends[1].reserve()
    status, _, body = call(admin, "GET", "/pools")
    assert status == 200
    assert body == {
        "pools": [
            {
                "name": "chat",
                "backends": [
                    {"name": "b1", "url": "ws://127.0.0.1:1", "state": "down", "draining": False,
                     "removed": False, "available": False, "weight": 1, "connections": 0,
                     "socketio": 0, "other_nodes": 0, "limit": None},
                    {"name": "b2", "url": "ws://127.0.0.1:2", "state": "healthy",
                     "draining": False, "removed": False, "available": True, "weight": 2,
                     "connections": 3, "socketio": 0, "other_nodes": 0, "limit": 5},
                ],
            }
        ]
    }
    assert call(admin, "GET", "/pools/")[2] == body


def test_onePoolAndOneBackend(admin: AdminResource) -> None:
    """
    C{GET /pools/NAME} is one pool, C{GET /pools/NAME/backends/NAME} one
    backend.
    """
    status, _, body = call(admin, "GET", "/pools/chat")
    assert status == 200 and [b["name"] for b in body["backends"]] == ["b1", "b2"]
    status, _, body = call(admin, "GET", "/pools/chat/backends/b2")
    assert status == 200 and body["name"] == "b2" and body["limit"] == 5


def test_percentEncodedName(service: GatewayService) -> None:
    """
    Backend names (C{[::1]:8765}) are matched percent-decoded, as
    twisted.web gives path segments.
    """
    config = makeConfig(pools=(PoolConfig(name="chat", backends=(
        BackendConfig(name="[::1]:8765", url="ws://[::1]:8765", host="::1", port=8765, secure=False),)),))
    resource = AdminResource(GatewayService(config, MemoryReactorClock()), Clock())
    status, _, body = call(resource, "GET", "/pools/chat/backends/[::1]:8765")
    assert status == 200 and body["url"] == "ws://[::1]:8765"


@pytest.mark.parametrize(
    "method, path, message",
    [
        ("GET", "/pools/nope", "no pool 'nope'"),
        ("GET", "/pools/nope/backends/b1", "no pool 'nope'"),
        ("GET", "/pools/chat/backends/b9", "pool 'chat' has no backend 'b9'"),
        ("POST", "/pools/chat/backends/b9/drain", "pool 'chat' has no backend 'b9'"),
        ("POST", "/pools/chat/backends/b9/enable", "pool 'chat' has no backend 'b9'"),
        ("POST", "/pools/chat/backends/b9/weight", "pool 'chat' has no backend 'b9'"),
        ("GET", "/", "no such admin endpoint: '/'"),
        ("GET", "/pools/chat/backends", "no such admin endpoint: '/pools/chat/backends'"),
        ("POST", "/pools/chat/backends/b1/restart", "no such admin endpoint: "
                                                    "'/pools/chat/backends/b1/restart'"),
    ],
)
def test_notFound(admin: AdminResource, method: str, path: str, message: str) -> None:
    """
    An unknown pool, backend or endpoint gets 404 saying which.
    """
    status, _, body = call(admin, method, path)
    assert (status, body) == (404, {"error": "Not Found", "status": 404, "message": message})


@pytest.mark.parametrize(
    "method, path, allowed",
    [
        ("POST", "/pools", b"GET"),
        ("DELETE", "/pools/chat", b"GET"),
        ("PUT", "/pools/chat/backends/b1", b"GET"),
        ("GET", "/pools/chat/backends/b1/drain", b"POST"),
        ("GET", "/pools/chat/backends/b1/enable", b"POST"),
        ("GET", "/pools/chat/backends/b1/weight", b"POST"),
        ("POST", "/sessions", b"GET"),
        ("GET", "/reload", b"POST"),
    ],
)
def test_wrongMethod(admin: AdminResource, service: GatewayService, method: str, path: str,
                     allowed: bytes) -> None:
    """
    The wrong method gets 405 with C{Allow}, and changes nothing.
    """
    status, request, body = call(admin, method, path)
    assert status == 405
    assert body["message"] == f"use {allowed.decode()} here, not {method}"
    assert request.responseHeaders.getRawHeaders(b"allow") == [allowed]
    assert not service.pools["chat"].backends[0].draining


def test_drainAndEnable(admin: AdminResource, service: GatewayService) -> None:
    """
    C{POST .../drain} takes a backend out of balancing (the balancer never
    picks it, its connections are kept) and the service logs, once, that
    this backend of this pool started draining; draining again changes nothing;
    C{POST .../enable} brings it back.
    """
    pool = service.pools["chat"]
    b1, b2 = pool.backends
    for _ in range(2):
        b1.reserve()

    def heard(events):
        return [(service.pools[e["pool"]], pool.get(e["backend"])) for e in events
                if e.get("log_format") == "backend {backend} of pool {pool} is draining"]

    with capturedLogs() as events:
        status, _, body = call(admin, "POST", "/pools/chat/backends/b1/drain")
    assert status == 200
    assert (body["draining"], body["available"], body["connections"]) == (True, False, 2)
    assert heard(events) == [(pool, b1)]
    assert {pool.choose(None) for _ in range(10)} == {b2}
    assert pool.choose(None, exclude={b2}) is None
    with capturedLogs() as events:
        assert call(admin, "POST", "/pools/chat/backends/b1/drain")[0] == 200
    assert heard(events) == []
    status, _, body = call(admin, "POST", "/pools/chat/backends/b1/enable")
    assert status == 200 and (body["draining"], body["available"]) == (False, True)
    assert pool.choose(None, exclude={b2}) is b1
    assert call(admin, "POST", "/pools/chat/backends/b1/enable")[0] == 200


def test_drainEveryBackend(admin: AdminResource, service: GatewayService) -> None:
    """
    With every backend drained, the pool has nothing to give, and says why.
    """
    call(admin, "POST", "/pools/chat/backends/b1/drain")
    call(admin, "POST", "/pools/chat/backends/b2/drain")
    pool = service.pools["chat"]
    assert pool.choose(None) is None
    assert pool.noneAvailableReason() == "every backend of pool 'chat' is draining"


def test_enableRemovedBackend(admin: AdminResource, service: GatewayService) -> None:
    """
    A backend removed from the file (waiting for its connections to end)
    cannot be enabled: 409, and it stays draining.
    """
    b1 = service.pools["chat"].backends[0]
    b1.retired = b1.draining = True
    status, _, body = call(admin, "POST", "/pools/chat/backends/b1/enable")
    assert status == 409
    assert body["message"] == (
        "backend 'b1' was removed from the configuration; add it back to the file and reload"
    )
    assert b1.draining
    assert call(admin, "GET", "/pools/chat/backends/b1")[2]["removed"] is True


@pytest.mark.parametrize("weight", [1, 7, MAX_WEIGHT])
def test_weight(admin: AdminResource, service: GatewayService, weight: int) -> None:
    """
    C{POST .../weight} with C{{"weight": N}} sets the weight, from 1 to
    L{MAX_WEIGHT} included.
    """
    status, _, body = call(admin, "POST", "/pools/chat/backends/b1/weight",
                           json.dumps({"weight": weight}).encode())
    assert (status, body["weight"]) == (200, weight)
    assert service.pools["chat"].backends[0].weight == weight


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", 'the body must be a JSON object such as {"weight": 3}: Expecting value: '
              'line 1 column 1 (char 0)'),
        (b"{weight: 3}", 'the body must be a JSON object such as {"weight": 3}: Expecting '
                         'property name enclosed in double quotes: line 1 column 2 (char 1)'),
        (b"\xff", 'the body must be a JSON object such as {"weight": 3}: \'utf-8\' codec can\'t '
                  'decode byte 0xff in position 0: invalid start byte'),
        (b"[3]", 'the body must be a JSON object such as {"weight": 3}'),
        (b"3", 'the body must be a JSON object such as {"weight": 3}'),
        (b"{}", 'the body has no weight; it must be a JSON object such as {"weight": 3}'),
        (b'{"weight": 3, "x": 1}', "unknown key 'x' in the body; it must be a JSON object "
                                   'such as {"weight": 3}'),
        (b'{"weight": 0}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not 0"),
        (b'{"weight": -2}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not -2"),
        (b'{"weight": %d}' % (MAX_WEIGHT + 1),
         f"weight must be an integer from 1 to {MAX_WEIGHT}, not {MAX_WEIGHT + 1}"),
        (b'{"weight": 2.0}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not 2.0"),
        (b'{"weight": true}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not true"),
        (b'{"weight": "3"}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not \"3\""),
        (b'{"weight": null}', f"weight must be an integer from 1 to {MAX_WEIGHT}, not null"),
        (b'{"weight": 1' + b"0" * 60 + b"}",
         f"weight must be an integer from 1 to {MAX_WEIGHT}, not {('1' + '0' * 60)[:37]}..."),
    ],
    ids=["empty", "not-json", "not-utf8", "array", "number", "no-weight", "extra-key", "zero",
         "negative", "over-max", "float", "bool", "string", "null", "huge"],
)
def test_badWeight(admin: AdminResource, service: GatewayService, body: bytes, message: str) -> None:
    """
    Anything but C{{"weight": N}} with N an integer from 1 to L{MAX_WEIGHT}
    gets 400 saying what is wrong, and the weight is unchanged.
    """
    status, _, answer = call(admin, "POST", "/pools/chat/backends/b1/weight", body)
    assert (status, answer) == (400, {"error": "Bad Request", "status": 400, "message": message})
    assert service.pools["chat"].backends[0].weight == 1


# -- sessions


def fakeSession(state: str, pool: str | None, backend: str | None):
    """
    @return: an object with what the admin API reads of a session
        (L{gateway.interfaces.ISessionView}).
    """
    return SimpleNamespace(
        state=SessionState(state),
        pool=SimpleNamespace(name=pool) if pool else None,
        backend=SimpleNamespace(name=backend) if backend else None,
        switching=None, paused=False, failovers=0, moves=0,
    )


def test_sessions(admin: AdminResource, service: GatewayService) -> None:
    """
    C{GET /sessions} counts the node's sessions, attached and detached, in
    all and by pool and backend; a session without a backend connection is
    counted in its pool only, and ended ones not at all.
    """
    noEngines = {"sessions": 0, "polling": 0, "websocket": 0, "upgrading": 0, "pools": {}}
    assert call(admin, "GET", "/sessions")[2] == {"sessions": 0, "attached": 0, "detached": 0,
                                                  "switching": 0, "paused": 0, "failovers": 0, "moves": 0, "pools": {},
                                                  "mover": {"drained": 0, "rebalanced": 0, "moving": 0},
                                                  "socketio": noEngines}
    sessions = [
        fakeSession("attached", "chat", "b1"),
        fakeSession("attached", "chat", "b1"),
        fakeSession("detached", "chat", "b2"),
        fakeSession("ending", "chat", None),
        fakeSession("ended", "chat", "b1"),
        fakeSession("attached", "game", "g1"),
    ]
    for index, session in enumerate(sessions):
        service.sessions.sessions[f"s{index}"] = session
    status, _, body = call(admin, "GET", "/sessions")
    assert status == 200
    assert body == {
        "sessions": 5, "attached": 3, "detached": 1,
        "switching": 0, "paused": 0, "failovers": 0, "moves": 0,
        "pools": {
            "chat": {"sessions": 4, "attached": 2, "detached": 1, "backends": {
                "b1": {"sessions": 2, "attached": 2, "detached": 0},
                "b2": {"sessions": 1, "attached": 0, "detached": 1},
            }},
            "game": {"sessions": 1, "attached": 1, "detached": 0, "backends": {
                "g1": {"sessions": 1, "attached": 1, "detached": 0},
            }},
        },
        "mover": {"drained": 0, "rebalanced": 0, "moving": 0},
        "socketio": noEngines,
    }
    assert countSessions([]) == {"sessions": 0, "attached": 0, "detached": 0, "switching": 0, "paused": 0, "failovers": 0, "moves": 0, "pools": {}}


# -- reload


def test_reloadWithoutFile(admin: AdminResource) -> None:
    """
    C{POST /reload} on a gateway started without a file gets 409.
    """
    status, _, body = call(admin, "POST", "/reload")
    assert (status, body["message"]) == (
        409, "nothing to reload: the gateway was started without --config"
    )


def test_reload(admin: AdminResource, service: GatewayService) -> None:
    """
    C{POST /reload} applies the file and answers with the changes and the
    keys that wait for a restart.
    """
    from dataclasses import replace

    new = makeConfig(listen=("tcp:1",))
    pool = replace(new.pools[0], backends=(backendConfig(1, weight=4), backendConfig(3)))
    service.configLoader = lambda: replace(new, pools=(pool,), source="gw.toml")
    status, _, body = call(admin, "POST", "/reload")
    assert status == 200
    assert body == {
        "changes": [
            "pool chat: backend b2 removed (draining)",
            "pool chat: backend b1 weight 1 -> 4",
            "pool chat: backend b3 added",
        ],
        "restart_needed": ["listen"],
    }


def test_reloadBadFile(admin: AdminResource, service: GatewayService) -> None:
    """
    A reload whose file is wrong gets 400 with the one-line reason, and
    nothing changes.
    """
    from gateway.errors import ConfigError

    def load():
        raise ConfigError("gw.toml: pool.chat.backend[0].weight: must be an integer >= 1, not 0")

    service.configLoader = load
    before = [(b.name, b.weight, b.draining) for b in service.pools["chat"].backends]
    status, _, body = call(admin, "POST", "/reload")
    assert (status, body["message"]) == (
        400, "gw.toml: pool.chat.backend[0].weight: must be an integer >= 1, not 0"
    )
    assert [(b.name, b.weight, b.draining) for b in service.pools["chat"].backends] == before


def test_unexpectedError(admin: AdminResource, service: GatewayService) -> None:
    """
    An unexpected error is logged and answered 500 with a JSON body that
    does not show it.
    """
    def broken():
        raise RuntimeError("secret detail")

    service.configLoader = broken
    with capturedLogs() as events:
        status, _, body = call(admin, "POST", "/reload")
    assert (status, body["message"]) == (500, "the gateway failed to answer; see its log")
    assert any(e.get("log_failure") is not None for e in events)


# -- the listener


@pytest_twisted.ensureDeferred
async def test_listenerEndToEnd() -> None:
    """
    The admin service listens on its endpoint, answers with the token and
    stops listening when stopped.
    """
    service = GatewayService(makeConfig(), reactor)
    admin = service.admin
    admin.startService()
    port = await admin.whenListening().addTimeout(10, reactor)
    number = port.getHost().port
    request = (b"GET /pools/chat/backends/b1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    answer = await rawExchange(number, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["name"] == "b1"
    await admin.stopService()
    assert admin.port is None


@pytest_twisted.ensureDeferred
async def test_listenerCannotBind() -> None:
    """
    A listener that cannot be bound fails L{AdminService.whenListening}
    with one line naming the endpoint.
    """
    from gateway.errors import ConfigError

    taken = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        AdminSite(None, reactor))
    try:
        number = taken.getHost().port
        listen = f"tcp:{number}:interface=127.0.0.1"
        service = GatewayService(makeConfig(admin=AdminConfig(listen=listen, token=TOKEN)), reactor)
        with capturedLogs():
            service.admin.startService()
        with pytest.raises(ConfigError) as caught:
            await service.admin.whenListening()
        assert str(caught.value) == (
            f"cannot listen on {listen} (admin API): [Errno 98] Address already in use"
        )
        service.exitOnListenFailure = True
        service.admin.stopService()
        service.admin.failure = None
        with capturedLogs(), pytest.raises(SystemExit) as exited:
            service.admin.privilegedStartService()
        assert exited.value.code == (
            f"gateway: cannot listen on {listen} (admin API): [Errno 98] Address already in use"
        )
    finally:
        await taken.stopListening()


async def adminPort() -> tuple[AdminService, int]:
    """
    @return: a listening admin service and its port.
    """
    service = GatewayService(makeConfig(), reactor)
    service.admin.startService()
    port = await service.admin.whenListening().addTimeout(10, reactor)
    return service.admin, port.getHost().port


def weightRequest(body: bytes, length: int | None = None) -> bytes:
    """
    @return: a C{POST .../weight} with C{body} and a C{Content-Length} of
        C{length} (its real length when L{None}).
    """
    return (b"POST /pools/chat/backends/b1/weight HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length)) + body


@pytest_twisted.ensureDeferred
async def test_bodyAtTheBound() -> None:
    """
    A body of exactly L{MAX_BODY_BYTES} is read (and, not being a weight,
    refused with 400).
    """
    admin, number = await adminPort()
    try:
        body = b'{"weight": 3}'.ljust(MAX_BODY_BYTES, b" ")
        answer = await rawExchange(number, weightRequest(body))
        assert answer.startswith(b"HTTP/1.1 200 ")
    finally:
        await admin.stopService()


@pytest_twisted.ensureDeferred
async def test_bodyOverTheBound() -> None:
    """
    A declared body over L{MAX_BODY_BYTES} gets 413 before any of it is
    sent, and the connection is closed; so does a chunked one once its
    bytes pass the bound.
    """
    admin, number = await adminPort()
    try:
        answer = await rawExchange(number, weightRequest(b"", MAX_BODY_BYTES + 1))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 413 ")
        assert json.loads(body) == {"error": "Request Entity Too Large", "status": 413,
                                    "message": f"the request body is larger than {MAX_BODY_BYTES} bytes"}
        chunk = b"x" * 1000
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk)
                          for _ in range(MAX_BODY_BYTES // 1000 + 1))
        chunked = (b"POST /pools/chat/backends/b1/weight HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
        answer = await rawExchange(number, chunked)
        assert answer.startswith(b"HTTP/1.1 413 ")
    finally:
        await admin.stopService()


def test_idleConnectionsClosed() -> None:
    """
    An admin connection idle for L{IDLE_TIMEOUT} seconds is closed, not
    before.
    """
    clock = Clock()
    site = AdminSite(AdminResource(GatewayService(makeConfig(), MemoryReactorClock()), clock), clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    clock.advance(IDLE_TIMEOUT - 0.01)
    assert not transport.disconnecting
    with capturedLogs():
        clock.advance(0.01)
    assert transport.disconnecting


# -- /metrics


def test_metricsBehindTheToken(admin: AdminResource) -> None:
    """
    C{GET /metrics} answers the node's metrics in the Prometheus text
    format with the token, and 401 JSON without it, as every admin path.
    """
    status, _, body = call(admin, "GET", "/metrics", token=None)
    assert status == 401 and body["status"] == 401
    request = DummyRequest([b"metrics"])
    request.method = b"GET"
    request.client = IPv4Address("TCP", "127.0.0.9", 4000)
    request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {TOKEN}".encode()])
    output = admin.render(request)
    assert request.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    assert b'txgateway_backend_up{backend="b1",pool="chat"} 1.0' in output
    status, _, body = call(admin, "POST", "/metrics")
    assert status == 404


def test_metricsListenerFromConfig() -> None:
    """
    With C{[metrics]}, the service builds the metrics listener as a child;
    a bad endpoint string is refused naming C{metrics.listen}.
    """
    from gateway.config import MetricsConfig
    from gateway.errors import ConfigError
    from gateway.metrics.scrape import MetricsService

    service = GatewayService(makeConfig(metrics=MetricsConfig("tcp:0:interface=127.0.0.1")), MemoryReactorClock())
    assert isinstance(service.metricsListener, MetricsService)
    assert service.metricsListener.parent is service
    assert GatewayService(makeConfig(), MemoryReactorClock()).metricsListener is None
    with pytest.raises(ConfigError) as error:
        GatewayService(makeConfig(metrics=MetricsConfig("nonsense:1")), MemoryReactorClock())
    assert str(error.value).startswith("metrics.listen: 'nonsense:1' is not a usable endpoint")


@pytest_twisted.ensureDeferred
async def test_metricsListenerServes() -> None:
    """
    The metrics listener, bound on 127.0.0.1, answers C{/metrics} without a
    token and stops listening with the service.
    """
    from gateway.config import MetricsConfig

    service = GatewayService(makeConfig(metrics=MetricsConfig("tcp:0:interface=127.0.0.1"), admin=None),
                             reactor)
    listener = service.metricsListener
    listener.startService()
    port = await listener.whenListening()
    answer = await rawExchange(port.getHost().port,
                               b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"txgateway_sessions" in answer
    await listener.stopService()
    assert listener.port is None


def test_socketIOSessions(admin: AdminResource, service: GatewayService) -> None:
    """
    C{GET /sessions} counts the node's Socket.IO sessions by pool, backend
    and transport under C{socketio}, the pools' and backends' views count
    each backend's; C{GET /sessions/socketio} lists them,
    the oldest first, filtered by C{pool} and C{backend} and cut at
    C{limit}; a bad query gets 400 and another method 405.
    """
    backends = {b.name: b for b in service.pools["chat"].backends}
    clock = service.reactor
    for n, (kind, backend) in enumerate([("polling", "b1"), ("websocket", "b2"), ("websocket", "b2")]):
        sid = f"sid{n}-abcdefghijklmnop"
        service.engines.sessions[sid] = EngineSession(
            sid, EngineSettings(), clock, FakeTransport(kind), lambda e: None, pool="chat",
            backend=backends[backend], address="10.1.1.1")
        clock.advance(1)
    status, _, body = call(admin, "GET", "/sessions")
    assert (status, body["sessions"]) == (200, 0)
    assert body["socketio"] == {
        "sessions": 3, "polling": 1, "websocket": 2, "upgrading": 0,
        "pools": {"chat": {"sessions": 3, "polling": 1, "websocket": 2, "backends": {
            "b1": {"sessions": 1, "polling": 1, "websocket": 0},
            "b2": {"sessions": 2, "polling": 0, "websocket": 2}}}},
    }
    [pool] = call(admin, "GET", "/pools")[2]["pools"]
    assert [b["socketio"] for b in pool["backends"]] == [1, 2]
    assert [b["socketio"] for b in call(admin, "GET", "/pools/chat")[2]["backends"]] == [1, 2]
    assert call(admin, "GET", "/pools/chat/backends/b2")[2]["socketio"] == 2
    assert call(admin, "POST", "/pools/chat/backends/b2/drain")[2]["socketio"] == 2

    def listing(**args):
        segments = [b"sessions", b"socketio"]
        request = DummyRequest(segments)
        request.method = b"GET"
        request.client = IPv4Address("TCP", "127.0.0.9", 4000)
        request.args = {k.encode(): [v.encode()] if isinstance(v, str) else v for k, v in args.items()}
        request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {TOKEN}".encode()])
        body = json.loads(admin.render(request))
        return request.responseCode, body

    status, body = listing()
    assert (status, body["count"], body["listed"]) == (200, 3, 3)
    assert body["sessions"][0] == {"sid": "sid0-abc\N{HORIZONTAL ELLIPSIS}", "transport": "polling",
                                   "upgrading": False, "address": "10.1.1.1", "pool": "chat",
                                   "backend": "b1", "age": 3.0, "waiting": 0, "node": "local"}
    assert [e["backend"] for e in listing(backend="b2")[1]["sessions"]] == ["b2", "b2"]
    assert listing(pool="game")[1]["count"] == 0
    assert listing(limit="1")[1]["listed"] == 1
    for args, message in [
        ({"limit": "0"}, "limit must be a whole number from 1 to 1000, not '0'"),
        ({"limit": "1001"}, "limit must be a whole number from 1 to 1000, not '1001'"),
        ({"limit": "x"}, "limit must be a whole number from 1 to 1000, not 'x'"),
        ({"sid": "x"}, "unknown query parameter 'sid'; use pool, backend or limit"),
        ({"pool": [b"a", b"b"]}, "give pool once"),
        ({"pool": [b"\xff"]}, "pool must be UTF-8 (percent-encoded)"),
    ]:
        assert listing(**args) == (400, {"error": "Bad Request", "status": 400, "message": message})
    status, request, _ = call(admin, "POST", "/sessions/socketio")
    assert (status, request.responseHeaders.getRawHeaders(b"allow")) == (405, [b"GET"])
