"""
L{gateway.sessions.mover} with fake sessions and a Clock: each pool's drain
and rebalance budgets, what they are spent on, and which sessions are
chosen.
"""

from __future__ import annotations

from twisted.internet.task import Clock

from gateway.backends.balancers import LeastConnections, RendezvousHash
from gateway.backends.pool import Backend, Pool
from gateway.sessions.mover import SessionMover
from gateway.sessions.states import SessionState


class FakeSession:
    """
    What the session mover reads of a session; C{move} records its target
    and starts the move.
    """

    def __init__(self, pool, backend, state=SessionState.ATTACHED, lastReceived=0.0):
        self.pool = pool
        self.backend = backend
        self.slot = backend.reserve()
        self.state = state
        self.lastReceived = lastReceived
        self.switching = None
        self._previous = None
        self.moves = []

    def move(self, target):
        self.moves.append(target)
        self.switching = "move"
        self._previous = self.backend
        return True

    def finishMove(self, to):
        """
        The move is done: the session is on C{to}.
        """
        self.slot.release()
        self.slot = to.reserve()
        self.backend = to
        self.switching = None


class FakeRegistry:
    """
    The sessions of a node, as the mover sees them.
    """

    def __init__(self, sessions):
        self.sessions = {str(i): s for i, s in enumerate(sessions)}
        self.cluster = FakeTurns()


class FakeTurns:
    """
    The registry's cluster strategy as the mover asks it: whether this node
    may rebalance a pool now (C{turn}), and which pools it asked for.
    """

    def __init__(self):
        self.turn = True
        self.asked = []

    def mayRebalance(self, pool):
        self.asked.append(pool)
        return self.turn


def makeMover(n1, n2=0, balancer=None, drainRate=20.0, rebalanceRate=0.0):
    """
    A pool of b1 (with C{n1} sessions) and b2 (with C{n2}), a mover on a
    Clock, and the sessions.
    """
    clock = Clock()
    b1 = Backend("b1", "127.0.0.1", 1)
    b2 = Backend("b2", "127.0.0.1", 2)
    pool = Pool("p", [b1, b2], balancer or LeastConnections())
    pool.drainRate = drainRate
    pool.rebalanceRate = rebalanceRate
    sessions = [FakeSession(pool, b1, lastReceived=float(i)) for i in range(n1)]
    sessions += [FakeSession(pool, b2) for _ in range(n2)]
    mover = SessionMover({"p": pool}, FakeRegistry(sessions), clock)
    return clock, mover, pool, sessions


def tick(clock, mover, times=1):
    """
    Run C{times} ticks of the mover, 0.1 s apart.
    """
    for _ in range(times):
        clock.advance(SessionMover.TICK)
        mover.tick()


def test_drainAtDrainRate():
    """
    Sessions leave a draining backend at no more than drain_rate per
    second: at most 2 per tick of 0.1 s at 20/s, at most 20 in a second,
    each moved once, wherever the balancer says (target None), until none
    is left.
    """
    clock, mover, pool, sessions = makeMover(30, drainRate=20.0)
    b1, b2 = pool.backends
    b1.drain()
    tick(clock, mover)
    assert mover.drained == 2
    perTick = []
    for _ in range(9):
        before = mover.drained
        tick(clock, mover)
        perTick.append(mover.drained - before)
    assert all(1 <= n <= 2 for n in perTick)
    assert mover.drained <= 20
    moved = [s for s in sessions if s.moves]
    assert len(moved) == mover.drained and all(s.moves == [None] for s in moved)
    tick(clock, mover, 20)
    assert mover.drained == 30 and all(s.moves == [None] for s in sessions)
    assert mover.state()["moving"] == 30


def test_drainKeepsUpWithDrainRate():
    """
    With ticks every 0.1 s, drain_rate = 20 moves 20 sessions a second
    (give or take the one a fraction of which is still being saved up):
    credit left over by one tick is not lost on the next.
    """
    clock, mover, pool, sessions = makeMover(100, drainRate=20.0)
    pool.backends[0].drain()
    tick(clock, mover, 20)
    assert 39 <= mover.drained <= 40


def test_drainWaitsForAnotherBackend():
    """
    Nothing leaves a draining backend while no other can take it; once one
    can, the moves go at drain_rate, with a burst of at most one more for
    the time waited.
    """
    clock, mover, pool, sessions = makeMover(10, drainRate=20.0)
    b1, b2 = pool.backends
    b1.drain()
    b2.healthy = False
    tick(clock, mover, 20)
    assert mover.drained == 0 and not any(s.moves for s in sessions)
    b2.healthy = True
    tick(clock, mover)
    assert mover.drained == 3
    tick(clock, mover)
    assert mover.drained == 5


def test_noDrainUnderWaitPolicy():
    """
    Under drain = "wait", sessions stay on a draining backend.
    """
    clock, mover, pool, sessions = makeMover(5)
    b1, b2 = pool.backends
    pool.drain = "wait"
    b1.drain()
    tick(clock, mover, 10)
    assert mover.drained == 0


def test_rebalanceTowardsShares():
    """
    With b1 holding 10 sessions and b2 none, sessions move from b1 to b2 at
    rebalance_rate per second (a detached one first), and stop once both
    are at their shares.
    """
    clock, mover, pool, sessions = makeMover(10, rebalanceRate=2.0)
    b1, b2 = pool.backends
    sessions[7].state = SessionState.DETACHED
    done = []
    for second in range(6):
        for _ in range(10):
            tick(clock, mover)
            for s in sessions:
                if s.switching == "move":
                    s.finishMove(s.moves[-1])
        done.append(mover.rebalanced)
    assert done[0] <= 2 and done[1] <= 4
    assert done[-1] == 5
    assert (b1.connections, b2.connections) == (5, 5)
    assert sessions[7].moves == [b2]
    assert all(s.moves in ([], [b2]) for s in sessions)


def test_rebalanceOnlyWhenBothGetNearer():
    """
    A move that would not bring both backends nearer their weighted shares
    is not made: 6 against 5 stays; with weights 2 and 1, 8 against 4 is
    balanced already.
    """
    clock, mover, pool, sessions = makeMover(6, 5, rebalanceRate=20.0)
    tick(clock, mover, 10)
    assert mover.rebalanced == 0

    clock, mover, pool, sessions = makeMover(8, 4, rebalanceRate=20.0)
    pool.backends[0].weight = 2
    tick(clock, mover, 10)
    assert mover.rebalanced == 0

    clock, mover, pool, sessions = makeMover(8, 4, rebalanceRate=20.0)
    tick(clock, mover)
    assert mover.rebalanced == 2
    assert [s.moves for s in sessions if s.moves] == [[pool.backends[1]]] * 2


def test_rebalanceWaitsForMovesUnderWay():
    """
    While moves are under way, no more are started for the same pool (the
    counts are in flux).
    """
    clock, mover, pool, sessions = makeMover(10, rebalanceRate=20.0)
    tick(clock, mover)
    assert mover.rebalanced == 2
    tick(clock, mover, 5)
    assert mover.rebalanced == 2
    b1, b2 = pool.backends
    for s in sessions:
        if s.switching == "move":
            s.finishMove(b2)
    tick(clock, mover)
    assert mover.rebalanced == 5  # the budget held meanwhile, up to its cap


def test_noRebalanceForBalancerThatOptsOut():
    """
    A pool whose balancer provides L{IFixedPlacement} (rendezvous
    hashing) is not rebalanced, however uneven.
    """
    clock, mover, pool, sessions = makeMover(10, balancer=RendezvousHash(), rebalanceRate=20.0)
    tick(clock, mover, 20)
    assert mover.rebalanced == 0 and not any(s.moves for s in sessions)


def test_noRebalanceWithOneAvailableBackend():
    """
    With only one backend available there is nowhere to rebalance to.
    """
    clock, mover, pool, sessions = makeMover(10, rebalanceRate=20.0)
    pool.backends[1].healthy = False
    tick(clock, mover, 10)
    assert mover.rebalanced == 0


def test_onlyMovableSessionsMove():
    """
    A drain moves only sessions that are on a backend, not already between
    backends and not ending or ended; the others stay where they are and
    cost nothing of the budget.
    """
    clock, mover, pool, sessions = makeMover(5, drainRate=20.0)
    b1, b2 = pool.backends
    sessions[0].switching = "failover"
    sessions[1].state = SessionState.ENDING
    sessions[2].state = SessionState.ENDED
    sessions[3].backend = None
    b1.drain()
    tick(clock, mover, 10)
    assert [bool(s.moves) for s in sessions] == [False, False, False, False, True]
    assert mover.drained == 1


def test_refusedMoveCostsNothing():
    """
    A session that refuses to move (its C{move} returns false) is not
    counted and spends none of the budget: the next one moves in its turn.
    """
    clock, mover, pool, sessions = makeMover(3, drainRate=10.0)
    sessions[0].move = lambda target: False
    pool.backends[0].drain()
    tick(clock, mover)
    assert mover.drained == 1 and sessions[1].moves == [None] and not sessions[2].moves


def test_budgetCappedAfterQuietSpell():
    """
    However long since the last tick, a pool's budget is at most a tick's
    worth (at least one move) and one more: a drain that starts after a
    minute's quiet moves two sessions at 5/s, not three hundred, then goes
    on at the rate (one every other tick).
    """
    clock, mover, pool, sessions = makeMover(50, drainRate=5.0)
    tick(clock, mover)
    clock.advance(60)
    pool.backends[0].drain()
    mover.tick()
    assert mover.drained == 2
    tick(clock, mover)
    assert mover.drained == 2
    tick(clock, mover)
    assert mover.drained == 3


def test_rebalancePicksDetachedThenQuietest():
    """
    A rebalance moves a detached session first (nobody waits on it), and
    otherwise the one that has been quiet the longest.
    """
    clock, mover, pool, sessions = makeMover(4, rebalanceRate=10.0)
    for i, s in enumerate(sessions):
        s.lastReceived = [3.0, 1.0, 2.0, 4.0][i]
    sessions[3].state = SessionState.DETACHED
    tick(clock, mover)
    assert [bool(s.moves) for s in sessions] == [False, False, False, True]
    sessions[3].finishMove(pool.backends[1])
    tick(clock, mover)
    assert [bool(s.moves) for s in sessions] == [False, True, False, True]


class CountingRegistry(FakeRegistry):
    """
    A registry that counts how often the mover looks through its sessions.
    """

    def __init__(self, sessions):
        self.looks = 0
        super().__init__(sessions)
        self.looks = 0

    @property
    def sessions(self):
        self.looks += 1
        return self._sessions

    @sessions.setter
    def sessions(self, value):
        self._sessions = value


def test_sessionsLookedThroughOnlyWhenAMoveMayHappen():
    """
    A tick looks through the node's sessions only when a pool has a
    draining backend or may be rebalanced, and then once for all pools.
    """
    clock, mover, pool, sessions = makeMover(4)
    registry = mover.registry = CountingRegistry(sessions)
    tick(clock, mover, 5)
    assert registry.looks == 0
    pool.backends[0].drain()
    tick(clock, mover)
    assert registry.looks == 1


def test_balancersDeclareWhetherTheyRebalance():
    """
    Each built-in balancer says whether the mover rebalances its pools:
    those that count connections do, rendezvous hashing does not
    (L{IFixedPlacement}); a third-party balancer that says nothing is
    rebalanced.
    """
    from gateway.backends.balancers import RoundRobin
    from gateway.interfaces import IFixedPlacement

    assert not IFixedPlacement.providedBy(LeastConnections())
    assert not IFixedPlacement.providedBy(RoundRobin())
    assert IFixedPlacement.providedBy(RendezvousHash())


def test_rebalanceOnlyOnThisNodesTurn():
    """
    With several nodes, sessions are moved for balance only while this node
    has the pool's turn (one node at a time, so that nodes deciding from
    the same counts do not all move at once and overshoot); without it the
    mover asks for it, moves nothing and keeps its budget; with it, it
    moves.  A balanced pool asks for nothing.
    """
    clock, mover, pool, sessions = makeMover(6, rebalanceRate=10.0)
    turns = mover.registry.cluster
    turns.turn = False
    tick(clock, mover, 10)
    assert not any(s.moves for s in sessions) and "p" in turns.asked
    turns.turn = True
    for _ in range(10):
        tick(clock, mover)
        for session in sessions:
            if session.switching == "move":
                session.finishMove(pool.backends[1])
    assert sum(1 for s in sessions if s.moves) == 3
    del turns.asked[:]
    tick(clock, mover, 10)
    assert turns.asked == []
