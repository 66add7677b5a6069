"""
C{/metrics} of a real C{twistd -n gateway} process: on the admin API behind
its token, and on a listener of its own without one; counters that move
when a transparent connection, a session and Socket.IO sessions pass
through; and the Grafana dashboard shipped in docs/ built on names a real
answer has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from .helpers import (
    TOKEN,
    admin,
    engineHandshake,
    engineWebSocket,
    poolFile,
    request,
    scrapeMetrics,
    socketIOFile,
    startGateway,
)
from gateway.client import SessionClient
from gateway.testing import connectClient, rawExchange
from gateway.wire.protocol import SUBPROTOCOL

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"

#: The sample names each type of family has, besides the family's own.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


async def scrape(port: int, token: str | None = None, path: str = "/metrics") -> tuple[int, bytes, bytes]:
    """
    One C{GET} over a fresh connection.

    @return: C{(status, head, body)}.
    """
    head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    answer = await rawExchange(port, (head + "\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


def samples(body: bytes) -> dict[tuple[str, tuple], float]:
    """
    @return: the samples of a text exposition, by name and sorted labels.
    """
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode("utf-8")) for s in family.samples}


def names(body: bytes) -> set[str]:
    """
    @return: every series name a query may use on this exposition: each
        sample's, and those its family's type gives (so that a family with
        no sample yet, such as Redis's without Redis, still counts).
    """
    found = set()
    for family in text_string_to_metric_families(body.decode("utf-8")):
        found.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        found.update(s.name for s in family.samples)
    return found


async def startWithMetrics(tmp_path, echo_backends, gateway_process):
    """
    A gateway with the admin API and a metrics listener, in front of one
    echo backend.

    @return: C{(process, admin port, metrics port)}.
    """
    [backend] = await echo_backends(1, prefix=True)
    process, adminPort, _, _ = await startGateway(
        gateway_process, tmp_path, poolFile([backend], "[session]\nmax_message_bytes = 1024\n"),
        "--metrics", "tcp:0:interface=127.0.0.1")
    [metricsPort] = re.findall(r"metrics listening on 127\.0\.0\.1:(\d+)", process.output)
    return process, adminPort, int(metricsPort)


@pytest_twisted.ensureDeferred
async def test_metricsCountTraffic(tmp_path, echo_backends, gateway_process):
    """
    The admin API's C{/metrics} needs the token (401 without, as every
    admin request); the metrics listener needs none and serves nothing
    else.  A transparent connection and a session each move their
    counters: accepted, handshakes, messages and bytes each way, sessions
    opened (over WebSocket and long-polling), a refused request, a message
    over the size bound closed with 1009, and the session is counted
    attached while it lives.
    """
    process, adminPort, metricsPort = await startWithMetrics(tmp_path, echo_backends, gateway_process)
    status, _, body = await scrape(adminPort)
    assert status == 401 and json.loads(body)["status"] == 401
    status, head, before = await scrape(adminPort, TOKEN)
    assert status == 200 and b"Content-Type: text/plain; version=0.0.4" in head
    status, _, same = await scrape(metricsPort)
    assert status == 200 and b"# HELP txgateway_connections_accepted_total" in same
    status, _, body = await scrape(metricsPort, path="/pools")
    assert status == 404 and json.loads(body)["status"] == 404
    old = samples(before)
    assert all(name.startswith("txgateway_") for name, _ in old)

    tunnel = await connectClient(process.url, path="/chat")
    tunnel.send("hello")
    payload, _ = await tunnel.receive()
    assert payload == b"backend-1: hello"

    received: Deferred = Deferred()
    session = SessionClient(f"{process.url}/chat", reactor=reactor)
    session.onMessage(lambda payload, isBinary: received.called or received.callback(payload))
    await session.connect()
    session.send("hi")
    assert await received.addTimeout(10, reactor) == "backend-1: hi"
    await session.whenAcknowledged()

    polled: Deferred = Deferred()
    polling = SessionClient(f"{process.url}/chat", reactor=reactor, transport="polling")
    polling.onMessage(lambda payload, isBinary: polled.called or polled.callback(payload))
    await polling.connect()
    polling.send("by poll")
    assert await polled.addTimeout(10, reactor) == "backend-1: by poll"
    await polling.close()
    big = await connectClient(process.url, path="/chat", protocols=[SUBPROTOCOL])
    big.send(b"x" * 2048)  # over max_message_bytes: Autobahn closes with 1009
    _, code, _ = await big.closed.addTimeout(10, reactor)
    assert code == 1009
    gatewayPort = int(process.url.rsplit(":", 1)[1])
    answer = await rawExchange(gatewayPort, b"GET /chat/../x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")

    status, _, during = await scrape(metricsPort)
    live = samples(during)
    assert live[("txgateway_sessions", (("pool", "chat"), ("state", "attached")))] == 1
    assert live[("txgateway_connections_open", (("mode", "session"), ("transport", "websocket")))] == 1
    assert live[("txgateway_connections_open", (("mode", "transparent"), ("transport", "websocket")))] == 1
    assert live[("txgateway_backend_connections", (("backend", "backend-1"), ("pool", "chat")))] == 2
    assert live[("txgateway_backend_up", (("backend", "backend-1"), ("pool", "chat")))] == 1

    await tunnel.close()
    await session.close()
    status, _, after = await scrape(adminPort, TOKEN)
    new = samples(after)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return new[key] - old.get(key, 0)

    assert moved("txgateway_connections_accepted_total", mode="transparent", transport="websocket") == 1
    assert moved("txgateway_connections_accepted_total", mode="session", transport="websocket") == 2
    assert moved("txgateway_handshake_duration_seconds_count", mode="transparent", transport="websocket") == 1
    assert moved("txgateway_handshake_duration_seconds_count", mode="session", transport="websocket") == 1
    assert moved("txgateway_connections_accepted_total", mode="session", transport="longpoll") >= 1
    assert moved("txgateway_handshake_duration_seconds_count", mode="session", transport="longpoll") == 1
    assert moved("txgateway_sessions_opened_total", pool="chat") == 2
    assert moved("txgateway_refusals_total", status="400", reason="bad_request") == 1
    assert moved("txgateway_closes_total", mode="session", code="4000", reason="ended") >= 2
    assert moved("txgateway_closes_total", mode="session", code="1009", reason="too_big") == 1
    for mode in ("transparent", "session"):
        assert moved("txgateway_messages_total", mode=mode, direction="up") >= 1
        assert moved("txgateway_messages_total", mode=mode, direction="down") >= 1
        assert moved("txgateway_message_bytes_total", mode=mode, direction="down") >= len("backend-1: hi")
    assert ("txgateway_event_loop_lag_seconds_count", ()) in new  # sampled every 0.5 s
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_dashboardNamesExist(tmp_path, echo_backends, gateway_process):
    """
    Every C{txgateway_*} name the Grafana dashboard in docs/ queries is a
    series of a real C{/metrics} answer, and the dashboard uses every
    family the gateway exports (but the process's own).
    """
    process, _, metricsPort = await startWithMetrics(tmp_path, echo_backends, gateway_process)
    status, _, body = await scrape(metricsPort)
    assert status == 200
    exported = names(body)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    used = set(re.findall(r"\btxgateway_[a-z_]+", " ".join(queries)))
    assert used and used <= exported, sorted(used - exported)
    unused = {f.name for f in text_string_to_metric_families(body.decode("utf-8"))
              if not f.name.startswith("txgateway_process_") and not f.name.endswith("_created")
              and not used & {f.name + suffix for suffix in _SUFFIXES.get(f.type, ("",))}}
    assert unused == set()
    process.signal("TERM")
    assert await process.wait() == 0


@pytest_twisted.ensureDeferred
async def test_socketIOCounted(tmp_path, socketio_server, gateway_process):
    """
    Socket.IO sessions of a real server are counted by pool, backend and
    transport (C{txgateway_socketio_sessions}) and among the connections
    open by mode; their handshakes, messages each way and a refused
    handshake (no backend available: the only one drained) move the
    counters, with C{mode="socketio"}.
    """
    process, adminPort, _, _ = await startGateway(
        gateway_process, tmp_path, socketIOFile([socketio_server], route="ping_interval = 60\n"))
    old = await scrapeMetrics(adminPort)
    await engineHandshake(process.port)
    client, _ = await engineWebSocket(process.port)
    client.send('421["echo","hi"]')
    while not (await client.receive(30))[0].startswith(b"431"):
        pass
    status, _ = await admin(adminPort, "POST", "/pools/app/backends/sio-1/drain")
    assert status == 200
    status, _, _ = await request(process.port, "GET", "/socket.io/?EIO=4&transport=polling")
    assert status == 503
    new = await scrapeMetrics(adminPort)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return new[key] - old.get(key, 0)

    for transport in ("longpoll", "websocket"):
        assert new[("txgateway_socketio_sessions",
                    (("backend", "sio-1"), ("pool", "app"), ("transport", transport)))] == 1
        assert new[("txgateway_connections_open", (("mode", "socketio"), ("transport", transport)))] == 1
        assert moved("txgateway_handshake_duration_seconds_count", mode="socketio", transport=transport) == 1
    assert moved("txgateway_connections_accepted_total", mode="socketio", transport="longpoll") == 2
    assert moved("txgateway_refusals_total", status="503", reason="no_backend") == 1
    assert moved("txgateway_messages_total", mode="socketio", direction="up") >= 3  # 40, 40, 42
    assert moved("txgateway_messages_total", mode="socketio", direction="down") >= 4
    assert moved("txgateway_message_bytes_total", mode="socketio", direction="up") >= len('21["echo","hi"]')
    client.protocol.dropConnection(abort=True)
    process.signal("TERM")
    assert await process.wait() == 0
