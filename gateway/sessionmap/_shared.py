"""
Sessions shared by several gateway nodes, in Redis: each session's record
and its two mailboxes, the registry of live nodes, and each node's channel
of notifications (docs/architecture.md, "Several nodes").

Keys (C{P} is the map's key prefix):

  - C{P s:{sid}}: the session's record, a hash: C{secret}, C{pool},
    C{backend}, C{target}, C{headers} (JSON), C{origin}, C{owner} (the node
    that pumps it), C{epoch} (raised by every takeover), C{attached} (the
    node its client is on, or empty), C{kind} (C{ws} or C{poll}),
    C{upRecv} (client messages accepted), C{upFwd} (of those, confirmed
    by the backend), C{downSent} (backend messages numbered), C{downAcked} (of
    those, received by the client), C{closing} (C{code|reason} once the
    backend closed), C{created}, C{attachSeq} (attachments so far).
  - C{P s:{sid}:up}: client messages accepted (by any node) that the
    backend has not confirmed, entry C{0-n} for message n.
  - C{P s:{sid}:down}: backend messages the client has not acknowledged.
  - C{P s:{sid}:ended}: once the session ended, what a later resume of it
    hears (C{code|reason}), for C{session_ttl}.
  - C{P alive:{node}}: exists while the node lives (written every
    heartbeat, expiring after C{node_ttl}).
  - C{P nodes}: a sorted set of node ids by when their liveness expires.
  - C{P rebalance:{pool}}: the node whose turn it is to move the pool's
    sessions for balance, expiring after C{node_ttl} unless renewed.
  - C{P conns:{node}}: a hash of the node's connections per backend
    (C{pool/backend}), written every heartbeat, expiring after
    C{node_ttl}: every node's balancer counts the others' connections.

The three keys of a session expire C{session_ttl} after their last write;
the owner writes (or refreshes) them at least every heartbeat, and deletes
them when the session ends.

L{SharedSessions} runs its commands and scripts through the
L{gateway.sessionmap.redis.RedisSessionMap} it is given; L{Subscription}
keeps a connection of its own, made (like the map's) by
L{gateway.sessionmap._connection}.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ..wire.protocol import Data
from ._connection import WatchedEndpoint, redisFactory, subscriberProtocol
from ._scripts import SCRIPTS

__all__ = ["SessionRecord", "SharedSessions", "Subscription"]


def _bytes(value: Any) -> bytes:
    """
    A reply as bytes (txredisapi decodes what is valid UTF-8, losslessly).
    """
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _tombstone(value: Any) -> tuple[int, str]:
    """
    @return: an ended session's C{code|reason} as C{(code, reason)}.
    """
    code, _, reason = _str(value).partition("|")
    return int(code), reason


@dataclass
class SessionRecord:
    """
    A shared session's record, as read from its hash.
    """

    sid: str
    secret: str
    pool: str
    backend: str
    target: bytes
    headers: dict[str, str]
    origin: str | None
    owner: str
    epoch: int
    attached: str
    kind: str
    upRecv: int
    upFwd: int
    downSent: int
    downAcked: int
    closing: tuple[int, str] | None
    created: float
    attachSeq: int = 0

    @classmethod
    def fromPairs(cls, sid: str, pairs: list) -> SessionRecord:
        """
        @param pairs: C{HGETALL}'s flat reply.
        """
        fields = {_str(pairs[i]): pairs[i + 1] for i in range(0, len(pairs) - 1, 2)}
        closing = None
        raw = _str(fields.get("closing", ""))
        if raw:
            code, _, reason = raw.partition("|")
            closing = (int(code), reason)
        origin = _str(fields.get("origin", ""))
        return cls(
            sid=sid,
            secret=_str(fields["secret"]),
            pool=_str(fields["pool"]),
            backend=_str(fields["backend"]),
            target=_bytes(fields["target"]),
            headers=json.loads(_str(fields.get("headers", "{}"))),
            origin=origin or None,
            owner=_str(fields["owner"]),
            epoch=int(fields["epoch"]),
            attached=_str(fields.get("attached", "")),
            kind=_str(fields.get("kind", "")),
            upRecv=int(fields["upRecv"]),
            upFwd=int(fields["upFwd"]),
            downSent=int(fields["downSent"]),
            downAcked=int(fields["downAcked"]),
            closing=closing,
            created=float(fields.get("created", 0)),
            attachSeq=int(fields.get("attachSeq", 0)),
        )


class SharedSessions:
    """
    One node's use of the shared session state: the scripts, the reads of
    the mailboxes, the node's heartbeat, and its subscription to its own
    channel (L{Subscription}).

    Every method returns a L{Deferred} that fails with
    L{gateway.errors.SessionMapUnavailable} within the map's timeout when Redis cannot be
    used.

    @ivar node: this node's id.
    @ivar sessionTtl: seconds a session's keys live after their last write.
    @ivar nodeTtl: seconds a node is taken for alive after its last
        heartbeat.
    """

    log = Logger()

    def __init__(self, redisMap, node: str, *, sessionTtl: float, nodeTtl: float) -> None:
        self.map = redisMap
        self.node = node
        self.sessionTtl = sessionTtl
        self.nodeTtl = nodeTtl
        self._prefix = redisMap.keyPrefix
        self._bprefix = self._prefix.encode("utf-8")
        self._ttl = str(max(1, int(sessionTtl * 1000)))

    def keys(self, sid: str) -> tuple[bytes, bytes, bytes]:
        """
        @return: the record, up and down keys of session C{sid}.
        """
        record = self._bprefix + b"s:" + sid.encode("ascii")
        return record, record + b":up", record + b":down"

    def channel(self, node: str | None = None) -> str:
        """
        @return: the channel of C{node} (this node by default).
        """
        return f"{self._prefix}node:{node or self.node}"

    def _script(self, name: str, sid: str, args: tuple, keys: int = 3) -> Deferred:
        return self.map.runScript(SCRIPTS[name], self.keys(sid)[:keys], args)

    # The owner's writes.
    def create(self, sid: str, fields: dict[str, Any]) -> Deferred:
        """
        Write a new session's record (owned and attached here, epoch 1).
        """
        values: dict[str, Any] = {
            "owner": self.node, "epoch": 1, "attached": self.node,
            "upRecv": 0, "upFwd": 0, "downSent": 0, "downAcked": 0, "closing": "",
            **fields,
        }
        args: list[Any] = [self._ttl]
        for key, value in values.items():
            if key == "headers":
                value = json.dumps(value, separators=(",", ":"))
            args += [key, value if isinstance(value, bytes) else str(value)]
        return self._script("create", sid, tuple(args))

    def appendDown(self, sid: str, epoch: int, message: Data) -> Deferred[int]:
        """
        Put backend message C{message} in the down mailbox, and send it to
        the node the client is on, if not this one.

        @return: L{Deferred} firing with 1, or L{FENCED} / L{GONE}.
        """
        return self._script("down", sid, (
            str(epoch), str(message.seq), "1" if message.isBinary else "0", message.payload,
            self._ttl, self._prefix, sid, self.node,
        ))

    def forwarded(self, sid: str, epoch: int, count: int, delivered: int | None = None,
                  messages: list[Data] | tuple = ()) -> Deferred[int]:
        """
        Record that client messages up to C{count} are accepted, and that
        the backend confirmed those up to C{delivered} (C{count} unless
        given): the up mailbox keeps the ones in between, C{messages}
        (those this node accepted itself, in order) appended to it.
        """
        args: list[Any] = [str(epoch), str(count), self._ttl, str(count if delivered is None else delivered)]
        for message in messages:
            args += [str(message.seq), "1" if message.isBinary else "0", message.payload]
        return self._script("forwarded", sid, tuple(args))

    def relinked(self, sid: str, epoch: int, backend: str) -> Deferred[int]:
        """
        Record that the session's backend connection is now to C{backend}.
        """
        return self._script("backend", sid, (str(epoch), backend), 1)

    def closing(self, sid: str, epoch: int, code: int, reason: str) -> Deferred[int]:
        """
        Record that the backend closed, and tell the client's node.
        """
        return self._script("closing", sid, (str(epoch), str(code), reason, self.node, self._prefix, sid), 1)

    def end(self, sid: str, epoch: int | None, code: int, reason: str,
            tombstone: tuple[int, str] | None = None) -> Deferred[int]:
        """
        Delete the session (only if still at C{epoch}, unless L{None}), and
        tell the client's node to close its connection with C{code}.

        @param tombstone: what a later resume of the session hears (its
            close code and reason), kept for C{sessionTtl} (L{ended}).
        """
        args: tuple = ("" if epoch is None else str(epoch), str(code), reason, self.node, self._prefix, sid)
        if tombstone is not None:
            args += (self._ttl, f"{tombstone[0]}|{tombstone[1]}")
        return self._script("end", sid, args)

    def ended(self, sid: str) -> Deferred[tuple[int, str] | None]:
        """
        @return: L{Deferred} firing with what a resume of the ended session
            C{sid} hears (its C{(code, reason)}), or L{None} when no ended
            session of that id is remembered.
        """
        key = self.keys(sid)[0] + b":ended"
        return self.map.run(self.keys(sid)[0], "GET", key).addCallback(
            lambda reply: None if reply is None else _tombstone(reply))

    # Any node's writes.
    def appendUp(self, sid: str, messages: list[Data]) -> Deferred[tuple[int, int]]:
        """
        Accept client messages into the up mailbox, in order, and send them
        to the owner; duplicates are skipped.

        @return: L{Deferred} firing with C{(status, accepted)}: status 1, or
            L{GAP} (a message before one of them is missing: those after
            the gap are not appended) or L{GONE}; C{accepted} is how many
            client messages are accepted now.
        """
        args: list[Any] = [self._ttl, self._prefix, sid]
        for message in messages:
            args += [str(message.seq), "1" if message.isBinary else "0", message.payload]
        d = self._script("up", sid, tuple(args))
        return d.addCallback(lambda reply: (int(reply[0]), int(reply[1])))

    def acked(self, sid: str, count: int) -> Deferred[int]:
        """
        Record that the client received C{count} messages (the down mailbox
        is trimmed), and tell the owner.
        """
        return self._script("acked", sid, (str(count), self.node, self._ttl, self._prefix, sid))

    def attach(self, sid: str, kind: str) -> Deferred[tuple]:
        """
        Attach the session's client here.

        @return: L{Deferred} firing with C{("ok", ownerAlive, record)},
            C{("elsewhere",)} (a poll, while a live node holds the session
            on a WebSocket), C{("ended", code, reason)} (see L{ended}) or
            C{("gone",)}.
        """
        d = self._script("attach", sid, (self.node, kind, self._prefix, sid), 1)

        def parse(reply):
            what = _str(reply[0])
            if what == "ended":
                return ("ended", *_tombstone(reply[1]))
            if what != "ok":
                return (what,)
            return ("ok", bool(int(reply[1])), SessionRecord.fromPairs(sid, reply[2:]))

        return d.addCallback(parse)

    def detach(self, sid: str) -> Deferred[int]:
        """
        The client left this node.
        """
        return self._script("detach", sid, (self.node, self._prefix, sid), 1)

    def takeOver(self, sid: str) -> Deferred[tuple]:
        """
        Become the session's owner if its owner is dead.

        @return: L{Deferred} firing with C{("ok", record, previous)} (owned
            here now, at a new epoch unless it already was; C{previous} is
            the owner it was taken from, this node when it already owned
            it), C{("alive", owner)}, C{("ended", code, reason)} (see
            L{ended}) or C{("gone",)}.
        """
        d = self._script("takeover", sid, (self.node, self._prefix), 1)

        def parse(reply):
            what = _str(reply[0])
            if what == "ok":
                return ("ok", SessionRecord.fromPairs(sid, reply[2:]), _str(reply[1]))
            if what == "ended":
                return ("ended", *_tombstone(reply[1]))
            if what == "alive":
                return ("alive", _str(reply[1]))
            return (what,)

        return d.addCallback(parse)

    def notify(self, sid: str, field: str, message: bytes) -> Deferred[int]:
        """
        Publish C{message} to the session's C{owner} or C{attached} node.
        """
        return self._script("notify", sid, (field, self._prefix, message), 1)

    def read(self, sid: str) -> Deferred[SessionRecord | None]:
        """
        @return: L{Deferred} firing with the session's record, or L{None}
            when there is none.
        """
        key = self.keys(sid)[0]
        d = self.map.run(key, "HGETALL", key)
        return d.addCallback(lambda reply: SessionRecord.fromPairs(sid, reply) if reply else None)

    def ownership(self, sid: str) -> Deferred[tuple[str, int] | None]:
        """
        @return: L{Deferred} firing with the session's C{(owner, epoch)}, or
            L{None} when there is no record.
        """
        key = self.keys(sid)[0]
        d = self.map.run(key, "HMGET", key, "owner", "epoch")
        return d.addCallback(lambda r: None if r[0] is None else (_str(r[0]), int(r[1])))

    def touch(self, sid: str) -> Deferred:
        """
        Keep the session's keys for another C{sessionTtl}.
        """
        return self._script("touch", sid, (self._ttl,))

    # Reads.
    def readDown(self, sid: str, after: int) -> Deferred[list[Data]]:
        """
        @return: L{Deferred} firing with the backend messages after
            C{after} still in the down mailbox, in order.
        """
        return self._read(self.keys(sid)[2], sid, after)

    def readUp(self, sid: str, after: int) -> Deferred[list[Data]]:
        """
        @return: L{Deferred} firing with the client messages after C{after}
            in the up mailbox, in order.
        """
        return self._read(self.keys(sid)[1], sid, after)

    def _read(self, key: bytes, sid: str, after: int) -> Deferred[list[Data]]:
        d = self.map.run(self.keys(sid)[0], "XRANGE", key, f"(0-{after}", "+")

        def parse(reply) -> list[Data]:
            out = []
            for entry in reply or ():
                entryId, fields = entry
                values = {_str(fields[i]): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
                seq = int(_str(entryId).partition("-")[2])
                out.append(Data(seq, _bytes(values["p"]), _str(values["b"]) == "1"))
            return out

        return d.addCallback(parse)

    # Nodes.
    def heartbeat(self, info: dict[str, Any]) -> Deferred:
        """
        Say that this node lives, for C{nodeTtl} seconds.
        """
        return Deferred.fromCoroutine(self._heartbeat(info))

    async def _heartbeat(self, info) -> None:
        key = self._bprefix + b"alive:" + self.node.encode("utf-8")
        ms = str(max(1, int(self.nodeTtl * 1000)))
        await self.map.run(key, "SET", key, json.dumps(info, separators=(",", ":")), "PX", ms)
        now = self.map.reactor.seconds()
        nodes = self._bprefix + b"nodes"
        await self.map.run(key, "ZADD", nodes, f"{now + self.nodeTtl:.3f}", self.node)
        # Forget nodes dead for a minute, so that the set stays small.
        await self.map.run(key, "ZREMRANGEBYSCORE", nodes, "-inf", f"({now - 60:.3f}")

    def exchangeCounts(self, counts: dict[str, int]) -> Deferred[dict[str, dict[str, int]]]:
        """
        Publish this node's connections per backend (C{"pool/backend"}
        keys), for C{nodeTtl}.

        @return: L{Deferred} firing with the other live nodes' (those whose
            liveness has not expired), by node.
        """
        now = self.map.reactor.seconds()
        args: list[str] = [self._prefix, self.node, str(max(1, int(self.nodeTtl * 1000))), f"{now:.3f}"]
        for key, count in counts.items():
            args += [key, str(count)]
        key = self._bprefix + b"conns:" + self.node.encode("utf-8")
        d = self.map.runScript(SCRIPTS["counts"], (), tuple(args), route=key)

        def parse(reply) -> dict[str, dict[str, int]]:
            reply = reply or []
            byNode: dict[str, dict[str, int]] = {}
            for i in range(0, len(reply) - 2, 3):
                byNode.setdefault(_str(reply[i]), {})[_str(reply[i + 1])] = int(reply[i + 2])
            return byNode

        return d.addCallback(parse)

    def rebalanceTurns(self, wanted: set[str], release: set[str]) -> Deferred[set[str]]:
        """
        Take (or keep, for C{nodeTtl}) the turn to rebalance each pool in
        C{wanted} that no other node has, and give up those in C{release}.

        @return: L{Deferred} firing with the pools whose turn this node has.
        """
        ms = str(max(1, int(self.nodeTtl * 1000)))
        args = (self._prefix, self.node, ms, str(len(wanted)), *sorted(wanted), *sorted(release))
        key = self._bprefix + b"rebalance"
        d = self.map.runScript(SCRIPTS["rebalance"], (), args, route=key)
        return d.addCallback(lambda reply: {_str(p) for p in reply or ()})

    def leave(self) -> Deferred:
        """
        Say that this node is gone (its sessions can be taken over at once).
        """
        key = self._bprefix + b"alive:" + self.node.encode("utf-8")
        d = self.map.run(key, "DEL", key)
        d.addCallback(lambda _: self.map.run(key, "ZREM", self._bprefix + b"nodes", self.node))
        return d

    def nodeAlive(self, node: str) -> Deferred[bool]:
        """
        @return: L{Deferred} firing with whether C{node} lives.
        """
        key = self._bprefix + b"alive:" + node.encode("utf-8")
        return self.map.run(key, "EXISTS", key).addCallback(lambda n: bool(int(n)))

    def liveNodes(self) -> Deferred[list[str]]:
        """
        @return: L{Deferred} firing with the ids of the nodes alive now.
        """
        nodes = self._bprefix + b"nodes"
        now = self.map.reactor.seconds()
        d = self.map.run(nodes, "ZRANGEBYSCORE", nodes, f"{now:.3f}", "+inf")
        return d.addCallback(lambda reply: sorted(_str(n) for n in reply or ()))

    def liveNodeInfo(self, limit: int = 256) -> Deferred[dict[str, dict[str, Any]]]:
        """
        What each live node said of itself at its last heartbeat (its
        C{alive:} key), for the status of the cluster.

        @param limit: the most nodes read (the C{limit} first by id).
        @return: L{Deferred} firing with the info by node id (a node whose
            key expired between the two reads is left out).
        """
        return Deferred.fromCoroutine(self._liveNodeInfo(limit))

    async def _liveNodeInfo(self, limit: int) -> dict[str, dict[str, Any]]:
        nodes = (await self.liveNodes())[:limit]
        if not nodes:
            return {}
        keys = [self._bprefix + b"alive:" + node.encode("utf-8") for node in nodes]
        replies = await self.map.run(self._bprefix + b"nodes", "MGET", *keys)
        found = {}
        for node, reply in zip(nodes, replies or ()):
            if reply is None:
                continue
            try:
                info = json.loads(_str(reply))
            except ValueError:
                info = {}
            found[node] = info if isinstance(info, dict) else {}
        return found

    # Engine.IO sessions (gateway.engineio): which node holds each.
    def _engineKey(self, sid: str) -> bytes:
        return self._bprefix + b"eio:" + sid.encode("utf-8")

    def ownEngine(self, sid: str, ttl: float) -> Deferred:
        """
        Record this node as the holder of Engine.IO session C{sid}, for
        C{ttl} seconds.
        """
        key = self._engineKey(sid)
        return self.map.run(key, "SET", key, self.node, "PX", str(max(1, int(ttl * 1000))))

    def engineOwner(self, sid: str) -> Deferred[str | None]:
        """
        @return: L{Deferred} firing with the node holding Engine.IO session
            C{sid}, or L{None}.
        """
        key = self._engineKey(sid)
        return self.map.run(key, "GET", key).addCallback(lambda v: None if v is None else _str(v))

    def forgetEngine(self, sid: str) -> Deferred:
        """
        Engine.IO session C{sid} has ended.
        """
        key = self._engineKey(sid)
        return self.map.run(key, "DEL", key)

    def publish(self, node: str, message: bytes) -> Deferred[int]:
        """
        Publish C{message} to C{node}'s channel.

        @return: L{Deferred} firing with how many subscribers got it.
        """
        channel = self.channel(node)
        return self.map.run(channel.encode("utf-8"), "PUBLISH", channel, message)


class Subscription:
    """
    A node's subscription to its own channel: one dedicated Redis
    connection, reconnected by itself (with the map's backoff) and
    subscribed again on every connection.

    It checks itself: L{check} publishes a nonce to the channel, and a
    subscription that has not heard its last nonce within the map's
    timeout is I{wedged}: the connection is dropped and made again.

    @ivar listener: called with each notification's bytes.
    @ivar onSubscribed: called each time the subscription (re)starts, so
        that what was missed while it was down is read from the mailboxes.
    """

    log = Logger()

    def __init__(self, shared: SharedSessions, listener: Callable[[bytes], None],
                 onSubscribed: Callable[[], None]) -> None:
        self.shared = shared
        self.listener = listener
        self.onSubscribed = onSubscribed
        redisMap = shared.map
        self.reactor = redisMap.reactor
        self.timeout = redisMap.timeout
        self._factory: Any = None
        self._protocol: Any = None
        self.subscribed = False
        self._nonce: bytes | None = None
        self._nonceSent = 0.0
        self.wedged = False
        self._lastError: str | None = None

    # What the set-up protocol asks of its watcher.
    @property
    def metrics(self) -> Any:
        """
        The map's L{gateway.interfaces.IMetrics}, which the subscription's
        commands are counted in too.
        """
        return self.shared.map.metrics

    def setUpCommands(self):
        return self.shared.map.setUpCommands()

    def setUpFailed(self, reason: str) -> None:
        self._lastError = reason

    def setUpSucceeded(self, protocol=None) -> None:
        if protocol is None:
            return
        self._protocol = protocol
        d = protocol.subscribe(self.shared.channel())
        d.addTimeout(self.timeout, self.reactor)

        def subscribed(_):
            self.subscribed = True
            self.wedged = False
            self._nonce = None
            self.onSubscribed()

        def failed(failure):
            self.log.warn("subscribing to {channel} failed: {why}", channel=self.shared.channel(),
                          why=str(failure.value) or failure.type.__name__)
            protocol.drop()

        d.addCallbacks(subscribed, failed)

    def noticeReceived(self, message: Any) -> None:
        """
        A message on the channel.
        """
        data = _bytes(message)
        if data[:2] == b"p|":
            if data[2:] == self._nonce:
                self._nonce = None
            return
        try:
            self.listener(data)
        except Exception:
            self.log.failure("handling a notification failed")

    def lost(self, protocol) -> None:
        if protocol is self._protocol:
            self._protocol = None
            self.subscribed = False

    @property
    def healthy(self) -> bool:
        """
        Whether the subscription is up and not wedged.
        """
        return self.subscribed and not self.wedged

    def start(self) -> None:
        """
        Connect and subscribe (and keep doing so).
        """
        redisMap = self.shared.map
        factory = redisFactory(redisMap.address, 1, self, isLazy=True, protocol=subscriberProtocol())
        factory.deferred.addErrback(lambda f: None)
        self._factory = factory
        factory.startConnecting(WatchedEndpoint(redisMap.endpoint(), self.setUpFailed))

    def stop(self) -> Deferred:
        """
        Unsubscribe and disconnect.
        """
        factory, self._factory = self._factory, None
        self.subscribed = False
        if factory is None:
            return succeed(None)
        d = factory.disconnect()
        d.addErrback(lambda f: None)
        return d

    def check(self) -> None:
        """
        Publish a nonce to the channel; one still unheard from the previous
        check marks the subscription wedged, and drops its connection.
        """
        now = self.reactor.seconds()
        if self._nonce is not None and now - self._nonceSent >= self.timeout:
            if self.subscribed and not self.wedged:
                self.log.warn("the subscription to {channel} is wedged (its check went unheard"
                              " for {s:.1f}s): reconnecting", channel=self.shared.channel(),
                              s=now - self._nonceSent)
            self.wedged = True
            if self._protocol is not None:
                self._protocol.drop()
            self._nonce = None
        if not self.subscribed or self._nonce is not None:
            return
        self._nonce = secrets.token_hex(8).encode("ascii")
        self._nonceSent = now
        d = self.shared.publish(self.shared.node, b"p|" + self._nonce)
        d.addErrback(lambda f: None)
