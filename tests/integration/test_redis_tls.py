"""
The Redis session map over TLS (C{rediss://}), against real C{redis-server}
processes that speak TLS only (C{--tls-port}, C{--port 0}), with an
authority and certificates made for the test: a gateway's session through
a Redis that requires client certificates (mutual TLS), and each TLS
mistake (a wrong authority, a wrong name, no client certificate, a port
that is not TLS) failing the start with one clear line and no traceback,
in a C{twistd gateway} process too; a certificate that stops verifying
while running is logged once, and the map comes back once it verifies
again.  (Through Sentinel: tests/integration/test_sentinel.py.)
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import globalLogPublisher

from gateway.client import ClientState, SessionClient
from gateway.config import SessionMapConfig
from gateway.errors import SessionMapUnavailable
from gateway.testing import RedisServer, makeCertificates, projectEnvironment, startProcess, waitUntil

from tests.helpers import within

from .helpers import poolFile, redisCliArguments

#: The session map's command timeout, in seconds.
TIMEOUT = 0.5


@pytest.fixture
def certificates(tmp_path):
    """
    A test authority and the certificates it signed, in C{tmp_path}.
    """
    return makeCertificates(str(tmp_path))


@pytest.fixture
def tls_redis(tmp_path, certificates):
    """
    A C{redis-server} on TLS only that requires a client certificate
    (C{tls-auth-clients yes}), stopped at the end of the test.
    """
    server = RedisServer(str(tmp_path), ("--tls-auth-clients", "yes"), tls=certificates)
    server.start()
    yield server
    server.stop()


def tlsOptions(certificates, **more) -> dict:
    """
    @return: the C{tls_*} options that trust the test authority and
        present the client certificate, with C{more}.
    """
    return {"tls_ca_file": certificates.ca, "tls_cert_file": certificates.clientCert,
            "tls_key_file": certificates.clientKey, "timeout": TIMEOUT, **more}


@pytest_twisted.ensureDeferred
async def test_sessionOverTLS(tls_redis, certificates, echo_backends, make_gateway):
    """
    A gateway on C{rediss://} with mutual TLS serves a session (its record
    written to Redis); every connection of its map, the node's
    subscription's too, is TLS.
    """
    backends = await echo_backends(1)
    options = tlsOptions(certificates, url=tls_redis.url, key_prefix="tls:")
    gateway = await make_gateway(backends, sessionMap=SessionMapConfig(
        type="redis", options=tuple(sorted(options.items()))))
    sessionMap = gateway.service.sessionMap
    client = SessionClient(f"ws://127.0.0.1:{gateway.port}/app", reactor=reactor, transport="websocket")
    received: list[str] = []
    client.on_message(lambda payload, isBinary: received.append(payload))
    await client.connect()
    for i in range(20):
        client.send(f"m{i}")
    await waitUntil(lambda: len(received) == 20, timeout=10)
    assert received == [f"m{i}" for i in range(20)]
    await client.whenAcknowledged().addTimeout(10, reactor)
    keys = subprocess.run([*redisCliArguments(tls_redis.port, tls=certificates), "--scan", "--pattern",
                           f"tls:s:{client.sessionId}"], capture_output=True, text=True, timeout=10)
    assert keys.stdout.split() == [f"tls:s:{client.sessionId}"]
    assert sessionMap.connected
    assert all(ISSLTransport.providedBy(c.transport) for c in sessionMap._factory.pool)
    clients = subprocess.run([*redisCliArguments(tls_redis.port, tls=certificates), "CLIENT", "LIST"],
                             capture_output=True, text=True, timeout=10).stdout
    assert "cmd=subscribe" in clients or "cmd=psubscribe" in clients, clients
    detail = await client.close().addTimeout(10, reactor)
    assert client.state is ClientState.closed, detail


@pytest.mark.parametrize(
    "options, said",
    [
        ({"tls_ca_file": "otherCa"},
         "the server's certificate is not signed by an authority in tls_ca_file (or, without it, in the"
         " system's), or has expired (certificate verify failed)"),
        ({"tls_server_name": "redis.elsewhere.example"},
         "the server's certificate is not for 'redis.elsewhere.example' (give tls_server_name the name"
         " the certificate holds)"),
        ({"tls_cert_file": None, "tls_key_file": None},
         "the server requires a client certificate (tls_cert_file and tls_key_file)"),
    ],
    ids=["wrong-authority", "wrong-name", "no-client-certificate"],
)
@pytest_twisted.ensureDeferred
async def test_startFailsClearly(tls_redis, certificates, options, said):
    """
    A TLS mistake fails the start with one line naming the server and what
    to check; the map logs no traceback.
    """
    from gateway.sessionmap.redis import RedisSessionMapFactory

    given = tlsOptions(certificates, url=tls_redis.url)
    for key, value in options.items():
        if value is None:
            del given[key]
        else:
            given[key] = getattr(certificates, value) if key == "tls_ca_file" else value
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    sessionMap = RedisSessionMapFactory()(given, reactor)
    try:
        with pytest.raises(SessionMapUnavailable) as caught:
            await within(sessionMap.start())
    finally:
        await within(sessionMap.close())
        globalLogPublisher.removeObserver(events.append)
    message = str(caught.value)
    assert message.startswith(f"cannot use Redis at {tls_redis.url}: TLS handshake with"
                              f" 127.0.0.1:{tls_redis.port} failed: "), message
    assert said in message
    assert "\n" not in message
    assert [e for e in events if "log_failure" in e] == []


@pytest_twisted.ensureDeferred
async def test_plainPortFailsClearly(redis_server, certificates):
    """
    C{rediss://} to a plain Redis port (which never answers the TLS
    handshake) fails within the timeout saying so; C{redis://} to a TLS
    port suggests C{rediss://}.
    """
    from gateway.sessionmap.redis import RedisSessionMapFactory

    sessionMap = RedisSessionMapFactory()(
        {"url": f"rediss://127.0.0.1:{redis_server.port}/0", "tls_ca_file": certificates.ca,
         "timeout": TIMEOUT}, reactor)
    try:
        with pytest.raises(SessionMapUnavailable) as caught:
            await within(sessionMap.start())
    finally:
        await within(sessionMap.close())
    assert str(caught.value).endswith(
        "no answer within 0.5s (the TLS handshake did not finish: is the port a TLS port?)")


@pytest_twisted.ensureDeferred
async def test_wrongAuthorityProcess(tmp_path, tls_redis, certificates, echo_backends):
    """
    A C{twistd gateway} whose C{tls_ca_file} did not sign Redis's
    certificate ends, with one line saying so and no traceback.
    """
    backends = await echo_backends(1)
    extra = (f'[session_map]\ntype = "redis"\nurl = "{tls_redis.url}"\ntls_ca_file = "{certificates.otherCa}"\n'
             f'tls_cert_file = "{certificates.clientCert}"\ntls_key_file = "{certificates.clientKey}"\n'
             f"timeout = {TIMEOUT}\n")
    path = tmp_path / "gateway.toml"
    path.write_text(poolFile(backends, extra))
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
               "gateway", "--listen", "tcp:0:interface=127.0.0.1", "--config", str(path)]
    process = await startProcess(command, r"cannot use Redis", env=projectEnvironment(), cwd=str(tmp_path))
    await process.wait()
    lines = [line for line in process.output.splitlines() if "cannot use Redis" in line]
    assert len(lines) == 1, process.output
    assert lines[0].endswith(
        f"gateway: cannot use Redis at {tls_redis.url}: TLS handshake with 127.0.0.1:{tls_redis.port}"
        " failed: the server's certificate is not signed by an authority in tls_ca_file (or, without"
        " it, in the system's), or has expired (certificate verify failed)"), lines[0]
    assert "Traceback" not in process.output


@pytest_twisted.ensureDeferred
async def test_certificateStopsVerifying(tmp_path, tls_redis, certificates):
    """
    Redis restarted with a certificate from another authority: every
    reconnection fails its handshake, which the map logs once (an error,
    no traceback), and calls fail saying why; once Redis has a certificate
    that verifies again, the map is back by itself.
    """
    from gateway.sessionmap.redis import RedisSessionMapFactory

    sessionMap = RedisSessionMapFactory()(tlsOptions(certificates, url=tls_redis.url), reactor)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        await within(sessionMap.start())
        await within(sessionMap.setAffinity("p", b"k", "b1", 60))
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        other = makeCertificates(str(elsewhere))
        tls_redis.kill()
        # The same client authority, another server authority.
        tls_redis.tls = dataclasses.replace(other, ca=certificates.ca)
        tls_redis.start()
        attempts = []
        failed = sessionMap.setUpFailed
        sessionMap.setUpFailed = lambda reason: (attempts.append(reason), failed(reason))
        await within(waitUntil(lambda: len(attempts) >= 2, timeout=10), 15)
        with pytest.raises(SessionMapUnavailable) as caught:
            await within(sessionMap.getAffinity("p", b"k"))
        assert "last attempt: TLS handshake with" in str(caught.value)
        assert "certificate verify failed" in str(caught.value)
        tls_redis.kill()
        tls_redis.tls = certificates
        tls_redis.start()
        await within(waitUntil(lambda: sessionMap.connected, timeout=10), 15)
        await within(sessionMap.setAffinity("p", b"k", "b2", 60))
    finally:
        await within(sessionMap.close())
        globalLogPublisher.removeObserver(events.append)
    logged = [e for e in events if e.get("log_namespace", "").startswith("gateway.sessionmap")
              and e["log_level"].name == "error"]
    assert len(logged) == 1, logged
    assert "TLS handshake with" in logged[0]["reason"]
    assert [e for e in events if "log_failure" in e] == []
