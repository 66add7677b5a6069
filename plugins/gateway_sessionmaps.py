"""
The built-in session maps, as drop-ins: C{memory}.
"""

from gateway.sessionmap.memory import MemorySessionMapFactory

memory = MemorySessionMapFactory()
