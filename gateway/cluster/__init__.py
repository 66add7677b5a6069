"""
One node's part among several that share sessions through Redis: the node
(L{node}, the registry's cluster strategy), the owner's writes of each
session (L{mirror}), resumes and takeovers of sessions held elsewhere
(L{takeover}) and sessions served here on another node's behalf
(L{relay}).
"""
