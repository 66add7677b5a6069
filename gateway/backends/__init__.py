"""
The backends: pools, each backend's live state and its connection slots
(L{pool}), balancers (L{balancers}), routes (L{routing}), health checks
(L{health}), and the WebSocket link a session opens to its backend and
connecting to a pool (L{link}).
"""
