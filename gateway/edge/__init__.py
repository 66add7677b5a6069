"""
What stands at the edge of every client connection, below the front door
and the session layer: the PROXY protocol header read on listeners behind an
L4 balancer (L{gateway.edge.proxy}), the access log, one JSON line per
connection or session that ends (L{gateway.edge.accesslog}), and the lean
request the long-polling requests are answered through
(L{gateway.edge.exchange}).
"""
