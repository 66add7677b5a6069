"""
Finding the Redis master through Redis Sentinel, for a
C{redis+sentinel://} session map (L{gateway.config.values.SentinelAddress}).

L{SentinelEndpoint} is the client endpoint the map's pool and its node's
subscription connect through: before every connection it asks the
Sentinels which server is the master of the service, then connects there.
The map's set-up commands check C{ROLE} on every new connection, so that a
connection reaching a server that is not the master (a Sentinel that has
not heard of a failover yet, or an old master that came back as a
replica) is dropped and made again, and a command answered C{READONLY}
drops its connection too.  Each connection attempt keeps asking for a
while (L{RETRY_PATIENCE}) before it gives up to the pool's backoff, and a
C{+switch-master} notice from any Sentinel (L{SwitchWatch}, one
subscription per Sentinel) wakes it at once and aborts the connections to
the old master.

When the master's address changes, C{onMasterChanged(old, new)} is
called: the map counts it, and every owner of a session writes its
sessions whole to the new master, whose copy may be older than what the
old one acknowledged (replication is asynchronous).

For a C{rediss+sentinel://} URL every one of these connections is TLS:
the questions, the subscriptions and the master's, each verified against
the host it connects to (the Sentinel's, the master's address as the
Sentinels name it), or C{tls_server_name}.

C{txredisapi.Sentinel} is not used: its discovery times out on the global
reactor (no L{IReactorTime}, so no C{Clock} in tests), and its connections
to the Sentinels are lazy ones that queue every question without bound
while a Sentinel is down.  The questions here go over short connections
made by L{gateway.sessionmap._connection}, each bounded by the map's
timeout, and concurrent questions share one round.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config.values import SentinelAddress, hostPort
from ..errors import SessionMapUnavailable
from ..metrics import NoMetrics
from ._connection import (
    TLSFailure,
    WatchedEndpoint,
    addReplyTimeout,
    formatSeconds,
    redisFactory,
    setUpProtocol,
    subscriberProtocol,
)
from ._tls import PLAIN

__all__ = [
    "RETRY_PATIENCE",
    "SentinelEndpoint",
    "SwitchWatch",
    "askSentinel",
    "notMaster",
    "parseSwitchMaster",
]

#: Seconds one connection attempt keeps asking the Sentinels (and trying
#: the master they name) before it fails to the pool's backoff, once the
#: map has connected a first time.  Until then, at start-up, an attempt
#: gives up after its first round, so that a wrong URL fails fast.
RETRY_PATIENCE = 5.0

#: The first and the longest wait between two rounds of one attempt, in
#: seconds (doubling in between); a C{+switch-master} notice ends a wait.
RETRY_FIRST = 0.1
RETRY_LONGEST = 1.0

Address = tuple[str, int]


def parseSwitchMaster(message: Any, service: str) -> Address | None:
    """
    Read a Sentinel's C{+switch-master} notice,
    C{"<service> <old ip> <old port> <new ip> <new port>"}.

    @return: the new master's C{(host, port)} when the notice is about
        C{service} and well formed, else L{None}.
    """
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    parts = str(message).split()
    if len(parts) != 5 or parts[0] != service or not parts[4].isdigit():
        return None
    port = int(parts[4])
    if not 0 < port < 65536:
        return None
    return parts[3], port


class _Question:
    """
    The watcher of one short connection to a Sentinel that asks it for the
    master's address (see L{askSentinel}).
    """

    log = Logger()

    def __init__(self, reactor, timeout: float, password: str | None, service: str,
                 metrics: Any) -> None:
        self.reactor = reactor
        self.metrics = metrics
        self.timeout = timeout
        self.password = password
        self.service = service
        self.answer: Deferred = Deferred()

    def setUpCommands(self):
        if self.password is None:
            return []
        return [("could not authenticate to the Sentinel", ("AUTH", self.password))]

    def settle(self, result) -> None:
        if not self.answer.called:
            if isinstance(result, (Exception, Failure)):
                self.answer.errback(result)
            else:
                self.answer.callback(result)

    def setUpFailed(self, reason: str) -> None:
        self.settle(SessionMapUnavailable(reason))

    def connectFailed(self, reason: str) -> None:
        self.settle(SessionMapUnavailable(reason))

    def setUpSucceeded(self, protocol=None) -> None:
        reply = protocol.execute_command("SENTINEL", "get-master-addr-by-name", self.service)
        addReplyTimeout(reply, self.timeout, self.reactor)

        def answered(value):
            if isinstance(value, Exception):
                raise value
            if not value:
                return None  # the Sentinel does not monitor the service
            host, port = value[0], value[1]
            if isinstance(host, bytes):
                host = host.decode("utf-8", "replace")
            return str(host), int(port)

        reply.addCallback(answered)
        reply.addBoth(self.settle)


def askSentinel(sentinel: Address, service: str, password: str | None, reactor,
                timeout: float, metrics: Any = None, tls: Any = PLAIN) -> Deferred:
    """
    Ask one Sentinel which server is the master of C{service}, over a
    connection of its own (through C{tls}, a
    L{gateway.sessionmap._tls.ClientTLS} or L{PLAIN}) that is closed once
    answered.

    @return: L{Deferred} firing with C{(host, port)}, or L{None} when the
        Sentinel does not know the service, or failing (unreachable,
        refused password, no answer within C{timeout}).
    """
    from twisted.internet.endpoints import HostnameEndpoint

    question = _Question(reactor, timeout, password, service, metrics or NoMetrics())
    factory = redisFactory(f"sentinel {hostPort(*sentinel)}", 1, question, isLazy=False,
                           protocol=setUpProtocol())
    factory.deferred.addErrback(lambda f: None)
    endpoint = tls.wrap(HostnameEndpoint(reactor, sentinel[0], sentinel[1], timeout=timeout), sentinel[0])
    factory.startConnecting(WatchedEndpoint(endpoint, question.connectFailed))
    answer = question.answer
    answer.addTimeout(timeout, reactor)

    def done(result):
        factory.disconnect().addErrback(lambda f: None)
        if isinstance(result, Failure) and result.check(DeferredTimeout):
            return Failure(SessionMapUnavailable(f"no answer within {formatSeconds(timeout)}s"))
        return result

    return answer.addBoth(done)


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """
    Connects to the master of a Sentinel service: asks the Sentinels
    before every connection, and follows their C{+switch-master} notices.

    @ivar master: the master's C{(host, port)} as last connected to (its
        C{ROLE} checked) or announced, or L{None} before the first
        connection.
    @ivar changes: how many times the master's address changed.
    """

    log = Logger()

    def __init__(
        self,
        address: SentinelAddress,
        reactor,
        timeout: float,
        *,
        onMasterChanged: Callable[[Address, Address], None] = lambda old, new: None,
        ask: Callable[[Address], Deferred] | None = None,
        connectTo: Callable[[Address, Any], Deferred] | None = None,
        metrics: Callable[[], Any] = NoMetrics,
        tls: Any = PLAIN,
    ) -> None:
        """
        @param reactor: provides L{IReactorTime} and L{IReactorTCP}.
        @param timeout: seconds each question and each connect may take.
        @param ask: C{ask(sentinel)}: the question to one Sentinel
            (L{askSentinel} by default; tests give a fake).
        @param connectTo: C{connectTo(address, protocolFactory)}: a
            connect to the master (a L{HostnameEndpoint} by default).
        @param metrics: returns the L{gateway.interfaces.IMetrics} the
            questions to the Sentinels are counted in (the map's).
        @param tls: what every connection, to the Sentinels and to the
            master, goes through: a L{gateway.sessionmap._tls.ClientTLS}
            for C{rediss+sentinel://}, else L{PLAIN}.
        """
        self.address = address
        self.reactor = reactor
        self.timeout = timeout
        self.onMasterChanged = onMasterChanged
        self.metrics = metrics
        self.tls = tls
        self._ask = ask or (lambda sentinel: askSentinel(
            sentinel, address.service, address.sentinelPassword, reactor, timeout, metrics(), tls))
        self._connectTo = connectTo or self._hostnameConnect
        self.master: Address | None = None
        self.changes = 0
        self._round: list[Deferred] | None = None
        self._wakers: list[Deferred] = []
        self._connections: list[tuple[Address, Any]] = []
        self._announced: tuple[Address, float] | None = None
        self.connectedOnce = False

    def _hostnameConnect(self, master: Address, protocolFactory) -> Deferred:
        from twisted.internet.endpoints import HostnameEndpoint

        endpoint = HostnameEndpoint(self.reactor, master[0], master[1], timeout=self.timeout)
        return self.tls.wrap(endpoint, master[0]).connect(protocolFactory)

    # Finding the master.
    def discover(self) -> Deferred:
        """
        Ask every Sentinel at once; the first to name a master wins (the
        connection's C{ROLE} check catches a Sentinel that is behind).
        Concurrent calls share one round.

        @return: L{Deferred} firing with the master's C{(host, port)}, or
            failing with L{SessionMapUnavailable} saying what each Sentinel
            answered.
        """
        follower: Deferred = Deferred()
        if self._round is not None:
            self._round.append(follower)
            return follower
        followers = self._round = [follower]

        def fanOut(result):
            self._round = None
            for waiting in followers:
                if waiting.called:
                    continue  # cancelled
                if isinstance(result, Failure):
                    waiting.errback(result)
                else:
                    waiting.callback(result)

        Deferred.fromCoroutine(self._discover()).addBoth(fanOut)
        return follower

    async def _discover(self) -> Address:
        sentinels = self.address.sentinels
        found: Deferred = Deferred()
        reasons: dict[Address, str] = {}

        def answered(master, sentinel):
            if master is None:
                reasons[sentinel] = f"does not monitor {self.address.service!r}"
            elif not found.called:
                found.callback(master)
            check()

        def failed(failure, sentinel):
            reasons[sentinel] = failure.getErrorMessage()
            check()

        def check():
            if len(reasons) == len(sentinels) and not found.called:
                said = "; ".join(f"{hostPort(*s)}: {reasons[s]}" for s in sentinels)
                found.errback(SessionMapUnavailable(
                    f"no Sentinel named the master of {self.address.service!r} ({said})"))

        for sentinel in sentinels:
            try:
                question = self._ask(sentinel)
            except Exception as e:
                question = Deferred()
                question.errback(e)
            question.addCallbacks(answered, failed, callbackArgs=(sentinel,), errbackArgs=(sentinel,))
        return await found

    # IStreamClientEndpoint.
    def connect(self, protocolFactory) -> Deferred:
        """
        Find the master and connect to it, asking again (woken by a
        C{+switch-master} notice, or after a short wait) until the
        attempt's patience runs out.
        """
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory) -> Any:
        # Before the first connection (at start-up), the first round's
        # failure is final, so that a wrong URL fails at once, saying why.
        patience = RETRY_PATIENCE if self.connectedOnce else 0.0
        deadline = self.reactor.seconds() + patience
        wait = RETRY_FIRST
        while True:
            master = None
            try:
                master = await self.discover()
                protocol = await self._connectTo(master, protocolFactory)
            except CancelledError:
                raise
            except Exception as e:
                remaining = deadline - self.reactor.seconds()
                if remaining <= 0:
                    reason = str(e).strip() or type(e).__name__
                    if master is not None:
                        reason = f"the master the Sentinels named, {hostPort(*master)}: {reason}"
                    raise SessionMapUnavailable(reason) from None
                await self._sleep(min(wait, remaining))
                wait = min(wait * 2, RETRY_LONGEST)
                continue
            self.connectedOnce = True
            # Taken for the master once its set-up (ROLE included) passed:
            # a Sentinel that is behind may name a replica.
            protocol.whenConnected().addCallback(lambda p, m=master: self._confirmed(m, p))
            return protocol

    def _confirmed(self, master: Address, protocol) -> None:
        """
        A connection to C{master} passed its set-up: that is the master,
        unless the Sentinels announced another one within the last
        L{RETRY_PATIENCE} seconds (the connection is then dropped).
        """
        announced = self._announced
        if (announced is not None and announced[0] != master
                and self.reactor.seconds() - announced[1] < RETRY_PATIENCE):
            protocol.transport.abortConnection()
            return
        self._connections = [(a, p) for a, p in self._connections if p.transport is not None
                             and p.connected]
        self._connections.append((master, protocol))
        self._setMaster(master)

    async def _sleep(self, seconds: float) -> None:
        """
        Wait C{seconds}, or until a C{+switch-master} notice.
        """
        waker: Deferred = Deferred()
        self._wakers.append(waker)
        call = self.reactor.callLater(seconds, lambda: waker.called or waker.callback(None))
        try:
            await waker
        finally:
            if call.active():
                call.cancel()
            if waker in self._wakers:
                self._wakers.remove(waker)

    # Following the master.
    def switched(self, master: Address) -> None:
        """
        A Sentinel announced that C{master} is now the master: drop the
        connections to any other server, and wake the attempts waiting to
        ask again.
        """
        self._announced = (master, self.reactor.seconds())
        self._setMaster(master)
        wakers, self._wakers = self._wakers, []
        for waker in wakers:
            if not waker.called:
                waker.callback(None)

    def _setMaster(self, master: Address) -> None:
        old, self.master = self.master, master
        if old is None or old == master:
            return
        self.changes += 1
        kept = []
        for address, protocol in self._connections:
            if address == master:
                kept.append((address, protocol))
            elif protocol.transport is not None and protocol.connected:
                protocol.transport.abortConnection()
        self._connections = kept
        self.onMasterChanged(old, master)


class _SwitchWatcher:
    """
    The watcher of one Sentinel subscription (see L{SwitchWatch}).
    """

    log = Logger()

    def __init__(self, watch: SwitchWatch, sentinel: Address) -> None:
        self.watch = watch
        self.sentinel = sentinel
        self.reactor = watch.endpoint.reactor
        self.timeout = watch.endpoint.timeout
        self._tlsLogged: str | None = None

    @property
    def metrics(self) -> Any:
        return self.watch.endpoint.metrics()

    def setUpCommands(self):
        password = self.watch.endpoint.address.sentinelPassword
        if password is None:
            return []
        return [("could not authenticate to the Sentinel", ("AUTH", password))]

    def setUpFailed(self, reason: str) -> None:
        """
        Reconnected with the backoff; a TLS failure is logged, once until
        the subscription is made again (the questions, which fail alike,
        say it only in the map's errors), unless the map has not started
        yet (its start's error says it).
        """
        if isinstance(reason, TLSFailure) and reason != self._tlsLogged and self.watch.endpoint.connectedOnce:
            self._tlsLogged = reason
            self.log.error("Sentinel {sentinel} of {service!r}: {reason}; reconnecting",
                           sentinel=hostPort(*self.sentinel), service=self.watch.endpoint.address.service,
                           reason=reason)

    def setUpSucceeded(self, protocol=None) -> None:
        if protocol is None:
            return
        self._tlsLogged = None
        d = protocol.subscribe("+switch-master")
        addReplyTimeout(d, self.timeout, self.reactor)
        d.addErrback(lambda f: protocol.drop())

    def noticeReceived(self, message: Any) -> None:
        master = parseSwitchMaster(message, self.watch.endpoint.address.service)
        if master is not None:
            self.watch.endpoint.switched(master)

    def lost(self, protocol) -> None:
        pass


class SwitchWatch:
    """
    A subscription to every Sentinel's C{+switch-master} channel, each
    reconnected with the map's backoff, telling the endpoint at once when
    a failover is over.
    """

    def __init__(self, endpoint: SentinelEndpoint) -> None:
        self.endpoint = endpoint
        self._factories: list[Any] = []

    def start(self) -> None:
        """
        Subscribe to every Sentinel (and keep doing so).
        """
        from twisted.internet.endpoints import HostnameEndpoint

        endpoint = self.endpoint
        for sentinel in endpoint.address.sentinels:
            watcher = _SwitchWatcher(self, sentinel)
            factory = redisFactory(f"sentinel {hostPort(*sentinel)}", 1, watcher, isLazy=True,
                                   protocol=subscriberProtocol())
            factory.deferred.addErrback(lambda f: None)
            tcp = HostnameEndpoint(endpoint.reactor, sentinel[0], sentinel[1], timeout=endpoint.timeout)
            factory.startConnecting(WatchedEndpoint(endpoint.tls.wrap(tcp, sentinel[0]), watcher.setUpFailed))
            self._factories.append(factory)

    def stop(self) -> Deferred:
        """
        Unsubscribe and disconnect.
        """
        from twisted.internet.defer import gatherResults

        factories, self._factories = self._factories, []
        if not factories:
            return succeed(None)
        return gatherResults([f.disconnect() for f in factories], consumeErrors=True).addErrback(
            lambda f: None)


def notMaster(role: Any) -> str | None:
    """
    Check a C{ROLE} answer, in the map's set-up commands.

    @return: why a server that is not the master must not be used, or
        L{None} for the master.
    """
    kind = role[0] if isinstance(role, (list, tuple)) and role else role
    if isinstance(kind, bytes):
        kind = kind.decode("utf-8", "replace")
    if kind == "master":
        return None
    return f"the server is a {kind} (the Sentinels have not finished a failover, or are behind)"
