"""
Which client connections the gateway's port takes: at most
C{limits.max_connections} at once, and at most
C{limits.max_connections_per_ip} from one client address, so that one place
holding sockets open cannot shut every other client out.

L{Admission} counts; each connection it takes is a L{ClientSlot}, which
follows the connection wherever the front door hands it (a tunnel, a
session WebSocket, twisted.web) and is released once when it ends, by
whichever part owns the connection then.

The address counted is the TCP peer's (on a PROXY-protocol listener, the
address its header carries, L{gateway.edge.proxy}).  A connection from a trusted proxy
(C{trusted_proxies}) is counted against no address when it arrives, since
it carries many clients; its first request head names the client
(X-Forwarded-For, resolved as for routing), and that address is counted
from then on (L{ClientSlot.claim}).  Connections over UNIX sockets have no
address and count only against the total.

L{DroppedConnections} logs the connections refused at these bounds, and
those the process cannot accept at all (out of file descriptors), at most
a line per L{DROP_LOG_INTERVAL}.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.logger import Logger, globalLogPublisher

from .errors import LimitExceeded
from .tcp import observePortLog

__all__ = ["Admission", "ClientSlot", "ConnectionLimit", "DroppedConnections", "DROP_LOG_INTERVAL"]

#: Connections dropped at C{limits.max_connections} or at the
#: file-descriptor limit are logged at most once per this many seconds, with
#: the number dropped since the last line.
DROP_LOG_INTERVAL = 10.0

#: What Twisted's TCP port logs on each connection it cannot accept
#: (EMFILE, ENFILE, ...): the formats counted (by the error), and those only
#: swallowed (the steps of its EMFILE recovery).
_ACCEPT_DROPPED = (
    "EMFILE recovery: Closed socket from {address}",
    "Could not accept new connection ({acceptError})",
)
_ACCEPT_STEPS = (
    "EMFILE encountered; releasing reserved file descriptor.",
    "Re-reserving EMFILE recovery file descriptor.",
)


class ConnectionLimit(LimitExceeded):
    """
    A client connection is refused at one of L{Admission}'s bounds.

    @ivar reason: C{"max_connections"} or C{"max_connections_per_ip"}, for
        the dropped-connections log.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ClientSlot:
    """
    One client connection's place in its L{Admission}.

    @ivar address: the client address it is counted against, or L{None}.
    """

    def __init__(self, admission: Admission, address: str | None) -> None:
        self._admission = admission
        self.address = address
        self.released = False

    def claim(self, address: str) -> None:
        """
        Count this connection, which was counted against no address,
        against C{address} from now on (the client a trusted proxy
        forwarded).

        @raise ConnectionLimit: C{address} is at its bound; the slot is
            unchanged (the caller refuses the connection and releases it).
        """
        if self.address is not None or self.released:
            return
        self._admission._addAddress(address)
        self.address = address

    def release(self) -> None:
        """
        The connection has ended.  Releasing twice does nothing.
        """
        if self.released:
            return
        self.released = True
        self._admission._release(self.address)


class Admission:
    """
    Client connections open on one gateway port, in all and per address.

    @ivar open: connections open now.
    @ivar byAddress: connections open now per client address; an address
        with none has no entry, so the table holds at most C{open} entries.
    """

    def __init__(self, maxConnections: int, maxPerAddress: int) -> None:
        """
        @param maxConnections: the bound on all connections (>= 1).
        @param maxPerAddress: the bound per client address; 0 for none.
        """
        self.maxConnections = maxConnections
        self.maxPerAddress = maxPerAddress
        self.open = 0
        self.byAddress: Counter[str] = Counter()

    def admit(self, address: str | None) -> ClientSlot:
        """
        Take a new connection from C{address} (L{None}: counted against no
        address).

        @raise ConnectionLimit: at either bound.
        """
        if self.open >= self.maxConnections:
            raise ConnectionLimit("the gateway is at its connection limit", "max_connections")
        if address is not None:
            self._addAddress(address)
        self.open += 1
        return ClientSlot(self, address)

    def _addAddress(self, address: str) -> None:
        if self.maxPerAddress and self.byAddress[address] >= self.maxPerAddress:
            raise ConnectionLimit(
                f"this address has its maximum of {self.maxPerAddress} connections open",
                "max_connections_per_ip")
        self.byAddress[address] += 1

    def _release(self, address: str | None) -> None:
        self.open -= 1
        if address is not None:
            left = self.byAddress[address] - 1
            if left > 0:
                self.byAddress[address] = left
            else:
                del self.byAddress[address]


class DroppedConnections:
    """
    Counts the client connections dropped before any byte is read, at
    C{limits.max_connections} or because the process is out of file
    descriptors, and logs them at most one line per L{DROP_LOG_INTERVAL}.

    @ivar total: connections dropped since start-up, by reason.
    """

    log = Logger()

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self.total: Counter = Counter()
        self._pending: Counter = Counter()
        self._logged: float | None = None
        self._timer: Any = None

    def dropped(self, reason: str) -> None:
        """
        Count a connection dropped for C{reason}; log now, or when the
        interval since the last line ends.
        """
        self.total[reason] += 1
        self._pending[reason] += 1
        now = self.reactor.seconds()
        if self._logged is None or now - self._logged >= DROP_LOG_INTERVAL:
            self._write()
        elif self._timer is None:
            self._timer = self.reactor.callLater(self._logged + DROP_LOG_INTERVAL - now, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._pending:
            self._write()

    def _write(self) -> None:
        self.stop(flush=False)
        pending, self._pending = self._pending, Counter()
        self.log.warn(
            "gateway: {n} connection(s) dropped ({reasons}); {total} since start-up",
            n=sum(pending.values()), reasons=", ".join(f"{k} {v}" for k, v in sorted(pending.items())),
            total=sum(self.total.values()),
        )
        self._logged = self.reactor.seconds()

    def stop(self, flush: bool = True) -> None:
        """
        Cancel the timer; log what is not logged yet when C{flush}.
        """
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if flush and self._pending:
            self._write()

    def watch(self, port: Any) -> None:
        """
        Count, instead of logging one by one, the connections Twisted's
        listening C{port} cannot accept: it logs them through its private
        C{_logger}, which is given an observer of ours here
        (L{observePortLog}).
        """
        observePortLog(port, self._observe)

    def _observe(self, event: dict) -> None:
        form = event.get("log_format")
        if form in _ACCEPT_DROPPED:
            self.dropped(str(event.get("acceptError", "EMFILE")))
        elif form not in _ACCEPT_STEPS:
            globalLogPublisher(event)
