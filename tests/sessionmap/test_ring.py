"""
Tests of L{gateway.sessionmap._ring}: where the consistent-hash ring puts
keys, and how few move when shards come and go.
"""

from __future__ import annotations

import secrets

import pytest

from gateway.sessionmap._ring import HashRing, keyHash

#: Session-id-like keys, the same in every run.
KEYS = [f"{i:08x}{'k' * 12}".encode() for i in range(20000)]


def placement(ring: HashRing) -> list[str]:
    """
    @return: the name of the shard holding each of L{KEYS}.
    """
    return [ring.names[ring.shardFor(key)] for key in KEYS]


def test_keyHashIsStable():
    """
    The hash is the same in every process (not Python's salted L{hash}):
    pinned values.
    """
    assert keyHash(b"") == 0xE4A6A0577479B2B4
    assert keyHash(b"abc") != keyHash(b"abd")


def test_oneShardHoldsEverything():
    """
    A ring of one shard puts every key on it.
    """
    ring = HashRing(["only"])
    assert {ring.shardFor(secrets.token_bytes(8)) for _ in range(100)} == {0}


def test_addingAShardMovesOnlyItsShare():
    """
    Going from three shards to four moves about a quarter of the keys, and
    every key that moves goes to the new shard: the others keep theirs.
    """
    before = placement(HashRing(["a", "b", "c"]))
    after = placement(HashRing(["a", "b", "c", "d"]))
    moved = [(old, new) for old, new in zip(before, after) if old != new]
    share = len(moved) / len(KEYS)
    print(f"\nadding a fourth shard moved {share:.1%} of {len(KEYS)} keys")
    assert {new for _, new in moved} == {"d"}
    assert 0.18 <= share <= 0.32


def test_removingAShardMovesOnlyItsKeys():
    """
    Taking a shard out moves exactly the keys it held.
    """
    before = placement(HashRing(["a", "b", "c", "d"]))
    after = placement(HashRing(["a", "b", "c"]))
    assert [old for old, new in zip(before, after) if old != new] == [
        old for old in before if old == "d"]


def test_placementFollowsNamesNotOrder():
    """
    The shards' order in the list does not change where keys live (only
    which one is home).
    """
    assert placement(HashRing(["a", "b", "c"])) == placement(HashRing(["c", "a", "b"]))


def test_spread():
    """
    Each of four shards holds within a fifth of its fair share.
    """
    names = placement(HashRing(["s1", "s2", "s3", "s4"]))
    for name in ("s1", "s2", "s3", "s4"):
        assert abs(names.count(name) / len(KEYS) - 0.25) < 0.05, name


def test_fingerprint():
    """
    Two rings agree on their fingerprint when they place keys alike and
    have the same home shard: the order of the other shards does not
    matter, the home shard, a name or the number of points does.
    """
    base = HashRing(["a", "b", "c"]).fingerprint()
    assert HashRing(["a", "c", "b"]).fingerprint() == base
    assert HashRing(["b", "a", "c"]).fingerprint() != base
    assert HashRing(["a", "b", "x"]).fingerprint() != base
    assert HashRing(["a", "b", "c"], points=80).fingerprint() != base


@pytest.mark.parametrize("names, points", [([], 160), (["a", "a"], 160), (["a"], 0)])
def test_refused(names, points):
    """
    No shard, a repeated name or no points: L{ValueError}.
    """
    with pytest.raises(ValueError):
        HashRing(names, points)
