"""
Resuming a session this node does not hold (docs/architecture.md, "Several
nodes"): relaying it from its live owner, or taking it over from a dead one
with a new epoch, which fences the old owner.  L{Takeover} is the
L{gateway.cluster.node.Cluster}'s component for this job.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from ..errors import Elsewhere, GatewayError, NoBackendAvailable, ResumeRefused
from ..wire.protocol import (
    CLOSE_BAD_SECRET,
    CLOSE_RESUME_FAILED,
    CLOSE_UNAVAILABLE,
    CLOSE_UNKNOWN_SESSION,
    Hello,
    shortId,
)
from .mirror import Mirror
from .relay import RelaySession

if TYPE_CHECKING:
    from ..sessions.session import Session

__all__ = ["Takeover", "secretHash"]


def secretHash(secret: str) -> str:
    """
    @return: what Redis keeps of a session secret (never the secret).
    """
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def _storeUnavailable(error: Exception) -> Exception:
    """
    @return: the refusal of a resume that needs Redis while it is away (the
        client tries again).
    """
    return ResumeRefused(CLOSE_UNAVAILABLE, f"the session store is unavailable: {error}")


def _checkSecret(expected: str, given: str) -> None:
    """
    @raise ResumeRefused: 4403 unless C{given} is C{expected} (compared in
        constant time).
    """
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise ResumeRefused(CLOSE_BAD_SECRET, "wrong session secret")


class Takeover:
    """
    Resumes through this node of sessions it does not hold, and takeovers.

    @ivar count: the sessions taken over here so far.
    """

    def __init__(self, cluster: Any) -> None:
        """
        @param cluster: this node's L{gateway.cluster.node.Cluster} (its
            store, relays, registry and opener).
        """
        self.cluster = cluster
        self.count = 0

    def _refuseGone(self, sid: str, status: tuple) -> None:
        """
        @raise ResumeRefused: unless C{status} is an C{"ok"} answer of the
            store: with what the node that ended the session left for a
            resume (4410 for an expired one, as that node itself answers);
            4503 (try again) just after the shard holding session C{sid}
            came back, when its owner may not have written it again yet;
            else 4404.
        """
        if status[0] == "ended":
            raise ResumeRefused(status[1], status[2])
        if status[0] != "ok":
            if self.cluster.justRecovered(sid):
                raise ResumeRefused(CLOSE_UNAVAILABLE, "the session store was unavailable until just"
                                    " now; resume again")
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, "unknown session")

    async def resume(self, hello: Hello, kind: str) -> Any:
        """
        Resume a session this node does not hold: relay it from its live
        owner, or take it over from a dead one.

        @raise ResumeRefused: unknown or expired, wrong secret, or a count
            that cannot be honoured.
        @raise Elsewhere: see L{attachHere}.
        """
        sid = hello.sid
        try:
            status = await self.cluster.shared.attach(sid, kind)
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if status[0] == "elsewhere":
            raise Elsewhere("the session is on a WebSocket on another node")
        self._refuseGone(sid, status)
        _, alive, record = status
        _checkSecret(record.secret, secretHash(hello.secret or ""))
        if hello.received < record.downAcked:
            raise ResumeRefused(
                CLOSE_RESUME_FAILED,
                f"cannot resume from message {hello.received}: messages {record.downAcked + 1}"
                f" to {record.downSent} are held",
            )
        if alive and record.owner != self.cluster.node:
            relay = RelaySession(self.cluster, sid, hello.secret, record)
            relay.attachSeq = record.attachSeq
            await relay.load(hello.received)
            old = self.cluster.relays.get(sid)
            if old is not None and old is not relay:
                old.supersededBy(self.cluster.node)
            self.cluster.relays[sid] = relay
            if hello.received > record.downAcked:
                relay.writeAck()
            return relay
        return await self.takeOver(sid, hello.secret, hello.received)

    async def lookup(self, sid: str, secret: str) -> RelaySession:
        """
        A relay for a long-polling C{send} through this node (which does not
        take the client's attachment).

        @raise ResumeRefused: unknown, or wrong secret.
        """
        relay = self.cluster.relays.get(sid)
        if relay is not None:
            _checkSecret(relay.secret, secret)
            return relay
        try:
            record = await self.cluster.shared.read(sid)
            answer = await self.cluster.shared.ended(sid) if record is None else None
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if record is None:
            self._refuseGone(sid, ("ended", *answer) if answer is not None else ("gone",))
        _checkSecret(record.secret, secretHash(secret))
        relay = RelaySession(self.cluster, sid, secret, record)
        relay.outbox.sent = record.downSent
        relay.outbox.acked = record.downAcked
        return relay

    async def takeOver(self, sid: str, secret: str, received: int) -> Session:
        """
        Become the owner of a session whose owner died: a new epoch (which
        fences the old owner), a new backend connection to the same backend
        (C{X-Session-Resumed: 1}), and the state read from the mailboxes.

        @raise ResumeRefused: when it cannot be taken (gone, or its backend
            cannot be reached).
        """
        sent = self.cluster.clock.seconds()  # the takeover refreshes the keys' expiry
        try:
            status = await self.cluster.shared.takeOver(sid)
        except GatewayError as e:
            raise _storeUnavailable(e) from None
        if status[0] == "alive":
            raise ResumeRefused(CLOSE_UNAVAILABLE, "the session's node is alive again; resume again")
        self._refuseGone(sid, status)
        record, previous = status[1], status[2]
        registry = self.cluster.registry
        existing = registry.sessions.get(sid)
        if existing is not None:
            return existing
        pool = self.cluster.opener.pool(record.pool) if self.cluster.opener is not None else None
        if pool is None:
            raise ResumeRefused(CLOSE_UNKNOWN_SESSION, f"the session's pool {record.pool!r} is not here")
        link = None
        if record.closing is None:
            headers = dict(record.headers)
            headers["X-Session-Resumed"] = "1"
            headers["X-Session-Epoch"] = str(record.epoch)
            # What the gateway knows the backend got, and what it got from
            # the backend: a backend that keeps its messages skips the
            # first and sends again what came after the second.
            headers["X-Session-Delivered"] = str(record.upFwd)
            headers["X-Session-Received"] = str(max(record.downSent, received))
            try:
                backend, link = await self.cluster.opener.reopen(pool, record.backend, record.target,
                                                         headers, record.origin)
            except (NoBackendAvailable, GatewayError) as e:
                raise ResumeRefused(CLOSE_UNAVAILABLE, f"the session's backend cannot be reached: {e}") from None
        try:
            down = await self.cluster.shared.readDown(sid, record.downAcked)
            up = await self.cluster.shared.readUp(sid, record.upFwd)
        except GatewayError as e:
            if link is not None:
                link.closeLink(1001, "session takeover failed")
            raise _storeUnavailable(e) from None
        existing = registry.sessions.get(sid)
        if existing is not None:  # pragma: no cover - two resumes at once
            if link is not None:
                link.closeLink(1001, "session taken over twice")
            return existing
        session = registry.adopt(sid, secret, pool, link, record, down, received)
        session.mirror = Mirror(self.cluster, session, record.epoch, refreshed=sent)
        session.mirror.origin = session.upstream.origin = (record.target, record.headers, record.origin)
        session.mirror.attachSeq = record.attachSeq
        session.mirror.inRedis = record.upRecv
        if link is not None:
            link.bind(session, backend)
        self.count += 1
        self.cluster.nodeDied(previous)
        self.cluster.log.info("node {node} took session {sid} over (epoch {epoch}) from {owner}",
                      node=self.cluster.node, sid=shortId(sid), epoch=record.epoch, owner=previous)
        for message in up:
            if message.seq == session.inbox.accepted + 1:
                session.forward(message)
        session.mirror.forwarded()
        return session

    async def adoptRelay(self, relay: RelaySession) -> None:
        """
        The owner of a session relayed here died: take it over here, with
        its client staying connected.
        """
        transport = relay.transport
        try:
            session = await self.takeOver(relay.sid, relay.secret, relay.outbox.acked)
        except GatewayError as e:
            self.cluster.log.info("session {sid}: takeover failed: {e}", sid=shortId(relay.sid), e=str(e))
            return
        if relay.transport is not transport or transport is None:
            return
        relay.transport = None
        relay.forget()
        transport.session = session
        # Deliver from what the client has received (no welcome: the client
        # stays on this connection, and its counts carry on).
        session.adoptTransport(transport, relay.outbox.sent)
