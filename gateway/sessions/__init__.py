"""
The session layer: a session and the node's registry of sessions
(L{session}), its backend side (L{upstream}), and the mover that shifts
sessions between backends (L{mover}).
"""
