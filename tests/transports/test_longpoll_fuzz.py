"""
Hypothesis fuzzing of the long-polling resource: every body, for every kind
of request, is answered with a 4xx JSON error, never a 500 or an exception.
"""

from __future__ import annotations

import json
from io import BytesIO
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from gateway.config import SessionConfig
from gateway.errors import ResumeRefused
from gateway.backends.routing import RouteOrigins
from gateway.metrics import NoMetrics
from gateway.transports.longpoll import LongPolling


class _NoSessions:
    """
    A session registry that knows no session (every lookup is refused),
    on a single node.
    """

    sharesSessions = False

    def _refuse(self, *args, **kwargs):
        raise ResumeRefused(4404, "unknown session")

    local = _refuse

    async def open(self, route):
        self._refuse()

    async def resume(self, hello, how):
        self._refuse()

    def mustResume(self, sid):
        return False


def _polling() -> LongPolling:
    factory = SimpleNamespace(config=SimpleNamespace(session=SessionConfig(), routes=()), clientErrors=0,
                              metrics=NoMetrics(), origins=RouteOrigins([], ()),
                              sessions=_NoSessions(), reactor=Clock(),
                              routeRequest=lambda request: None)
    return LongPolling(factory)


def _answer(kind: bytes, body: bytes) -> tuple[int, dict]:
    request = DummyRequest([b""])
    request.method = b"POST"
    request.path = b"/chat"
    request.isSecure = lambda: False
    request._disconnected = False
    request.content = BytesIO(body)
    _polling().render(request, kind)
    assert request.finished, body[:80]
    payload = json.loads(b"".join(request.written))
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    return request.responseCode, payload


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
              st.just("\ud800")),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["t", "v", "sid", "secret", "ack", "packets", "s", "d", "b", "n", "recv"]),
        inner, max_size=5),
    max_leaves=15)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"open", b"poll", b"send", b"other"]), st.one_of(
    st.binary(max_size=200),
    _json.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass")),
    st.integers(min_value=0, max_value=3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(min_value=0, max_value=3000).map(lambda n: b'{"sid":"a","secret":"b","ack":0,"packets":'
                                                  + b"[" * n + b"]" * n + b"}"),
))
def test_everyBodyIs4xxJSON(kind, body):
    """
    Arbitrary bytes, arbitrary JSON, nesting far past the bound: a 4xx with
    the gateway's JSON error body (its C{code} a session close code).
    """
    status, payload = _answer(kind, body)
    assert 400 <= status < 500, (status, payload)
    assert payload["status"] == status and payload["code"] >= 4000


def test_deepNestingIs400():
    """
    A body nested 100,000 deep is a 400 with close code 4400, saying why.
    """
    status, payload = _answer(b"send", b"[" * 100_000 + b"]" * 100_000)
    assert (status, payload["code"]) == (400, 4400)
    assert "nest deeper than 32 levels" in payload["message"]
