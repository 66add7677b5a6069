"""
Helpers that several integration test modules share: one place, so that no
test module imports another.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

from gateway.testing import rawExchange

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


def backendsByName(pools: dict) -> dict[str, dict]:
    """
    @return: the backends of pool C{chat} in a C{GET /pools} answer, by name.
    """
    [pool] = [p for p in pools["pools"] if p["name"] == "chat"]
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


def selfSignedCertificate(directory) -> tuple[str, str, bytes]:
    """
    Write a self-signed certificate for "localhost" and its key.

    @return: (key path, certificate path, certificate PEM).
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyPath, certPath = directory / "key.pem", directory / "cert.pem"
    keyPath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    certPath.write_bytes(pem)
    return str(keyPath), str(certPath), pem
