"""
Where a session client's connections come from: the endpoint and factory of
its WebSockets, the HTTP agent and connection pool of its long-polling
links, and the L{Upgrade}s that probe a WebSocket while it polls.

A L{Dialer} holds everything that only makes connections (the URLs, the
extra headers, the bounds given to each adapter) so that the session driver
(L{gateway.client._driver}) only decides when to use them.  The agent and
its pool are made on first use: a WebSocket-only client never makes them.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from ..interfaces import IPollingOwner, IUpgradeOwner, IWebSocketOwner
from ..tcp import NoDelayEndpoint
from ..wire.protocol import Hello
from ._polling import PollingLink
from ._upgrade import Upgrade
from ._websocket import PACKET_OVERHEAD, ClientFactory, endpointForURL

__all__ = ["Dialer"]


class Dialer:
    """
    See the module docstring.

    @ivar wsURL: the C{ws://} or C{wss://} URL of the route.
    @ivar pollURL: its C{http://} or C{https://} form.
    @ivar agent: the long-polling HTTP client (None until first used; a
        test may put its own in place first).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        wsURL: str,
        pollURL: str,
        *,
        headers: dict[str, str] | None,
        connectTimeout: float,
        upgradeTimeout: float,
        maxMessageBytes: int,
        maxBatchMessages: int,
        maxBodyBytes: int,
        maxAnswerBytes: int,
    ) -> None:
        self._reactor = reactor
        self._clock: IReactorTime = reactor
        self.wsURL = wsURL
        self.pollURL = pollURL
        self._headers = headers
        self._connectTimeout = connectTimeout
        self._upgradeTimeout = upgradeTimeout
        self._maxIncomingBytes = maxMessageBytes + PACKET_OVERHEAD
        self._maxBatchMessages = maxBatchMessages
        self._maxBodyBytes = maxBodyBytes
        self._maxAnswerBytes = maxAnswerBytes
        self._endpoint: IStreamClientEndpoint | None = None
        self.agent: Any = None
        self._pool: Any = None

    def webSocketFactory(self, owner: IWebSocketOwner) -> ClientFactory:
        """
        @return: a factory of WebSockets reporting to C{owner}: offering
            C{txgateway.v1}, with the extra headers, bounded incoming
            messages and no Autobahn timer.
        """
        return ClientFactory(
            owner,
            self.wsURL,
            reactor=self._reactor,
            headers=self._headers,
            maxIncomingBytes=self._maxIncomingBytes,
        )

    def _endpointForURL(self) -> IStreamClientEndpoint:
        if self._endpoint is None:
            self._endpoint = endpointForURL(self._reactor, self.wsURL, self._connectTimeout)
        return self._endpoint

    def connectWebSocket(self, factory: ClientFactory) -> Deferred:
        """
        @return: the L{Deferred} of a new connection to the route's host
            (made through the one endpoint) built by C{factory}.
        """
        return self._endpointForURL().connect(factory)

    def pollingLink(
        self,
        owner: IPollingOwner,
        ackCount: Callable[[], int],
        requestTimeout: Callable[[], float | None],
    ) -> PollingLink:
        """
        @return: a new long-polling link reporting to C{owner}, through the
            shared agent.
        """
        if self.agent is None:
            # One held poll and one send: two persistent connections.
            self._pool = HTTPConnectionPool(self._reactor, persistent=True)
            self._pool.maxPersistentPerHost = 2
            self._pool.retryAutomatically = False
            self.agent = Agent.usingEndpointFactory(
                self._reactor, _NoDelayEndpoints(self._reactor, self._connectTimeout), pool=self._pool
            )
        return PollingLink(
            owner,
            self.agent,
            self.pollURL,
            self._clock,
            headers=self._headers,
            ackCount=ackCount,
            requestTimeout=requestTimeout,
            maxBatchMessages=self._maxBatchMessages,
            maxBodyBytes=self._maxBodyBytes,
            maxAnswerBytes=self._maxAnswerBytes,
        )

    def upgrade(self, owner: IUpgradeOwner, hello: Hello) -> Upgrade:
        """
        @return: a new (not started) upgrade probing a WebSocket with
            C{hello} within C{upgradeTimeout}, reporting to C{owner}.
        """
        return Upgrade(
            owner,
            self._endpointForURL(),
            self.webSocketFactory,
            self._clock,
            self._upgradeTimeout,
            hello,
        )

    def closePool(self) -> None:
        """
        Close the long-polling connections kept for reuse.
        """
        if self._pool is not None:
            self._pool.closeCachedConnections().addErrback(self._logFailure)

    def _logFailure(self, failure: Failure) -> None:
        self.log.failure("unexpected error {what}", failure, what="closing long-polling connections")


@implementer(IAgentEndpointFactory)
class _NoDelayEndpoints:
    """
    Endpoints for long-polling requests, with Nagle's algorithm off (a
    request's head and body are separate small writes).
    """

    def __init__(self, reactor: Any, timeout: float) -> None:
        self._reactor = reactor
        self._timeout = timeout

    def endpointForURI(self, uri: Any) -> NoDelayEndpoint:
        """
        @return: an endpoint for C{uri}'s host (TLS for https).
        """
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS

        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            from twisted.internet.ssl import optionsForClientTLS

            endpoint = wrapClientTLS(optionsForClientTLS(uri.host.decode("idna")), endpoint)
        return NoDelayEndpoint(endpoint)
