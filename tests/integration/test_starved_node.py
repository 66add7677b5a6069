"""
A real C{twistd gateway} node on a real Redis, its process starved of CPU
while its sessions carry traffic: paused (SIGSTOP) for 1.5 s, several
times, which is how a busy machine starves it, only harder.  Redis answers
all along, so the node keeps its lease: no session is told to resume
elsewhere (4503), and every message arrives once, in order.
"""

from __future__ import annotations

import uuid
from collections import Counter

import pytest_twisted
from twisted.internet import reactor, task
from twisted.internet.defer import gatherResults

from gateway.client import ClientState, SessionClient
from gateway.testing import waitUntil

from .helpers import pause

#: Sessions open on the node.
SESSIONS = 30

#: Seconds between two messages of a session (600 messages a second in all).
INTERVAL = 0.05

#: How often the node is paused, and for how long (seconds): more than the
#: map's C{timeout} (1 s), less than C{node_ttl} (3 s) less the time between
#: two heartbeats (1 s).
PAUSES = 4
PAUSE = 1.5


@pytest_twisted.ensureDeferred
async def test_starvedNodeKeepsItsLease(tmp_path, redis_server, echo_backends, gateway_process):
    """
    With the Redis map's defaults (C{timeout} 1 s, C{node_ttl} 3 s), a node
    paused for 1.5 s four times under traffic keeps its lease: each time it
    wakes, the Redis replies waiting in its sockets are read before any
    command is judged unanswered, and the heartbeat does not wait for the
    rest of the previous beat.  Every session stays open on it (no client
    changes state), the backend sees each session's one connection and
    each message once, and each client gets each echo once, in order.
    """
    backends = await echo_backends(1, record=True)
    backend = backends[0]
    config = tmp_path / "n1.toml"
    config.write_text(
        "[timeouts]\nshutdown = 2\n"
        f'[session_map]\ntype = "redis"\nurl = "{redis_server.url}"\n'
        f'key_prefix = "s{uuid.uuid4().hex[:6]}:"\nnode_id = "n1"\n'
        f'[pool.chat]\n[[pool.chat.backend]]\nurl = "{backend.url}"\nname = "{backend.name}"\n')
    node = await gateway_process("--config", str(config))
    clients = [SessionClient(f"{node.url}/chat", reactor=reactor, transport="websocket")
               for _ in range(SESSIONS)]
    received: list[list[str]] = [[] for _ in clients]
    changes: list[tuple[int, ClientState, object]] = []
    for i, client in enumerate(clients):
        client.onMessage(lambda payload, isBinary, i=i: received[i].append(payload))
        client.onState(lambda state, detail, i=i: changes.append((i, state, detail)))
    await gatherResults([client.connect() for client in clients]).addTimeout(30, reactor)
    changes.clear()
    sent = [0] * SESSIONS

    def send() -> None:
        for i, client in enumerate(clients):
            sent[i] += 1
            client.send(f"{i}:{sent[i]}")

    def flowed(count: int):
        marks = [len(r) for r in received]
        return lambda: all(len(r) >= mark + count for r, mark in zip(received, marks))

    sender = task.LoopingCall(send)
    sender.start(INTERVAL)
    try:
        await waitUntil(flowed(10), timeout=30)
        for _ in range(PAUSES):
            node.signal("STOP")
            try:
                await pause(PAUSE)
            finally:
                node.signal("CONT")
            await waitUntil(flowed(20), timeout=30)  # a second of traffic after it woke
        # node_ttl more of traffic: a lease lost to the last pause has run
        # out by then.
        await waitUntil(flowed(60), timeout=30)
    finally:
        sender.stop()
    await gatherResults([client.whenAcknowledged() for client in clients]).addTimeout(30, reactor)
    await waitUntil(lambda: all(len(r) == n for r, n in zip(received, sent)), timeout=30)
    log = node.output
    print(f"\n{SESSIONS} sessions, {sum(sent)} messages each way, the node paused {PAUSES} times"
          f" for {PAUSE}s: {log.count('lease expired')} lease expiries,"
          f" {log.count('did not answer')} warnings of a Redis command unanswered,"
          f" {len(changes)} client state changes")
    assert [(i, state.name, detail.code) for i, state, detail in changes] == []
    assert "lease expired" not in log
    assert all(r == [f"{i}:{n}" for n in range(1, sent[i] + 1)] for i, r in enumerate(received))
    atBackend = Counter(m.decode() for m in backend.factory.received)
    assert atBackend == Counter(f"{i}:{n}" for i in range(SESSIONS) for n in range(1, sent[i] + 1))
    assert backend.factory.opened == SESSIONS and backend.factory.closes == []
    details = await gatherResults([client.close() for client in clients]).addTimeout(30, reactor)
    assert {(d.code, d.error) for d in details} == {(4000, None)}
