"""
Session maps: where a gateway records which backend serves which affinity
key.

Implementations provide L{gateway.interfaces.ISessionMap} and are made by an
L{gateway.interfaces.ISessionMapFactory} drop-in in C{plugins/}, found by
name through L{gateway.dropins.findSessionMapFactory}.  The C{memory} map
lives in L{gateway.sessionmap.memory}; it is local to one gateway node.

The C{redis} map (L{gateway.sessionmap.redis}) is shared by several nodes,
which also share their sessions through it: the session records, mailboxes
and node registry in L{gateway.sessionmap._shared}, the Lua scripts that
write them in L{gateway.sessionmap._scripts}, a node's subscription to its
channel in L{gateway.sessionmap._subscription}, and the connection plumbing
they use in L{gateway.sessionmap._connection}.  Its options are checked by
L{gateway.sessionmap._options}; with several servers (C{shards}) it is a
L{gateway.sessionmap._shards.ShardedSessionMap}, which places keys on them
with the hash ring of L{gateway.sessionmap._ring}.  None of them is imported
here, and C{txredisapi} (which installs the reactor) only once a Redis map
connects.
"""

from .memory import MemorySessionMap, MemorySessionMapFactory

__all__ = ["MemorySessionMap", "MemorySessionMapFactory"]
