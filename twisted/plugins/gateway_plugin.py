"""
The twistd drop-in for C{twistd gateway}.  Only this one statement lives
here: Twisted swallows an import error in a drop-in and reports just
"Unknown command", so everything else is in L{gateway.tap}.
"""

from twisted.application.service import ServiceMaker

gateway = ServiceMaker(
    "txgateway",
    "gateway.tap",
    "WebSocket gateway: routing, load balancing and resumable sessions",
    "gateway",
)
