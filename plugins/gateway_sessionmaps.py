"""
The built-in session maps, as drop-ins: C{memory} and C{redis}.

Importing this module does not import txredisapi (which would install the
default reactor): the C{redis} map imports it only when it connects.
"""

from gateway.sessionmap.memory import MemorySessionMapFactory
from gateway.sessionmap.redis import RedisSessionMapFactory

memory = MemorySessionMapFactory()
redis = RedisSessionMapFactory()
