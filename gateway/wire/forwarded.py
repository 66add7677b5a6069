"""
The headers a proxy adds so that a backend knows who its client is:
X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and Forwarded (RFC 7239).

Values that arrive from a trusted proxy are kept and appended to; from anyone
else they are replaced, so that a client cannot forge its address.

Also the one list of the headers the gateway owns (L{OWNED_HEADERS}: the
forwarding headers and the session headers of the resume contract), and the
rule that keeps a client's copies of them, under any spelling, from reaching
a backend (L{clientHeaders}).  Sans-IO.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

from ..errors import ConfigError
from .http1 import HOP_BY_HOP, Headers, RequestHead

__all__ = [
    "TrustedProxies",
    "clientAddress",
    "clientHeaders",
    "forwardedHeaders",
    "headerKey",
    "isOwned",
    "FORWARDING_HEADERS",
    "SESSION_HEADERS",
    "OWNED_HEADERS",
]

#: Forwarding headers: the gateway writes them itself (from a trusted proxy's
#: values, or from nothing); a client's copies are dropped.
FORWARDING_HEADERS = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-real-ip"}
)

#: The session headers of the resume contract (docs/architecture.md), set by
#: the gateway on its own connections to backends in session mode.
SESSION_HEADERS = frozenset(
    {b"x-session-id", b"x-session-resumed", b"x-session-received", b"x-session-delivered",
     b"x-session-epoch"}
)

#: Every request header the gateway sets: never taken from a client, in any mode.
OWNED_HEADERS = FORWARDING_HEADERS | SESSION_HEADERS

#: What a client's C{Connection} header may not take away: the fields the
#: opening handshake needs end to end.
_KEPT_WHEN_NAMED = frozenset({b"host", b"sec-websocket-key", b"sec-websocket-version"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class TrustedProxies:
    """
    A set of networks whose forwarding headers are believed.
    """

    def __init__(self, networks: Iterable[str] = ()) -> None:
        """
        @param networks: CIDR strings such as C{"10.0.0.0/8"} or C{"::1/128"}.
        @raise ConfigError: for a string that is not a network.
        """
        self._networks = []
        for n in networks:
            try:
                self._networks.append(ipaddress.ip_network(n, strict=False))
            except ValueError as e:
                raise ConfigError(f"trusted_proxies: {n!r} is not a network: {e}") from None

    def __contains__(self, host: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in n or (mapped is not None and mapped in n) for n in self._networks)


def _forwardedFor(head: RequestHead) -> list[str]:
    entries = []
    for value in head.getAll(b"x-forwarded-for"):
        entries.extend(e.strip() for e in value.decode("latin-1").split(",") if e.strip())
    return entries


def clientAddress(head: RequestHead, peer: str, trusted: TrustedProxies) -> str:
    """
    The address of the client that started the request chain: the peer
    itself, or, when the peer is a trusted proxy, the rightmost
    X-Forwarded-For entry that is not a trusted proxy.
    """
    if peer not in trusted:
        return peer
    for entry in reversed(_forwardedFor(head)):
        if entry not in trusted:
            return entry
    return peer


def headerKey(name: bytes) -> bytes:
    """
    @return: C{name} as it is matched against L{OWNED_HEADERS}: lower-cased,
        with C{_} read as C{-} (C{X_Forwarded_For} is X-Forwarded-For to a
        backend that maps both to C{HTTP_X_FORWARDED_FOR}).
    """
    return name.lower().replace(b"_", b"-")


def isOwned(name: bytes) -> bool:
    """
    @return: whether C{name}, under any case and with C{_} for C{-}, is a
        header the gateway owns.
    """
    return headerKey(name) in OWNED_HEADERS


def clientHeaders(head: RequestHead, drop: frozenset[bytes] = frozenset()) -> Headers:
    """
    The client's headers that may be passed on to a backend, in order.

    Dropped: every header the gateway owns (L{isOwned}), the hop-by-hop
    headers, the headers the client named in C{Connection} (RFC 9110 7.6.1;
    except Host and the WebSocket key and version, which the handshake
    needs), and C{drop} (lower-case names).  The gateway adds its own after.
    """
    named = {headerKey(t) for t in head.tokens(b"connection")} - _KEPT_WHEN_NAMED
    out = []
    for k, v in head.headers:
        lower = k.lower()
        if lower in HOP_BY_HOP or lower in drop or headerKey(k) in named or headerKey(k) in OWNED_HEADERS:
            continue
        out.append((k, v))
    return out


def _node(host: str) -> str:
    if ":" in host:
        return f'"[{host}]"'
    return host


def _quoted(value: str) -> str:
    if _TOKEN.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forwardedHeaders(
    head: RequestHead, peer: str, secure: bool, trusted: TrustedProxies
) -> Headers:
    """
    Build the forwarding headers for a request from C{peer}.

    @param head: the request as the client sent it.
    @param peer: the address of the TCP peer (the client, or a proxy).
    @param secure: whether the client's connection to the gateway is TLS.
    @param trusted: proxies whose own forwarding headers are kept.
    @return: headers to add to the request to the backend (the client's own
        copies of L{OWNED_HEADERS} must be dropped: L{clientHeaders}).
    """
    isTrusted = peer in trusted
    proto = "https" if secure else "http"
    host = (head.get(b"host") or b"").decode("latin-1")

    xff = _forwardedFor(head) if isTrusted else []
    xff.append(peer)
    headers: Headers = [(b"X-Forwarded-For", ", ".join(xff).encode("latin-1"))]

    originalProto = head.get(b"x-forwarded-proto") if isTrusted else None
    headers.append((b"X-Forwarded-Proto", originalProto or proto.encode("ascii")))
    originalHost = head.get(b"x-forwarded-host") if isTrusted else None
    if originalHost or host:
        headers.append((b"X-Forwarded-Host", originalHost or host.encode("latin-1")))

    element = f"for={_node(peer)};proto={proto}"
    if host:
        element += f";host={_quoted(host)}"
    previous = b", ".join(head.getAll(b"forwarded")).decode("latin-1") if isTrusted else ""
    value = f"{previous}, {element}" if previous else element
    headers.append((b"Forwarded", value.encode("latin-1")))
    return headers
