"""
txgateway: a Twisted gateway in front of WebSocket servers.

The package is organised by the parts of the gateway, lowest first (see
docs/architecture.md, "Parts"): ``wire`` (the sans-IO codecs), ``config``,
``backends`` (pools, balancers, routes, health, the backend link),
``sessionmap`` (where affinity and sessions are recorded), ``sessions`` (the
session layer), ``cluster`` (sharing sessions between nodes), ``transports``
(the client-facing protocols), then ``site`` and ``web`` (the shared port),
``admin``, ``service`` (the twistd service that wires the parts together)
and ``tap`` (the ``twistd gateway`` command line).  ``client`` is the Python
client; ``testing`` is the pytest plugin.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
