"""
One node's part among several that share sessions through Redis: the node
(L{node}) and sessions served here on another node's behalf (L{relay}).
"""
