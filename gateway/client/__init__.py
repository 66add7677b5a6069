"""
A Python client of txgateway's session protocol, C{txgateway.v1}
(docs/protocol.md), on Twisted and Autobahn.

A L{SessionClient} gives the application one logical session with its
backend that survives dropped connections: every message is delivered
once, in order, in both directions.  It reconnects by itself (exponential
backoff from C{initialDelay} to C{maxDelay}, with full jitter), resumes the
session, and sends again what the gateway did not acknowledge.  Its names
are shared with the JavaScript client::

    from twisted.internet.defer import Deferred
    from twisted.internet.task import react
    from gateway.client import ClientState, SessionClient

    async def main(reactor):
        client = SessionClient("wss://gateway.example/chat", reactor=reactor)
        client.onMessage(lambda payload, isBinary: print("got", payload))

        @client.onState
        def changed(state, detail):
            if state is ClientState.open and detail.reset:
                print(f"new session: {detail.dropped} messages were lost")

        await client.connect()          # the first session is open
        client.send("hello")            # str: a text message
        client.send(b"\\x00\\x01")        # bytes: a binary message
        await client.whenAcknowledged() # the gateway has both
        detail = await client.close()   # the session is over
        print("closed", detail.code, detail.reason)

    react(lambda reactor: Deferred.fromCoroutine(main(reactor)))

Transports (C{transport=} keyword, C{"auto"} by default; the
C{transport} property and C{detail.transport} name the one in use, or the
one the next attempt uses while reconnecting):

  - C{"websocket"}: one WebSocket at a time, offering C{txgateway.v1}.
  - C{"polling"}: HTTP long-polling (docs/protocol.md, "Long-polling"):
    C{POST}s with C{txgw=open|poll|send} through a
    L{twisted.web.client.Agent} with persistent connections; at most one
    poll outstanding (it carries the ack) and one send in flight (packets
    sent meanwhile go together in the next one, up to
    C{maxBatchMessages} and C{maxBodyBytes}); answers read up to
    C{maxAnswerBytes}.  An HTTP error's JSON C{code}, and the gateway's
    C{{"t":"closed","code":C}} packet, count as WebSocket close codes.
  - C{"auto"}: WebSocket first.  A WebSocket that fails, brings no
    C{welcome} within C{connectTimeout}, or breaks later, is followed by
    long-polling.  While on long-polling the client tries to upgrade, with
    a backoff that remembers the failure (the n-th try waits between half
    and all of C{min(upgradeDelay * 2**n, maxUpgradeDelay)}, 5 s and 300 s
    by default, kept across a long-polling reconnect, started again only
    by a WebSocket that works; C{onUpgradeScheduled(callback(delay, why))}
    is told each try's delay and why the WebSocket is unavailable): it
    opens a WebSocket, sends the probing C{hello}, and waits
    up to C{upgradeTimeout} for the gateway's C{{"t":"probe"}}; then it
    stops polling, waits for the outstanding poll (aborting it after
    C{upgradeTimeout}) and any send in flight to end, and resumes on the
    WebSocket.  A probe that does not come back leaves the session on
    long-polling.  The switch is reported as C{onState(open, detail)}
    with the new C{detail.transport}.

The session (what is numbered, buffered and acknowledged) belongs to the
client, not to a transport: every guarantee holds across switches.

States (L{ClientState}, reported by C{onState(callback(state, detail))}
with a L{StateDetail}): C{connecting} until the first session is open,
C{open}, C{reconnecting} between connections (reported again at each
failed attempt, with C{detail.delay}), C{closed} for good.

When a session cannot be resumed (the gateway closes with 4400, 4403, 4404,
4409, 4410 or 4413) the messages it did not acknowledge are lost.  The
client tells the application twice, with C{detail.reset} true and
C{detail.dropped} the number of messages lost: C{onState(reconnecting,
detail)} at once, and C{onState(open, detail)} when the new session is
open; L{Deferred}s from C{whenAcknowledged} for those messages fail with
L{SessionLost}.  Messages sent after the loss go to the new session.

The session ends (state C{closed}) when the application calls C{close()},
when the backend ends it (the gateway's C{close} packet: C{detail.code} and
C{detail.reason} are the backend's), on 4000, or on a failure that retrying
cannot fix (C{detail.error} says which): a 1009 close, the connection
taken over by another client (4001), or, before the first session, an HTTP
4xx answer or a gateway that does not select C{txgateway.v1}.  Anything
else (a dropped connection, 4503, a silent gateway) makes the client
reconnect.

The callbacks are registered with C{onMessage}, C{onState},
C{onFailover} and C{onUpgradeScheduled}; C{on_message}, C{on_state} and C{on_failover}, their old
names, are kept as aliases for compatibility.

Beyond the shared names: C{abort()} closes at once (so does cancelling
the L{Deferred} of C{close()}), C{bufferedAmount} is the unacknowledged
payload in bytes, C{maxMessageBytes} is the bound given, and C{send}
raises L{SendBufferFull} (a L{LimitExceeded <gateway.errors.LimitExceeded>})
or L{MessageTooLarge} rather than buffering past its bounds.

The package is a facade: L{SessionClient} (in C{_session}) puts together
a sans-IO engine (C{_engine}), its Twisted driver (C{_driver}, with
C{_heartbeat} and C{_switch}), the maker of connections (C{_dialer}), the
transport adapters (C{_websocket}, C{_polling}, C{_upgrade}) and the
application's callbacks and waiters (C{_listeners}).

For tests, every timer runs on the C{reactor} given (a
L{twisted.internet.task.Clock}-like L{MemoryReactorClock
<twisted.internet.testing.MemoryReactorClock>} works), C{uniform} replaces
the jitter, and C{nextState(state)} is a L{Deferred} for the next change to
C{state}.

C{python -m gateway.client URL [--transport auto|websocket|polling]} is a
wscat-like tool built on it.
"""

from ._session import (
    ClientState,
    MessageTooLarge,
    SendBufferFull,
    SessionClient,
    SessionClosed,
    SessionLost,
    StateDetail,
)

__all__ = [
    "SessionClient",
    "ClientState",
    "StateDetail",
    "SendBufferFull",
    "MessageTooLarge",
    "SessionClosed",
    "SessionLost",
]
