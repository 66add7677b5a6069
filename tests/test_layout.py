"""
The layout of the gateway package, as docs/architecture.md describes it:
no import cycle (counting every import: at module level, inside functions
and under C{TYPE_CHECKING}), lower places never import upper ones, no module
past 700 lines, and at most twelve modules directly under C{gateway/}.

These are read from the source with L{ast}, so a lazy import placed to dodge
a cycle at run time still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"

#: The places, lowest first.  A module may import from its own place and
#: from places below it, never from one above.  The client is a separate
#: program that shares only the wire formats, the errors and the TCP helper.
#: The metrics' instruments sit below every part that records to them; what
#: they read at scrape time and serve (C{gateway.metrics.scrape}) sits with
#: the admin API, above the parts it reads.
LAYERS: list[tuple[str, ...]] = [
    ("gateway", "gateway.errors", "gateway.interfaces", "gateway.tcp"),
    ("gateway.wire",),
    ("gateway.edge",),
    ("gateway.metrics",),
    ("gateway.config",),
    ("gateway.backends", "gateway.dropins"),
    ("gateway.sessionmap",),
    ("gateway.sessions",),
    ("gateway.cluster",),
    ("gateway.transports", "gateway.engineio"),
    ("gateway.web", "gateway.admission"),
    ("gateway.site", "gateway.admin", "gateway.demo", "gateway.metrics.scrape", "gateway.statuspage"),
    ("gateway.service",),
    ("gateway.workers",),
    ("gateway.tap", "gateway.testing"),
]

#: What the client may import from the rest of the package.
CLIENT_MAY_IMPORT = ("gateway", "gateway.errors", "gateway.interfaces", "gateway.tcp", "gateway.wire")

MAX_LINES = 700
MAX_TOP_LEVEL = 12


def _modules() -> dict[str, Path]:
    """
    @return: every module of the package by dotted name (a package by the
        name of its C{__init__}).
    """
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """
    @return: the package's modules that C{name} imports anywhere in its
        source, with the packages each import runs (a package's
        C{__init__} runs before any of its modules), but not the packages
        that hold C{name} itself.
    """
    isPackage = path.name == "__init__.py"
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if isPackage else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in names:
            if target not in modules:
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                ancestor = ".".join(parts[:i])
                if ancestor in modules and ancestor != name and not name.startswith(ancestor + "."):
                    targets.add(ancestor)
    return targets


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    @return: the strongly connected components of more than one module
        (Tarjan's algorithm, iteratively).
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    onStack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        onStack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    onStack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in onStack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    onStack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _layer(name: str) -> int | None:
    """
    @return: the index in L{LAYERS} of the place that holds C{name} (the
        longest matching prefix), or L{None} for the client.
    """
    best, rank = -1, None
    for i, places in enumerate(LAYERS):
        for place in places:
            if (name == place or name.startswith(place + ".")) and len(place) > best:
                best, rank = len(place), i
    return rank


def test_noImportCycle() -> None:
    """
    No two modules of the package import each other, directly or through
    others, counting every import statement wherever it stands.
    """
    assert _cycles(GRAPH) == []


def test_cycleDetectorFindsCycles() -> None:
    """
    The detector itself finds a cycle through three modules and a pair, and
    nothing in a chain.
    """
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["d", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_lowerPlacesNeverImportUpperOnes() -> None:
    """
    Every import goes to the importer's own place or to a place below it in
    L{LAYERS}; the client imports only what L{CLIENT_MAY_IMPORT} names.
    """
    wrong = []
    for name, targets in sorted(GRAPH.items()):
        if name.startswith("gateway.client"):
            wrong += [
                (name, target) for target in sorted(targets)
                if not target.startswith("gateway.client") and not any(
                    target == allowed or target.startswith(allowed + ".") for allowed in CLIENT_MAY_IMPORT
                )
            ]
            continue
        rank = _layer(name)
        assert rank is not None, f"{name} is in no place of LAYERS"
        for target in sorted(targets):
            if target.startswith("gateway.client"):
                wrong.append((name, target))
                continue
            targetRank = _layer(target)
            if targetRank is None or targetRank > rank:
                wrong.append((name, target))
    assert wrong == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_moduleSize(name: str) -> None:
    """
    No module is past L{MAX_LINES} lines: one that is, is usually two.
    """
    lines = len(MODULES[name].read_text().splitlines())
    assert lines <= MAX_LINES, f"{name}: {lines} lines"


def test_fewModulesAtTheTop() -> None:
    """
    At most L{MAX_TOP_LEVEL} modules (C{__init__} counted) stand directly
    in C{gateway/}: the rest live in packages that name the parts.
    """
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL, top


def test_everyPackageInstalled() -> None:
    """
    Every package under C{gateway/} is listed in setup.cfg's C{packages}: one
    left out is missing from an install, and from an editable install made
    before it existed, while tests run from the checkout still pass.
    """
    import configparser

    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    listed = set(parser["options"]["packages"].split())
    packages = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert packages - listed == set()


def test_testModulesImportNoTestModule():
    """
    No test module imports another: what tests share lives in helpers,
    fakes and conftest modules, so that a test module can be read, run and
    changed alone.
    """
    offenders = []
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names if node.module is None]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n.rsplit(".", 1)[-1].startswith("test_") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
