"""
The Redis session map through Redis Sentinel, with real processes: a
master, a replica and three Sentinels (C{redis-server --sentinel}) on free
ports of 127.0.0.1, a real gateway on the C{redis+sentinel://} URL, a real
echo backend and the Python session client.  The master is SIGKILLed under
traffic: the Sentinels promote the replica, the gateway finds the new
master, and every message comes through once each way, in order, on the
same backend connection.  The same runs over TLS (C{rediss+sentinel://},
every server and Sentinel on TLS only, with certificates made for the
test), and a wrong authority fails the start with one line per Sentinel.

Each test prints what it measured (the time from the master's death to
resumed traffic).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.utils import getProcessOutput

from gateway.client import ClientState, SessionClient
from gateway.config import SessionMapConfig
from gateway.errors import SessionMapUnavailable
from gateway.testing import CuttingRelay, makeCertificates, waitUntil

from tests.helpers import redisCommand

from .helpers import LineWatcher, SentinelCluster, poolFile

#: The session map's command timeout, in seconds.
TIMEOUT = 0.5

#: Messages each way in the failover test (sent at a steady pace, so that
#: traffic runs before, during and after the failover).
MESSAGES = 600


@pytest.fixture
def sentinels(tmp_path, request):
    """
    A started L{SentinelCluster}, killed at the end of the test; over TLS
    when the test is parametrized with C{sentinels} true (indirectly).
    """
    tls = makeCertificates(str(tmp_path)) if getattr(request, "param", False) else None
    cluster = SentinelCluster(str(tmp_path), tls=tls)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def tlsOptions(cluster: SentinelCluster, ca: str | None = None) -> dict:
    """
    @return: the C{tls_*} options for C{cluster}: its authority (or
        C{ca}) and the client certificate; none for a plain cluster.
    """
    if cluster.tls is None:
        return {}
    return {"tls_ca_file": ca or cluster.tls.ca, "tls_cert_file": cluster.tls.clientCert,
            "tls_key_file": cluster.tls.clientKey}


def sentinelMap(cluster: SentinelCluster, prefix: str = "sentinel:") -> SessionMapConfig:
    """
    @return: a C{[session_map]} of type C{redis} on the cluster's Sentinel
        URL (with its TLS options).
    """
    options = {"key_prefix": prefix, "timeout": TIMEOUT, "url": cluster.url, **tlsOptions(cluster)}
    return SessionMapConfig(type="redis", options=tuple(sorted(options.items())))


def clusterMap(cluster: SentinelCluster, **options):
    """
    @return: a session map on C{cluster}, made by the plugin factory from
        the options a gateway would give it.
    """
    from gateway.sessionmap.redis import RedisSessionMapFactory

    return RedisSessionMapFactory()(
        {"url": cluster.url, "timeout": TIMEOUT, **tlsOptions(cluster), **options}, reactor)


@pytest.mark.parametrize("sentinels", [False, True], indirect=True, ids=["plain", "tls"])
@pytest_twisted.ensureDeferred
async def test_map_follows_failover(sentinels):
    """
    The map asks the Sentinels for the master, and after the master is
    SIGKILLed, connects to the promoted replica (found again through the
    Sentinels), counting one master change; writes work again.  Over TLS,
    every connection to the new master is TLS.
    """
    from twisted.internet.interfaces import ISSLTransport

    sessionMap = clusterMap(sentinels)
    try:
        await sessionMap.start()
        await sessionMap.setAffinity("p", b"k", "b1", 60)
        assert await sessionMap.getAffinity("p", b"k") == "b1"
        old = sentinels.master.port
        sentinels.master.kill()
        killed = time.monotonic()
        written = []

        async def tryWrite():
            try:
                await sessionMap.setAffinity("p", b"k2", "b2", 60)
            except Exception:
                return False
            written.append(time.monotonic())
            return True

        while not written:
            if time.monotonic() - killed > 20:
                raise AssertionError("writes did not resume within 20 s")
            if not await tryWrite():
                await task.deferLater(reactor, 0.05)
        print(f"\nmaster SIGKILLed: writes resumed after {written[0] - killed:.2f} s")
        assert sessionMap.masterChanges == 1
        assert sessionMap.endpoint().master != ("127.0.0.1", old)
        assert await sessionMap.getAffinity("p", b"k2") == "b2"
        for connection in sessionMap._factory.pool:
            if connection.connected:
                assert connection.transport.getPeer().port == sentinels.replica.port
                assert ISSLTransport.providedBy(connection.transport) == (sentinels.tls is not None)
    finally:
        await sessionMap.close()


@pytest.mark.parametrize("transport, sentinels", [("websocket", False), ("polling", False),
                                                   ("websocket", True)],
                         indirect=["sentinels"], ids=["websocket", "polling", "websocket-tls"])
@pytest_twisted.ensureDeferred
async def test_exactly_once_across_failover(transport, sentinels, echo_backends, make_gateway):
    """
    A session client sends and receives continuously through a gateway on
    the Sentinel URL while the master is SIGKILLed: the backend receives
    each client message once, in order, and the client each echo once, in
    order, over one backend connection; the gateway counts one master
    change and writes the session to the new master (its record there has
    every message the client has not acknowledged).  Over TLS too
    (C{rediss+sentinel://}: to the Sentinels and to both masters).
    """
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends, sessionMap=sentinelMap(sentinels))
    client = SessionClient(f"ws://127.0.0.1:{gateway.port}/app", reactor=reactor, initialDelay=0.02,
                           maxDelay=0.2, maxBufferMessages=MESSAGES, transport=transport)
    received: list[str] = []
    arrivals: list[float] = []

    def got(payload, isBinary):
        received.append(payload)
        arrivals.append(time.monotonic())

    client.on_message(got)
    resets = []
    client.on_state(lambda state, detail: resets.append(detail) if detail.reset else None)
    await client.connect()
    sent = 0

    def sendOne():
        nonlocal sent
        if sent < MESSAGES:
            sent += 1
            client.send(f"c:{sent}")

    sender = task.LoopingCall(sendOne)
    sender.start(0.01)
    try:
        await waitUntil(lambda: len(received) >= MESSAGES // 4, timeout=30)
        sentinels.master.kill()
        killed = time.monotonic()
        before = len(received)
        await waitUntil(lambda: gateway.service.sessionMap.masterChanges >= 1, timeout=30)
        switched = time.monotonic()
        await waitUntil(lambda: sent >= MESSAGES, timeout=60)
        sender.stop()
        await waitUntil(lambda: len(received) >= MESSAGES, timeout=60)
        await client.whenAcknowledged().addTimeout(30, reactor)
    finally:
        if sender.running:
            sender.stop()
    # The longest pause in the echoes after the master's death.
    after = [t for t in arrivals[before:]]
    gaps = [b - a for a, b in zip([killed, *after], after)]
    expected = [f"c:{i}" for i in range(1, MESSAGES + 1)]
    atBackend = [m.decode() for m in backends[0].factory.received]
    print(f"\nSentinel failover under {transport} traffic{' over TLS' if sentinels.tls else ''}:"
          f" master change seen after "
          f"{switched - killed:.2f} s; longest pause in the echoes {max(gaps):.2f} s; "
          f"to the backend {len(atBackend) - len(set(atBackend))} duplicated, "
          f"{len(set(expected) - set(atBackend))} lost; to the client "
          f"{len(received) - len(set(received))} duplicated, {len(set(expected) - set(received))} lost")
    assert atBackend == expected
    assert received == expected
    assert resets == []
    assert backends[0].factory.opened == 1
    assert gateway.service.sessionMap.masterChanges == 1
    detail = await client.close().addTimeout(30, reactor)
    assert client.state is ClientState.closed, detail


@pytest_twisted.ensureDeferred
async def test_takeover_after_failover(tmp_path, sentinels, echo_backends, gateway_process):
    """
    Two C{twistd gateway} nodes on the same Sentinel service.  The master
    is SIGKILLed under traffic through node n1, which writes its session
    whole to the new master; then n1 is SIGKILLed too, and the client
    resumes through n2, which takes the session over from the new
    master's copy: every message once each way, in order, on the same
    backend.  The client stays on WebSocket: in auto mode, a fall back to
    long-polling during the takeover can have its resume answered "closed
    4001" and end the client (a fault of its own, not of the failover).
    """
    backends = await echo_backends(1, record=True)
    nodes, watchers = {}, {}
    for name in ("n1", "n2"):
        extra = (f'[session_map]\ntype = "redis"\nurl = "{sentinels.url}"\nkey_prefix = "tk:"\n'
                 f'node_id = "{name}"\nnode_ttl = 1.0\ntimeout = {TIMEOUT}\n')
        path = tmp_path / f"{name}.toml"
        path.write_text(poolFile(backends, extra))
        nodes[name] = await gateway_process("--config", str(path))
        watchers[name] = LineWatcher(nodes[name])
    relay = CuttingRelay(nodes["n1"].port)
    await relay.start()
    client = SessionClient(f"ws://127.0.0.1:{relay.port}/chat", reactor=reactor, initialDelay=0.02,
                           maxDelay=0.2, maxBufferMessages=MESSAGES, transport="websocket")
    received: list[str] = []
    client.on_message(lambda payload, isBinary: received.append(payload))
    resets = []
    client.on_state(lambda state, detail: resets.append(detail) if detail.reset else None)
    await client.connect()
    sent = 0

    def sendOne():
        nonlocal sent
        if sent < MESSAGES:
            sent += 1
            client.send(f"c:{sent}")

    sender = task.LoopingCall(sendOne)
    sender.start(0.01)
    try:
        await waitUntil(lambda: len(received) >= MESSAGES // 4, timeout=30)
        mark = watchers["n1"].mark()
        sentinels.master.kill()
        killed = time.monotonic()
        await watchers["n1"].wait(r"the Redis master moved; writing it again", mark, timeout=30)
        # Until its session is written to the new master, n1 holds messages
        # the client was told arrived that only n1 knows of: wait for the
        # new master's record to count more than the client had sent when
        # the old master died.
        key = f"tk:s:{client.sessionId}"
        atKill = sent
        while int(await redisCommand(sentinels.replica.port, "HGET", key, "upFwd") or 0) <= atKill:
            await task.deferLater(reactor, 0.05)
            if time.monotonic() - killed > 30:
                raise AssertionError("the session was not written to the new master")
        rewritten = time.monotonic()
        relay.targets = [nodes["n2"].port]
        nodes["n1"].signal("KILL")
        relay.cut()
        await waitUntil(lambda: sent >= MESSAGES, timeout=60)
        sender.stop()
        await waitUntil(lambda: len(received) >= MESSAGES, timeout=60)
        await client.whenAcknowledged().addTimeout(30, reactor)
        detail = await client.close().addTimeout(30, reactor)
    finally:
        if sender.running:
            sender.stop()
        await relay.stop()
    expected = [f"c:{i}" for i in range(1, MESSAGES + 1)]
    atBackend = [m.decode() for m in backends[0].factory.received]
    print(f"\nSentinel failover, then the owner killed: the new master had n1's session"
          f" {rewritten - killed:.2f} s after the old one's death; to the backend {len(atBackend) - len(set(atBackend))} duplicated,"
          f" {len(set(expected) - set(atBackend))} lost; to the client"
          f" {len(received) - len(set(received))} duplicated, {len(set(expected) - set(received))} lost")
    assert atBackend == expected
    assert received == expected
    assert resets == []
    assert backends[0].factory.opened == 2  # the session's link, and the one after the takeover
    assert client.state is ClientState.closed, detail


@pytest_twisted.ensureDeferred
async def test_map_follows_manual_failover(sentinels):
    """
    A failover the Sentinels are asked for (C{SENTINEL FAILOVER}) leaves
    the old master running, as a replica: the map hears C{+switch-master},
    drops its connections to the old master and writes to the new one;
    none of its connections is left on the replica.
    """
    from gateway.sessionmap.redis import RedisSessionMap, parseRedisURL

    sessionMap = RedisSessionMap(parseRedisURL(sentinels.url), reactor, timeout=TIMEOUT)
    try:
        await sessionMap.start()
        old = sessionMap.endpoint().master
        assert old == ("127.0.0.1", sentinels.master.port)
        # The Sentinels' subscriptions are up before the failover is asked for.
        await task.deferLater(reactor, 0.3)
        answer = await getProcessOutput(shutil.which("redis-cli"), [
            "-h", "127.0.0.1", "-p", str(sentinels.sentinels[0].port),
            "SENTINEL", "FAILOVER", SentinelCluster.SERVICE], env=os.environ)
        assert answer.strip() == b"OK"
        asked = time.monotonic()
        await waitUntil(lambda: sessionMap.masterChanges == 1, timeout=20)
        heard = time.monotonic()
        assert sessionMap.endpoint().master == ("127.0.0.1", sentinels.replica.port)
        written = None
        while written is None:
            try:
                await sessionMap.setAffinity("p", b"k", "b1", 60)
                written = time.monotonic()
            except Exception:
                await task.deferLater(reactor, 0.05)
            if time.monotonic() - asked > 20:
                raise AssertionError("writes did not resume")
        print(f"\nSENTINEL FAILOVER: master change heard {heard - asked:.2f} s after asking,"
              f" writes resumed after {written - asked:.2f} s")
        assert await redisCommand(sentinels.replica.port, "GET", "txgw:aff:p:k") == b"b1"
        for connection in sessionMap._factory.pool:
            assert connection.transport.getPeer().port == sentinels.replica.port
    finally:
        await sessionMap.close()


@pytest_twisted.ensureDeferred
async def test_passwords(tmp_path):
    """
    With a password on the master and another on the Sentinels, the map
    authenticates to each (the master's from the URL's user information,
    the Sentinels' from C{sentinel_password}) and follows a failover; a
    wrong Sentinel password fails the start with one line that shows no
    password.
    """
    from gateway.sessionmap.redis import RedisSessionMap, RedisSessionMapFactory, parseRedisURL

    cluster = SentinelCluster(str(tmp_path), password="m-secret", sentinelPassword="s-secret")
    try:
        cluster.start()
        wrong = RedisSessionMap(parseRedisURL(cluster.url.replace("s-secret", "nope")), reactor,
                                timeout=TIMEOUT)
        with pytest.raises(Exception) as caught:
            await wrong.start()
        await wrong.close()
        message = str(caught.value)
        assert "could not authenticate to the Sentinel" in message, message
        assert "secret" not in message and "nope" not in message
        url = cluster.url.replace("?sentinel_password=s-secret", "")
        sessionMap = RedisSessionMapFactory()({"url": url, "sentinel_password": "s-secret",
                                               "timeout": TIMEOUT}, reactor)
        try:
            await sessionMap.start()
            await sessionMap.setAffinity("p", b"k", "b1", 60)
            await task.deferLater(reactor, 0.3)  # the Sentinels' subscriptions are up
            # Replication is asynchronous: fail over only once the replica
            # holds the record, or the new master may rightly not have it.
            replicated = []

            async def readReplica():
                out = await getProcessOutput(shutil.which("redis-cli"), [
                    "-h", "127.0.0.1", "-p", str(cluster.replica.port), "--no-auth-warning",
                    "-a", "m-secret", "DBSIZE"], env=os.environ)
                replicated[:] = [int(out.strip() or 0) > 0]

            for _ in range(100):
                await readReplica()
                if replicated[0]:
                    break
                await task.deferLater(reactor, 0.1)
            assert replicated == [True]
            answer = await getProcessOutput(shutil.which("redis-cli"), [
                "-h", "127.0.0.1", "-p", str(cluster.sentinels[0].port), "--no-auth-warning",
                "-a", "s-secret", "SENTINEL", "FAILOVER", SentinelCluster.SERVICE], env=os.environ)
            assert answer.strip() == b"OK"
            await waitUntil(lambda: sessionMap.masterChanges == 1, timeout=20)
            await waitUntil(lambda: sessionMap.connected, timeout=20)
            # A command in flight while the old master turns replica (and
            # drops its clients) fails, as any command in an outage does;
            # the map must answer from the new master soon after.
            affinity = None
            for _ in range(50):
                try:
                    affinity = await sessionMap.getAffinity("p", b"k")
                    break
                except SessionMapUnavailable:
                    await task.deferLater(reactor, 0.2)
            assert affinity == "b1"
            assert sessionMap.endpoint().master == ("127.0.0.1", cluster.replica.port)
        finally:
            await sessionMap.close()
    finally:
        cluster.stop()


@pytest.mark.parametrize("sentinels", [True], indirect=True, ids=["tls"])
@pytest_twisted.ensureDeferred
async def test_tls_wrong_authority(sentinels):
    """
    Through TLS Sentinels, a C{tls_ca_file} that did not sign their
    certificates fails the start at once, with one line saying for each
    Sentinel that its certificate did not verify; nothing logs a
    traceback.
    """
    from twisted.logger import globalLogPublisher

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    sessionMap = clusterMap(sentinels, tls_ca_file=sentinels.tls.otherCa)
    try:
        with pytest.raises(SessionMapUnavailable) as caught:
            await sessionMap.start().addTimeout(10, reactor)
    finally:
        await sessionMap.close()
        globalLogPublisher.removeObserver(events.append)
    message = str(caught.value)
    assert message.startswith(f"cannot use Redis at {sentinels.url}: could not connect: no Sentinel"
                              f" named the master of {SentinelCluster.SERVICE!r} ("), message
    for sentinel in sentinels.sentinels:
        assert (f"127.0.0.1:{sentinel.port}: TLS handshake with 127.0.0.1:{sentinel.port} failed: the"
                " server's certificate is not signed by an authority in tls_ca_file") in message
    assert "\n" not in message
    assert [e for e in events if "log_failure" in e] == []
