"""
The backends: pools and each backend's live state (L{pool}), balancers
(L{balancers}), routes (L{routing}), health checks (L{health}), and the
WebSocket link a session opens to its backend (L{link}).
"""
