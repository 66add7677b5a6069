"""
Helpers that several integration test modules share: one place, so that no
test module imports another.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol

from gateway.testing import LOCALHOST, CertificateFiles, RedisServer, rawExchange, startProcess, tlsArguments
from gateway.wire.frames import OP_TEXT, encodeClose, encodeFrame

TOKEN = "integration-admin-token-0123456789"


class LineWatcher:
    """
    Waits for lines of a child process's output, as they arrive.
    """

    def __init__(self, process) -> None:
        self.lines = process.protocol.lines
        self._waiting: list[tuple[re.Pattern, int, Deferred]] = []
        received = process.protocol.outReceived

        def hooked(data: bytes) -> None:
            received(data)
            self._check()

        process.protocol.outReceived = hooked
        process.protocol.errReceived = hooked

    def mark(self) -> int:
        """
        @return: where the output is now, for L{wait}.
        """
        return len(self.lines)

    def wait(self, pattern: str, since: int, timeout: float = 15.0) -> Deferred:
        """
        @return: L{Deferred} firing with the first line after C{since}
            matching C{pattern}.
        """
        d: Deferred = Deferred()
        self._waiting.append((re.compile(pattern), since, d))
        self._check()
        return d.addTimeout(timeout, reactor)

    def matching(self, pattern: str, since: int = 0) -> list[str]:
        """
        @return: the lines after C{since} matching C{pattern}.
        """
        regex = re.compile(pattern)
        return [line for line in self.lines[since:] if regex.search(line)]

    def _check(self) -> None:
        for entry in list(self._waiting):
            regex, since, d = entry
            for line in self.lines[since:]:
                if regex.search(line):
                    self._waiting.remove(entry)
                    if not d.called:
                        d.callback(line)
                    break


def poolFile(backends, extra: str = "", **weights: int) -> str:
    """
    @return: a configuration with one pool C{chat} of C{backends} (each
        named as the backend names itself), then C{extra}.
    """
    text = "[timeouts]\nshutdown = 2\n" + extra + "[pool.chat]\n"
    for backend in backends:
        text += f'[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n'
        if backend.name in weights:
            text += f"weight = {weights[backend.name]}\n"
    return text


async def startGateway(gateway_process, tmp_path: Path, text: str, *args: str):
    """
    Run C{twistd -n gateway --config FILE} with the admin API on a free
    port of 127.0.0.1.

    @return: C{(process, admin port, line watcher, config file)}.
    """
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    token = tmp_path / "admin-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    process = await gateway_process("--config", str(config), "--admin", "tcp:0:interface=127.0.0.1",
                                    "--admin-token-file", str(token), *args)
    [port] = re.findall(r"admin API listening on 127\.0\.0\.1:(\d+)", process.output)
    return process, int(port), LineWatcher(process), config


async def admin(port: int, method: str, path: str, body: bytes = b"", token: str | None = TOKEN):
    """
    One admin request over a fresh connection.

    @return: C{(status, JSON body)}.
    """
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token is not None:
        head += f"Authorization: Bearer {token}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    answer = await rawExchange(port, head.encode() + body)
    status, _, rest = answer.partition(b"\r\n\r\n")
    return int(status.split(b" ", 2)[1]), json.loads(rest)


async def whichBackend(client) -> str:
    """
    Ask a prefixed echo backend for its name through an open client.
    """
    client.send("who")
    payload, _ = await client.receive()
    return payload.split(b":", 1)[0].decode()


def backendsByName(pools: dict, name: str = "chat") -> dict[str, dict]:
    """
    @return: the backends of pool C{name} in a C{GET /pools} answer, by name.
    """
    [pool] = [p for p in pools["pools"] if p["name"] == name]
    return {b["name"]: b for b in pool["backends"]}


class CLI(ProcessProtocol):
    """
    Feeds the client its input and collects what it prints.
    """

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.out = b""
        self.err = b""
        self.firstOutput: Deferred = Deferred()
        self.ended: Deferred = Deferred()

    def connectionMade(self):
        self.transport.write("".join(line + "\n" for line in self.lines).encode())
        self.transport.closeStdin()

    def outReceived(self, data):
        self.out += data
        if not self.firstOutput.called:
            self.firstOutput.callback(None)

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


async def pause(seconds: float) -> None:
    from twisted.internet.task import deferLater

    await deferLater(reactor, seconds)


def redisCliArguments(port: int, password: str | None = None,
                      tls: CertificateFiles | None = None) -> list[str]:
    """
    @return: the C{redis-cli} command line, less the command, for the
        server at C{port} (over TLS with C{tls}'s authority and client
        certificate).
    """
    binary = shutil.which("redis-cli")
    if binary is None:
        pytest.fail("redis-cli is not installed: run the test command from README.md, "
                    "which installs it with redis-server")
    auth = ["--no-auth-warning", "-a", password] if password is not None else []
    secure = ["--tls", "--cacert", tls.ca, "--cert", tls.clientCert, "--key", tls.clientKey] if tls else []
    return [binary, "-h", LOCALHOST, "-p", str(port), *secure, *auth]


def redisCli(port: int, *command: str, password: str | None = None,
             tls: CertificateFiles | None = None) -> str:
    """
    Run one command with C{redis-cli} (synchronously: for fixtures, outside
    the reactor).

    @return: what it printed.
    """
    done = subprocess.run([*redisCliArguments(port, password, tls), *command],
                          capture_output=True, text=True, timeout=10)
    return done.stdout


def waitFor(check, what: str, timeout: float = 15.0) -> None:
    """
    Poll C{check()} until it is true (synchronously, for fixtures).
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)  # a synchronous fixture, outside the reactor


class SentinelServer(RedisServer):
    """
    A real C{redis-server --sentinel} watching C{service}, with a generated
    sentinel.conf: the master is taken for down after 500 ms, and a
    failover may take 2 s.  With C{tls}, it listens on TLS only and
    reaches the servers and the other Sentinels over TLS.
    """

    READY = "+monitor master"

    def __init__(self, directory: str, service: str, masterPort: int, quorum: int = 2,
                 password: str | None = None, masterPassword: str | None = None,
                 tls: CertificateFiles | None = None) -> None:
        super().__init__(directory, tls=tls)
        self.service = service
        self.masterPort = masterPort
        self.quorum = quorum
        self.password = password
        self.masterPassword = masterPassword
        self.myid = os.urandom(20).hex()
        #: Lines added to the configuration (the other Sentinels and the
        #: replica, so that they need not be discovered first).
        self.known: list[str] = []

    def command(self, binary: str, port: int, logfile: str) -> list[str]:
        path = os.path.join(self.directory, f"sentinel-{port}.conf")
        if self.tls is None:
            listen = f"port {port}\n"
        else:
            arguments = tlsArguments(self.tls)
            listen = f"port 0\ntls-port {port}\n" + "".join(
                f"{name[2:]} {value}\n" for name, value in zip(arguments[::2], arguments[1::2]))
        with open(path, "w") as f:
            f.write(f"{listen}bind {LOCALHOST}\ndir {self.directory}\nlogfile {logfile}\n"
                    f"sentinel monitor {self.service} {LOCALHOST} {self.masterPort} {self.quorum}\n"
                    f"sentinel down-after-milliseconds {self.service} 500\n"
                    f"sentinel failover-timeout {self.service} 2000\n"
                    f"sentinel myid {self.myid}\n" + "".join(line + "\n" for line in self.known))
            if self.masterPassword is not None:
                f.write(f"sentinel auth-pass {self.service} {self.masterPassword}\n")
            if self.password is not None:
                f.write(f"requirepass {self.password}\nsentinel sentinel-pass {self.password}\n")
        return [binary, path, "--sentinel"]


class SentinelCluster:
    """
    A master, a replica and three Sentinels, real processes on 127.0.0.1;
    L{start} returns once the replica is in sync and every Sentinel knows
    the replica and the two other Sentinels (so that a failover can run).

    @ivar password: the master's and the replica's (C{requirepass}).
    @ivar sentinelPassword: the Sentinels' own.
    @ivar tls: with certificates, every server and Sentinel speaks TLS
        only, replication and the Sentinels' own connections included
        (C{tls-replication yes}), and L{url} is C{rediss+sentinel://}.
    """

    SERVICE = "gwmaster"

    def __init__(self, directory: str, password: str | None = None,
                 sentinelPassword: str | None = None, tls: CertificateFiles | None = None) -> None:
        self.directory = directory
        self.password = password
        self.sentinelPassword = sentinelPassword
        self.tls = tls
        self._auth = ("--requirepass", password, "--masterauth", password) if password else ()
        # A replica syncs at once (not after the 5 s a diskless sync waits
        # for more replicas by default).
        self.master = RedisServer(directory, ("--repl-diskless-sync-delay", "0", *self._auth), tls=tls)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []

    @property
    def url(self) -> str:
        """
        The C{redis+sentinel://} URL of the service.
        """
        hosts = ",".join(f"{LOCALHOST}:{s.port}" for s in self.sentinels)
        credentials = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinelPassword}" if self.sentinelPassword else ""
        scheme = "rediss+sentinel" if self.tls else "redis+sentinel"
        return f"{scheme}://{credentials}{hosts}/{self.SERVICE}/0{query}"

    def start(self) -> None:
        self.master.start()
        self.replica = RedisServer(self.directory, ("--replicaof", LOCALHOST, str(self.master.port),
                                                    "--repl-diskless-sync-delay", "0", *self._auth),
                                   tls=self.tls)
        self.replica.start()
        waitFor(lambda: "master_link_status:up" in redisCli(self.replica.port, "INFO", "replication",
                                                             password=self.password, tls=self.tls),
                "the replica to sync")
        # Each Sentinel is told of the replica and of the others up front
        # (on ports chosen here, below the ephemeral range, chosen again
        # when one is taken), instead of finding them over a few seconds
        # of hello messages.
        for _ in range(10):
            self.sentinels = [SentinelServer(self.directory, self.SERVICE, self.master.port,
                                             password=self.sentinelPassword, masterPassword=self.password,
                                             tls=self.tls)
                              for _ in range(3)]
            for sentinel, port in zip(self.sentinels, random.sample(range(20000, 32000), 3)):
                sentinel.port = port
            for sentinel in self.sentinels:
                sentinel.known = [f"sentinel known-replica {self.SERVICE} {LOCALHOST} {self.replica.port}"] + [
                    f"sentinel known-sentinel {self.SERVICE} {LOCALHOST} {other.port} {other.myid}"
                    for other in self.sentinels if other is not sentinel]
            try:
                for sentinel in self.sentinels:
                    sentinel.start(attempts=1)
                break
            except RuntimeError:
                for sentinel in self.sentinels:
                    sentinel.kill()
        else:
            raise RuntimeError("the Sentinels did not start")
        for sentinel in self.sentinels:
            waitFor(lambda: self._ready(sentinel), f"Sentinel {sentinel.port} to see the others")

    def _ready(self, sentinel: SentinelServer) -> bool:
        fields = redisCli(sentinel.port, "SENTINEL", "master", self.SERVICE,
                          password=self.sentinelPassword, tls=self.tls).split()
        state = dict(zip(fields[::2], fields[1::2]))
        return state.get("num-slaves") == "1" and state.get("num-other-sentinels") == "2"

    def masterPort(self) -> int | None:
        """
        @return: the master's port as the first Sentinel says.
        """
        answer = redisCli(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", self.SERVICE,
                          password=self.sentinelPassword, tls=self.tls)
        lines = answer.split()
        return int(lines[1]) if len(lines) == 2 else None

    def stop(self) -> None:
        for server in [*self.sentinels, self.replica, self.master]:
            if server is not None:
                server.kill()


#: Seconds a PROXY test exchange may take.
PROXY_T = 10.0

#: The signature every PROXY protocol version 2 header begins with.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxyV1(source: str, port: int = 40000) -> bytes:
    """
    @return: a version 1 header from C{source} (TCP4 or TCP6 by its form).
    """
    family = "TCP6" if ":" in source else "TCP4"
    destination = "::1" if family == "TCP6" else "127.0.0.1"
    return f"PROXY {family} {source} {destination} {port} 8080\r\n".encode()


def proxyV2(source: str | None, port: int = 40000) -> bytes:
    """
    @return: a version 2 header: C{PROXY} from C{source} over TCP, or
        C{LOCAL} when C{source} is L{None}.
    """
    if source is None:
        return V2_SIGNATURE + bytes([0x20, 0x00]) + struct.pack("!H", 0)
    address = ipaddress.ip_address(source)
    if address.version == 4:
        body = address.packed + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 8080)
        family = 0x11
    else:
        body = address.packed + ipaddress.ip_address("::1").packed + struct.pack("!HH", port, 8080)
        family = 0x21
    return V2_SIGNATURE + bytes([0x21, family]) + struct.pack("!H", len(body)) + body


def markedUpgrade(marker: str, path: str = "/chat") -> bytes:
    """
    @return: a transparent WebSocket upgrade with C{X-Marker: marker}, a
        masked text frame and a close frame.
    """
    head = (f"GET {path} HTTP/1.1\r\nHost: example.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            f"X-Marker: {marker}\r\n\r\n").encode()
    return head + encodeFrame(OP_TEXT, b"probe", mask=True) + encodeClose(1000, "", mask=True)


def pollOpen(port: int) -> bytes:
    """
    @return: a long-polling C{open} request.
    """
    body = json.dumps({"t": "hello", "v": 1}).encode()
    return (b"POST /chat?txgw=open HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (port, len(body), body))


class _Collector(Protocol):
    def connectionMade(self):
        self.received = []
        factory = self.factory
        if factory.tls is not None:
            self.transport.write(factory.first)
            self.transport.startTLS(factory.tls)
            self.transport.write(factory.rest)
        else:
            self.transport.write(factory.first + factory.rest)

    def dataReceived(self, data):
        self.received.append(data)
        until = self.factory.until
        if until is not None and until in b"".join(self.received):
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.factory.done.callback(b"".join(self.received))


async def sendAndCollect(endpoint, first: bytes, rest: bytes = b"", tls=None, until: bytes | None = None) -> bytes:
    """
    Connect, send C{first} then (under TLS, if C{tls} is given) C{rest};
    @return: everything received until the gateway closes (or until
        C{until} has been received).
    """
    factory = Factory.forProtocol(_Collector)
    factory.first, factory.rest, factory.tls, factory.done = first, rest, tls, Deferred()
    factory.until = until
    proto = await endpoint.connect(factory)

    def onTimeout(result, timeout):
        proto.transport.abortConnection()
        return result

    return await factory.done.addTimeout(PROXY_T, reactor, onTimeoutCancel=onTimeout)


def localTCP(port: int) -> TCP4ClientEndpoint:
    """
    @return: an endpoint to C{port} of 127.0.0.1.
    """
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=PROXY_T)


def haproxyBinary() -> str:
    """
    @return: the haproxy binary; C{make test} installs it when missing.
    """
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if path is None:
        pytest.fail("haproxy is not installed (make test installs it)")
    return path


def freePort() -> int:
    """
    @return: a port of 127.0.0.1 free a moment ago (HAProxy cannot listen on
        port 0 and report it; L{HAProxy.start} retries on a clash).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def accepting(port: int) -> bool:
    """
    @return: whether something accepts connections on C{port}.
    """
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
    try:
        protocol = await endpoint.connect(Factory.forProtocol(Protocol))
    except Exception:
        return False
    protocol.transport.loseConnection()
    return True


class HAProxy:
    """
    A real HAProxy in TCP mode balancing round robin over gateway nodes,
    checking them every 100 ms so that a dead node is skipped at once.
    """

    def __init__(self, directory, ports: list[int], serverOptions: str = "") -> None:
        """
        @param serverOptions: added to each C{server} line (C{send-proxy-v2}).
        """
        self.directory = directory
        self.ports = ports
        self.serverOptions = serverOptions
        self.port = 0
        self.process: subprocess.Popen | None = None

    def config(self, port: int) -> str:
        servers = "".join(
            f"  server node{i} 127.0.0.1:{p} check inter 100ms fall 1 rise 2 {self.serverOptions}\n"
            for i, p in enumerate(self.ports, 1))
        return (
            "global\n  maxconn 4096\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n"
            "  timeout server 120s\n  retries 3\n  option redispatch\n"
            f"frontend front\n  bind 127.0.0.1:{port}\n  default_backend nodes\n"
            f"backend nodes\n  balance roundrobin\n{servers}"
        )

    async def start(self) -> int:
        for _ in range(20):
            port = freePort()
            path = os.path.join(self.directory, "haproxy.cfg")
            with open(path, "w") as f:
                f.write(self.config(port))
            process = subprocess.Popen([haproxyBinary(), "-db", "-f", path],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL)
            for _ in range(200):
                if process.poll() is not None:
                    break
                if await accepting(port):
                    self.process, self.port = process, port
                    return port
                await task.deferLater(reactor, 0.02, lambda: None)
            process.kill()
            process.wait()
        raise RuntimeError("haproxy did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# Socket.IO peers.

#: The Socket.IO peers the tests run (their npm packages installed there by
#: C{make test}).
SOCKETIO_DIR = Path(__file__).resolve().parent / "socketio"


def node() -> str:
    """
    @return: Node's executable, once the npm packages are there (C{make
        test} installs both; missing, the test fails rather than skips).
    """
    executable = shutil.which("node")
    assert executable, "node is needed: make test installs it"
    assert (SOCKETIO_DIR / "node_modules" / "socket.io-client").is_dir(), (
        "the npm packages are needed: make test installs them (npm ci in tests/integration/socketio)")
    return executable


async def startSocketIOServer(kind: str):
    """
    @return: a running Socket.IO server process: python-socketio's
        (C{"python"}) or Node's (C{"node"}).
    """
    if kind == "python":
        command = [sys.executable, str(SOCKETIO_DIR / "server.py")]
    else:
        command = [node(), str(SOCKETIO_DIR / "server.mjs")]
    return await startProcess(command, r"listening on (\d+)")


async def request(port: int, method: str, target: str, body: bytes = b"",
                  headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """
    @return: the status, headers (lower-case names) and body of one HTTP
        request to the gateway.
    """
    raw = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
           f"Content-Length: {len(body)}\r\n{headers}\r\n").encode("latin-1") + body
    answer = await rawExchange(port, raw, timeout=30)
    head, _, payload = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields, payload


async def held(port: int, target: str) -> tuple[Deferred]:
    """
    Send a GET that the gateway is to hold, and give it a moment to arrive
    (nothing outside the gateway can tell when a poll is held).

    @return: a L{Deferred} firing with the whole answer.
    """
    raw = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = Deferred.fromCoroutine(rawExchange(port, raw, timeout=30))
    await pause(0.2)
    return (answer,)


def assertError(answer, status: int, code: int) -> None:
    """
    C{answer} is an error with C{status} and the reference server's body.
    """
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["code"] == code


def socketIOFile(ports: list[int], extra: str = "", route: str = "", top: str = "") -> str:
    """
    @return: a configuration with the Socket.IO route C{/socket.io/} (and
        C{route}'s keys) to pool C{app} of the Socket.IO servers on C{ports}
        (named C{sio-1}, C{sio-2}, ...), after C{top} and before C{extra}
        (more tables).
    """
    text = top + '[[route]]\nprefix = "/socket.io/"\npool = "app"\nprotocol = "socket.io"\n' + route
    text += extra + "[pool.app]\n"
    for number, port in enumerate(ports, 1):
        text += f'[[pool.app.backend]]\nurl = "ws://127.0.0.1:{port}"\nname = "sio-{number}"\n'
    return text


async def engineHandshake(port: int, path: str = "/socket.io/") -> tuple[str, dict]:
    """
    Open a polling Engine.IO session and connect it to the Socket.IO
    server's default namespace (a raw C{40}, its answer polled).

    @return: its sid and open packet.
    """
    status, _, body = await request(port, "GET", f"{path}?EIO=4&transport=polling")
    assert status == 200 and body[:1] == b"0", body
    opened = json.loads(body[1:])
    target = f"{path}?EIO=4&transport=polling&sid={opened['sid']}"
    assert (await request(port, "POST", target, b"40"))[0] == 200
    status, _, body = await request(port, "GET", target)
    assert status == 200 and body.startswith(b'40{"sid"'), body
    return opened["sid"], opened


async def engineWebSocket(port: int, path: str = "/socket.io/"):
    """
    Open an Engine.IO session over WebSocket and connect it to the Socket.IO
    server's default namespace.

    @return: C{(client, sid)}: the open L{gateway.testing.TestClient} and
        the session's id.
    """
    from gateway.testing import connectClient

    client = await connectClient(f"ws://127.0.0.1:{port}", path=f"{path}?EIO=4&transport=websocket",
                                 timeout=30)
    payload, _ = await client.receive(30)
    assert payload[:1] == b"0", payload
    sid = json.loads(payload[1:])["sid"]
    client.send("40")
    payload, _ = await client.receive(30)
    assert payload.startswith(b'40{"sid"'), payload
    return client, sid


#: The headers of a WebSocket opening handshake, after its request line.
UPGRADE_HEADERS = ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")


async def upgradeAnswer(port: int, target: str, headers: str = "") -> tuple[int, dict[str, str], bytes]:
    """
    @return: the status, headers (lower-case names) and body of the answer
        to a WebSocket opening handshake for C{target} the gateway refuses
        (it closes the connection after its answer).
    """
    raw = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{UPGRADE_HEADERS}{headers}\r\n".encode()
    answer = await rawExchange(port, raw, timeout=30)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


async def scrapeMetrics(port: int) -> dict[tuple[str, tuple], float]:
    """
    @return: every sample of C{GET /metrics} on the admin API of C{port},
        by name and sorted labels.
    """
    from prometheus_client.parser import text_string_to_metric_families

    raw = (f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
           f"Authorization: Bearer {TOKEN}\r\n\r\n").encode()
    answer = await rawExchange(port, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


async def pollUntil(port: int, sid: str, needle: bytes, path: str = "/socket.io/") -> bytes:
    """
    Poll Engine.IO session C{sid} until C{needle} has come.

    @return: what the polls brought, joined by the record separator.
    """
    target = f"{path}?EIO=4&transport=polling&sid={sid}"
    received = b""
    while needle not in received:
        status, _, body = await request(port, "GET", target)
        assert status == 200, body
        received += body + b"\x1e"
    return received
