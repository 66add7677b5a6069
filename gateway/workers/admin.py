"""
The admin API of a gateway with workers: one listener, in the supervisor,
that answers for all of them.

Each worker serves the admin API of its own process on a private Unix
socket (mode 0600, in a directory of the supervisor's made for it); the
supervisor checks the token and the client's address as a single gateway's
admin API does (L{gateway.admin.AdminResource}), then:

  - C{GET /workers}: every worker's number, process id, state, generation,
    restarts, uptime, and the connections and sessions it holds (asked of
    each worker);
  - C{POST /workers/restart}: starts a rolling restart (202), or 409 when
    one is under way;
  - C{GET /metrics}: every ready worker's metrics in one Prometheus answer,
    each series labelled with its C{worker} (L{mergeMetrics});
  - any other request: sent to every ready worker, and answered with their
    answers merged (L{mergeAnswers}: counts summed, the lists of Socket.IO
    sessions joined, everything else as the first worker says) when they
    all gave the same status, else 502 with
    each worker's answer.  So a drain, an enable, a weight or a reload is
    applied by every worker, and C{GET /pools} counts every worker's
    connections.

Why one endpoint that fans out rather than one per worker or the admin in
worker 0: an operator's action must reach every worker (each holds its own
pools and sessions), and an operator should not need to know how many there
are.
"""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgentEndpointFactory
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from ..admin import AdminResource, AdminSite, _BadRequest, _error, _REASONS
from ..errors import ConfigError, GatewayError
from ..tcp import hostAndPort, listenFailure, requestLost
from ..web import respondJSON

__all__ = ["SupervisorAdmin", "FanOutResource", "mergeAnswers", "mergeMetrics", "SUMMED",
           "JOINED", "WORKER_TIMEOUT"]

#: Keys whose numbers are added up across workers (connections and session
#: counts, Socket.IO's by transport and the listing's); any other value is
#: the first worker's.
SUMMED = frozenset({"connections", "sessions", "attached", "detached", "switching", "paused",
                    "failovers", "moves", "socketio", "polling", "websocket", "upgrading", "count",
                    "listed"})

#: Keys whose arrays are joined across workers, one worker's after another
#: (C{GET /sessions/socketio}'s C{sessions}: each worker lists its own).
JOINED = frozenset({"sessions"})

#: Seconds a worker has to answer a request the supervisor passes on.
WORKER_TIMEOUT = 10.0


def mergeAnswers(answers: list[Any], key: str | None = None) -> Any:
    """
    @param answers: the JSON answers of every worker to one request.
    @return: one answer: objects merged key by key (every worker's keys,
        the first worker's first: a pool only one worker has sessions of is
        kept), arrays under a key of L{JOINED} joined, other arrays element by
        element (when all are as long), numbers under a key of L{SUMMED}
        added up, anything else the first worker's.
    """
    first = answers[0]
    if isinstance(first, dict) and all(isinstance(a, dict) for a in answers):
        keys = list(first)
        for answer in answers[1:]:
            keys += [k for k in answer if k not in first and k not in keys]
        return {k: mergeAnswers([a[k] for a in answers if k in a], k) for k in keys}
    if key in JOINED and all(isinstance(a, list) for a in answers):
        return [item for answer in answers for item in answer]
    if isinstance(first, list) and all(isinstance(a, list) and len(a) == len(first) for a in answers):
        return [mergeAnswers([a[i] for a in answers], key) for i in range(len(first))]
    if key in SUMMED and all(isinstance(a, int) and not isinstance(a, bool) for a in answers):
        return sum(answers)
    return first


def mergeMetrics(answers: list[tuple[int, str]]) -> bytes:
    """
    @param answers: each worker's number and its C{/metrics} answer
        (Prometheus text).
    @return: one Prometheus text answer with every worker's series, each
        with a C{worker} label: a family (HELP, TYPE) once, its samples from
        every worker.  Parsed and written again by prometheus_client, not by
        hand.
    """
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, Metric] = {}
    for number, text in answers:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation,
                                                        family.type, family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": str(number)},
                                  sample.value, sample.timestamp, sample.exemplar)

    class _Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Merged())
    return generate_latest(registry)


@implementer(IAgentEndpointFactory)
class _WorkerSocket:
    """
    Connects an L{Agent} to one worker's private admin socket.
    """

    def __init__(self, reactor, path: str) -> None:
        self.reactor = reactor
        self.path = path

    def endpointForURI(self, uri):
        """
        @return: the endpoint of the worker's socket, whatever C{uri} says.
        """
        return UNIXClientEndpoint(self.reactor, self.path, timeout=WORKER_TIMEOUT)


class FanOutResource(AdminResource):
    """
    The supervisor's admin resource: the same token check, answers from
    every worker.
    """

    log = Logger()

    def __init__(self, supervisor, clock) -> None:
        """
        @param supervisor: the L{gateway.workers.supervisor.Supervisor}; its
            C{config.admin.token} is read on every request.
        """
        super().__init__(supervisor, clock)
        self.supervisor = supervisor

    def render(self, request: Request):
        """
        Check the token, then answer, always with JSON.
        """
        try:
            self._authenticate(request)
        except _BadRequest as refusal:
            for name, value in refusal.headers:
                request.setHeader(name, value)
            return respondJSON(request, refusal.status, _error(refusal.status, refusal.message),
                               reason=_REASONS.get(refusal.status), indent=2)
        body = request.content.read() if request.content is not None else b""
        if request.path.rstrip(b"/") == b"/metrics" and request.method in (b"GET", b"HEAD"):
            answering = Deferred.fromCoroutine(self._metrics(request))
            answering.addErrback(self._metricsFailed, request)
            return NOT_DONE_YET
        answering = Deferred.fromCoroutine(self._answer(request, body))

        def send(result) -> None:
            if isinstance(result, Failure):
                if result.check(_BadRequest):
                    refusal = result.value
                    for name, value in refusal.headers:
                        request.setHeader(name, value)
                    status, payload = refusal.status, _error(refusal.status, refusal.message)
                else:
                    self.log.failure("admin request {method} {path} failed", result,
                                     method=request.method, path=request.uri)
                    status, payload = 500, _error(500, "the gateway failed to answer; see its log")
            else:
                status, payload = result
            if request.finished or requestLost(request):
                return
            request.write(respondJSON(request, status, payload, reason=_REASONS.get(status),
                                      indent=2))
            request.finish()

        answering.addBoth(send)
        return NOT_DONE_YET

    async def _answer(self, request: Request, body: bytes) -> tuple[int, Any]:
        path = request.path.rstrip(b"/")
        method = request.method
        if path == b"/workers":
            if method != b"GET":
                raise _BadRequest(405, f"use GET here, not {method.decode('latin-1')}",
                                  ((b"Allow", b"GET"),))
            return 200, await self._workers()
        if path == b"/workers/restart":
            if method != b"POST":
                raise _BadRequest(405, f"use POST here, not {method.decode('latin-1')}",
                                  ((b"Allow", b"POST"),))
            try:
                self.supervisor.rollingRestart().addErrback(lambda f: None)  # logged there
            except GatewayError as e:  # one under way, or stopping
                raise _BadRequest(409, str(e)) from None
            return 202, {"rolling_restart": "started", "workers": self.supervisor.count}
        workers = self._ready()
        if not workers:
            raise _BadRequest(503, "no worker is ready; retry shortly")
        authorization = request.requestHeaders.getRawHeaders(b"authorization")[0]
        answers = await self._ask(workers, method, request.uri, body, authorization)
        if path == b"/reload" and method == b"POST":
            self.supervisor.reloadAdmin()
        statuses = {status for status, _ in answers}
        if len(statuses) == 1 and all(payload is not None for _, payload in answers):
            return statuses.pop(), mergeAnswers([payload for _, payload in answers])
        return 502, {
            **_error(502, "the workers did not all give the same answer"),
            "workers": [{"worker": w.number, "status": status, "answer": payload}
                        for w, (status, payload) in zip(workers, answers)],
        }

    async def _metrics(self, request: Request) -> None:
        workers = self._ready()
        if not workers:
            raise _BadRequest(503, "no worker is ready; retry shortly")
        authorization = request.requestHeaders.getRawHeaders(b"authorization")[0]
        results = await DeferredList(
            [Deferred.fromCoroutine(self._askOne(w, b"GET", b"/metrics", b"", authorization, raw=True))
             for w in workers],
            consumeErrors=True,
        )
        answers = [(w.number, result[1].decode("utf-8")) for w, (ok, result) in zip(workers, results)
                   if ok and result[0] == 200]
        if not answers:
            raise _BadRequest(502, "no worker answered for its metrics")
        text = mergeMetrics(answers)
        if request.finished or requestLost(request):
            return
        request.setHeader(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(text))
        request.write(text if request.method == b"GET" else b"")
        request.finish()

    def _metricsFailed(self, failure: Failure, request: Request) -> None:
        if failure.check(_BadRequest):
            status, payload = failure.value.status, _error(failure.value.status, failure.value.message)
        else:
            self.log.failure("admin request GET /metrics failed", failure)
            status, payload = 500, _error(500, "the gateway failed to answer; see its log")
        if not (request.finished or requestLost(request)):
            request.write(respondJSON(request, status, payload, reason=_REASONS.get(status), indent=2))
            request.finish()

    def _ready(self) -> list:
        return [w for w in self.supervisor.workers if w is not None and w.state == "ready"]

    async def _ask(self, workers, method: bytes, uri: bytes, body: bytes,
                   authorization: bytes) -> list[tuple[int, Any]]:
        results = await DeferredList(
            [Deferred.fromCoroutine(self._askOne(w, method, uri, body, authorization))
             for w in workers],
            consumeErrors=True,
        )
        return [result if ok else (502, None) for ok, result in results]

    async def _askOne(self, worker, method: bytes, uri: bytes, body: bytes,
                      authorization: bytes, raw: bool = False) -> tuple[int, Any]:
        path = self.supervisor.adminSocket(worker.number, worker.generation)
        agent = Agent.usingEndpointFactory(self.clock, _WorkerSocket(self.clock, path))
        headers = Headers({b"authorization": [authorization]})
        producer = FileBodyProducer(BytesIO(body)) if body else None
        try:
            response = await agent.request(method, b"http://worker" + uri, headers,
                                           producer).addTimeout(WORKER_TIMEOUT, self.clock)
            data = await readBody(response).addTimeout(WORKER_TIMEOUT, self.clock)
            return response.code, data if raw else json.loads(data)
        except Exception as e:
            self.log.warn("admin API: worker {n} did not answer {method} {uri}: {why}",
                          n=worker.number, method=method, uri=uri, why=str(e) or type(e).__name__)
            raise

    async def _workers(self) -> dict[str, Any]:
        supervisor = self.supervisor
        ready = self._ready()
        authorization = b"Bearer " + supervisor.config.admin.token.encode("ascii")
        pools = await self._ask(ready, b"GET", b"/pools", b"", authorization)
        sessions = await self._ask(ready, b"GET", b"/sessions", b"", authorization)
        counts = {}
        for worker, (status, answer), (status2, answer2) in zip(ready, pools, sessions):
            connections = None
            if status == 200 and isinstance(answer, dict):
                connections = sum(b.get("connections", 0) for p in answer.get("pools", [])
                                  for b in p.get("backends", []))
            ok = status2 == 200 and isinstance(answer2, dict)
            counts[worker.number] = (connections, answer2.get("sessions") if ok else None,
                                     (answer2.get("socketio") or {}).get("sessions") if ok else None)
        now = supervisor.reactor.seconds()
        return {
            "workers": [
                {
                    "worker": number,
                    "pid": w.pid if w is not None else None,
                    "state": w.state if w is not None else "restarting",
                    "generation": w.generation if w is not None else None,
                    "restarts": supervisor.restarts[number],
                    "uptime": round(now - w.started, 3) if w is not None else None,
                    "connections": counts.get(number, (None, None, None))[0],
                    "sessions": counts.get(number, (None, None, None))[1],
                    "socketio": counts.get(number, (None, None, None))[2],
                }
                for number, w in enumerate(supervisor.workers)
            ],
            "rolling_restart": supervisor.rolling,
        }


class SupervisorAdmin(Service):
    """
    The supervisor's admin listener (the configured C{admin.listen}).

    @ivar port: the listening port, once listening.
    """

    log = Logger()

    def __init__(self, supervisor, endpoint) -> None:
        self.supervisor = supervisor
        self.endpoint = endpoint
        self.resource = FanOutResource(supervisor, supervisor.reactor)
        self.site = AdminSite(self.resource, supervisor.reactor)
        self.port: Any = None
        self._listening: Deferred | None = None

    def privilegedStartService(self) -> None:
        """
        Bind the listener (before twistd drops privileges).

        @raise SystemExit: under twistd, with one line, when it cannot be bound.
        """
        super().privilegedStartService()
        self._listen()

    def startService(self) -> None:
        """
        Bind the listener, unless already bound.
        """
        super().startService()
        self._listen()

    def _listen(self) -> None:
        if self._listening is not None:
            return
        self._listening = self.endpoint.listen(self.site)
        failures: list[Failure] = []
        self._listening.addCallbacks(self._listened, failures.append)
        if failures:
            why = f"cannot listen on {self.supervisor.config.admin.listen} (admin API): " \
                  f"{listenFailure(failures[0].value)}"
            if self.supervisor.exitOnListenFailure:
                raise SystemExit(f"gateway: {why}")
            raise ConfigError(why)

    def _listened(self, port) -> None:
        self.port = port
        host, number = hostAndPort(port.getHost())
        self.log.info("admin API listening on {host}:{port} ({description}), for every worker",
                      host=host, port=number, description=self.supervisor.config.admin.listen)

    def stopService(self):
        """
        Stop listening.
        """
        super().stopService()
        self.resource.stop()
        port, self.port = self.port, None
        self._listening = None
        if port is not None:
            return port.stopListening()
        return None

