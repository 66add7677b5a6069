"""
L{gateway.sessions.flow}: a valve pauses once for several reasons, and its
producers close it while their consumer is full.
"""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from zope.interface.verify import verifyObject

from gateway.sessions.flow import Valve


def makeValve():
    """
    @return: a L{Valve} and the list of "pause" and "resume" calls it made.
    """
    calls = []
    valve = Valve(lambda: calls.append("pause"), lambda: calls.append("resume"))
    return valve, calls


def test_valvePausesOnceForSeveralReasons():
    """
    A valve pauses once when its first reason comes, and resumes only when
    the last one goes; opening for a reason that does not hold is nothing.
    """
    valve, calls = makeValve()
    assert not valve.closed
    valve.close("a")
    valve.close("b")
    valve.close("a")
    assert valve.closed and valve.reasons == {"a", "b"} and calls == ["pause"]
    valve.open("a")
    valve.open("c")
    assert valve.closed and calls == ["pause"]
    valve.open("b")
    assert not valve.closed and calls == ["pause", "resume"]
    valve.open("b")
    assert calls == ["pause", "resume"]
    valve.close("c")
    assert calls == ["pause", "resume", "pause"] and valve.pauses == 2


def test_valveProducer():
    """
    producerFor(reason) is a push producer that closes the valve for that
    reason while its consumer is full, and opens it when resumed or
    stopped.
    """
    valve, calls = makeValve()
    producer = valve.producerFor("buffer")
    verifyObject(IPushProducer, producer)
    producer.pauseProducing()
    assert valve.reasons == {"buffer"} and calls == ["pause"]
    valve.close("other")
    producer.resumeProducing()
    assert valve.reasons == {"other"} and calls == ["pause"]
    producer.pauseProducing()
    producer.stopProducing()
    assert valve.reasons == {"other"}
    valve.open("other")
    assert calls == ["pause", "resume"]
