"""
Session maps: where a gateway records which backend serves which affinity
key.

Implementations provide L{gateway.interfaces.ISessionMap} and are made by an
L{gateway.interfaces.ISessionMapFactory} drop-in in C{plugins/}, found by
name through L{gateway.dropins.findSessionMapFactory}.  The C{memory} map
lives in L{gateway.sessionmap.memory}; it is local to one gateway node.
"""

from .memory import MemorySessionMap, MemorySessionMapFactory

__all__ = ["MemorySessionMap", "MemorySessionMapFactory"]
