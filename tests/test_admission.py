"""
Tests for L{gateway.admission}: the bounds on client connections, in all
and per address, and the slots that carry them.
"""

from __future__ import annotations

import pytest

from gateway.admission import Admission, ConnectionLimit


def test_boundPerAddress():
    """
    An address at its bound is refused (C{max_connections_per_ip}) while
    another is taken; a release makes room, and an address with no
    connection leaves the table.
    """
    admission = Admission(maxConnections=10, maxPerAddress=2)
    slots = [admission.admit("192.0.2.1") for _ in range(2)]
    with pytest.raises(ConnectionLimit) as caught:
        admission.admit("192.0.2.1")
    assert caught.value.reason == "max_connections_per_ip"
    other = admission.admit("192.0.2.2")
    assert (admission.open, dict(admission.byAddress)) == (3, {"192.0.2.1": 2, "192.0.2.2": 1})
    slots[0].release()
    slots[0].release()  # twice does nothing
    admission.admit("192.0.2.1")
    other.release()
    assert dict(admission.byAddress) == {"192.0.2.1": 2} and admission.open == 2


def test_boundInAll():
    """
    At C{max_connections} every address is refused, even one with no
    connection, and that address gets no entry.
    """
    admission = Admission(maxConnections=1, maxPerAddress=0)
    admission.admit(None)
    with pytest.raises(ConnectionLimit) as caught:
        admission.admit("192.0.2.1")
    assert caught.value.reason == "max_connections"
    assert dict(admission.byAddress) == {}


def test_noBoundPerAddress():
    """
    C{maxPerAddress} 0 bounds only the total.
    """
    admission = Admission(maxConnections=100, maxPerAddress=0)
    for _ in range(50):
        admission.admit("192.0.2.1")
    assert admission.byAddress["192.0.2.1"] == 50


def test_claim():
    """
    A slot counted against no address (a trusted proxy's) is counted
    against the address it claims, once; a claim past that address's
    bound raises and leaves the slot as it was.
    """
    admission = Admission(maxConnections=10, maxPerAddress=1)
    first, second = admission.admit(None), admission.admit(None)
    first.claim("198.51.100.1")
    first.claim("198.51.100.2")  # already counted: unchanged
    with pytest.raises(ConnectionLimit):
        second.claim("198.51.100.1")
    assert (first.address, second.address) == ("198.51.100.1", None)
    second.release()
    first.release()
    assert (admission.open, dict(admission.byAddress)) == (0, {})
