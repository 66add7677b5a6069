"""
The C{redis} session map: affinity and session records in Redis, shared by
every gateway node configured with the same server and C{key_prefix}.

Keys (C{prefix} is the C{key_prefix} option, C{"txgw:"} by default):

  - C{{prefix}aff:{pool}:{key}}: the name of the backend serving affinity
    key C{key} of pool C{pool}, a string.  C{key} is the router's key, raw
    bytes: its source, C{":"}, and the value as the client sent it
    (C{cookie:abc123}, C{address:203.0.113.9}); pool names cannot contain
    C{":"}, so the key name is unambiguous.  Written with C{SET key value PX ms} after every connection
    that used it, so it lives C{affinity_ttl} seconds after its last use.
  - C{{prefix}sess:{sid}}: a session's record, a JSON object (pool,
    backend, state, node, created, updated).  Written with C{SET ... PX ms}
    whenever the session opens, attaches or detaches, to live twice the
    session grace period; deleted when the session ends.

Every key is written with an expiry, so nothing is left behind when a node
dies.  Expiries are set in milliseconds, so fractional seconds are kept.

Options (the C{[session_map]} table, less C{type}):

  - C{url}: C{redis://[[user]:password@]host[:port][/db]},
    C{unix://[[user]:password@]/path/to/redis.sock[?db=N]} or
    C{redis+sentinel://[[user]:password@]host[:port][,...]/service[/db]}
    (the master of C{service}, found through those Sentinels and followed
    through failovers: L{gateway.sessionmap._sentinel}); by default
    C{redis://127.0.0.1:6379/0}.
  - C{shards}: instead of C{url}, several servers the keys are spread over
    (L{gateway.sessionmap._shards}): each shard is one L{RedisSessionMap}
    with the other options.
  - C{sentinel_password}: the Sentinels' own password (the URL's is the
    master's), also C{?sentinel_password=} in the URL.
  - C{tls_ca_file}, C{tls_cert_file}, C{tls_key_file}, C{tls_server_name},
    C{tls_verify}: for C{rediss://} and C{rediss+sentinel://} URLs (TLS to
    the server, or to the Sentinels and the master), L{gateway.sessionmap._tls}.
  - C{key_prefix}: prepended to every key (C{"txgw:"}).
  - C{timeout}: seconds any one command (and connecting) may take, 1.0 by
    default.  txredisapi would otherwise wait for ever while Redis is down.
  - C{pool_size}: connections to Redis per gateway node (2).

Start-up: L{RedisSessionMap.start} opens C{pool_size} connections (AUTH
when the URL has a password, then SELECT) and fails within C{timeout}, with
one line naming the server (password hidden) and the reason, when Redis is
unreachable, silent, or refuses the password.  A method called before
C{start} starts the map itself.

Redis trouble never waits unbounded and never raises out of a method: the
returned L{Deferred} fails with L{SessionMapUnavailable} within C{timeout}
(plus one turn of the reactor: a reply is judged missing only once the
node has read what arrived, and a timer the reactor ran late, in a starved
or paused process, waits as long again, once; see
L{gateway.sessionmap._connection.addReplyTimeout}).  A command issued
while no connection is up fails at once; a connection that lets a command
time out (Redis hung, or the network) is dropped on the
spot.  The pool reconnects by itself (after 0.5 s, then backing off to one
attempt every 5 s; a refused AUTH or SELECT is retried too, where
txredisapi alone would give up for good), and commands succeed again as
soon as one connection is back.  The map logs the first failure of an
outage and the recovery, once each.  A write that timed out may still be
applied once Redis wakes up.

Commands on one key always go over the same connection, so they are
applied in the order they were issued.

The connections themselves (their set-up, backoff and endpoint) are made by
L{gateway.sessionmap._connection}, which the node's subscription shares.
C{txredisapi} installs the default reactor when imported, so it is imported
only when the map connects (L{RedisSessionMap.start}), never when this
module is.
"""

from __future__ import annotations

import json
import math
import zlib
from typing import Any, Mapping

from twisted.internet.defer import CancelledError, Deferred, fail, gatherResults, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from ..config.values import DEFAULT_REDIS_URL, RedisAddress, SentinelAddress, parseRedisURL, shardName
from ..errors import SessionMapUnavailable
from ..interfaces import IMeasured, IMetrics, ISessionMap, ISessionMapFactory
from ..metrics import NoMetrics
from ._connection import (
    ShardMeter,
    TLSFailure,
    WatchedEndpoint,
    addReplyTimeout,
    bounded,
    formatSeconds,
    redisFactory,
    setUpProtocol,
)
from ._batch import ScriptBatches
from ._options import OPTIONS, TLSSettings, readOptions
from ._shared import SharedSessions
from ._tls import PLAIN, loadClientTLS

__all__ = [
    "RedisAddress",
    "RedisSessionMap",
    "RedisSessionMapFactory",
    "SessionMapUnavailable",
    "parseRedisURL",
]

#: The server used when the options name none.
DEFAULT_URL = DEFAULT_REDIS_URL


@implementer(ISessionMap, IMeasured)
class RedisSessionMap:
    """
    Affinity and session records in Redis (see the module docstring for the
    keys and their expiries), through a small non-lazy txredisapi pool.

    L{start} connects; a method called before then starts the map itself
    and waits for it within C{timeout}.

    @ivar address: the server.
    @ivar keyPrefix: prepended to every key.
    @ivar timeout: seconds any one call may take.
    @ivar poolSize: connections kept to Redis.
    @ivar reactor: the reactor the map's timers and connections use.
    """

    log = Logger()

    #: Several gateway nodes share sessions through Redis (L{sharedSessions}).
    shared = True

    def __init__(
        self,
        address: RedisAddress,
        reactor,
        *,
        keyPrefix: str = "txgw:",
        timeout: float = 1.0,
        poolSize: int = 2,
        nodeTtl: float = 3.0,
        nodeId: str | None = None,
        name: str | None = None,
        required: bool = True,
        tls: Any = None,
    ) -> None:
        """
        Nothing is connected here (see L{start}), so that building the
        gateway's service touches no network.

        @param reactor: provides L{IReactorTime} and L{IReactorTCP} (or
            L{IReactorUNIX}).
        @param name: the shard's name (in the metrics' C{shard} label and
            on the hash ring); by default made from the address.
        @param required: whether a start that cannot connect fails (the
            one server, or a sharded map's home shard); a shard that is not
            required starts anyway, logs why it cannot be used, and keeps
            connecting in the background, its commands failing at once
            meanwhile, as in an outage.
        @param tls: for a TLS address, its L{gateway.sessionmap._tls.ClientTLS}
            (by default, verifying against the system's authorities).
        """
        self.address = address
        if tls is None:
            tls = loadClientTLS(TLSSettings()) if address.tls else PLAIN
        self.tls = tls
        self._tlsLogged: str | None = None
        self.name = name or shardName(address)
        self.required = required
        self.keyPrefix = keyPrefix
        self.timeout = timeout
        self.poolSize = poolSize
        self.nodeTtl = nodeTtl
        self.nodeId = nodeId
        self.reactor = reactor
        self._prefix = keyPrefix.encode("utf-8")
        self._factory: Any = None
        self._started = False
        self._starting: Deferred | None = None
        self._outcome: Deferred | None = None
        self._lastError: str | None = None
        self._closed = False
        self._failingSince: float | None = None
        #: Commands sent so far (a batch of script calls is one): each is
        #: one round trip.
        self.commandsIssued = 0
        #: The script calls of this reactor turn, per connection.
        self._batches = ScriptBatches(reactor, self._sendBatch)
        #: How many times the master moved (a C{redis+sentinel://} map's
        #: failovers; always 0 otherwise): each time, the owners of the
        #: sessions write them whole again (L{gateway.cluster.node}).
        self.masterChanges = 0
        self._endpoint: Any = None
        self._switchWatch: Any = None
        #: What every command is counted and timed in (L{measureWith}),
        #: with this shard's name.
        self.metrics = ShardMeter(NoMetrics(), self.name)

    def measureWith(self, metrics: IMetrics) -> None:
        """
        Count and time every Redis command in C{metrics} from now on, by
        command and shard.
        """
        self.metrics = ShardMeter(metrics, self.name)

    @property
    def connected(self) -> bool:
        """
        Whether at least one connection to Redis is up and ready.
        """
        factory = self._factory
        return (
            self._started
            and factory is not None
            and any(c.connected and c.usable for c in factory.pool)
        )

    def sharedSessions(self, node: str, *, sessionTtl: float, nodeTtl: float):
        """
        @return: a L{gateway.sessionmap._shared.SharedSessions} for node
            C{node}: the sessions that several gateway nodes share, all on
            this server.
        """
        return SharedSessions([self], node, sessionTtl=sessionTtl, nodeTtl=nodeTtl)

    # Connecting.
    def endpoint(self) -> Any:
        """
        @return: the client endpoint every connection of this map (its
            pool, and its node's subscription) is made through: the server
            itself, or, for a C{redis+sentinel://} URL, a
            L{gateway.sessionmap._sentinel.SentinelEndpoint} that asks the
            Sentinels for the master first and follows failovers.
        """
        if self._endpoint is None:
            address = self.address
            if isinstance(address, SentinelAddress):
                from ._sentinel import SentinelEndpoint, SwitchWatch

                self._endpoint = SentinelEndpoint(address, self.reactor, self.timeout,
                                                  onMasterChanged=self._masterChanged,
                                                  metrics=lambda: self.metrics, tls=self.tls)
                self._switchWatch = SwitchWatch(self._endpoint)
                self._switchWatch.start()
            else:
                self._endpoint = self.tls.wrap(address.endpoint(self.reactor, self.timeout), address.host)
        return self._endpoint

    def _masterChanged(self, old: tuple[str, int], new: tuple[str, int]) -> None:
        self.masterChanges += 1
        self.log.warn(
            "Redis at {address}: the master moved from {old} to {new}; the sessions"
            " are written to it again", address=str(self.address),
            old=f"{old[0]}:{old[1]}", new=f"{new[0]}:{new[1]}")

    def start(self) -> Deferred[None]:
        """
        Connect C{poolSize} connections (authenticated, database selected),
        within C{timeout}.  Calling it again while it runs, or after it
        succeeded, waits for the same outcome; after a failure it tries
        again.

        @return: L{Deferred} firing with L{None} once every connection is
            ready, or failing with L{SessionMapUnavailable}, one line naming
            the server and why (refused, no answer, wrong password...).
        """
        if self._closed:
            return fail(SessionMapUnavailable(
                f"the session map for Redis at {self.address} is closed"))
        if self._starting is None:
            self._starting = Deferred.fromCoroutine(self._connect())
        starting = self._starting
        waiter: Deferred[None] = Deferred()

        def relay(error: SessionMapUnavailable | None) -> SessionMapUnavailable | None:
            if error is None:
                waiter.callback(None)
            else:
                if self._starting is starting:
                    self._starting = None  # the next call tries again
                waiter.errback(error)
            return error

        starting.addCallback(relay)
        return waiter

    async def _connect(self) -> SessionMapUnavailable | None:
        """
        Make the pool.  Never fails: returns the error instead, so that the
        one Deferred can be shared by every waiter.
        """
        address = self.address
        factory = redisFactory(address, self.poolSize, self, isLazy=False, protocol=setUpProtocol())
        outcome: Deferred = Deferred()
        self._outcome = outcome

        def settle(result):
            if not outcome.called:
                if isinstance(result, Failure):
                    outcome.errback(result)
                else:
                    outcome.callback(result)

        factory.deferred.addBoth(settle)
        outcome.addTimeout(self.timeout, self.reactor)
        self._factory = factory
        factory.startConnecting(WatchedEndpoint(self.endpoint(), self._connectFailed))
        try:
            await outcome
        except Exception as e:
            self._outcome = None
            if self._closed:
                return SessionMapUnavailable(f"the session map for Redis at {address} is closed")
            if isinstance(e, DeferredTimeout):
                reason = f"no answer within {formatSeconds(self.timeout)}s"
                if factory.handshaking:
                    reason += " (the TLS handshake did not finish: is the port a TLS port?)"
            else:
                reason = str(e).strip() or type(e).__name__
            if not self.required:
                # Keep the pool connecting (it retries with its backoff):
                # meanwhile commands fail at once, as in an outage.
                self._started = True
                self._lastError = self._tlsLogged = reason
                self._failingSince = self.reactor.seconds()
                self.log.warn("cannot use Redis at {address} (shard {shard}) yet: {reason}; the"
                              " sessions it holds wait for it while it is reconnected",
                              address=str(address), shard=self.name, reason=reason)
                return None
            stopping = factory.disconnect()
            stopping.addErrback(lambda f: None)
            await bounded(stopping, self.timeout, self.reactor)
            self._factory = None
            return SessionMapUnavailable(f"cannot use Redis at {address}: {reason}")
        self._outcome = None
        if self._closed:
            # Closed while connecting: close() is already disconnecting.
            return SessionMapUnavailable(f"the session map for Redis at {address} is closed")
        self._started = True
        self.log.info(
            "session map: Redis at {address}, {n} connections, key prefix {prefix!r}",
            address=str(address), n=self.poolSize, prefix=self.keyPrefix,
        )
        if self.tls.secure and not self.tls.settings.verify:
            self.log.warn("Redis at {address}: its TLS certificates are not verified (tls_verify ="
                          " false): whoever is on the path can read and change the sessions",
                          address=str(address))
        return None

    # Told by the connections (the set-up protocol and WatchedEndpoint).
    def setUpCommands(self) -> list[tuple[str, tuple[str, ...]]]:
        """
        @return: what each new connection sends before it is used, with a
            description for errors: AUTH when the URL has a password, and
            SELECT (always, so that a server wanting a password is found
            out at once); through Sentinel, ROLE too, so that a connection
            to a server that is not the master is dropped and made again.
        """
        address = self.address
        commands = []
        if address.password is not None:
            credentials = (address.username, address.password) if address.username else (address.password,)
            commands.append(("could not authenticate", ("AUTH", *credentials)))
        commands.append((f"could not select database {address.db}", ("SELECT", str(address.db))))
        if isinstance(address, SentinelAddress):
            from ._sentinel import notMaster

            commands.append(("not the master", ("ROLE",), notMaster))
        return commands

    def setUpFailed(self, reason: str) -> None:
        """
        A new connection could not be set up: fail a start in progress, or
        remember why reconnecting fails.  A TLS failure once started (a
        certificate that no longer verifies) is logged too, once until a
        connection is set up again: it does not mend by itself.
        """
        self._lastError = reason
        if isinstance(reason, TLSFailure) and self._started and reason != self._tlsLogged:
            self._tlsLogged = reason
            self.log.error("Redis at {address}: {reason}; reconnecting", address=str(self.address),
                           reason=reason)
        self._settleStart(reason)

    def setUpSucceeded(self, protocol=None) -> None:
        """
        A connection is ready: forget why earlier attempts failed, and the
        dead connections txredisapi's idle queue (which the map does not
        use) still holds.
        """
        self._lastError = self._tlsLogged = None
        if self._factory is not None:
            queue = self._factory.connectionQueue
            queue.pending[:] = [c for c in queue.pending if c.connected]

    def _connectFailed(self, reason: str) -> None:
        self._lastError = reason
        self._settleStart(f"could not connect: {reason}")

    def _settleStart(self, reason: str) -> None:
        outcome = self._outcome
        if outcome is not None and not outcome.called:
            outcome.errback(SessionMapUnavailable(reason))

    def close(self) -> Deferred[None]:
        """
        Close every connection and stop reconnecting.  Later calls fail
        with L{SessionMapUnavailable}.

        @return: L{Deferred} firing with L{None} once the connections are
            closed (or after C{timeout}, whichever comes first).
        """
        self._closed = True
        self._batches.cancel()
        factory, self._factory, self._started = self._factory, None, False
        watch, self._switchWatch = self._switchWatch, None
        watching = watch.stop() if watch is not None else succeed(None)
        if factory is None:
            return Deferred.fromCoroutine(bounded(watching, self.timeout, self.reactor))
        stopping = factory.disconnect()
        stopping.addErrback(lambda f: self.log.failure("closing Redis connections failed", f))
        both = gatherResults([stopping, watching], consumeErrors=True)
        both.addErrback(lambda f: None)
        return Deferred.fromCoroutine(bounded(both, self.timeout, self.reactor))

    # Commands.
    def _command(self, command: str, key: bytes, *args: bytes | str) -> Deferred:
        """
        Run one Redis command on C{key}, bounded by C{timeout} from the call
        (waiting for L{start} included).

        @return: L{Deferred} firing with the reply, or failing with
            L{SessionMapUnavailable}.
        """
        return self.run(key, command, key, *args)

    def run(self, route: bytes, command: str, *args: bytes | str) -> Deferred:
        """
        Run one Redis command, bounded by C{timeout} from the call (waiting
        for L{start} included), on the connection that every command
        routed by C{route} takes (so that they apply in order), after the
        script calls queued on it (L{runScript}).

        @return: L{Deferred} firing with the reply, or failing with
            L{SessionMapUnavailable}.
        """
        d = Deferred.fromCoroutine(self._execute(command, route, args))
        d.addCallbacks(self._succeeded, self._failed, errbackArgs=(command,))
        return d

    def runScript(self, script, keys: tuple[bytes, ...], args: tuple, route: bytes | None = None) -> Deferred:
        """
        Run a L{gateway.sessionmap._scripts.Script}, routed by its first key
        (or C{route}), with the other calls of this reactor turn on its
        connection (L{gateway.sessionmap._batch}); after a Redis restart
        emptied the script cache, once more with C{EVAL}.

        @return: L{Deferred} firing with the script's reply.
        """
        route = route or keys[0]
        connection = self._connectionFor(route) if self._started and not self._closed else None
        if connection is None:
            # Not started, closed or not connected: the plain path waits
            # for the start, or says why it cannot.
            return self.run(route, "EVALSHA", script.sha, str(len(keys)), *keys, *args)
        d = self._batches.queue(connection, script, keys, args)
        d.addCallbacks(self._succeeded, self._failed, errbackArgs=("EVALSHA",))
        return d

    def _connectionFor(self, key: bytes) -> Any:
        # Commands on one key always take the same connection, so that they
        # run in the order they were issued (txredisapi would pick one at
        # random): a session's "attached" then "detached" records, or a
        # record then its deletion, are never swapped.
        connections = [c for c in self._factory.pool if c.connected and c.usable]
        return connections[zlib.crc32(key) % len(connections)] if connections else None

    async def _execute(self, command: str, key: bytes, args: tuple) -> Any:
        if self._closed:
            raise SessionMapUnavailable(f"the session map for Redis at {self.address} is closed")
        deadline = self.reactor.seconds() + self.timeout
        if not self._started:
            waiting = self.start()
            waiting.addTimeout(self.timeout, self.reactor)
            try:
                await waiting
            except DeferredTimeout:
                raise self._noAnswer(command) from None
            if self._closed:
                raise SessionMapUnavailable(
                    f"the session map for Redis at {self.address} is closed")
        connection = self._connectionFor(key)
        if connection is None:
            why = f"; last attempt: {self._lastError}" if self._lastError else ""
            raise SessionMapUnavailable(
                f"not connected to Redis at {self.address} (reconnecting{why})"
            )
        self._batches.sendNow(connection)
        return await self._send(connection, command, args, deadline)

    def _sendBatch(self, connection: Any, command: str, args: tuple) -> Deferred:
        return Deferred.fromCoroutine(self._send(connection, command, args, self.reactor.seconds() + self.timeout))

    async def _send(self, connection: Any, command: str, args: tuple, deadline: float) -> Any:
        self.commandsIssued += 1
        reply = connection.execute_command(command, *args)
        addReplyTimeout(reply, max(0.0, deadline - self.reactor.seconds()), self.reactor)
        try:
            try:
                return await reply
            except Exception as e:
                if command != "EVALSHA" or not str(e).startswith("NOSCRIPT"):
                    raise
            # Redis restarted and forgot the script: send it whole, once.
            from ._scripts import BY_SHA

            reply = connection.execute_command("EVAL", BY_SHA[args[0]].text, *args[1:])
            addReplyTimeout(reply, max(0.0, deadline - self.reactor.seconds()), self.reactor)
            return await reply
        except DeferredTimeout:
            # Silent (hung, or half-open): stop using it before anything
            # else runs, and let the pool reconnect.
            connection.drop()
            raise self._noAnswer(command) from None
        except Exception as e:
            if "READONLY" in str(e):
                # A replica now (the old master, demoted by a failover):
                # the next connection asks the Sentinels again.
                connection.drop()
            raise

    def _noAnswer(self, command: str) -> SessionMapUnavailable:
        return SessionMapUnavailable(
            f"Redis at {self.address} did not answer {command} within {formatSeconds(self.timeout)}s"
        )

    def _succeeded(self, reply: Any) -> Any:
        if self._failingSince is not None:
            self.log.info(
                "Redis at {address} answers again after {s:.1f}s",
                address=str(self.address), s=self.reactor.seconds() - self._failingSince,
            )
            self._failingSince = None
        return reply

    def _failed(self, failure: Failure, command: str) -> Failure:
        if failure.check(CancelledError):
            return failure  # cancelled by the caller, not a Redis problem
        if failure.check(SessionMapUnavailable):
            error = failure.value
        else:
            reason = str(failure.value) or failure.type.__name__
            error = SessionMapUnavailable(f"Redis at {self.address}: {command} failed: {reason}")
        if self._failingSince is None and not self._closed:
            self._failingSince = self.reactor.seconds()
            self.log.warn(
                "{error}; affinity falls back to the balancer, and session records"
                " are not kept, until Redis answers again",
                error=str(error),
            )
        return Failure(error)

    def _key(self, kind: bytes, *parts: bytes) -> bytes:
        return b"".join([self._prefix, kind, b":", b":".join(parts)])

    def _affinityKey(self, pool: str, key: bytes) -> bytes:
        return self._key(b"aff", pool.encode("utf-8"), key)

    def _sessionKey(self, sid: str) -> bytes:
        return self._key(b"sess", sid.encode("utf-8"))

    def _set(self, key: bytes, value: str, ttl: float) -> Deferred[None]:
        if ttl <= 0:
            d = self._command("DEL", key)
        else:
            d = self._command("SET", key, value, "PX", str(max(1, math.ceil(ttl * 1000))))
        return d.addCallback(lambda _: None)

    def getAffinity(self, pool: str, key: bytes) -> Deferred[str | None]:
        """
        C{GET {prefix}aff:{pool}:{key}}.  A read does not extend the
        record's life.

        @return: L{Deferred} firing with the recorded backend name, or
            L{None}.
        """
        return self._command("GET", self._affinityKey(pool, key)).addCallback(_text)

    def setAffinity(self, pool: str, key: bytes, backend: str, ttl: float) -> Deferred[None]:
        """
        C{SET {prefix}aff:{pool}:{key} backend PX ttl}: record (or refresh)
        that C{key} in C{pool} is served by C{backend} for C{ttl} seconds.
        A C{ttl} of 0 or less forgets the key.
        """
        return self._set(self._affinityKey(pool, key), backend, ttl)

    def forgetAffinity(self, pool: str, key: bytes) -> Deferred[None]:
        """
        C{DEL {prefix}aff:{pool}:{key}}.
        """
        return self._command("DEL", self._affinityKey(pool, key)).addCallback(lambda _: None)

    def getSession(self, sid: str) -> Deferred[dict | None]:
        """
        C{GET {prefix}sess:{sid}}.

        @return: L{Deferred} firing with the session's record, or L{None}
            when there is none (or it is not a JSON object, which is
            logged).
        """
        return self._command("GET", self._sessionKey(sid)).addCallback(self._record, sid)

    def _record(self, reply: Any, sid: str) -> dict | None:
        text = _text(reply)
        if text is None:
            return None
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            self.log.warn("Redis at {address}: session record {sid}... is not a JSON object; ignored",
                          address=str(self.address), sid=sid[:6])
            return None
        return record

    def putSession(self, sid: str, record: Mapping[str, Any], ttl: float) -> Deferred[None]:
        """
        C{SET {prefix}sess:{sid} json PX ttl}: record (or replace) a
        session's record for C{ttl} seconds; 0 or less forgets it.
        """
        text = json.dumps(dict(record), separators=(",", ":"), sort_keys=True)
        return self._set(self._sessionKey(sid), text, ttl)

    def forgetSession(self, sid: str) -> Deferred[None]:
        """
        C{DEL {prefix}sess:{sid}}.
        """
        return self._command("DEL", self._sessionKey(sid)).addCallback(lambda _: None)


def _text(reply: Any) -> str | None:
    """
    @return: a string reply (txredisapi hands over bytes it could not
        decode as UTF-8) or L{None}.
    """
    if reply is None or isinstance(reply, str):
        return reply
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return str(reply)


@implementer(IPlugin, ISessionMapFactory)
class RedisSessionMapFactory:
    """
    Makes L{RedisSessionMap}s, or a L{gateway.sessionmap._shards.ShardedSessionMap}
    over several of them (C{shards}).  The options are checked by
    L{gateway.sessionmap._options.readOptions}: C{url} (L{parseRedisURL};
    C{redis://127.0.0.1:6379/0} by default) or C{shards}, C{key_prefix} (a
    string, C{"txgw:"}), C{timeout} (seconds > 0, 1.0), C{pool_size} (1 to
    L{gateway.sessionmap._options.MAX_POOL_SIZE}, 2), C{node_ttl}, C{node_id}, C{sentinel_password}
    and the C{tls_*} options (whose files are read here).
    """

    name = "redis"
    description = "affinity and session records in Redis, shared by several gateway nodes"
    options = OPTIONS

    def __call__(self, options: Mapping[str, object], reactor) -> ISessionMap:
        """
        Check the options, and read the TLS files they name; nothing is
        connected until the map's C{start}.

        @raise ConfigError: one line naming the option and the reason.
        """
        read = readOptions(options)
        tls = loadClientTLS(read.tls) if read.tls is not None else PLAIN
        maps = [
            RedisSessionMap(
                shard.address, reactor, keyPrefix=read.keyPrefix, timeout=read.timeout,
                poolSize=read.poolSize, nodeTtl=read.nodeTtl, nodeId=read.nodeId,
                name=shard.name, required=index == 0, tls=tls if shard.address.tls else PLAIN,
            )
            for index, shard in enumerate(read.shards)
        ]
        if not read.sharded:
            return maps[0]
        from ._shards import ShardedSessionMap

        return ShardedSessionMap(maps, reactor)
