"""
Tests for L{gateway.tap} (the C{twistd gateway} options and service maker)
and for the drop-in that makes twistd find them.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from twisted.python import usage

from gateway.tap import Options, makeService

ROOT = Path(__file__).resolve().parent.parent
DROPIN = ROOT / "twisted" / "plugins" / "gateway_plugin.py"
OPTION_NAMES = ("--listen", "--backend", "--balance", "--config", "--demo", "--redis", "--admin",
                "--admin-token-file", "--workers")

# twistd itself, run by this interpreter (python -m twisted runs twist), in
# development mode with warnings as errors: the command line must stay clean.
PYTHON = [sys.executable, "-X", "dev", "-W", "error"]
TWISTD = [
    *PYTHON,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; "
    "from twisted.scripts.twistd import run; run()",
    "-n",
]
TWIST = [*PYTHON, "-m", "twisted"]


def parse(*arguments: str) -> Options:
    """
    @return: L{Options} that parsed C{arguments}.
    """
    options = Options()
    options.parseOptions(list(arguments))
    return options


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """
    Run C{command} from the checkout, so the drop-in is found there with
    nothing installed, with stderr merged into stdout.
    """
    environment = dict(os.environ)
    environment.pop("PYTHONPATH", None)
    return subprocess.run(
        command,
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=60,
        check=False,
    )


def test_optionDefaults() -> None:
    """
    With no arguments: no listeners, backends, balancer or file, and no demo.
    """
    options = parse()
    assert options["listen"] == ()
    assert options["backend"] == ()
    assert options["balance"] is None
    assert options["config"] is None
    assert options["redis"] == ()
    assert options["admin"] is None
    assert options["admin-token-file"] is None
    assert options["workers"] is None
    assert not options["demo"]


def test_repeatableOptions() -> None:
    """
    C{--listen} and C{--backend} may be repeated; their values are kept in
    order, in both C{--name value} and C{--name=value} forms.
    """
    options = parse(
        "--listen",
        "tcp:1",
        "--backend=ws://a:1",
        "--listen=tcp:2",
        "--backend",
        "ws://b:2",
        "--balance",
        "hash",
        "--config",
        "gateway.toml",
        "--demo",
    )
    assert options["listen"] == ("tcp:1", "tcp:2")
    assert options["backend"] == ("ws://a:1", "ws://b:2")
    assert options["balance"] == "hash"
    assert options["config"] == "gateway.toml"
    assert options["demo"]


def test_optionsIndependent() -> None:
    """
    Two L{Options} do not share their repeatable lists.
    """
    parse("--listen", "tcp:1")
    assert parse()["listen"] == ()


@pytest.mark.parametrize(
    "arguments",
    [["--nope"], ["--listen"], ["extra"], ["--demo=yes"]],
    ids=["unknown", "missing-value", "positional", "flag-value"],
)
def test_usageErrors(arguments: list[str]) -> None:
    """
    An unknown option, a missing value, a stray argument or a value given to
    a flag is a L{usage.UsageError}.
    """
    with pytest.raises(usage.UsageError):
        parse(*arguments)


def test_usageText() -> None:
    """
    The usage names every option and ends with examples laid out as written.
    """
    text = str(Options())
    for name in OPTION_NAMES:
        assert name in text
    assert "\n  twistd -n gateway --config /etc/txgateway/gateway.toml\n" in text


def test_makeServiceConfigError(tmp_path: Path) -> None:
    """
    A configuration error found by L{gateway.config.loadConfig} becomes a
    L{SystemExit} whose message is one line, C{"gateway: "} followed by the
    file, the key and the reason.
    """
    path = tmp_path / "gateway.toml"
    path.write_text('[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\nweight = 0\n')
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--config", str(path)))
    assert caught.value.code == (
        f"gateway: {path}: pool.chat.backend[0].weight: must be an integer >= 1, not 0"
    )


def test_makeServiceFlagError() -> None:
    """
    A bad combination of flags becomes a one-line L{SystemExit} too.
    """
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--balance", "hash"))
    assert caught.value.code == (
        "gateway: --balance goes with --backend; "
        "set balance in a [pool.NAME] table instead"
    )


def test_makeServiceBuildsService() -> None:
    """
    L{makeService} builds a L{GatewayService} from the loaded configuration,
    set to stop the process when a listener cannot start.
    """
    from gateway.service import GatewayService

    service = makeService(
        parse("--listen", "tcp:0", "--backend", "ws://a:1", "--balance", "hash")
    )
    assert isinstance(service, GatewayService)
    assert service.config.listen == ("tcp:0",)
    assert service.config.pool("default").balance == "hash"
    assert service.config.demo is False
    assert service.exitOnListenFailure is True
    assert service.tunesCollector is True


def test_tuneCollector(monkeypatch) -> None:
    """
    L{tuneCollector} collects once, freezes what the process holds, and
    sets the collector's thresholds; a service built by hand (a test's, an
    application's) leaves the process's collector alone.
    """
    from types import SimpleNamespace

    from gateway import collector, service
    from gateway.config import GatewayConfig

    calls: list = []
    fake = SimpleNamespace(collect=lambda: calls.append("collect"), freeze=lambda: calls.append("freeze"),
                           set_threshold=lambda *t: calls.append(t))
    monkeypatch.setattr(collector, "gc", fake)
    collector.tuneCollector()
    assert calls == ["collect", "freeze", collector.COLLECTOR_THRESHOLDS]
    assert collector.COLLECTOR_THRESHOLDS[0] > 700
    assert service.GatewayService(GatewayConfig()).tunesCollector is False


def test_makeServiceRedis(tmp_path: Path) -> None:
    """
    C{--redis URL} makes the session map C{redis} on that URL, connecting
    nothing yet; with a file whose session map is C{redis} too, the file's
    other options are kept.
    """
    from gateway.sessionmap.redis import RedisSessionMap

    service = makeService(
        parse("--listen", "tcp:0", "--backend", "ws://a:1", "--redis", "redis://10.0.0.9:6380/2")
    )
    assert service.config.sessionMap.type == "redis"
    assert service.config.sessionMap.options == (("url", "redis://10.0.0.9:6380/2"),)
    assert isinstance(service.sessionMap, RedisSessionMap)
    assert str(service.sessionMap.address) == "redis://10.0.0.9:6380/2"
    assert not service.sessionMap.connected

    path = tmp_path / "gateway.toml"
    path.write_text(
        '[session_map]\ntype = "redis"\nurl = "redis://old:1/0"\ntimeout = 0.25\n'
        '[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n'
    )
    service = makeService(parse("--config", str(path), "--redis", "unix:///run/redis.sock?db=1"))
    assert service.sessionMap.timeout == 0.25
    assert str(service.sessionMap.address) == "unix:///run/redis.sock?db=1"


def test_makeServiceRedisShards() -> None:
    """
    C{--redis} given twice spreads the sessions over two shards, the first
    the home one; the options given to C{gatewayArguments} (what a worker
    is started with) keep both, in order.
    """
    from gateway.sessionmap._shards import ShardedSessionMap
    from gateway.tap import gatewayArguments

    options = parse("--listen", "tcp:0", "--backend", "ws://a:1", "--redis", "redis://10.0.0.9:6380/2",
                    "--redis", "redis+sentinel://s1,s2/b/0")
    service = makeService(options)
    assert isinstance(service.sessionMap, ShardedSessionMap)
    assert [m.name for m in service.sessionMap.shards] == ["10.0.0.9:6380/2", "sentinel:b/0"]
    assert [m.required for m in service.sessionMap.shards] == [True, False]
    arguments = gatewayArguments(options)
    given = [arguments[i + 1] for i, name in enumerate(arguments) if name == "--redis"]
    assert given == ["redis://10.0.0.9:6380/2", "redis+sentinel://s1,s2/b/0"]


@pytest.mark.parametrize(
    "url, message",
    [
        ("", "gateway: --redis: must be a non-empty string such as 'redis://127.0.0.1:6379/0'"),
        ("http://u:hunter2@h", "gateway: --redis: must start with redis://, rediss:// (TLS), unix://,"
         " redis+sentinel:// or rediss+sentinel:// (as in 'redis://127.0.0.1:6379/0',"
         " 'unix:///run/redis/redis.sock?db=0' or"
         " 'redis+sentinel://10.0.0.1,10.0.0.2,10.0.0.3/mymaster/0'), not 'http://***@h'"),
        ("redis://h/x", "gateway: --redis: the database must be a number >= 0, not 'x'"),
    ],
)
def test_makeServiceRedisError(url: str, message: str) -> None:
    """
    A bad C{--redis} URL is one line naming the option, without the
    password.
    """
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--backend", "ws://a:1", "--redis", url))
    assert caught.value.code == message


def test_makeServiceServiceError() -> None:
    """
    A L{ConfigError} raised by the service (an unknown balancer name) becomes
    a one-line L{SystemExit} as well, listing the known names.
    """
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--backend", "ws://a:1", "--balance", "nope"))
    assert caught.value.code == (
        "gateway: unknown balancer 'nope' (known: hash, least_conn, round_robin)"
    )


def test_dropinIsOneStatement() -> None:
    """
    The drop-in holds a docstring, imports and exactly one statement: the
    C{ServiceMaker} for C{gateway.tap} under the name C{gateway}; and no
    C{__init__.py} under C{twisted/} shadows Twisted's own.
    """
    tree = ast.parse(DROPIN.read_text())
    body = tree.body
    assert ast.get_docstring(tree)
    statements = [
        node
        for node in body[1:]
        if not isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    assert len(statements) == 1
    [statement] = statements
    assert isinstance(statement, ast.Assign)
    assert not (ROOT / "twisted" / "__init__.py").exists()
    assert not (ROOT / "twisted" / "plugins" / "__init__.py").exists()


def test_dropinServiceMaker() -> None:
    """
    The drop-in's C{ServiceMaker} names the C{gateway} command and leads to
    L{gateway.tap}'s L{Options} and L{makeService}.
    """
    spec = importlib.util.spec_from_file_location("_gateway_dropin", DROPIN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    maker = module.gateway
    assert maker.tapname == "gateway"
    assert maker.module == "gateway.tap"
    assert maker.description
    assert maker.options is Options
    assert maker.makeService is makeService


@pytest.mark.parametrize("runner", [TWISTD, TWIST], ids=["twistd", "twist"])
def test_commandLineConfigError(tmp_path: Path, runner: list[str]) -> None:
    """
    C{twistd -n gateway --config BAD} (and C{twist gateway ...}) run as a
    real process exits non-zero after printing exactly one line,
    C{"gateway: <file>: <key>: <reason>"}, and no traceback.
    """
    path = tmp_path / "gateway.toml"
    path.write_text('[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\nweight = 0\n')
    result = run(runner + ["gateway", "--config", str(path)])
    assert result.returncode != 0
    assert "Traceback" not in result.stdout
    assert result.stdout.splitlines() == [
        f"gateway: {path}: pool.chat.backend[0].weight: must be an integer >= 1, not 0"
    ]


def test_commandLineRedisError() -> None:
    """
    A bad C{--redis} given to twistd is one line naming the option.
    """
    result = run(TWISTD + ["gateway", "--backend", "ws://a:1", "--redis", "redis://h:1/db"])
    assert result.returncode != 0
    assert result.stdout.splitlines() == [
        "gateway: --redis: the database must be a number >= 0, not 'db'"
    ]


def test_commandLineFlagError() -> None:
    """
    A bad C{--backend} given to twistd is one line naming the option.
    """
    result = run(TWISTD + ["gateway", "--backend", "http://x"])
    assert result.returncode != 0
    assert result.stdout.splitlines() == [
        "gateway: --backend: backend URL 'http://x' must start with ws:// or wss://"
    ]


@pytest.mark.parametrize("runner", [TWISTD, TWIST], ids=["twistd", "twist"])
def test_commandLineHelp(runner: list[str]) -> None:
    """
    C{gateway --help} exits with status 0 and lists every option.
    """
    result = run(runner + ["gateway", "--help"])
    assert result.returncode == 0, result.stdout
    assert "Traceback" not in result.stdout
    for name in OPTION_NAMES:
        assert name in result.stdout


def test_makeServiceAdmin(tmp_path: Path) -> None:
    """
    C{--admin} and C{--admin-token-file} give the service its admin API.
    """
    token = tmp_path / "token"
    token.write_text("0123456789abcdef\n")
    token.chmod(0o600)
    service = makeService(parse("--backend", "ws://a:1", "--admin", "tcp:0:interface=127.0.0.1",
                                "--admin-token-file", str(token)))
    assert service.config.admin.listen == "tcp:0:interface=127.0.0.1"
    assert service.config.admin.token == "0123456789abcdef"
    assert service.admin is not None and service.admin.parent is service


def test_makeServiceAdminError() -> None:
    """
    C{--admin} without a token is one line.
    """
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--backend", "ws://a:1", "--admin", "tcp:0"))
    assert caught.value.code == (
        "gateway: --admin: needs a token: give --admin-token-file PATH (or token_file in [admin])"
    )


def test_makeServiceSignals(tmp_path: Path) -> None:
    """
    Under twistd the service handles signals; with C{--config} it can
    reload, reading the file with the same flags again.
    """
    path = tmp_path / "gateway.toml"
    path.write_text('[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n')
    service = makeService(parse("--config", str(path), "--listen", "tcp:0"))
    assert service.processSignals is True
    path.write_text('[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n'
                    '[[pool.chat.backend]]\nurl = "ws://b"\nweight = 3\n')
    reloaded = service.configLoader()
    assert reloaded.listen == ("tcp:0",)
    assert [(b.name, b.weight) for b in reloaded.pool("chat").backends] == [("a:80", 1), ("b:80", 3)]
    service = makeService(parse("--backend", "ws://a:1"))
    assert service.processSignals is True and service.configLoader is None


def test_makeServiceMetrics() -> None:
    """
    C{--metrics ENDPOINT} gives the service a metrics listener there; an
    empty one is refused in one line.
    """
    from gateway.config import MetricsConfig

    service = makeService(parse("--backend", "ws://a:1", "--metrics", "tcp:0:interface=127.0.0.1"))
    assert service.config.metrics == MetricsConfig("tcp:0:interface=127.0.0.1")
    assert service.metricsListener is not None
    assert parse()["metrics"] is None
    with pytest.raises(SystemExit) as error:
        makeService(parse("--backend", "ws://a:1", "--metrics", ""))
    assert str(error.value) == "gateway: --metrics: must not be empty"
def test_makeServiceWorkersNeedSharedMap(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{--workers 2} with the in-memory session map stops the gateway with
    one line naming the fix.
    """
    monkeypatch.delenv("TXGATEWAY_WORKER_SETUP", raising=False)
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--listen", "tcp:0", "--backend", "ws://a:1", "--workers", "2"))
    message = str(caught.value)
    assert message == (
        "gateway: workers = 2 needs a session map the workers share, and 'memory' is one"
        " process's own (a session or an affinity record made on one worker would be unknown"
        " to the others): give --redis URL or [session_map] type = \"redis\", set protocol ="
        " \"transparent\" on every route (WebSocket tunnels only), or run one worker"
    )


def test_makeServiceWorkersTransparentOnly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """
    C{--workers 2} with the in-memory session map is taken when every route
    is C{protocol = "transparent"} (tunnels need no shared map): the
    supervisor is made, with a warning for a pool whose affinity records
    are each worker's own.
    """
    from twisted.logger import globalLogPublisher

    monkeypatch.delenv("TXGATEWAY_WORKER_SETUP", raising=False)
    config = tmp_path / "gateway.toml"
    config.write_text('listen = ["tcp:0"]\n[[route]]\nprefix = "/"\npool = "p"\nprotocol = "transparent"\n'
                      '[pool.p]\naffinity = "cookie:sid"\n[[pool.p.backend]]\nurl = "ws://a:1"\n')
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        service = makeService(parse("--config", str(config), "--workers", "2"))
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert service.config.workers == 2
    warned = [e for e in events if "affinity records are each worker's own" in e.get("log_format", "")]
    assert len(warned) == 1 and warned[0]["pool"] == "p"


def test_makeServiceSupervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{--workers 2} with Redis builds a supervisor of two workers, each to be
    started with the same gateway options (without C{--workers}).
    """
    from gateway.workers import Supervisor

    monkeypatch.delenv("TXGATEWAY_WORKER_SETUP", raising=False)
    service = makeService(parse("--listen", "tcp:0", "--backend", "ws://a:1", "--workers", "2",
                                "--redis", "redis://127.0.0.1:1/0", "--balance", "hash"))
    assert isinstance(service, Supervisor)
    assert service.count == 2
    assert service.exitOnListenFailure and service.processSignals
    assert service.configLoader is None
    assert service.arguments == ["--balance", "hash", "--redis", "redis://127.0.0.1:1/0",
                                 "--listen", "tcp:0", "--backend", "ws://a:1"]


def test_makeServiceWorker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """
    A process whose environment makes it a worker builds a gateway service
    that knows its number and listens on the inherited sockets, with its
    admin API on its private socket, even when the options say
    C{--workers 2}.
    """
    from gateway.service import GatewayService
    from gateway.workers import WorkerSetup

    token = tmp_path / "token"
    token.write_text("x" * 20)
    token.chmod(0o600)
    setup = WorkerSetup(1, 0, ((4, "inet", "tcp:0"),), admin=str(tmp_path / "w.sock"))
    monkeypatch.setenv("TXGATEWAY_WORKER_SETUP", setup.encode())
    service = makeService(parse("--backend", "ws://a:1", "--workers", "2", "--redis",
                                "redis://127.0.0.1:1/0", "--admin", "tcp:0",
                                "--admin-token-file", str(token)))
    assert isinstance(service, GatewayService)
    assert service.worker == 1
    assert service.config.workers == 1
    assert service.config.admin.listen == f"unix:{tmp_path / 'w.sock'}:mode=600"
    assert [d for d, _ in service.endpoints] == ["tcp:0"]


def test_commandLineWorkersNeedRedis() -> None:
    """
    C{twistd gateway --workers 2} on the in-memory session map exits with
    one line naming the fix, before anything listens.
    """
    result = run(TWISTD + ["--pidfile=", "gateway", "--listen", "tcp:0", "--backend", "ws://a:1",
                           "--workers", "2"])
    assert result.returncode != 0
    assert "Traceback" not in result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.startswith("gateway:")]
    assert line.startswith("gateway: workers = 2 needs a session map the workers share")
    assert "--redis URL" in line
    assert "listening" not in result.stdout


@pytest.mark.parametrize("text, expected", [
    ('listen = ["tcp:0"]\n[metrics]\nlisten = "tcp:0"\n',
     "the metrics listener (tcp:0) is one process's"),
])
def test_makeServiceWorkersUnsupported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str,
                                       expected: str) -> None:
    """
    What workers do not support yet (the metrics listener) stops a gateway
    with C{--workers 2} with one line.
    """
    monkeypatch.delenv("TXGATEWAY_WORKER_SETUP", raising=False)
    config = tmp_path / "gateway.toml"
    config.write_text(text)
    with pytest.raises(SystemExit) as caught:
        makeService(parse("--config", str(config), "--backend", "ws://a:1", "--workers", "2",
                          "--redis", "redis://127.0.0.1:1/0"))
    assert str(caught.value).startswith(f"gateway: workers = 2: {expected}")
