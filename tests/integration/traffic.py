"""
The session traffic of the cluster tests (several nodes, shards, workers):
a session client sending numbered messages to an echo backend while the
test cuts, kills or restarts what lies between, then checking that every
message arrived once, in order, each way.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import reactor, task

from gateway.client import ClientState, SessionClient
from gateway.testing import waitUntil

__all__ = ["NumberedTraffic"]


class NumberedTraffic:
    """
    A session client sending C{tag:1}, C{tag:2}, ... to an echo backend,
    C{burst()} messages every C{interval} seconds, up to C{total} (or
    without end), recording what comes back (and when), its resets and its
    resumes.

    @ivar received: the echoes, in the order they came.
    @ivar arrivals: when each echo came (the reactor's time).
    @ivar resets: the details of every reset (a session lost).
    @ivar resumes: the details of every resume.
    """

    def __init__(self, url: str, transport: str = "websocket", *, tag: str = "c", total: int | None = None,
                 interval: float = 0.01, burst: Callable[[], int] = lambda: 1,
                 initialDelay: float = 0.01, maxDelay: float = 0.1) -> None:
        """
        @param total: the messages to send (and the client's replay buffer,
            so that none is refused); L{None}: until L{stop}.
        """
        options = {} if total is None else {"maxBufferMessages": total}
        self.client = SessionClient(url, reactor=reactor, initialDelay=initialDelay, maxDelay=maxDelay,
                                    transport=transport, **options)
        self.tag = tag
        self.total = total
        self.interval = interval
        self.burst = burst
        self.received: list[str] = []
        self.arrivals: dict[str, float] = {}
        self.resets: list = []
        self.resumes: list = []
        self.sent = 0
        self.client.on_message(self._message)
        self.client.on_state(self._state)
        self.sender = task.LoopingCall(self._send)

    def _message(self, payload, isBinary) -> None:
        self.received.append(payload)
        self.arrivals[payload] = reactor.seconds()

    def _state(self, state, detail) -> None:
        if detail.reset:
            self.resets.append(detail)
        if state is ClientState.open and detail.resumed:
            self.resumes.append(detail)

    def _send(self) -> None:
        for _ in range(self.burst()):
            if self.total is not None and self.sent >= self.total:
                return
            self.sent += 1
            self.client.send(f"{self.tag}:{self.sent}")

    async def start(self) -> str:
        """
        Open the session and start sending.

        @return: its id.
        """
        await self.client.connect()
        self.sender.start(self.interval)
        return self.client.sessionId

    def stop(self) -> None:
        """
        Send no more.
        """
        if self.sender.running:
            self.sender.stop()

    async def finish(self, timeout: float = 60.0) -> None:
        """
        Wait until every message is sent and echoed, and the client's
        messages are acknowledged (a traffic with a C{total}).
        """
        assert self.total is not None, "a traffic without end has no finish: stop() it"
        await waitUntil(lambda: self.sent >= self.total, timeout=timeout)
        self.stop()
        await waitUntil(lambda: len(self.received) >= self.total, timeout=timeout)
        await self.client.whenAcknowledged().addTimeout(timeout / 2, reactor)

    async def close(self) -> None:
        """
        Close the session, through whichever node the client is on: the
        gateway ends it with 4000.
        """
        self.stop()
        detail = await self.client.close().addTimeout(30, reactor)
        assert (detail.code, detail.error) == (4000, None), detail

    def expected(self) -> list[str]:
        """
        @return: every message sent (all C{total}, once it has finished).
        """
        return [f"{self.tag}:{i}" for i in range(1, (self.total or self.sent) + 1)]

    def atBackends(self, backends) -> list[str]:
        """
        @return: the messages of this traffic the recording echo
            C{backends} received, in their order, backend by backend.
        """
        mine = f"{self.tag}:".encode()
        return [m.decode() for b in backends for m in b.factory.received if m.startswith(mine)]

    def report(self, backends) -> tuple[int, int, int, int]:
        """
        @return: messages duplicated and lost on the way to the backends,
            and on the way back to the client.
        """
        expected = set(self.expected())
        atBackend = self.atBackends(backends)
        return (len(atBackend) - len(set(atBackend)), len(expected - set(atBackend)),
                len(self.received) - len(set(self.received)), len(expected - set(self.received)))

    def check(self, backends) -> None:
        """
        Every message arrived once, in order, each way, and no reset.
        """
        expected = self.expected()
        assert self.resets == []
        assert self.atBackends(backends) == expected
        assert self.received == expected
