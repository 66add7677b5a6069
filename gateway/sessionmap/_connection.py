"""
The connection plumbing of the Redis session map, shared by its command
pool (L{gateway.sessionmap.redis.RedisSessionMap}) and by a node's
subscription to its channel (L{gateway.sessionmap._shared.Subscription}):
the reconnection backoff, an endpoint that reports failed connects, the
txredisapi protocols that authenticate and select their database
themselves (and parse every reply as soon as it is read), the factory both
kinds of connection are made by, and the bound of a reply
(L{addReplyTimeout}), judged on the time the process had to read it.

A connection reports to its I{watcher} (C{factory.watcher}): an object
with C{log}, C{reactor}, C{metrics} (the L{gateway.interfaces.IMetrics}
every command is counted and timed in), C{timeout} (seconds a set-up
command may take),
C{setUpCommands()} (the commands a new connection sends first, each with
a description for errors, and optionally a check of its answer that
returns why the connection must not be used, or L{None}),
C{setUpFailed(reason)} and
C{setUpSucceeded(protocol)}.  A subscriber also calls its watcher's
C{noticeReceived(message)} and C{lost(protocol)}.

Over TLS (C{rediss://}, L{gateway.sessionmap._tls}), a connection is set
up once its handshake is done, and a handshake that fails (a certificate
that does not verify, a server that wants a client certificate, a port
that does not speak TLS) is reported to C{setUpFailed} as a
L{TLSFailure}: one line saying what failed and what to check, never
a traceback.

C{txredisapi} installs the default reactor when imported, so it is imported
only when a connection is made (the functions below), never when this
module is.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IHandshakeListener, IReactorTime, ISSLTransport, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config.values import SentinelAddress, hostPort
from ..interfaces import IMetrics

__all__ = [
    "RECONNECT_INITIAL_DELAY",
    "RECONNECT_MAX_DELAY",
    "ShardMeter",
    "TLSFailure",
    "WatchedEndpoint",
    "addReplyTimeout",
    "bounded",
    "formatSeconds",
    "redisFactory",
    "setUpProtocol",
    "subscriberProtocol",
    "tlsFailure",
]

#: Seconds before the first reconnection attempt after a connection is lost.
RECONNECT_INITIAL_DELAY = 0.5

#: The longest wait between reconnection attempts, in seconds.
RECONNECT_MAX_DELAY = 5.0


class ShardMeter:
    """
    What one shard's connections count their commands in: the node's
    L{IMetrics}, each count labelled with the shard's name.  (The
    connections' watchers hand it on as their C{metrics}.)
    """

    def __init__(self, metrics: IMetrics, shard: str) -> None:
        self.node = metrics
        self.shard = shard

    def redisCommand(self, command: str, seconds: float, failed: bool) -> None:
        """
        Count a command of this shard.
        """
        self.node.redisCommand(command, seconds, failed, self.shard)

    def redisMessages(self, count: int) -> None:
        """
        Count session messages written to this shard's mailboxes.
        """
        self.node.redisMessages(self.shard, count)


@implementer(IStreamClientEndpoint)
class WatchedEndpoint:
    """
    A client endpoint that reports every failed connect (refused,
    unreachable, timed out) to C{onFailure}, so that start-up fails at once
    instead of waiting while txredisapi retries, and so that an outage's
    message can say why reconnecting fails.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, onFailure: Callable[[str], None]) -> None:
        self._endpoint = endpoint
        self._onFailure = onFailure

    def connect(self, protocolFactory) -> Deferred:
        """
        Connect through the wrapped endpoint.
        """
        return self._endpoint.connect(protocolFactory).addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        if not failure.check(CancelledError):
            self._onFailure(failure.getErrorMessage())
        return failure


class TLSFailure(str):
    """
    Why a connection's TLS handshake failed (a reason, as C{setUpFailed}
    is given): the map logs these once, since, unlike a refused password,
    they do not mend by themselves.
    """


def tlsFailure(reason: Failure, peer: str, handshaking: bool) -> TLSFailure | None:
    """
    Say why a TLS connection to C{peer} was lost before it was set up.

    @param handshaking: whether its handshake was still going on.
    @return: one line saying what failed and what to check, or L{None}
        when the loss was not TLS's doing.
    """
    from OpenSSL.SSL import Error
    from service_identity import VerificationError

    where = f"TLS handshake with {peer} failed"
    if reason.check(VerificationError):
        names = []
        for mismatch in reason.value.errors:
            for part in ("hostname", "ip"):
                value = getattr(mismatch.mismatched_id, part, None)
                if value is not None:
                    names.append(value.decode("ascii", "replace") if isinstance(value, bytes) else str(value))
        said = f" {', '.join(repr(n) for n in names)}" if names else " the name verified"
        return TLSFailure(f"{where}: the server's certificate is not for{said} (give tls_server_name"
                          " the name the certificate holds)")
    if reason.check(Error):
        details = reason.value.args[0] if reason.value.args else None
        reasons = [item[-1] for item in details if isinstance(item, tuple) and item and item[-1]] \
            if isinstance(details, list) else []
        said = "; ".join(reasons) or str(reason.value) or "an OpenSSL error"
        if "certificate verify failed" in said:
            hint = ("the server's certificate is not signed by an authority in tls_ca_file (or, without"
                    " it, in the system's), or has expired")
        elif "certificate required" in said:
            hint = "the server requires a client certificate (tls_cert_file and tls_key_file)"
        elif "alert unknown ca" in said or "bad certificate" in said or "certificate unknown" in said:
            hint = "the server does not accept the client certificate (tls_cert_file)"
        elif any(text in said for text in ("wrong version number", "packet length too long",
                                           "record layer failure", "http request")):
            hint = "is the port a TLS port? (a plain port answers this way: use redis://)"
        else:
            hint = None
        return TLSFailure(f"{where}: {hint} ({said})" if hint else f"{where}: {said}")
    if handshaking:
        return TLSFailure(f"{where}: the connection was closed during the handshake"
                          f" ({reason.getErrorMessage()}): is the port a TLS port?")
    return None


_setUpProtocolClass: type | None = None
_subscriberProtocolClass: type | None = None


def setUpProtocol() -> type:
    """
    @return: the txredisapi protocol class the map's connections use (made
        on first use, since importing txredisapi installs the reactor).
    """
    global _setUpProtocolClass
    if _setUpProtocolClass is None:
        import txredisapi

        @implementer(IHandshakeListener)
        class SetUpProtocol(txredisapi.RedisProtocol):
            """
            A txredisapi connection that authenticates and selects its
            database itself before it joins the pool, and that the map can
            drop.

            txredisapi's own set-up stops reconnecting for good when AUTH or
            SELECT fails or times out, as they do while Redis is loading its
            data set (C{LOADING}) or hangs; this one drops the connection and
            lets the pool try again with its backoff.  The failure is
            reported to C{factory.watcher}, which fails a start in progress.

            Over TLS, the set-up waits for the handshake
            (L{handshakeCompleted}), which may take the watcher's
            C{timeout} (a port that is not TLS may never answer), and a
            connection lost to TLS before its set-up is done is reported
            as a L{TLSFailure}.  The factory's C{handshaking} holds the
            connections whose handshake is not done yet.

            @ivar usable: false once L{drop} was called (the connection is
                then closing, though txredisapi still counts it until its
                C{connectionLost}).
            """

            usable = True
            _handshaking = False
            _handshakeTimer: Any = None
            _settled = False
            _parsing = False
            _rest: bytes | None = None

            def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
                """
                Parse every reply in C{data} now.

                txredisapi's parser stops after each bulk string that has
                more data behind it, pauses the transport, and parses the
                rest in a call with no delay (its C{setLineMode}): one
                reactor iteration per bulk string.  A backlog of replies
                (after the process was starved of CPU) then takes as many
                iterations to read as it holds bulk strings, while the
                timeouts of the commands behind them run out, and nothing
                more is read from the socket meanwhile.  Here the rest
                comes back to this loop (L{setLineMode}) instead, which
                needs no recursion.
                """
                self._parsing = True
                try:
                    why = super().dataReceived(data, unpause)
                    while self._rest is not None and why is None and not self.transport.disconnecting:
                        rest, self._rest = self._rest, None
                        why = super().dataReceived(rest)
                    return why
                finally:
                    self._parsing = False
                    self._rest = None

            def setLineMode(self, extra: bytes = b"") -> None:
                """
                Back to lines after a bulk string: what follows it is
                parsed by L{dataReceived}'s loop at once.
                """
                if not self._parsing:
                    super().setLineMode(extra)
                    return
                self.line_mode = 1
                if extra:
                    self._rest = extra

            def execute_command(self, *args: Any, **kwargs: Any) -> Deferred:
                """
                Send a command, counting it, its failure (an error reply, a
                lost connection, a timeout) and its latency in the
                watcher's metrics.
                """
                watcher = self.factory.watcher
                metrics, clock = watcher.metrics, watcher.reactor
                name = args[0].decode("ascii", "replace") if isinstance(args[0], bytes) else str(args[0])
                started = clock.seconds()

                def done(result: object) -> object:
                    failed = isinstance(result, (Failure, Exception))
                    metrics.redisCommand(name, clock.seconds() - started, failed)
                    return result

                return super().execute_command(*args, **kwargs).addBoth(done)

            def connectionMade(self) -> None:
                if ISSLTransport.providedBy(self.transport):
                    # Set up in handshakeCompleted.
                    watcher = self.factory.watcher
                    self._handshaking = True
                    self.factory.handshaking.add(self)
                    self._handshakeTimer = watcher.reactor.callLater(watcher.timeout, self._handshakeLate)
                    return
                self._startSetUp()

            def handshakeCompleted(self) -> None:
                """
                The TLS handshake is done (the server's certificate
                verified): set the connection up.
                """
                self._handshakeOver()
                self._startSetUp()

            def _handshakeOver(self) -> None:
                self._handshaking = False
                self.factory.handshaking.discard(self)
                if self._handshakeTimer is not None and self._handshakeTimer.active():
                    self._handshakeTimer.cancel()
                self._handshakeTimer = None

            def _handshakeLate(self) -> None:
                self._handshakeTimer = None
                if self._handshaking and not self._settled:
                    self._settled = True
                    peer = self.transport.getPeer()
                    self.factory.watcher.setUpFailed(TLSFailure(
                        f"TLS handshake with {hostPort(peer.host, peer.port)} failed: no answer within"
                        f" {formatSeconds(self.factory.watcher.timeout)}s: is the port a TLS port?"))
                    self.drop()

            def _startSetUp(self) -> None:
                Deferred.fromCoroutine(self._setUp()).addErrback(
                    lambda f: self.factory.watcher.log.failure("setting up a Redis connection", f)
                )

            def connectionLost(self, why) -> None:
                if not self._settled and ISSLTransport.providedBy(self.transport):
                    peer = self.transport.getPeer()
                    failed = tlsFailure(why, hostPort(peer.host, peer.port), self._handshaking)
                    if failed is not None:
                        # Before txredisapi fails the set-up's pending
                        # command, which would say only "Lost connection".
                        self._settled = True
                        self.factory.watcher.setUpFailed(failed)
                self._handshakeOver()
                super().connectionLost(why)

            async def _setUp(self) -> None:
                watcher = self.factory.watcher
                for what, command, *check in watcher.setUpCommands():
                    reply = self.execute_command(*command)
                    addReplyTimeout(reply, watcher.timeout, watcher.reactor)
                    try:
                        answer = await reply
                        if isinstance(answer, Exception):
                            raise answer
                        refused = check[0](answer) if check else None
                        if refused is not None:
                            raise ValueError(refused)
                    except Exception as e:
                        if isinstance(e, DeferredTimeout):
                            e = f"no answer within {formatSeconds(watcher.timeout)}s"
                        elif isinstance(e, txredisapi.ConnectionError) and not ISSLTransport.providedBy(
                                self.transport):
                            e = f"{e} (if the port is a TLS port, use rediss://)"
                        if not self._settled:
                            self._settled = True
                            watcher.setUpFailed(f"{what}: {e}")
                        self.drop()
                        return
                self._settled = True
                # The protocol itself has no password or database to set.
                txredisapi.RedisProtocol.connectionMade(self)
                watcher.setUpSucceeded(self)

            def drop(self) -> None:
                """
                Stop using this connection and abort it; the pool
                reconnects.
                """
                self.usable = False
                if self.connected:
                    self.transport.abortConnection()

        _setUpProtocolClass = SetUpProtocol
    return _setUpProtocolClass


def subscriberProtocol() -> type:
    """
    @return: the txredisapi protocol class of a node's subscription: a
        L{setUpProtocol} connection in subscriber mode, which hands every
        message on its channel to C{factory.watcher.noticeReceived} and
        tells the watcher when it is lost.
    """
    global _subscriberProtocolClass
    if _subscriberProtocolClass is None:
        import txredisapi

        base = setUpProtocol()

        class Subscriber(base, txredisapi.SubscriberProtocol):
            def messageReceived(self, pattern, channel, message):
                self.factory.watcher.noticeReceived(message)

            def connectionLost(self, why):
                self.factory.watcher.lost(self)
                base.connectionLost(self, why)

        _subscriberProtocolClass = Subscriber
    return _subscriberProtocolClass


def redisFactory(address, size: int, watcher: Any, *, isLazy: bool, protocol: type) -> Any:
    """
    Make (but do not start) a txredisapi factory of C{size} connections to
    C{address}, reconnecting with the map's backoff, and reporting to
    C{watcher}.

    No password or database is given to txredisapi: the set-up protocol
    sends AUTH and SELECT.  No C{replyTimeout} either: the map bounds every
    command itself, and drops a silent connection before anything else can
    use it.  Replies are not converted to numbers (a secret C{"0042"} stays
    a string).

    @param address: a L{gateway.sessionmap.redis.RedisAddress}.
    @param protocol: L{setUpProtocol} or L{subscriberProtocol}.
    @return: the factory; connect it with C{startConnecting} and a
        L{WatchedEndpoint}.
    """
    import txredisapi

    factory = txredisapi.RedisFactory(
        str(address),
        None,
        size,
        isLazy=isLazy,
        handler=txredisapi.ConnectionHandler,
        charset="utf-8",
        convertNumbers=False,
    )
    factory.protocol = protocol
    factory.watcher = watcher
    factory.handshaking = set()
    factory.initialDelay = RECONNECT_INITIAL_DELAY
    factory.maxDelay = RECONNECT_MAX_DELAY
    if isinstance(address, SentinelAddress):
        # Through Sentinel, a lost connection is made again at once: the
        # master is asked for anew, and a failover is the likely reason it
        # was lost (the endpoint itself waits between its questions).
        backoff = factory.retryDelay
        factory.retryDelay = lambda attempt: 0.0 if attempt <= 1 else backoff(attempt)
    return factory


def formatSeconds(value: float) -> str:
    """
    @return: C{value} written briefly (C{1}, C{0.5}).
    """
    return f"{value:g}"


def addReplyTimeout(d: Deferred, timeout: float, clock: IReactorTime) -> Deferred:
    """
    Fail C{d} with L{twisted.internet.defer.TimeoutError} (as
    L{Deferred.addTimeout} does) if Redis has not answered within
    C{timeout}: judged on the time this process had to send the command and
    read the reply, not on the wall clock alone.

    A reactor runs the timed calls that are due before it reads from its
    sockets (Twisted's C{runUntilCurrent}, then C{doIteration}).  A process
    starved of CPU (or paused) past a deadline therefore finds, when it
    runs again, its commands timed out although Redis answered them and
    the replies wait, unread, in the socket; or although it never had the
    chance to write them (a transport writes in the reactor's next
    iteration).  Judged unanswered, each would fail, and the connection
    would be dropped with every reply on it.  So:

      - when the timeout is due, it looks once more after the reactor has
        polled its sockets: a call with no delay made during
        C{runUntilCurrent} waits for the next one, and that poll does not
        sleep while the call is due;
      - when its timer ran late (the reactor was held up, by a pause or a
        long iteration, and wrote or read nothing meanwhile), the wait is
        extended, once, by that delay (at most C{timeout} again), so that
        a command written only when the process ran again gets its
        answer.

    A Redis that really does not answer still fails C{d} within C{timeout}
    plus one reactor iteration (plus twice any delay with which the
    reactor ran the timer, a few milliseconds when the process is not
    starved).

    @return: C{d}.
    """
    timedOut = False
    extended = False

    def look() -> None:
        nonlocal call, extended
        late = clock.seconds() - call.getTime()
        if late > 0 and not extended:
            extended = True
            call = clock.callLater(min(late, timeout), look)
        else:
            call = clock.callLater(0, judge)

    def judge() -> None:
        nonlocal timedOut
        if not d.called:
            timedOut = True
            d.cancel()

    call = clock.callLater(timeout, look)

    def settled(result: object) -> object:
        if call.active():
            call.cancel()
        if timedOut and isinstance(result, Failure) and result.check(CancelledError):
            raise DeferredTimeout(timeout, "Deferred")
        return result

    return d.addBoth(settled)


async def bounded(d: Deferred, timeout: float, reactor) -> None:
    """
    Wait for C{d}, at most C{timeout} seconds, whatever it fires with.
    """
    waiter: Deferred = Deferred()
    d.addBoth(lambda result: (None if waiter.called else waiter.callback(None), result)[1])
    waiter.addTimeout(timeout, reactor)
    try:
        await waiter
    except DeferredTimeout:
        pass
