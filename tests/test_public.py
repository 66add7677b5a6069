"""
The public surface: every public module declares C{__all__}, and every
name it lists exists.
"""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "gateway",
    "gateway.backends.link",
    "gateway.backends.balancers",
    "gateway.client",
    "gateway.config",
    "gateway.demo",
    "gateway.errors",
    "gateway.wire.forwarded",
    "gateway.wire.frames",
    "gateway.backends.health",
    "gateway.wire.http1",
    "gateway.interfaces",
    "gateway.backends.pool",
    "gateway.wire.protocol",
    "gateway.dropins",
    "gateway.backends.routing",
    "gateway.service",
    "gateway.sessions.flow",
    "gateway.sessions.local",
    "gateway.sessions.mover",
    "gateway.sessions.opener",
    "gateway.sessions.registry",
    "gateway.sessions.session",
    "gateway.sessions.upstream",
    "gateway.cluster.mirror",
    "gateway.cluster.node",
    "gateway.cluster.relay",
    "gateway.cluster.takeover",
    "gateway.sessions.states",
    "gateway.tcp",
    "gateway.sessionmap",
    "gateway.sessionmap.memory",
    "gateway.sessionmap.redis",
    "gateway.site",
    "gateway.tap",
    "gateway.testing",
    "gateway.transports.tunnel",
    "gateway.transports.websocket",
]


@pytest.mark.parametrize("name", MODULES)
def test_exports(name: str) -> None:
    """
    C{__all__} exists and names only things the module defines.
    """
    module = importlib.import_module(name)
    assert isinstance(module.__all__, (list, tuple))
    for export in module.__all__:
        assert hasattr(module, export), f"{name}.{export}"


def test_errorsRootedAtGatewayError() -> None:
    """
    Every exception in L{gateway.errors} derives from L{GatewayError}.
    """
    from gateway import errors

    for export in errors.__all__:
        assert issubclass(getattr(errors, export), errors.GatewayError)


def test_noReactorOrRedisImportedByPackage() -> None:
    """
    Importing the package's modules installs no reactor and does not import
    txredisapi (which would install one): twistd must choose the reactor.
    """
    import subprocess
    import sys

    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in MODULES if m != "gateway.testing")
        + "assert 'twisted.internet.reactor' not in sys.modules, 'reactor imported'\n"
        + "assert 'txredisapi' not in sys.modules, 'txredisapi imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
