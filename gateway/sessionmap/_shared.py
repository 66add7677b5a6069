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

With several shards (L{gateway.sessionmap._shards}) a session's keys (and
an Engine.IO session's C{P eio:{sid}}) are on the shard of its id, the
node registry (C{alive:} with the node's info, C{nodes}, C{conns:},
C{rebalance:}) on the home shard, and each node's C{alive:} key (C{1}) and
channel on every shard too, since a script checks liveness and publishes
on the server it runs on.

The three keys of a session expire C{session_ttl} after their last
refresh, and the owner deletes them when the session ends.  A script that
writes a mailbox refreshes them only when its writer asks (C{refresh}):
each writer (the owner, and a node serving the client for another owner)
asks when its own last refresh of the session is older than a third of
C{session_ttl}, or in doubt (L{gateway.cluster.expiry}); the owner's
heartbeat refreshes an idle session's, and a takeover refreshes them.  A
mailbox made by a write that does not refresh gets its expiry at once,
so that no key of a session lives without one.

L{SharedSessions} runs its commands and scripts through the
L{gateway.sessionmap.redis.RedisSessionMap}s it is given (one per shard);
a node's subscription to its channel on each
(L{gateway.sessionmap._subscription.Subscription}) keeps a connection of
its own.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from ..wire.protocol import Data
from ._ring import HashRing
from ._scripts import SCRIPTS

__all__ = ["SessionRecord", "SharedSessions"]


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
    the mailboxes, the node's heartbeat, and what its subscriptions
    publish, each on the shard it concerns.

    Every method returns a L{Deferred} that fails with
    L{gateway.errors.SessionMapUnavailable} within the map's timeout when Redis cannot be
    used.

    @ivar node: this node's id.
    @ivar sessionTtl: seconds a session's keys live after their last
        refresh.
    @ivar nodeTtl: seconds a node is taken for alive after its last
        heartbeat.
    """

    log = Logger()

    def __init__(self, maps: Sequence[Any], node: str, *, sessionTtl: float, nodeTtl: float,
                 ring: HashRing | None = None) -> None:
        """
        @param maps: the shards' L{gateway.sessionmap.redis.RedisSessionMap}s,
            the home shard first (one for a single server).
        @param ring: where each session lives among C{maps} (by their
            names unless given).
        """
        self.maps = tuple(maps)
        self.home = self.maps[0]
        self.ring = ring if ring is not None else HashRing([m.name for m in self.maps])
        self.node = node
        self.sessionTtl = sessionTtl
        self.nodeTtl = nodeTtl
        self._prefix = self.home.keyPrefix
        self._bprefix = self._prefix.encode("utf-8")
        self._ttl = str(max(1, int(sessionTtl * 1000)))

    def shardOf(self, sid: str) -> int:
        """
        @return: the index (in L{maps}) of the shard holding session (or
            Engine.IO session) C{sid}.
        """
        return self.ring.shardFor(sid.encode("utf-8"))

    def mapOf(self, sid: str) -> Any:
        """
        @return: the map of the shard holding C{sid}.
        """
        return self.maps[self.ring.shardFor(sid.encode("utf-8"))]

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
        return self.mapOf(sid).runScript(SCRIPTS[name], self.keys(sid)[:keys], args)

    @staticmethod
    def _refresh(refresh: bool) -> str:
        """
        @return: a script's C{refresh} argument: C{'1'} when its write is
            to refresh the keys' expiry, C{''} when not.
        """
        return "1" if refresh else ""

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

    def appendDown(self, sid: str, epoch: int, *messages: Data, acked: int | None = None,
                   delivered: int | None = None, refresh: bool = True) -> Deferred[int]:
        """
        Put backend messages C{messages} (in order) in the down mailbox, in
        one script call, and send each to the node the client is on, if not
        this one.

        @param acked: also record that the client (attached here) has
            received this many, as L{acked} would.
        @param delivered: also record that the backend has confirmed this
            many client messages (the up mailbox trimmed to them), as
            L{forwarded} would.
        @param refresh: whether to refresh the expiry of the session's
            keys (as every write of a mailbox takes this argument).
        @return: L{Deferred} firing with 1, or L{FENCED} / L{GONE}.
        """
        args: list[Any] = [str(epoch), self._ttl, self._prefix, sid, self.node,
                           "" if acked is None else str(acked), "" if delivered is None else str(delivered),
                           self._refresh(refresh)]
        for message in messages:
            args += [str(message.seq), "1" if message.isBinary else "0", message.payload]
        if messages:
            self.mapOf(sid).metrics.redisMessages(len(messages))
        return self._script("down", sid, tuple(args))

    def forwarded(self, sid: str, epoch: int, count: int, delivered: int | None = None,
                  messages: list[Data] | tuple = (), refresh: bool = True) -> Deferred[int]:
        """
        Record that client messages up to C{count} are accepted, and that
        the backend confirmed those up to C{delivered} (C{count} unless
        given): the up mailbox keeps the ones in between, C{messages}
        (those this node accepted itself, in order) appended to it.
        """
        args: list[Any] = [str(epoch), str(count), self._ttl,
                           str(count if delivered is None else delivered), self._refresh(refresh)]
        for message in messages:
            args += [str(message.seq), "1" if message.isBinary else "0", message.payload]
        if messages:
            self.mapOf(sid).metrics.redisMessages(len(messages))
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
        return self.mapOf(sid).run(self.keys(sid)[0], "GET", key).addCallback(
            lambda reply: None if reply is None else _tombstone(reply))

    # Any node's writes.
    def appendUp(self, sid: str, messages: list[Data], acked: int | None = None,
                 refresh: bool = True) -> Deferred[tuple[int, int]]:
        """
        Accept client messages into the up mailbox, in order, and send them
        to the owner; duplicates are skipped.  With C{acked}, also record
        that the client has received that many backend messages, as
        L{acked} would, in the same script call.

        @return: L{Deferred} firing with C{(status, accepted)}: status 1, or
            L{GAP} (a message before one of them is missing: those after
            the gap are not appended) or L{GONE}; C{accepted} is how many
            client messages are accepted now.
        """
        args: list[Any] = [self._ttl, self._prefix, sid, self.node,
                           "" if acked is None else str(acked), self._refresh(refresh)]
        for message in messages:
            args += [str(message.seq), "1" if message.isBinary else "0", message.payload]
        self.mapOf(sid).metrics.redisMessages(len(messages))
        d = self._script("up", sid, tuple(args))
        return d.addCallback(lambda reply: (int(reply[0]), int(reply[1])))

    def acked(self, sid: str, count: int, refresh: bool = True) -> Deferred[int]:
        """
        Record that the client received C{count} messages (the down mailbox
        is trimmed), and tell the owner.
        """
        return self._script("acked", sid, (str(count), self.node, self._ttl, self._prefix, sid,
                                           self._refresh(refresh)))

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
        Become the session's owner if its owner is dead (its keys' expiry
        refreshed).

        @return: L{Deferred} firing with C{("ok", record, previous)} (owned
            here now, at a new epoch unless it already was; C{previous} is
            the owner it was taken from, this node when it already owned
            it), C{("alive", owner)}, C{("ended", code, reason)} (see
            L{ended}) or C{("gone",)}.
        """
        d = self._script("takeover", sid, (self.node, self._prefix, self._ttl))

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
        d = self.mapOf(sid).run(key, "HGETALL", key)
        return d.addCallback(lambda reply: SessionRecord.fromPairs(sid, reply) if reply else None)

    def ownership(self, sid: str) -> Deferred[tuple[str, int] | None]:
        """
        @return: L{Deferred} firing with the session's C{(owner, epoch)}, or
            L{None} when there is no record.
        """
        key = self.keys(sid)[0]
        d = self.mapOf(sid).run(key, "HMGET", key, "owner", "epoch")
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
        d = self.mapOf(sid).run(self.keys(sid)[0], "XRANGE", key, f"(0-{after}", "+")

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
    def _aliveKey(self, node: str) -> bytes:
        return self._bprefix + b"alive:" + node.encode("utf-8")

    def heartbeat(self, info: dict[str, Any], shard: int = 0) -> Deferred:
        """
        Say that this node lives, for C{nodeTtl} seconds, on shard C{shard}:
        on the home shard, in the registry of nodes (its C{alive:} key
        holding C{info}, and the C{nodes} set), one script call; on another
        shard, its C{alive:} key alone, which that shard's scripts check
        before letting another node take a session over.
        """
        ms = str(max(1, int(self.nodeTtl * 1000)))
        key = self._aliveKey(self.node)
        if shard:
            return self.maps[shard].run(key, "SET", key, "1", "PX", ms)
        now = self.home.reactor.seconds()
        # Nodes dead for a minute are forgotten, so that the set stays small.
        return self.home.runScript(SCRIPTS["beat"], (), (
            self._prefix, self.node, json.dumps(info, separators=(",", ":")), ms,
            f"{now + self.nodeTtl:.3f}", f"({now - 60:.3f}"), route=key)

    def exchangeCounts(self, counts: dict[str, int]) -> Deferred[dict[str, dict[str, int]]]:
        """
        Publish this node's connections per backend (C{"pool/backend"}
        keys), for C{nodeTtl}, on the home shard.

        @return: L{Deferred} firing with the other live nodes' (those whose
            liveness has not expired), by node.
        """
        now = self.home.reactor.seconds()
        args: list[str] = [self._prefix, self.node, str(max(1, int(self.nodeTtl * 1000))), f"{now:.3f}"]
        for key, count in counts.items():
            args += [key, str(count)]
        key = self._bprefix + b"conns:" + self.node.encode("utf-8")
        d = self.home.runScript(SCRIPTS["counts"], (), tuple(args), route=key)

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
        C{wanted} that no other node has, and give up those in C{release}
        (on the home shard).

        @return: L{Deferred} firing with the pools whose turn this node has.
        """
        ms = str(max(1, int(self.nodeTtl * 1000)))
        args = (self._prefix, self.node, ms, str(len(wanted)), *sorted(wanted), *sorted(release))
        key = self._bprefix + b"rebalance"
        d = self.home.runScript(SCRIPTS["rebalance"], (), args, route=key)
        return d.addCallback(lambda reply: {_str(p) for p in reply or ()})

    def leave(self) -> Deferred:
        """
        Say that this node is gone (its sessions can be taken over at once),
        on every shard.
        """
        key = self._aliveKey(self.node)
        d = self.home.run(key, "DEL", key)
        d.addCallback(lambda _: self.home.run(key, "ZREM", self._bprefix + b"nodes", self.node))
        others = [m.run(key, "DEL", key) for m in self.maps[1:]]
        return gatherResults([d, *others], consumeErrors=True)

    def nodeAlive(self, node: str, near: str | None = None) -> Deferred[bool]:
        """
        @param near: a session id: ask the shard holding it (the one whose
            scripts would let its session be taken), rather than the home
            shard.
        @return: L{Deferred} firing with whether C{node} lives.
        """
        key = self._aliveKey(node)
        shard = self.home if near is None else self.mapOf(near)
        return shard.run(key, "EXISTS", key).addCallback(lambda n: bool(int(n)))

    def aliveOn(self, shard: int, nodes: Collection[str]) -> Deferred[set[str]]:
        """
        @return: L{Deferred} firing with those of C{nodes} whose liveness
            shard C{shard} holds (what its takeovers would find).
        """
        names = sorted(nodes)
        if not names:
            return succeed(set())
        keys = [self._aliveKey(node) for node in names]
        d = self.maps[shard].run(keys[0], "MGET", *keys)
        return d.addCallback(lambda replies: {n for n, r in zip(names, replies or ()) if r is not None})

    def liveNodes(self) -> Deferred[list[str]]:
        """
        @return: L{Deferred} firing with the ids of the nodes alive now, in
            the home shard's registry.
        """
        nodes = self._bprefix + b"nodes"
        now = self.home.reactor.seconds()
        d = self.home.run(nodes, "ZRANGEBYSCORE", nodes, f"{now:.3f}", "+inf")
        return d.addCallback(lambda reply: sorted(_str(n) for n in reply or ()))

    def liveNodeInfo(self, limit: int = 256) -> Deferred[dict[str, dict[str, Any]]]:
        """
        What each live node said of itself at its last heartbeat (its
        C{alive:} key on the home shard), for the status of the cluster.

        @param limit: the most nodes read (the C{limit} first by id).
        @return: L{Deferred} firing with the info by node id (a node whose
            key expired between the two reads is left out).
        """
        return Deferred.fromCoroutine(self._liveNodeInfo(limit))

    async def _liveNodeInfo(self, limit: int) -> dict[str, dict[str, Any]]:
        nodes = (await self.liveNodes())[:limit]
        if not nodes:
            return {}
        keys = [self._aliveKey(node) for node in nodes]
        replies = await self.home.run(self._bprefix + b"nodes", "MGET", *keys)
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

    # Engine.IO sessions (gateway.engineio): which node holds each, on the
    # shard of the Engine.IO session's id.
    def _engineKey(self, sid: str) -> bytes:
        return self._bprefix + b"eio:" + sid.encode("utf-8")

    def ownEngine(self, sid: str, ttl: float) -> Deferred:
        """
        Record this node as the holder of Engine.IO session C{sid}, for
        C{ttl} seconds.
        """
        key = self._engineKey(sid)
        return self.mapOf(sid).run(key, "SET", key, self.node, "PX", str(max(1, int(ttl * 1000))))

    def engineOwner(self, sid: str) -> Deferred[str | None]:
        """
        @return: L{Deferred} firing with the node holding Engine.IO session
            C{sid}, or L{None}.
        """
        key = self._engineKey(sid)
        return self.mapOf(sid).run(key, "GET", key).addCallback(lambda v: None if v is None else _str(v))

    def forgetEngine(self, sid: str) -> Deferred:
        """
        Engine.IO session C{sid} has ended.
        """
        key = self._engineKey(sid)
        return self.mapOf(sid).run(key, "DEL", key)

    def publish(self, node: str, message: bytes, shard: int = 0) -> Deferred[int]:
        """
        Publish C{message} to C{node}'s channel on shard C{shard} (every
        node subscribes to its channel on every shard; the home shard by
        default).

        @return: L{Deferred} firing with how many subscribers got it.
        """
        channel = self.channel(node)
        return self.maps[shard].run(channel.encode("utf-8"), "PUBLISH", channel, message)
