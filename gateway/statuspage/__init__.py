"""
The status page of the admin listener: pools and backends, sessions,
message rates and handshake latency, the nodes, and the admin actions, in
one HTML page, its script and its style sheet (C{gateway/static/status.*}),
with no build step and nothing fetched from elsewhere.

This package is the stable name; the resource lives in
L{gateway.statuspage._page}.  docs/operations.md ("Status page") says how
the page authenticates and why it is served without the token.
"""

from ._page import FILES, SECURITY_HEADERS, StatusPage

__all__ = ["StatusPage", "FILES", "SECURITY_HEADERS"]
