"""
The script calls of one reactor turn sent to Redis as one command
(L{ScriptBatches}): the Redis session map's writes of many sessions, in
one round trip.

At a few messages a second per session, a node's writes cannot be
gathered within a session (L{gateway.cluster.mirror} gathers those of
one turn); across sessions they can: a node carrying a few hundred
sessions' messages a second writes several sessions in most turns, and
its heartbeat writes the confirmations of every session that had a
message since the last one.  Each script call costs the node a command
(its Deferreds, its deadline, its reply to parse) and Redis a command to
read, look up and answer; in a batch, those costs are paid once for all
its calls, which Redis runs one after the other inside one script
(L{gateway.sessionmap._scripts.BATCH}), each as it would alone.

Order is kept: the calls of one connection go in the order they were
queued, and a plain command on a connection first sends what is queued
on it (L{ScriptBatches.sendNow}), so that, as before, the commands on one
key apply in the order they were issued.  A call that fails inside the
batch (an error reply of its script) fails alone; a batch that fails
whole (no answer in time, a lost connection) fails each of its calls with
the same error.

Bounds: a batch holds at most L{BATCH_CALLS} calls and L{BATCH_BYTES}
bytes of arguments (one call at least, however large); a call that would
go past either sends the batch at once and starts the next.  A batch of
one call is sent as that script's own C{EVALSHA}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from ._scripts import BATCH, Script

__all__ = ["BATCH_BYTES", "BATCH_CALLS", "ScriptBatches"]

#: The most script calls in one batch.
BATCH_CALLS = 128

#: The most bytes of keys and arguments in one batch (past it, as above).
BATCH_BYTES = 512 * 1024


class _Call:
    __slots__ = ("args", "keys", "script", "waiter")

    def __init__(self, script: Script, keys: tuple, args: tuple, waiter: Deferred) -> None:
        self.script = script
        self.keys = keys
        self.args = args
        self.waiter = waiter


class _Pending:
    """
    The calls queued on one connection, and the bytes of their keys and
    arguments.
    """

    __slots__ = ("calls", "size")

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.size = 0


def _size(values: tuple) -> int:
    return sum(len(v) if isinstance(v, (bytes, str)) else 8 for v in values)


class ScriptBatches:
    """
    The script calls queued in this reactor turn, per connection, sent at
    the turn's end (or when a bound or a plain command asks), each
    connection's as one command.
    """

    def __init__(self, clock: IReactorTime, send: Callable[[Any, str, tuple], Deferred]) -> None:
        """
        @param send: C{send(connection, command, args)} sends one command
            on that connection, bounded in time, and returns a L{Deferred}
            of its reply (the map's, which also retries a script Redis has
            forgotten and drops a connection that stops answering).
        """
        self._clock = clock
        self._send = send
        self._queued: dict[Any, _Pending] = {}
        self._turn: Any = None

    def queue(self, connection: Any, script: Script, keys: tuple, args: tuple) -> Deferred:
        """
        Run C{script} with C{keys} and C{args} on C{connection} with the
        other calls of this turn.

        @return: L{Deferred} firing with the script's answer, or failing
            with its error (or the batch's).
        """
        size = _size(keys) + _size(args)
        pending = self._queued.get(connection)
        if pending is not None and (len(pending.calls) >= BATCH_CALLS or pending.size + size > BATCH_BYTES):
            self.sendNow(connection)
            pending = None
        if pending is None:
            pending = self._queued[connection] = _Pending()
        waiter: Deferred = Deferred()
        pending.calls.append(_Call(script, keys, args, waiter))
        pending.size += size
        if self._turn is None:
            self._turn = self._clock.callLater(0, self._sendAll)
        return waiter

    def sendNow(self, connection: Any) -> None:
        """
        Send what is queued on C{connection} now (before a plain command on
        it, or at a bound).
        """
        pending = self._queued.pop(connection, None)
        if pending is None:
            return
        calls = pending.calls
        if len(calls) == 1:
            call = calls[0]
            self._send(connection, "EVALSHA", (call.script.sha, str(len(call.keys)), *call.keys, *call.args)
                       ).chainDeferred(call.waiter)
            return
        keys: list = []
        args: list = []
        for call in calls:
            keys.extend(call.keys)
            args += (call.script.name, str(len(call.keys)), str(len(call.args)))
            args.extend(call.args)
        d = self._send(connection, "EVALSHA", (BATCH.sha, str(len(keys)), *keys, *args))
        d.addCallbacks(self._answered, self._failed, callbackArgs=(connection, calls), errbackArgs=(calls,))

    def _sendAll(self) -> None:
        self._turn = None
        for connection in list(self._queued):
            self.sendNow(connection)

    def cancel(self) -> None:
        """
        Stop the turn's timer (the map is closing): what is queued is sent
        now, and fails with the connections.
        """
        turn = self._turn
        if turn is not None and turn.active():
            turn.cancel()
        self._sendAll()

    @staticmethod
    def _answered(reply: Any, connection: Any, calls: list[_Call]) -> None:
        if not isinstance(reply, list) or len(reply) != len(calls):
            error = ValueError(f"a batch of {len(calls)} script calls was answered with {reply!r:.80}")
            for call in calls:
                call.waiter.errback(error)
            return
        for call, answer in zip(calls, reply):
            if isinstance(answer, Exception):
                if "READONLY" in str(answer):
                    # A replica now, as in the map's own commands.
                    connection.drop()
                call.waiter.errback(answer)
            else:
                call.waiter.callback(answer)

    @staticmethod
    def _failed(failure: Any, calls: list[_Call]) -> None:
        for call in calls:
            call.waiter.errback(failure)
