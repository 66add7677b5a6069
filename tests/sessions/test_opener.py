"""
Tests for L{gateway.sessions.opener}: the headers of a session's backend
connection.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.testing import MemoryReactorClock

from gateway.config import GatewayConfig
from gateway.sessions.opener import SessionOpener
from gateway.wire.forwarded import TrustedProxies
from gateway.wire.http1 import RequestHead


def backendHeaders(*headers: tuple[bytes, bytes]) -> dict[str, str]:
    """
    @return: what a session opened by a client sending C{headers} from
        192.0.2.7 sends its backend, the gateway's own X-Session-Id first.
    """
    opener = SessionOpener(MemoryReactorClock(), GatewayConfig(), {}, None, TrustedProxies(()), None)
    head = RequestHead(b"GET", b"/chat", b"HTTP/1.1", [(b"Host", b"gw.example"), *headers])
    route = SimpleNamespace(head=head, peer="192.0.2.7", secure=False)
    return opener._backendHeaders(route, {"X-Session-Id": "own"})


def test_gatewayHeadersNotTakenFromClient():
    """
    A client's session and forwarding headers, under any spelling, are not
    copied: the backend sees the gateway's own X-Session-Id and forwarding
    headers, and the client's Cookie, Authorization and User-Agent.
    """
    headers = backendHeaders(
        (b"X-Session-Id", b"stolen"), (b"X_Session_Epoch", b"999"), (b"x-session-resumed", b"1"),
        (b"X_Forwarded_For", b"6.6.6.6"), (b"X-Real-IP", b"6.6.6.6"),
        (b"Cookie", b"a=1"), (b"Cookie", b"b=2"), (b"Authorization", b"Bearer t"),
        (b"User-Agent", b"ua"),
    )
    assert headers["X-Session-Id"] == "own"
    assert headers["X-Forwarded-For"] == "192.0.2.7"
    assert headers["Cookie"] == "a=1; b=2"
    assert headers["Authorization"] == "Bearer t" and headers["User-Agent"] == "ua"
    lowered = {k.lower().replace("_", "-") for k in headers}
    assert "x-session-epoch" not in lowered and "x-session-resumed" not in lowered
    assert "x-real-ip" not in lowered
    assert not any("6.6.6.6" in v or "stolen" in v for v in headers.values())


def test_headersNamedInConnectionNotCopied():
    """
    A header the client named in Connection (RFC 9110 7.6.1) is hop-by-hop:
    not copied to the backend.
    """
    headers = backendHeaders((b"Connection", b"Upgrade, Authorization"),
                             (b"Authorization", b"Bearer t"), (b"Cookie", b"a=1"))
    assert "Authorization" not in headers
    assert headers["Cookie"] == "a=1"
