"""
The C{memory} session map: affinity records in a bounded dictionary of one
gateway process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.plugin import IPlugin
from zope.interface import implementer

from ..errors import ConfigError
from ..interfaces import ISessionMap, ISessionMapFactory

__all__ = ["MemorySessionMap", "MemorySessionMapFactory"]


#: The namespace of session records (pool names cannot start with ":").
_SESSIONS = ":session"


@implementer(ISessionMap)
class MemorySessionMap:
    """
    Affinity and session records kept in memory, for a single gateway node (several
    nodes do not share them; use a networked map for that).

    A record expires C{ttl} seconds after it was last set; expiry is checked
    when the record is read, against C{clock.seconds()}, so no timer runs.

    The map holds at most C{maxEntries} records: setting one more evicts the
    least recently set or read record (expired or not), so memory stays
    bounded whatever the clients send.  An evicted key simply gets a new
    backend from the balancer next time.

    Every method returns an already-fired L{Deferred}.
    """

    def __init__(self, clock: IReactorTime, maxEntries: int = 100_000) -> None:
        """
        @param clock: tells the time.
        @param maxEntries: the most records kept, at least 1.
        """
        if maxEntries < 1:
            raise ValueError("maxEntries must be at least 1")
        self._clock = clock
        self.maxEntries = maxEntries
        self._records: OrderedDict[tuple[str, bytes], tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        """
        @return: how many records are held (some may have expired unread).
        """
        return len(self._records)

    def _read(self, entry: tuple[str, bytes]) -> Any:
        record = self._records.get(entry)
        if record is None:
            return None
        value, expires = record
        if self._clock.seconds() >= expires:
            del self._records[entry]
            return None
        self._records.move_to_end(entry)
        return value

    def _write(self, entry: tuple[str, bytes], value: Any, ttl: float) -> None:
        if ttl <= 0:
            self._records.pop(entry, None)
            return
        self._records[entry] = (value, self._clock.seconds() + ttl)
        self._records.move_to_end(entry)
        while len(self._records) > self.maxEntries:
            self._records.popitem(last=False)

    def getAffinity(self, pool: str, key: bytes) -> Deferred[str | None]:
        """
        @return: L{Deferred} firing with the backend name recorded for
            C{key} in C{pool}, or L{None} when there is none or it expired.
            A read does not extend the record's life, but makes it the most
            recently used.
        """
        return succeed(self._read((pool, key)))

    def setAffinity(
        self, pool: str, key: bytes, backend: str, ttl: float
    ) -> Deferred[None]:
        """
        Record (or refresh) that C{key} in C{pool} is served by C{backend}
        for C{ttl} seconds, evicting the least recently used record when
        the map is full.  A C{ttl} of 0 or less forgets the key.

        @return: L{Deferred} firing with L{None}.
        """
        self._write((pool, key), backend, ttl)
        return succeed(None)

    def forgetAffinity(self, pool: str, key: bytes) -> Deferred[None]:
        """
        Drop the record for C{key} in C{pool}, if any.

        @return: L{Deferred} firing with L{None}.
        """
        self._records.pop((pool, key), None)
        return succeed(None)

    def getSession(self, sid: str) -> Deferred[dict | None]:
        """
        @return: L{Deferred} firing with the session's record, or L{None}.
        """
        return succeed(self._read((_SESSIONS, sid.encode())))

    def putSession(self, sid: str, record: dict, ttl: float) -> Deferred[None]:
        """
        Record (or replace) a session's record for C{ttl} seconds; it shares
        the C{maxEntries} bound with affinity records.
        """
        self._write((_SESSIONS, sid.encode()), dict(record), ttl)
        return succeed(None)

    def forgetSession(self, sid: str) -> Deferred[None]:
        """
        Drop a session's record.
        """
        self._records.pop((_SESSIONS, sid.encode()), None)
        return succeed(None)

    def close(self) -> Deferred[None]:
        """
        Drop every record.

        @return: L{Deferred} firing with L{None}.
        """
        self._records.clear()
        return succeed(None)

    #: The records are this node's alone (L{ISessionMap.shared}).
    shared = False

    def start(self) -> Deferred[None]:
        """
        Nothing to connect: the map is ready at once.

        @return: an already-fired L{Deferred}.
        """
        return succeed(None)


@implementer(IPlugin, ISessionMapFactory)
class MemorySessionMapFactory:
    """
    Makes L{MemorySessionMap}s.  Options: C{max_entries} (an integer, at
    least 1; 100000 by default).
    """

    name = "memory"
    description = "in-process affinity records, bounded, for a single gateway node"
    options = ("max_entries",)

    def __call__(self, options: Mapping[str, object], reactor: IReactorTime) -> ISessionMap:
        """
        @param options: the C{[session_map]} table less its C{type}.
        @param reactor: tells the time.
        @return: a new L{MemorySessionMap}.
        @raise ConfigError: for an unknown option or a bad C{max_entries}.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ConfigError(
                f"unknown option {unknown[0]!r} for session map 'memory'"
                f" (known: {', '.join(self.options)})"
            )
        maxEntries = options.get("max_entries", 100_000)
        if isinstance(maxEntries, bool) or not isinstance(maxEntries, int) or maxEntries < 1:
            raise ConfigError(
                f"session map 'memory': max_entries must be an integer >= 1,"
                f" not {maxEntries!r}"
            )
        return MemorySessionMap(reactor, maxEntries)
