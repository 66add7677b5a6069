"""
Which Redis shard holds a key: a consistent-hash ring of virtual points
per shard, keyed by the shard's I{name} (not its place in the list), so
that every node given the same names places every key on the same shard,
and adding a shard moves only the keys that the new one takes (about
1/N of them), removing one only the keys it held.

Pure: no Redis, no reactor.  The shards' names and the number of points
are all that decide placement; their order decides only which one is the
I{home} shard (the first), which L{fingerprint} includes.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence

__all__ = ["POINTS", "HashRing", "keyHash"]

#: Virtual points per shard: with 160 the busiest of a few shards holds
#: within about 10% of its fair share of the keys.
POINTS = 160


def keyHash(data: bytes) -> int:
    """
    @return: a stable 64-bit hash of C{data} (the same in every process and
        Python version, unlike L{hash}).
    """
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing:
    """
    A consistent-hash ring over named shards.

    @ivar names: the shards' names, in the configured order (the first is
        the home shard).
    @ivar points: virtual points per shard.
    """

    def __init__(self, names: Sequence[str], points: int = POINTS) -> None:
        """
        @raise ValueError: for no shard, a repeated name, or fewer than one
            point.
        """
        if not names:
            raise ValueError("a ring needs at least one shard")
        if len(set(names)) != len(names):
            raise ValueError("shard names must differ")
        if points < 1:
            raise ValueError("a shard needs at least one point")
        self.names = tuple(names)
        self.points = points
        ring = sorted(
            (keyHash(f"{name}#{i}".encode()), index)
            for index, name in enumerate(self.names)
            for i in range(points)
        )
        self._hashes = [h for h, _ in ring]
        self._owners = [index for _, index in ring]

    def __len__(self) -> int:
        return len(self.names)

    def shardFor(self, key: bytes) -> int:
        """
        @return: the index (in L{names}) of the shard holding C{key}: the
            owner of the first point at or after the key's hash, round the
            ring.
        """
        if len(self.names) == 1:
            return 0
        at = bisect_right(self._hashes, keyHash(key))
        return self._owners[at % len(self._owners)]

    def fingerprint(self) -> str:
        """
        @return: a short digest of what decides placement and the home
            shard (the names, the home one first, and the points): two
            nodes with the same fingerprint agree where every key lives.
        """
        home, others = self.names[0], sorted(self.names[1:])
        text = "\n".join([str(self.points), home, *others])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
