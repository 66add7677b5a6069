"""
Exactly-once delivery under faults: the Python client, a real gateway and a
real backend, with the client's TCP connection cut from outside (a relay
that aborts both sides) at random moments while messages flow both ways.
"""

from __future__ import annotations

import os
import random

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from gateway.client import ClientState, SessionClient
from gateway.testing import CuttingRelay, waitUntil

MESSAGES = 2000
MIN_CUTS = 30


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest_twisted.ensureDeferred
async def test_exactly_once_under_cuts(transport, echo_backends, make_gateway):
    """
    2,000 messages from the client to the backend and 2,000 back (echoes),
    with the connection cut at least 30 times at random moments: the
    backend receives each client message once, in order, and the client
    receives each echo once, in order; the backend saw one connection.
    Over WebSocket and over long-polling.
    The random seed is printed; TXGATEWAY_SEED=N replays a run.
    """
    seed = int(os.environ.get("TXGATEWAY_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    backends = await echo_backends(1, record=True)
    gateway = await make_gateway(backends)
    relay = CuttingRelay(gateway.port)
    port = await relay.start()
    client = SessionClient(f"ws://127.0.0.1:{port}/app", reactor=reactor, initialDelay=0.005,
                           maxDelay=0.05, maxBufferMessages=MESSAGES, transport=transport)
    received: list[str] = []  # text messages arrive as str
    client.on_message(lambda payload, isBinary: received.append(payload))
    resets, resumes = [], []

    def stateChanged(state, detail):
        if detail.reset:
            resets.append(detail)
        if state is ClientState.open and detail.resumed:
            resumes.append(detail)

    client.on_state(stateChanged)
    await client.connect()

    sent = 0

    def sendSome():
        nonlocal sent
        for _ in range(rng.randint(1, 8)):
            if sent < MESSAGES:
                sent += 1
                client.send(f"c:{sent}")

    def cutNow():
        if len(resumes) < MIN_CUTS or sent < MESSAGES:
            relay.cut()
            reactor.callLater(rng.uniform(0.01, 0.05), cutNow)

    sender = task.LoopingCall(sendSome)
    sender.start(0.002)
    reactor.callLater(rng.uniform(0.01, 0.05), cutNow)
    try:
        await waitUntil(lambda: sent >= MESSAGES and len(resumes) >= MIN_CUTS, timeout=120)
        sender.stop()
        await waitUntil(lambda: len(received) >= MESSAGES, timeout=120)
        await client.whenAcknowledged().addTimeout(60, reactor)
    finally:
        if sender.running:
            sender.stop()
    expected = [f"c:{i}" for i in range(1, MESSAGES + 1)]
    atBackend = [m.decode() for m in backends[0].factory.received]
    print(f"\nexactly-once over {transport} (seed {seed}): {MESSAGES} messages each way, {relay.cuts} cuts, "
          f"{len(resumes)} resumes; "
          f"to the backend: {len(atBackend) - len(set(atBackend))} duplicated, "
          f"{len(set(expected) - set(atBackend))} lost; "
          f"to the client: {len(received) - len(set(received))} duplicated, "
          f"{len(set(expected) - set(received))} lost")
    assert relay.cuts >= MIN_CUTS, seed
    assert len(resumes) >= MIN_CUTS, seed
    assert resets == [], seed
    assert atBackend == expected
    assert received == expected
    assert backends[0].factory.opened == 1
    detail = await client.close().addTimeout(30, reactor)
    assert client.state is ClientState.closed, detail
    await relay.stop()
