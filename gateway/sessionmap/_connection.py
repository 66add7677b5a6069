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

C{txredisapi} installs the default reactor when imported, so it is imported
only when a connection is made (the functions below), never when this
module is.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config.values import SentinelAddress

__all__ = [
    "RECONNECT_INITIAL_DELAY",
    "RECONNECT_MAX_DELAY",
    "WatchedEndpoint",
    "addReplyTimeout",
    "bounded",
    "formatSeconds",
    "redisFactory",
    "setUpProtocol",
    "subscriberProtocol",
]

#: Seconds before the first reconnection attempt after a connection is lost.
RECONNECT_INITIAL_DELAY = 0.5

#: The longest wait between reconnection attempts, in seconds.
RECONNECT_MAX_DELAY = 5.0


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

            @ivar usable: false once L{drop} was called (the connection is
                then closing, though txredisapi still counts it until its
                C{connectionLost}).
            """

            usable = True
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
                Deferred.fromCoroutine(self._setUp()).addErrback(
                    lambda f: self.factory.watcher.log.failure("setting up a Redis connection", f)
                )

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
                        watcher.setUpFailed(f"{what}: {e}")
                        self.drop()
                        return
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
