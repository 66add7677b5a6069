"""
Tests for TLS in the Redis session map: the C{tls_*} options
(L{gateway.sessionmap._options}), reading and checking the files they name
(L{gateway.sessionmap._tls}), what a failed handshake is reported as, and
the set-up protocol waiting for the handshake within the timeout
(L{gateway.sessionmap._connection}).  Real TLS servers are in
tests/integration/test_redis_tls.py and test_sentinel.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from OpenSSL.SSL import Error as SSLError
from service_identity import VerificationError
from service_identity.exceptions import DNSMismatch, IPAddressMismatch
from service_identity.hazmat import DNS_ID, IPAddress_ID
from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import alsoProvides
from zope.interface.verify import verifyObject

from gateway.errors import ConfigError
from gateway.metrics import NoMetrics
from gateway.sessionmap._connection import TLSFailure, setUpProtocol, tlsFailure
from gateway.sessionmap._options import TLSSettings, readOptions
from gateway.sessionmap._tls import PLAIN, ClientTLS, loadClientTLS
from gateway.sessionmap.redis import RedisSessionMapFactory
from gateway.testing import makeCertificates


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """
    A test authority and the certificates it signed.
    """
    return makeCertificates(str(tmp_path_factory.mktemp("certificates")))


# The options.

def test_tlsSettings():
    """
    A C{rediss://} URL has TLS settings, verifying by default with the
    system's authorities; C{redis://} has none.
    """
    assert readOptions({"url": "rediss://h:6380/0"}).tls == TLSSettings()
    assert readOptions({"url": "redis://h"}).tls is None
    read = readOptions({"url": "rediss+sentinel://h:26380/m", "tls_ca_file": "/ca.pem",
                        "tls_cert_file": "/c.pem", "tls_key_file": "/c.key",
                        "tls_server_name": "redis.internal", "tls_verify": False})
    assert read.tls == TLSSettings("/ca.pem", "/c.pem", "/c.key", "redis.internal", False)
    shards = readOptions({"shards": ["redis://a", "rediss://b:6380"], "tls_ca_file": "/ca.pem"})
    assert shards.tls == TLSSettings("/ca.pem")
    assert readOptions({"url": "rediss://h", "tls_server_name": "10.0.0.9"}).tls.serverName == "10.0.0.9"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"url": "redis://h", "tls_ca_file": "/ca.pem"},
         "session map 'redis': tls_ca_file needs a rediss:// or rediss+sentinel:// url (TLS); the url is not one"),
        ({"shards": ["redis://a", "redis+sentinel://s/m"], "tls_verify": True},
         "tls_verify needs a rediss:// or rediss+sentinel:// url"),
        ({"url": "rediss://h", "tls_ca_file": ""}, "tls_ca_file must be a non-empty string, not ''"),
        ({"url": "rediss://h", "tls_key_file": 1}, "tls_key_file must be a non-empty string, not 1"),
        ({"url": "rediss://h", "tls_verify": "no"}, "tls_verify must be true or false, not 'no'"),
        ({"url": "rediss://h", "tls_cert_file": "/c.pem"},
         "tls_cert_file needs tls_key_file (the certificate's private key)"),
        ({"url": "rediss://h", "tls_key_file": "/c.key"},
         "tls_key_file needs tls_cert_file (the certificate it is the key of)"),
        ({"url": "rediss://h", "tls_server_name": "*.example.com"},
         "tls_server_name must be a host name or an IP address, not '*.example.com'"),
        ({"url": "rediss://h", "tls_server_name": "a b"}, "tls_server_name must be a host name"),
    ],
)
def test_tlsOptionsRefused(options, message):
    """
    A wrong C{tls_*} option is one line naming it.
    """
    with pytest.raises(ConfigError) as caught:
        readOptions(options)
    assert message in str(caught.value)


# The files.

def loadError(settings: TLSSettings) -> str:
    """
    @return: the error reading C{settings}' files fails with.
    """
    with pytest.raises(ConfigError) as caught:
        loadClientTLS(settings)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_loadFiles(certificates, tmp_path):
    """
    The authority and the client certificate with its key load; a
    certificate file may carry its intermediates after it.
    """
    tls = loadClientTLS(TLSSettings(certificates.ca, certificates.clientCert, certificates.clientKey))
    assert tls.secure and tls.settings.verify
    chained = tmp_path / "chain.pem"
    chained.write_bytes(Path(certificates.clientCert).read_bytes() + Path(certificates.ca).read_bytes())
    tls = loadClientTLS(TLSSettings(certificates.ca, str(chained), certificates.clientKey))
    assert len(tls._identity["extraCertChain"]) == 1
    verifyObject(IOpenSSLClientConnectionCreator, tls.creator("127.0.0.1"))


def test_loadErrors(certificates, tmp_path):
    """
    A missing CA file, one with no certificate, a damaged certificate, a
    key that is not the certificate's, an encrypted key and a file with no
    key are each one line naming the option and the file.
    """
    missing = str(tmp_path / "missing.pem")
    assert loadError(TLSSettings(missing)) == (
        f"session map 'redis': tls_ca_file {missing!r}: cannot read it: No such file or directory")
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    assert loadError(TLSSettings(str(empty))) == (
        f"session map 'redis': tls_ca_file {str(empty)!r}: holds no PEM certificate"
        " (-----BEGIN CERTIFICATE-----)")
    damaged = tmp_path / "damaged.pem"
    damaged.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    assert f"tls_ca_file {str(damaged)!r}: certificate 1 is not valid" in loadError(TLSSettings(str(damaged)))
    assert loadError(TLSSettings(certificates.ca, certificates.clientCert, certificates.key)) == (
        f"session map 'redis': tls_key_file {certificates.key!r}: is not the key of the certificate in"
        f" tls_cert_file {certificates.clientCert!r}")
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(Path(certificates.clientKey).read_bytes(), None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    assert loadError(TLSSettings(None, certificates.clientCert, str(encrypted))) == (
        f"session map 'redis': tls_key_file {str(encrypted)!r}: the key is encrypted; give it"
        " unencrypted (readable by the gateway only)")
    assert loadError(TLSSettings(None, certificates.clientCert, certificates.clientCert)) == (
        f"session map 'redis': tls_key_file {certificates.clientCert!r}: holds no PEM private key")


def test_unverifiedIgnoresAuthority(tmp_path):
    """
    With C{tls_verify = false} the CA file is not read (nothing is
    verified), and the creator verifies nothing.
    """
    tls = loadClientTLS(TLSSettings(str(tmp_path / "missing.pem"), verify=False))
    creator = tls.creator("redis.example")
    verifyObject(IOpenSSLClientConnectionCreator, creator)
    assert type(creator).__name__ == "_Unverified"


def test_creatorPerName(certificates):
    """
    One connection creator per name verified; with C{tls_server_name},
    one for every host.
    """
    tls = loadClientTLS(TLSSettings(certificates.ca))
    assert tls.creator("10.0.0.1") is tls.creator("10.0.0.1")
    assert tls.creator("10.0.0.1") is not tls.creator("10.0.0.2")
    named = loadClientTLS(TLSSettings(certificates.ca, serverName="redis.internal"))
    assert named.creator("10.0.0.1") is named.creator("10.0.0.2")
    marker = object()
    assert PLAIN.wrap(marker, "h") is marker and not PLAIN.secure


def test_factoryGivesTLS(certificates):
    """
    The factory reads the files once and gives the TLS to its TLS shards
    only; a map made without it on a C{rediss://} address verifies with
    the system's authorities.
    """
    from gateway.sessionmap.redis import RedisSessionMap, parseRedisURL

    sharded = RedisSessionMapFactory()(
        {"shards": ["redis://127.0.0.1:1/0", "rediss://127.0.0.1:2/0"], "tls_ca_file": certificates.ca},
        reactor)
    plain, secure = sharded.shards
    assert plain.tls is PLAIN
    assert isinstance(secure.tls, ClientTLS) and secure.tls.settings.caFile == certificates.ca
    bare = RedisSessionMap(parseRedisURL("rediss://127.0.0.1:2/0"), reactor)
    assert bare.tls.settings == TLSSettings()
    with pytest.raises(ConfigError) as caught:
        RedisSessionMapFactory()({"url": "rediss://h", "tls_ca_file": "/no/such/ca.pem"}, reactor)
    assert str(caught.value).startswith("session map 'redis': tls_ca_file '/no/such/ca.pem': cannot read it")


# What a failed handshake is reported as.

def failure(error: Exception) -> Failure:
    try:
        raise error
    except Exception:
        return Failure()


@pytest.mark.parametrize(
    "error, handshaking, said",
    [
        (SSLError([("SSL routines", "", "certificate verify failed")]), True,
         "the server's certificate is not signed by an authority in tls_ca_file (or, without it, in the"
         " system's), or has expired (certificate verify failed)"),
        (VerificationError(errors=[DNSMismatch(mismatched_id=DNS_ID("redis.example"))]), True,
         "the server's certificate is not for 'redis.example' (give tls_server_name the name the"
         " certificate holds)"),
        (VerificationError(errors=[IPAddressMismatch(mismatched_id=IPAddress_ID("10.0.0.9"))]), True,
         "the server's certificate is not for '10.0.0.9'"),
        (SSLError([("SSL routines", "", "tlsv13 alert certificate required")]), False,
         "the server requires a client certificate (tls_cert_file and tls_key_file)"
         " (tlsv13 alert certificate required)"),
        (SSLError([("SSL routines", "", "tlsv1 alert unknown ca")]), False,
         "the server does not accept the client certificate (tls_cert_file) (tlsv1 alert unknown ca)"),
        (SSLError([("SSL routines", "", "wrong version number")]), True,
         "is the port a TLS port? (a plain port answers this way: use redis://) (wrong version number)"),
        (SSLError([("SSL routines", "", "no shared cipher")]), True, "no shared cipher"),
        (ConnectionDone("closed"), True, "the connection was closed during the handshake"),
    ],
)
def test_tlsFailure(error, handshaking, said):
    """
    A connection lost to TLS is one line naming the peer and what to
    check.
    """
    reason = tlsFailure(failure(error), "127.0.0.1:6380", handshaking)
    assert isinstance(reason, TLSFailure)
    assert reason.startswith("TLS handshake with 127.0.0.1:6380 failed: ")
    assert said in reason
    assert "\n" not in reason


def test_notTLSFailure():
    """
    A connection lost after its handshake, for another reason than TLS,
    is not TLS's doing.
    """
    assert tlsFailure(failure(ConnectionLost("gone")), "h:1", False) is None


# The set-up protocol over TLS.

class Watcher:
    """
    A connection's watcher, recording what it is told.
    """

    log = None
    metrics = NoMetrics()

    def __init__(self, clock: Clock, timeout: float = 0.5) -> None:
        self.reactor = clock
        self.timeout = timeout
        self.failed: list[str] = []
        self.commands = []

    def setUpCommands(self):
        return self.commands

    def setUpFailed(self, reason: str) -> None:
        self.failed.append(reason)

    def setUpSucceeded(self, protocol=None) -> None:
        raise AssertionError("not expected")


def tlsConnection(watcher: Watcher):
    """
    @return: a set-up protocol connected to a transport that says it is
        TLS, and the transport.
    """
    protocol = setUpProtocol()()
    factory = type("Factory", (), {})()
    factory.watcher = watcher
    factory.handshaking = set()
    protocol.factory = factory
    transport = StringTransport()
    alsoProvides(transport, ISSLTransport)
    protocol.makeConnection(transport)
    return protocol, transport


def test_handshakeWithinTimeout():
    """
    Over TLS nothing is sent before the handshake; one that does not end
    within the watcher's timeout is a L{TLSFailure}, and the connection
    is dropped.
    """
    clock = Clock()
    watcher = Watcher(clock)
    protocol, transport = tlsConnection(watcher)
    assert transport.value() == b""
    assert protocol.factory.handshaking == {protocol}
    clock.advance(0.5)
    assert watcher.failed == ["TLS handshake with 192.168.1.1:54321 failed: no answer within 0.5s: is"
                              " the port a TLS port?"]
    assert isinstance(watcher.failed[0], TLSFailure)
    assert transport.disconnecting and not protocol.usable


def test_handshakeStartsSetUp():
    """
    Once the handshake is done, the set-up commands go out, and the
    handshake's timer is cancelled.
    """
    clock = Clock()
    watcher = Watcher(clock)
    watcher.commands = [("could not select database 0", ("SELECT", "0"))]
    protocol, transport = tlsConnection(watcher)
    protocol.handshakeCompleted()
    assert b"SELECT" in transport.value()
    assert protocol.factory.handshaking == set()
    clock.advance(0.5)  # the command times out, not the handshake
    assert watcher.failed == ["could not select database 0: no answer within 0.5s"]


def test_lostDuringHandshake():
    """
    A connection refused by TLS before its set-up is reported once, as
    what TLS said, not as the lost connection of a pending command.
    """
    clock = Clock()
    watcher = Watcher(clock)
    protocol, transport = tlsConnection(watcher)
    protocol.connectionLost(failure(SSLError([("SSL routines", "", "certificate verify failed")])))
    assert len(watcher.failed) == 1
    assert "certificate verify failed" in watcher.failed[0]
    clock.advance(1)
    assert len(watcher.failed) == 1


def test_settingsAreFrozen():
    """
    L{TLSSettings} is a value.
    """
    with pytest.raises(dataclasses.FrozenInstanceError):
        TLSSettings().verify = False


def test_sentinelSubscriptionLogsTLSOnce():
    """
    A Sentinel subscription whose handshake fails logs it once (an error)
    until it is made again, and not before the map first connected (the
    start's error says it then); other failures are not logged.
    """
    from twisted.logger import capturedLogs

    from gateway.config.values import parseRedisURL
    from gateway.sessionmap._sentinel import SentinelEndpoint, SwitchWatch, _SwitchWatcher

    endpoint = SentinelEndpoint(parseRedisURL("rediss+sentinel://s1:26380/m"), Clock(), 0.5)
    watcher = _SwitchWatcher(SwitchWatch(endpoint), ("s1", 26380))
    failed = TLSFailure("TLS handshake with s1:26380 failed: certificate verify failed")
    with capturedLogs() as events:
        watcher.setUpFailed(failed)
        endpoint.connectedOnce = True
        watcher.setUpFailed("could not connect: refused")
        watcher.setUpFailed(failed)
        watcher.setUpFailed(failed)
    errors = [e for e in events if e["log_level"].name == "error"]
    assert len(errors) == 1
    assert errors[0]["reason"] == failed and errors[0]["sentinel"] == "s1:26380"
