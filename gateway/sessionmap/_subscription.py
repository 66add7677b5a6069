"""
A node's subscription to its own channel (C{P node:{id}}) on one shard of
the Redis session map: what other nodes' scripts publish there about the
sessions of that shard (L{gateway.sessionmap._scripts}).  A node keeps one
per shard, since a script publishes on the server that holds its keys.

The connection is made, like the map's, by
L{gateway.sessionmap._connection}.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from ._connection import WatchedEndpoint, addReplyTimeout, redisFactory, subscriberProtocol

__all__ = ["Subscription"]


def _bytes(value: Any) -> bytes:
    """
    A reply as bytes (txredisapi decodes what is valid UTF-8, losslessly).
    """
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


class Subscription:
    """
    A node's subscription to its own channel on one shard: one dedicated
    Redis connection, reconnected by itself (with the shard's backoff) and
    subscribed again on every connection.

    It checks itself: L{check} publishes a nonce to the channel, and a
    subscription that has not heard its last nonce within the map's
    timeout is I{wedged}: the connection is dropped and made again.

    @ivar listener: called with each notification's bytes.
    @ivar onSubscribed: called each time the subscription (re)starts, so
        that what was missed while it was down is read from the mailboxes.
    @ivar shard: the index of its shard in the shared sessions' C{maps}.
    """

    log = Logger()

    def __init__(self, shared: Any, listener: Callable[[bytes], None],
                 onSubscribed: Callable[[], None], shard: int = 0) -> None:
        """
        @param shared: the node's L{gateway.sessionmap._shared.SharedSessions}.
        """
        self.shared = shared
        self.listener = listener
        self.onSubscribed = onSubscribed
        self.shard = shard
        self.map = redisMap = shared.maps[shard]
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
        What the shard's commands are counted in, which the
        subscription's are too.
        """
        return self.map.metrics

    def setUpCommands(self):
        return self.map.setUpCommands()

    def setUpFailed(self, reason: str) -> None:
        self._lastError = reason

    def setUpSucceeded(self, protocol=None) -> None:
        if protocol is None:
            return
        self._protocol = protocol
        d = protocol.subscribe(self.shared.channel())
        addReplyTimeout(d, self.timeout, self.reactor)

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
        redisMap = self.map
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
        d = self.shared.publish(self.shared.node, b"p|" + self._nonce, self.shard)
        d.addErrback(lambda f: None)
