"""
Certificates for tests of TLS: a certificate authority of the test's own,
a certificate it signed for the servers (C{127.0.0.1} and C{localhost}),
one for a client (mutual TLS), and a second authority that signed none of
them (the wrong CA), written as PEM files into a directory
(L{makeCertificates}).  Made with C{cryptography} (a dependency of
Twisted's TLS), so that no C{openssl} command is needed.

Nothing here imports the reactor.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Sequence

__all__ = ["CertificateFiles", "makeCertificates"]


@dataclass(frozen=True)
class CertificateFiles:
    """
    The PEM files L{makeCertificates} wrote.

    @ivar ca: the authority's certificate (the trust root to give clients
        and servers).
    @ivar cert: the servers' certificate, for L{names} and L{addresses};
        usable as a client certificate too (servers that connect to one
        another, as a Redis replica to its master, present it).
    @ivar key: its private key (unencrypted).
    @ivar clientCert: a client's certificate, signed by the same
        authority, with no server name.
    @ivar clientKey: its private key.
    @ivar otherCa: a second authority's certificate, which signed none
        of these.
    """

    ca: str
    cert: str
    key: str
    clientCert: str
    clientKey: str
    otherCa: str
    names: tuple[str, ...]
    addresses: tuple[str, ...]


def makeCertificates(directory: str, names: Sequence[str] = ("localhost",),
                     addresses: Sequence[str] = ("127.0.0.1",)) -> CertificateFiles:
    """
    Write a test authority, a server certificate for C{names} and
    C{addresses}, a client certificate and an unrelated authority into
    C{directory} (valid from yesterday to tomorrow).

    @return: the paths written.
    """
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def subject(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def builder(name: x509.Name, issuer: x509.Name, key) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(name).issuer_name(issuer)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def authority(common: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (builder(subject(common), subject(common), key)
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(common: str, caKey, caCert, alternatives: list, usages: list):
        key = ec.generate_private_key(ec.SECP256R1())
        made = (builder(subject(common), caCert.subject, key)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if alternatives:
            made = made.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        return key, made.sign(caKey, hashes.SHA256())

    def write(name: str, data: bytes) -> str:
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def keyBytes(key) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    def certBytes(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    caKey, caCert = authority("txgateway test CA")
    _, otherCert = authority("txgateway other test CA")
    alternatives = [x509.DNSName(n) for n in names] + [
        x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    both = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    serverKey, serverCert = leaf(names[0] if names else addresses[0], caKey, caCert, alternatives, both)
    clientKey, clientCert = leaf("txgateway test client", caKey, caCert, [],
                                 [ExtendedKeyUsageOID.CLIENT_AUTH])
    return CertificateFiles(
        ca=write("ca.pem", certBytes(caCert)),
        cert=write("server.pem", certBytes(serverCert)),
        key=write("server.key", keyBytes(serverKey)),
        clientCert=write("client.pem", certBytes(clientCert)),
        clientKey=write("client.key", keyBytes(clientKey)),
        otherCa=write("other-ca.pem", certBytes(otherCert)),
        names=tuple(names),
        addresses=tuple(addresses),
    )
