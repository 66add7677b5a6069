"""
The session layer's contracts: what a session drives (its client
connection, its backend link), the strategies it and the registry are given
(a mirror, a cluster, an opener), and the read-only view the admin API has.

Part of L{gateway.interfaces}, which re-exports every name.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface

__all__ = [
    "ISessionTransport",
    "IBackendLink",
    "ISessionView",
    "ISessionMirror",
    "ISessionCluster",
    "ISessionOpener",
]


class ISessionTransport(Interface):
    """
    A client connection carrying the session protocol: a WebSocket
    (L{gateway.transports.websocket}) or a client's long polls
    (L{gateway.transports.longpoll}).  A session drives its transport only
    through this, and never imports one.
    """

    kind = Attribute(
        "C{'ws'} for a WebSocket, C{'poll'} for long-polling: what the shared"
        " session record says holds the client (a poll may be taken by"
        " another node, a WebSocket may not).")
    session = Attribute(
        "The session (or relay) it carries now, or L{None}; the cluster puts"
        " the session it took over in place of the relay it replaces.")

    def pushData(message):
        """
        Send a L{gateway.wire.protocol.Data} packet to the client.
        """

    def pushControl(packet):
        """
        Send a control packet (L{gateway.wire.protocol.Welcome}, C{Ack},
        C{Close}, C{Failover}) to the client.
        """

    def closeTransport(code, reason):
        """
        Close the client connection with a session-protocol close code.
        """

    def abortTransport():
        """
        Drop the client connection at once (its peer is dead).
        """

    def letGo():
        """
        The session was attached through another gateway node: stop
        carrying it.  A WebSocket closes (4503: the live client resumes
        again); a poll, which is no connection of its own, answers its held
        request with nothing.
        """

    def release():
        """
        Answer a held poll now (a WebSocket upgrade's probe succeeded);
        nothing for a WebSocket.
        """

    def pauseReading():
        """
        Stop reading the client's messages (flow control: the backend is
        slow).
        """

    def resumeReading():
        """
        Read the client's messages again.
        """

    def registerFlow(producer):
        """
        Have the streaming C{producer} paused while this connection's write
        buffer is full (a poll, which buffers nothing, ignores it).
        """


class IBackendLink(Interface):
    """
    A session's connection to its backend (L{gateway.backends.link}).
    """

    backend = Attribute("The L{gateway.backends.pool.Backend} it is connected to.")
    confirmsReceipts = Attribute(
        "Whether L{requestReceipt} is answered (a WebSocket's pong): when it"
        " is not, a message counts as confirmed once written.")

    def bind(session, backend):
        """
        From now on, hand C{session} what the backend sends; C{backend}
        holds this link's connection slot.
        """

    def sendMessage(payload, isBinary):
        """
        Hand a client message to the backend.
        """

    def requestReceipt(seq):
        """
        Ask the backend to confirm the client messages up to C{seq}; the
        answer comes as the session's C{backendReceipt(link, seq)}.
        """

    def finishLink(code, reason):
        """
        Start the closing handshake with C{code}, still handing the session
        what the backend sends until its close arrives (a move); the
        session's C{backendClosed} follows.
        """

    def closeLink(code, reason):
        """
        Close the backend WebSocket with C{code} and C{reason}.
        """

    def pauseReading():
        """
        Stop reading the backend's messages (flow control: the client is
        slow).
        """

    def resumeReading():
        """
        Read the backend's messages again.
        """

    def registerFlow(producer):
        """
        Have the streaming C{producer} paused while this connection's write
        buffer is full.
        """


class ISessionView(Interface):
    """
    What the admin API and the metrics read of a session to count the
    node's sessions (L{gateway.admin.countSessions},
    L{gateway.metrics.scrape.StateCollector}); read-only.
    """

    state = Attribute("The session's L{gateway.sessions.states.SessionState}.")
    pool = Attribute("Its L{gateway.backends.pool.Pool}, or L{None}.")
    backend = Attribute("The L{gateway.backends.pool.Backend} it is connected to, or L{None}.")
    switching = Attribute("C{'failover'} or C{'move'} while between backends, else L{None}.")
    paused = Attribute("Whether flow control holds either side of it now.")
    failovers = Attribute("How many times its backend connection failed over.")
    moves = Attribute("How many times it was moved to another backend on purpose.")
    transport = Attribute("The L{ISessionTransport} carrying it now (its C{kind}), or L{None}.")
    outbox = Attribute("Its replay buffer (L{gateway.wire.protocol.Outbox}): C{len()} and C{pendingBytes}.")
    inflight = Attribute("C{(messages, bytes)} handed to its backend and not yet confirmed.")


class ISessionMirror(Interface):
    """
    A session's strategy for what other gateway nodes must know of it.

    With several nodes sharing sessions through Redis it is the cluster's
    L{gateway.cluster.mirror.Mirror}, which writes the session's state as
    it changes; on a single node it is
    L{gateway.sessions.local.NoMirror}, which writes nothing and answers as
    a single node would (everything accepted may be acknowledged at once,
    nobody else holds the client).
    """

    remote = Attribute("The node the client is attached to, when not this one (else L{None}).")

    def ackable(accepted):
        """
        @return: how many of the C{accepted} client messages may be
            acknowledged now (with Redis: those it has recorded).
        """

    def whenRecorded():
        """
        @return: L{Deferred} firing once what the session has accepted so
            far is recorded, when an ack for it may be sent (on a single
            node: on the next turn of the reactor).
        """

    def settled():
        """
        @return: L{Deferred} firing once every message accepted so far may
            be acknowledged.
        """

    def holds(message):
        """
        Keep a client message that may not be handed on yet (the ones before
        it came through another node, or this node must first learn it
        still owns the session).

        @return: whether it was kept (the session does nothing more with it).
        @raise gateway.errors.LimitExceeded: past the bound of kept messages.
        """

    def attachedTo(node):
        """
        The client attached to C{node}, another node that relays it; or,
        with L{None}, to this node or to none (it left the other one).
        """

    def detached():
        """
        The client left this node.
        """

    def forwarded():
        """
        Record how many client messages were handed to the backend.

        @return: L{Deferred} firing once written.
        """

    def acked(count):
        """
        The client received C{count} messages.
        """

    def down(message):
        """
        A backend message was numbered.
        """

    def relinked(backend):
        """
        The session went on with the backend called C{backend}.
        """

    def closing(code, reason):
        """
        The backend closed.
        """

    def end(code, reason):
        """
        The session ended; a client on another node is closed with C{code}.
        """

    def stampEpoch(headers):
        """
        Add to a backend connection's C{headers} what it must know of the
        session's ownership (C{X-Session-Epoch} with several nodes).
        """


class ISessionCluster(Interface):
    """
    The registry's strategy for sessions other nodes may serve: the
    cluster's L{gateway.cluster.node.Cluster} when nodes share sessions
    through Redis, L{gateway.sessions.local.SingleNode} otherwise (every
    session is here; its record is the session map's).
    """

    sharesSessions = Attribute(
        "Whether sessions are shared with other nodes (a long-polling send is"
        " then answered only once the store has its messages).")

    healthy = Attribute(
        "Whether this node can serve its part now (with Redis: Redis answers"
        " and the subscription works); the health endpoint says 503 when not.")

    def health():
        """
        @return: this node's view of the cluster, for the health endpoint
            (a JSON-able L{dict}).
        """

    def nodes():
        """
        @return: the nodes serving these sessions, for the admin API's
            C{GET /nodes}: C{shared}, this C{node}'s id, C{nodes} (each
            with C{node}, C{self}, C{sessions} and C{relayed}, this one
            first) and C{age}, the seconds since the other nodes' figures
            were read (L{None} before the first read, or on one node).
        """

    def start():
        """
        @return: L{Deferred} firing once this node takes part.
        """

    def stop():
        """
        @return: L{Deferred} firing once this node has left.
        """

    def newSessionHeaders(sid):
        """
        @return: the first headers of a new session's backend connection
            (C{X-Session-Id}, and C{X-Session-Epoch} with several nodes), in
            order.
        """

    def register(session, target, headers, origin):
        """
        A new session was opened here: make it known to the other nodes.

        @return: L{Deferred} firing when done.
        """

    def attachHere(session, kind):
        """
        The client of a session held here resumes on this node, over
        C{kind} (C{'ws'} or C{'poll'}).

        @return: L{Deferred} firing when the session may be attached.
        @raise gateway.errors.Elsewhere: a poll while a live node holds it
            on a WebSocket.
        """

    def resume(hello, kind):
        """
        Resume a session this node does not hold.

        @return: L{Deferred} firing with the session (or relay) to attach.
        @raise gateway.errors.ResumeRefused: unknown, ended, wrong secret,
            or a count that cannot be honoured.
        @raise gateway.errors.Elsewhere: see L{attachHere}.
        """

    def lookup(sid, secret):
        """
        The session a long-polling C{send} or an upgrade's probe names,
        when this node does not hold it, without taking its client.

        @return: L{Deferred} firing with it.
        @raise gateway.errors.ResumeRefused: unknown, ended, or wrong secret.
        """

    def relayHere(sid):
        """
        @return: the session C{sid} served here for another owner with its
            client attached here, or L{None}.
        """

    def probe(sid):
        """
        Tell whichever node holds the session's poll to answer it.
        """

    def recordState(session):
        """
        The session's state changed (attached, detached): record it where
        this strategy keeps records.
        """

    def forget(session):
        """
        The session ended: drop its record.
        """

    def sweep(now):
        """
        Heartbeats of the sessions served here for other owners.
        """

    def shutDown():
        """
        This node is stopping: end its sessions, or leave them for other
        nodes to take over.
        """


class ISessionOpener(Interface):
    """
    Opens sessions' backend connections (L{gateway.sessions.opener}): a new
    session's first one, a takeover's, and the next one after a failover or
    a move.
    """

    pools = Attribute("The gateway's pools by name (the same mapping the service keeps).")

    def pool(name):
        """
        @return: the pool called C{name}, or L{None}.
        """

    def open(route, headers):
        """
        Connect a new session's backend link for C{route} (a
        L{gateway.site.Route}) with C{headers} first (see
        L{ISessionCluster.newSessionHeaders}), then the forwarded headers.

        @return: L{Deferred} firing with C{(backend, link, origin)}: the
            backend holding the link's slot, the unbound link, and the
            C{(target, headers, origin)} the session's next connections are
            opened with.
        @raise gateway.errors.NoBackendAvailable: when no backend can be had.
        """

    def reopen(pool, name, target, headers, origin):
        """
        Open a backend link for a session taken over from another node: to
        backend C{name} while it is available, else as for a new session.

        @return: L{Deferred} firing with C{(backend, link)}.
        @raise gateway.errors.NoBackendAvailable: when no backend can be had.
        """

    def relink(session, prefer, avoid, window, force=False):
        """
        Open the next backend connection of C{session} (a failover or a
        move), with its resume headers.

        @return: L{Deferred} firing with C{(backend, link)}, not yet bound.
        @raise gateway.errors.NoBackendAvailable: when no backend can be had.
        """
