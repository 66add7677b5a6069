"""
Tests for L{gateway.sessionmap._shared.Subscription}, a node's
subscription to its own channel, against real C{redis-server} processes:
notifications reach the listener, the self-check, a wedged subscription,
and a Redis restart ridden out.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from gateway.sessionmap._subscription import Subscription
from gateway.testing import waitUntil
from tests.helpers import WAIT, within


# The subscription.


@pytest_twisted.ensureDeferred
async def test_subscription(redis_server, make_nodes, subscriptions, subscribe):
    """
    A started L{Subscription} subscribes to its node's channel, calls
    C{onSubscribed} once and is healthy; notifications reach the listener
    as bytes (not UTF-8, or looking like a number, intact); C{check}
    publishes C{p|nonce} to the channel, which the listener never sees, and
    the subscription stays healthy.
    """
    (a,) = make_nodes(redis_server.url, "A")
    port = redis_server.port
    notices: list[bytes] = []
    subscribed: list[None] = []
    subscription = Subscription(a, notices.append, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    assert not subscription.healthy
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))
    assert len(subscribed) == 1

    for message in (b"\xff|bin", b"0042", "\u00e9|".encode()):
        assert await within(a.publish("A", message)) == 1
    await within(waitUntil(lambda: len(notices) == 3, WAIT))
    assert notices == [b"\xff|bin", b"0042", "\u00e9|".encode()]

    watcher = await subscribe(port, a.channel())
    subscription.check()
    channel, nonce = await within(watcher.nextMessage())
    assert (channel, nonce[:2], len(nonce)) == (a.channel().encode(), b"p|", 18)
    # Heard back: the next check publishes a new nonce.
    await within(a.publish("A", b"after"))
    await within(waitUntil(lambda: notices[-1:] == [b"after"], WAIT))
    assert await within(watcher.nextMessage()) == (a.channel().encode(), b"after")
    subscription.check()
    assert (await within(watcher.nextMessage()))[1] != nonce
    assert subscription.healthy
    assert notices == [b"\xff|bin", b"0042", "\u00e9|".encode(), b"after"]
    assert len(subscribed) == 1


@pytest_twisted.ensureDeferred
async def test_subscriptionWedged(redis_server, make_nodes, subscriptions):
    """
    A check that finds its previous nonce unheard for the map's timeout
    marks the subscription wedged (not healthy) and drops its connection;
    it reconnects and subscribes again by itself (C{onSubscribed} again),
    and is healthy again.
    """
    (a,) = make_nodes(redis_server.url, "A", timeout=0.5)
    subscribed: list[None] = []
    subscription = Subscription(a, lambda data: None, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))

    # A nonce that was never published, sent a timeout ago.
    subscription._nonce = b"unheard"
    subscription._nonceSent = reactor.seconds() - 0.5
    subscription.check()
    assert subscription.wedged and not subscription.healthy
    await within(waitUntil(lambda: len(subscribed) == 2 and subscription.healthy, WAIT))
    assert not subscription.wedged


@pytest_twisted.ensureDeferred
async def test_subscriptionSurvivesRestart(make_redis_server, make_nodes, subscriptions):
    """
    When Redis dies the subscription is no longer healthy; once Redis is
    back on its port it reconnects and subscribes again by itself
    (C{onSubscribed} called again), and notifications reach the listener
    again.
    """
    server = make_redis_server()
    (a,) = make_nodes(server.url, "A")
    notices: list[bytes] = []
    subscribed: list[None] = []
    subscription = Subscription(a, notices.append, lambda: subscribed.append(None))
    subscriptions.append(subscription)
    subscription.start()
    await within(waitUntil(lambda: subscription.healthy, WAIT))
    assert len(subscribed) == 1

    server.kill()
    await within(waitUntil(lambda: not subscription.healthy, WAIT))
    server.start()
    await within(waitUntil(lambda: subscription.healthy, 20), 25)
    assert len(subscribed) == 2
    assert await within(a.publish("A", b"again")) == 1
    await within(waitUntil(lambda: notices == [b"again"], WAIT))
