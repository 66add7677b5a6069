"""
TLS for the Redis session map: what a C{rediss://} or C{rediss+sentinel://}
map wraps its connections in (L{ClientTLS}), made from the C{tls_*}
options (L{gateway.sessionmap._options.TLSSettings}) by L{loadClientTLS}.

The files are read, and checked, once, when the map is made (with the rest
of the configuration, before the reactor runs): a missing or unreadable
file, one that holds no certificate, an encrypted key or a key that is
not the certificate's fails there, with one line naming the option.
Connections then use Twisted's TLS (L{twisted.internet.endpoints.wrapClientTLS}
over the map's TCP endpoint), which never blocks: each connection creator
(one per server name, made by L{twisted.internet.ssl.optionsForClientTLS})
verifies the server's certificate against the trusted authorities and the
name connected to (or C{tls_server_name}), an IP address against the
certificate's IP addresses.

L{PLAIN} is the null object of a map that is not TLS: its endpoints are
left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IStreamClientEndpoint
from zope.interface import implementer

from ..errors import ConfigError
from ._options import TLSSettings

__all__ = ["PLAIN", "ClientTLS", "Plain", "loadClientTLS"]

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.S)


class Plain:
    """
    No TLS: endpoints are used as they are.
    """

    secure = False

    def wrap(self, endpoint: IStreamClientEndpoint, host: str) -> IStreamClientEndpoint:
        """
        @return: C{endpoint}.
        """
        return endpoint


#: The one L{Plain}.
PLAIN = Plain()


class ClientTLS:
    """
    The TLS of a map's connections: the trusted authorities, the client
    certificate (if any), the name to verify, and whether to verify at all.

    @ivar settings: the options it was made from.
    """

    secure = True

    def __init__(self, settings: TLSSettings, trustRoot: Any, certificate: Any = None,
                 key: Any = None, chain: Sequence[Any] = ()) -> None:
        """
        @param trustRoot: an L{twisted.internet.ssl.IOpenSSLTrustRoot}, or
            L{None} for the system's authorities.
        @param certificate: the client certificate (a C{cryptography}
            certificate), or L{None}.
        @param key: its private key (a C{cryptography} key).
        @param chain: its intermediates (C{cryptography} certificates).
        """
        self.settings = settings
        self._trustRoot = trustRoot
        self._identity: dict[str, Any] = {}
        if certificate is not None:
            # cryptography's objects, which pyOpenSSL takes without the
            # deprecation warning its own X509 and PKey now bring.
            self._identity = {"certificate": certificate, "privateKey": key}
            if chain:
                self._identity["extraCertChain"] = list(chain)
        self._creators: dict[str, Any] = {}

    def wrap(self, endpoint: IStreamClientEndpoint, host: str) -> IStreamClientEndpoint:
        """
        @param host: the host C{endpoint} connects to (the name verified,
            unless C{tls_server_name} gives another).
        @return: C{endpoint} with TLS on top.
        """
        from twisted.internet.endpoints import wrapClientTLS

        return wrapClientTLS(self.creator(host), endpoint)

    def creator(self, host: str) -> IOpenSSLClientConnectionCreator:
        """
        @return: the connection creator for C{host} (made once per name, so
            that its TLS context is too).
        """
        name = self.settings.serverName or host
        made = self._creators.get(name)
        if made is None:
            made = self._creators[name] = self._make(name)
        return made

    def _make(self, name: str) -> IOpenSSLClientConnectionCreator:
        from twisted.internet.ssl import CertificateOptions, optionsForClientTLS, platformTrust

        if not self.settings.verify:
            # No trust root: the context verifies nothing.
            return _Unverified(CertificateOptions(**self._identity), name)
        return optionsForClientTLS(name, trustRoot=self._trustRoot or platformTrust(),
                                   extraCertificateOptions=dict(self._identity))

    def check(self) -> None:
        """
        Make the TLS context once, so that what OpenSSL itself refuses in
        the files fails now, not at the first connection.

        @raise ConfigError: saying what OpenSSL refused.
        """
        from OpenSSL.SSL import Error
        from twisted.internet.ssl import CertificateOptions

        try:
            CertificateOptions(**self._identity).getContext()
        except Error as e:
            raise ConfigError(
                f"session map 'redis': tls_cert_file: OpenSSL refuses it: {_openSSLReason(e)}") from None


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """
    A connection creator that verifies nothing (C{tls_verify = false}):
    the connection is encrypted, but to whoever answers.  The server name
    is still sent (SNI) when it is a DNS name, as some TLS proxies route
    by it.
    """

    def __init__(self, options: Any, name: str) -> None:
        from twisted.internet.abstract import isIPAddress, isIPv6Address

        self._options = options
        self._name = None if isIPAddress(name) or isIPv6Address(name) else name.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """
        @return: a connection of the unverifying context.
        """
        connection = self._options.clientConnectionForTLS(tlsProtocol)
        if self._name is not None:
            connection.set_tlsext_host_name(self._name)
        return connection


def loadClientTLS(settings: TLSSettings) -> ClientTLS:
    """
    Read and check the files C{settings} names.

    @raise ConfigError: C{"session map 'redis': tls_ca_file '/path': why"}
        (or C{tls_cert_file}, C{tls_key_file}).
    """
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    trustRoot = certificate = key = None
    chain: list[Any] = []
    if settings.caFile is not None and settings.verify:
        from twisted.internet.ssl import Certificate, trustRootFromCertificates

        blocks = _pemCertificates("tls_ca_file", settings.caFile)
        trustRoot = trustRootFromCertificates(
            [_certificate("tls_ca_file", settings.caFile, i, b, Certificate.loadPEM) for i, b in blocks])
    if settings.certFile is not None and settings.keyFile is not None:
        from cryptography.x509 import load_pem_x509_certificate

        certificate, *chain = [_certificate("tls_cert_file", settings.certFile, i, b, load_pem_x509_certificate)
                               for i, b in _pemCertificates("tls_cert_file", settings.certFile)]
        key = _privateKey(settings.keyFile)

        def public(k: Any) -> bytes:
            return k.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)

        if public(key.public_key()) != public(certificate.public_key()):
            raise ConfigError(f"session map 'redis': tls_key_file {settings.keyFile!r}: is not the key of"
                              f" the certificate in tls_cert_file {settings.certFile!r}")
    tls = ClientTLS(settings, trustRoot, certificate, key, chain)
    tls.check()
    return tls


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"session map 'redis': {option} {path!r}: cannot read it:"
                          f" {e.strerror or e}") from None


def _pemCertificates(option: str, path: str) -> list[tuple[int, bytes]]:
    """
    @return: the PEM certificates of a file, in its order (at least one),
        each with its index.
    """
    blocks = _PEM_CERTIFICATE.findall(_read(option, path))
    if not blocks:
        raise ConfigError(f"session map 'redis': {option} {path!r}: holds no PEM certificate"
                          " (-----BEGIN CERTIFICATE-----)")
    return list(enumerate(blocks))


def _certificate(option: str, path: str, index: int, block: bytes, load: Callable[[bytes], Any]) -> Any:
    """
    @return: C{load(block)}, the certificate C{index} of a file.
    """
    try:
        return load(block)
    except Exception as e:
        raise ConfigError(f"session map 'redis': {option} {path!r}: certificate {index + 1} is not"
                          f" valid: {_openSSLReason(e)}") from None


def _privateKey(path: str) -> Any:
    """
    @return: the C{cryptography} private key of an unencrypted PEM file.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    data = _read("tls_key_file", path)
    try:
        return load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigError(f"session map 'redis': tls_key_file {path!r}: the key is encrypted; give it"
                          " unencrypted (readable by the gateway only)") from None
    except Exception as e:
        reason = "holds no PEM private key" if b"PRIVATE KEY-----" not in data else f"not a valid key: {e}"
        raise ConfigError(f"session map 'redis': tls_key_file {path!r}: {reason}") from None


def _openSSLReason(error: Exception) -> str:
    """
    @return: the reasons of a pyOpenSSL error, without its tuples.
    """
    details = error.args[0] if error.args else None
    if isinstance(details, list):
        reasons = [item[-1] for item in details if isinstance(item, tuple) and item and item[-1]]
        if reasons:
            return "; ".join(reasons)
    return str(error) or type(error).__name__
