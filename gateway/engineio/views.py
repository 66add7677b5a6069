"""
The node's Socket.IO sessions as the admin API shows them (C{GET
/sessions}, C{GET /sessions/socketio}, the backends of C{GET /pools}):
counted by pool, backend and transport (L{countEngines}, L{byBackend}),
and listed with what an operator needs to find one (L{listEngines}).  Pure: they read sessions through
L{IEngineView} and are told the time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..interfaces import IEngineView
from ..wire.protocol import shortId
from .engine import EngineState

__all__ = ["LIST_LIMIT", "byBackend", "countEngines", "listEngines"]

#: The most sessions L{listEngines} lists (the oldest first); its C{count}
#: says how many there are.
LIST_LIMIT = 1000

#: An Engine.IO transport's C{kind}, and the counts' key for it.
_ENGINE_KINDS = ("polling", "websocket")


def _engineCounts(counter: Counter) -> dict[str, int]:
    return {"sessions": sum(counter[k] for k in _ENGINE_KINDS), "polling": counter["polling"],
            "websocket": counter["websocket"]}


def countEngines(engines: Iterable[IEngineView]) -> dict[str, Any]:
    """
    @param engines: the node's Socket.IO sessions
        (L{gateway.engineio.engine.EngineSession}s).
    @return: C{sessions}, and those carried by long-polling (C{polling})
        and by WebSocket (C{websocket}), for the node and by pool and
        backend; for the node also those polling while a WebSocket upgrades
        them (C{upgrading}).
    """
    total: Counter = Counter()
    byPool: dict[str, Counter] = {}
    byBackend: dict[str, dict[str, Counter]] = {}
    for engine in engines:
        if engine.state is EngineState.CLOSED:
            continue
        kind = engine.kind
        total[kind] += 1
        total["upgrading"] += engine.upgrading
        if engine.pool is None:
            continue
        byPool.setdefault(engine.pool, Counter())[kind] += 1
        if engine.backend is not None:
            byBackend.setdefault(engine.pool, {}).setdefault(engine.backend.name, Counter())[kind] += 1
    return {
        **_engineCounts(total),
        "upgrading": total["upgrading"],
        "pools": {
            pool: {
                **_engineCounts(counter),
                "backends": {
                    name: _engineCounts(c) for name, c in sorted(byBackend.get(pool, {}).items())
                },
            }
            for pool, counter in sorted(byPool.items())
        },
    }


def byBackend(engines: Iterable[IEngineView]) -> Counter:
    """
    @return: the live sessions by C{(pool, backend)} names, for the
        admin API's pools and backends.
    """
    return Counter((e.pool, e.backend.name) for e in engines
                   if e.state is not EngineState.CLOSED and e.backend is not None)


def listEngines(engines: Iterable[IEngineView], now: float, node: str, *, pool: str | None = None,
                backend: str | None = None, limit: int = LIST_LIMIT) -> dict[str, Any]:
    """
    @param engines: the node's Socket.IO sessions.
    @param now: the time (the sessions' clock), for their C{age}.
    @param node: this node's id.
    @param pool: only those of this pool; C{backend}: only those of this
        backend.
    @return: C{count} (the sessions that match), C{listed} and
        C{sessions}: at most C{limit} of them, the oldest first, each with
        its C{sid} (its first 8 characters: the whole id would let whoever
        reads it poll the session), C{transport}, C{upgrading}, the client's
        C{address}, C{pool}, C{backend}, C{age} (seconds), C{waiting} (what
        waits for the client) and C{node}.
    """
    matching = [
        e for e in engines
        if e.state is not EngineState.CLOSED
        and (pool is None or e.pool == pool)
        and (backend is None or (e.backend is not None and e.backend.name == backend))
    ]
    matching.sort(key=lambda e: e.opened)
    listed = [
        {
            "sid": shortId(e.sid),
            "transport": e.kind,
            "upgrading": e.upgrading,
            "address": e.address,
            "pool": e.pool,
            "backend": e.backend.name if e.backend is not None else None,
            "age": round(max(0.0, now - e.opened), 3),
            "waiting": e.waiting,
            "node": node,
        }
        for e in matching[:limit]
    ]
    return {"count": len(matching), "listed": len(listed), "sessions": listed}
