"""
Engine.IO v4 at the gateway's edge, for Socket.IO clients on a route with
C{protocol = "socket.io"}: the packet codec (C{packets}), the session's
rules (C{engine}, sans-IO), long-polling (C{polling}) and WebSocket
(C{websocket}) adapters, the side facing the Socket.IO server
(C{upstream}), and the node's sessions (C{edge}).
"""

from .edge import PROTOCOL, EngineIOEdge

__all__ = ["EngineIOEdge", "PROTOCOL"]
