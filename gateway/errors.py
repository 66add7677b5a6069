"""
The gateway's exception tree: every error the gateway raises on purpose is a
L{GatewayError}.
"""

__all__ = [
    "GatewayError",
    "ConfigError",
    "NothingToReload",
    "UnknownPlugin",
    "NoBackendAvailable",
    "BackendUnreachable",
    "BackendRefused",
    "PoolError",
    "UnknownPool",
    "UnknownBackend",
    "BackendRetired",
    "InvalidWeight",
    "HealthCheckFailed",
    "ProtocolError",
    "LimitExceeded",
    "SessionLimit",
    "SessionMapUnavailable",
    "ResumeRefused",
    "Elsewhere",
    "InvalidTransition",
]


class GatewayError(Exception):
    """
    Root of every error the gateway raises deliberately.
    """


class ConfigError(GatewayError):
    """
    A configuration file or command-line option is wrong.  C{str(error)} is a
    single line naming the file (or option), the key and the reason.
    """


class NothingToReload(ConfigError):
    """
    A reload was asked of a gateway started without a configuration file.
    """


class UnknownPlugin(ConfigError):
    """
    A plugin (balancer, session map, ...) was asked for by a name nobody
    provides.  The message lists the names that are known.
    """


class NoBackendAvailable(GatewayError):
    """
    No backend of a pool can take a new connection: all are down, draining
    or at their connection limit.  C{str(error)} is safe to show a client.
    """


class BackendUnreachable(GatewayError):
    """
    Connecting to a backend, or completing the handshake with it, failed.
    """


class BackendRefused(GatewayError):
    """
    A backend answered a session's opening handshake with something other
    than 101: its answer to that client (a bad token, an Origin check), not
    a failure of the backend.  C{str(error)} is safe to show the client.

    @ivar status: the backend's HTTP status.
    @ivar phrase: its reason phrase (printable ASCII, at most 60 characters).
    """

    def __init__(self, status: int, phrase: str = "") -> None:
        self.status = status
        self.phrase = phrase
        super().__init__(f"backend refused the session: {status} {phrase}".rstrip())


class PoolError(GatewayError):
    """
    An operator's request about a pool or backend cannot be carried out.
    C{str(error)} is one line saying why, safe to show the operator.
    """


class UnknownPool(PoolError):
    """
    No pool has that name.
    """


class UnknownBackend(PoolError):
    """
    The pool has no backend of that name.
    """


class BackendRetired(PoolError):
    """
    The backend was removed from the configuration and is only waiting for
    its connections to end: it cannot be enabled again (add it back to the
    file and reload).
    """


class InvalidWeight(PoolError):
    """
    A weight that is not an integer from 1 to L{gateway.config.model.MAX_WEIGHT}.
    """


class HealthCheckFailed(GatewayError):
    """
    An active health check found its backend unhealthy; the message says why.
    """


class ProtocolError(GatewayError):
    """
    A peer sent bytes that break HTTP/1.1 or WebSocket framing rules.
    """


class LimitExceeded(ProtocolError):
    """
    A peer sent more than a configured limit allows (header size, body size,
    message size).
    """


class SessionLimit(LimitExceeded):
    """
    A new session is refused at one of the session registry's bounds
    (C{max_sessions}, or one client address's share): the client should
    come back later, and the transports answer 503 / 4503 with
    C{Retry-After}.

    @ivar retryAfter: whole seconds after which a retry may succeed.
    """

    def __init__(self, message: str, retryAfter: int) -> None:
        super().__init__(message)
        self.retryAfter = retryAfter


class SessionMapUnavailable(GatewayError):
    """
    The session map's store cannot be used now: it could not be reached, it
    refused the credentials, it did not answer within the timeout, or the
    connection was lost.  C{str(error)} is one line naming the store (never
    its password) and the reason.  A networked map logs its own outages,
    once each; callers fall back where they can.
    """


class ResumeRefused(GatewayError):
    """
    A resume (or a long-polling request naming a session) cannot be
    honoured: the session is unknown, ended, its secret is wrong, or the
    client's count cannot be served.  C{code} is the session-protocol close
    code to send, C{reason} the text that goes with it.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Elsewhere(GatewayError):
    """
    A poll for a session that a live node of the cluster holds on a
    WebSocket: the poll is answered with "on another connection".
    """


class InvalidTransition(GatewayError):
    """
    Code asked a session to move between two states that the table of
    L{gateway.sessions.states} does not join (a bug, never a client's
    doing).
    """
