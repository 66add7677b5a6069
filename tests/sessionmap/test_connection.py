"""
Tests for L{gateway.sessionmap._connection}: the connection plumbing the
map and the subscription share sits below both, so the session map's
modules import one another one way only.
"""

from __future__ import annotations

import ast
from pathlib import Path

import gateway.sessionmap

PACKAGE = Path(gateway.sessionmap.__file__).parent


def importedSiblings(name: str) -> set[str]:
    """
    @return: the modules of L{gateway.sessionmap} that module C{name}
        imports, anywhere in it (in functions too).
    """
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module)
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway.sessionmap."):
            found.add(node.module.rpartition(".")[2])
    return found


def test_connectionImportsNoSibling() -> None:
    """
    C{_connection} imports no other module of the session map.
    """
    assert importedSiblings("_connection") == set()


def test_sharedDoesNotImportRedis() -> None:
    """
    C{_shared}, C{_subscription} and C{_shards} do not import C{redis},
    which imports them; the subscription takes the connection plumbing
    from C{_connection}.
    """
    for name in ("_shared", "_subscription", "_shards"):
        assert "redis" not in importedSiblings(name), name
    assert "_connection" in importedSiblings("_subscription")
