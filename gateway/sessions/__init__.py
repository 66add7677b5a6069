"""
The session layer: a session (L{session}), its states (L{states}), its
backend side (L{upstream}) with flow control's valves (L{flow}), the node's
registry of sessions (L{registry}), what opens their backend connections
(L{opener}), the single-node strategies (L{local}), and the mover that
shifts sessions between backends (L{mover}).
"""
