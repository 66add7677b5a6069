"""
The packaging as a user gets it: the project installed into a fresh virtual
environment (no system site packages), offline from the wheelhouse that
C{make test} prepares, and C{twistd} run from a directory outside the
checkout (from the checkout twistd finds the drop-in with nothing installed).
See PITFALLS.md, "Packaging and twistd".

The project is installed from a copy of the working tree (the files git
tracks or would track), so that the checkout is left untouched and a file
that is needed but ignored shows up here.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = ROOT / ".venv" / "wheelhouse"

PIP_TIMEOUT = 600
TWISTD_TIMEOUT = 120

GATEWAY_OPTIONS = ("--listen", "--backend", "--balance", "--config", "--demo")

# Which files of the environment belong to which distribution.
OWNERSHIP = """\
import importlib.metadata, json
def files(name):
    try:
        return [str(f) for f in importlib.metadata.distribution(name).files or ()]
    except importlib.metadata.PackageNotFoundError:
        return None
print(json.dumps({"txgateway": files("txgateway"), "twisted": files("twisted")}))
"""


def cleanEnvironment() -> dict[str, str]:
    """
    The environment of a plain shell: none of this interpreter's settings
    (C{PYTHONPATH} above all) and no active virtual environment; pip reads
    no configuration file (one may add C{find-links} or indexes, which would
    hide a wheel missing from the wheelhouse).
    """
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "PIP_")) and key != "VIRTUAL_ENV"
    }
    environment["PIP_CONFIG_FILE"] = os.devnull
    return environment


def run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        env=cleanEnvironment(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


def checked(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args} exited {result.returncode}:\n{result.stdout}"
    return result.stdout


def gitFiles(*arguments: str) -> list[str]:
    result = subprocess.run(
        ["git", "ls-files", "-z", *arguments],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=True,
        timeout=60,
    )
    return [os.fsdecode(name) for name in result.stdout.split(b"\0") if name]


def copyWorkingTree(destination: Path) -> Path:
    """
    Copy the checkout's files that are tracked or not ignored (as they are
    in the working tree) to C{destination}.
    """
    for name in gitFiles("--cached", "--others", "--exclude-standard"):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    return destination


@pytest.fixture
def wheelhouse() -> Path:
    """
    The wheels of every runtime and build requirement, made by C{make test}:
    these tests must not reach the network.
    """
    if not WHEELHOUSE.is_dir() or not any(WHEELHOUSE.glob(".complete-*")):
        pytest.fail(
            f"no complete wheelhouse at {WHEELHOUSE}: run `make test`, which builds it "
            "(the install tests install offline from it)"
        )
    return WHEELHOUSE


@pytest.mark.slow
@pytest.mark.parametrize(
    "editable",
    [False, True],
    ids=["regular", "editable-strict"],
)
def test_installedTwistdFindsGateway(tmp_path: Path, wheelhouse: Path, editable: bool) -> None:
    """
    C{pip install <checkout>} and C{pip install --config-settings
    editable_mode=strict -e <checkout>}, each into a fresh virtual
    environment, offline: afterwards, from a directory outside the checkout
    and without C{PYTHONPATH}, C{twistd --help} lists the C{gateway}
    subcommand and C{twistd -n gateway --help} exits 0 listing the gateway's
    options.  The install owns neither C{twisted/__init__.py} nor
    C{twisted/plugins/__init__.py} (Twisted's own, with
    C{pluginPackagePaths}, stays in place), so uninstalling the project
    leaves twistd working.
    """
    checkout = copyWorkingTree(tmp_path / "checkout")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    venv = tmp_path / "venv"
    checked(run([sys.executable, "-m", "venv", str(venv)], elsewhere, PIP_TIMEOUT))
    python = str(venv / "bin" / "python")
    twistd = str(venv / "bin" / "twistd")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]

    target = (
        ["--config-settings", "editable_mode=strict", "-e", str(checkout)]
        if editable
        else [str(checkout)]
    )
    checked(
        run(
            [*pip, "install", "--no-index", "--find-links", str(wheelhouse), *target],
            elsewhere,
            PIP_TIMEOUT,
        )
    )

    commands = checked(run([twistd, "--help"], elsewhere, TWISTD_TIMEOUT))
    assert re.search(r"^\s+gateway\s", commands, re.MULTILINE), commands

    gatewayHelp = checked(run([twistd, "-n", "gateway", "--help"], elsewhere, TWISTD_TIMEOUT))
    for option in GATEWAY_OPTIONS:
        assert option in gatewayHelp, f"{option} missing from:\n{gatewayHelp}"

    owners = json.loads(checked(run([python, "-I", "-c", OWNERSHIP], elsewhere, TWISTD_TIMEOUT)))
    assert owners["txgateway"] is not None, "txgateway is not installed"
    for name in ("twisted/__init__.py", "twisted/plugins/__init__.py"):
        assert name not in owners["txgateway"], f"the install owns {name}"
        assert name in owners["twisted"], f"Twisted does not own {name}"
    if not editable:
        assert "twisted/plugins/gateway_plugin.py" in owners["txgateway"]
    purelib = checked(
        run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            elsewhere,
            TWISTD_TIMEOUT,
        )
    ).strip()
    twistedPlugins = Path(purelib) / "twisted" / "plugins" / "__init__.py"
    assert "pluginPackagePaths" in twistedPlugins.read_text()

    checked(run([*pip, "uninstall", "--yes", "txgateway"], elsewhere, PIP_TIMEOUT))
    assert "pluginPackagePaths" in twistedPlugins.read_text()
    commands = checked(run([twistd, "--help"], elsewhere, TWISTD_TIMEOUT))
    assert not re.search(r"^\s+gateway\s", commands, re.MULTILINE), commands


def test_dropinCachesAreNotTracked() -> None:
    """
    C{dropin.cache} files, which Twisted writes next to the drop-ins
    (C{twisted/plugins/} and C{plugins/}), are neither tracked by git nor
    left untracked-but-unignored.
    """
    caches = ["plugins/dropin.cache", "twisted/plugins/dropin.cache"]
    assert gitFiles("--", *caches) == []
    assert gitFiles("--", ":(glob)**/dropin.cache") == []
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "--", *caches],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ignored.stdout.split() == caches, ignored
