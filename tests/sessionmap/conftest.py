"""
Fixtures of the tests of the shared session state
(L{gateway.sessionmap._shared}): nodes sharing one Redis session map, a
plain RESP subscriber, and subscriptions stopped at the end of a test.
"""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory

from gateway.sessionmap._shared import SharedSessions
from gateway.sessionmap._subscription import Subscription
from gateway.sessionmap.redis import RedisSessionMap, parseRedisURL
from tests.helpers import MAP_TIMEOUT, SESSION_TTL, WAIT, RawSubscriber, newPrefix, within


@pytest_twisted.async_yield_fixture
async def subscribe():
    """
    C{await subscribe(port, channel, ...)}: a L{RawSubscriber}, subscribed;
    disconnected at the end of the test.
    """
    made: list[RawSubscriber] = []

    async def make(port: int, *channels: str) -> RawSubscriber:
        subscriber = RawSubscriber(list(channels))
        factory = Factory.forProtocol(lambda: subscriber)
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=WAIT).connect(factory)
        made.append(subscriber)
        await subscriber.ready.addTimeout(WAIT, reactor)
        return subscriber

    yield make
    for subscriber in made:
        if subscriber.transport.connected:
            subscriber.transport.loseConnection()
            await within(subscriber.closed)


@pytest_twisted.async_yield_fixture
async def make_nodes():
    """
    C{make_nodes(url, "A", "B", ...)}: one L{RedisSessionMap} with a key
    prefix of its own, and a L{SharedSessions} on it for each node named;
    the map is closed at the end of the test.
    """
    maps: list[RedisSessionMap] = []

    def make(url: str, *nodes: str, timeout: float = MAP_TIMEOUT, sessionTtl: float = SESSION_TTL,
             nodeTtl: float = 3.0) -> list[SharedSessions]:
        sessionMap = RedisSessionMap(parseRedisURL(url), reactor, keyPrefix=newPrefix(),
                                     timeout=timeout, poolSize=2)
        maps.append(sessionMap)
        return [sessionMap.sharedSessions(node, sessionTtl=sessionTtl, nodeTtl=nodeTtl)
                for node in nodes]

    yield make
    for sessionMap in maps:
        await within(sessionMap.close())


@pytest_twisted.async_yield_fixture
async def subscriptions():
    """
    A list of L{Subscription}s to stop at the end of the test.
    """
    started: list[Subscription] = []
    yield started
    for subscription in started:
        await within(subscription.stop())
