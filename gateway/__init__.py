"""
txgateway: a Twisted gateway in front of WebSocket servers.

The package is organised by the parts of the gateway (see docs/architecture.md):
``transports`` (client-facing protocols), ``routing`` and ``balancers`` (which
backend serves a request), ``pool`` and ``health`` (backends and their state),
``sessionmap`` (where affinity and sessions are recorded), ``service`` (the
twistd service that ties them together) and ``tap`` (the ``twistd gateway``
command line).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
