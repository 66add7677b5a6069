"""
Tests for L{gateway.config.load}: the file read as a whole, the command-line
flags and what they combine with, the admin API's table and flags, and what
a reload cannot apply.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from gateway.config import (
    MAX_ADMIN_TOKEN,
    MIN_ADMIN_TOKEN,
    AdminConfig,
    BackendConfig,
    ConfigError,
    MetricsConfig,
    PoolConfig,
    RouteConfig,
    SessionMapConfig,
    loadConfig,
    restartNeeded,
)

from .helpers import POOL, TOKEN, configError, writeConfig


def test_byteOrderMark(tmp_path: Path) -> None:
    """
    A UTF-8 byte order mark, as some editors write, is ignored.
    """
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"\xef\xbb\xbf" + POOL.encode())
    assert loadConfig(str(path)).pool("chat").name == "chat"


def test_backendFlags() -> None:
    """
    C{--backend} URLs make a pool called C{default}, routed from C{/}, with
    the default balancer; the source is C{<options>}.
    """
    config = loadConfig(None, backends=["ws://a:1", "wss://[::1]"])
    assert config.source == "<options>"
    assert config.listen == ("tcp:8080",)
    assert config.routes == (RouteConfig("/", "default"),)
    assert config.pools == (
        PoolConfig(
            name="default",
            backends=(
                BackendConfig(name="a:1", url="ws://a:1", host="a", port=1, secure=False),
                BackendConfig(
                    name="[::1]:443", url="wss://[::1]", host="::1", port=443, secure=True
                ),
            ),
        ),
    )


def test_balanceFlag() -> None:
    """
    C{--balance} sets the balancer of the C{--backend} pool, unchecked (the
    service checks names against the plugins).
    """
    config = loadConfig(None, backends=["ws://a:1"], balance="whatever")
    assert config.pool("default").balance == "whatever"


def test_redisFlag(tmp_path: Path) -> None:
    """
    C{--redis URL} makes the session map C{redis} on that URL: with no
    file, with a file whose map is another type (its options dropped), and
    with a file whose map is C{redis} too (its other options kept).
    """
    url = "redis://:pw@10.0.0.9:6379/1"
    expected = SessionMapConfig(type="redis", options=(("url", url),))
    assert loadConfig(None, backends=["ws://a:1"], redis=url).sessionMap == expected
    memory = writeConfig(tmp_path, '[session_map]\ntype = "memory"\nmax_entries = 5\n' + POOL)
    assert loadConfig(memory, redis=url).sessionMap == expected
    redis = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nurl = "redis://x"\ntimeout = 2\n' + POOL
    )
    assert loadConfig(redis, redis=url).sessionMap == SessionMapConfig(
        type="redis", options=(("timeout", 2), ("url", url))
    )


def test_redisFlagKeepsTLS(tmp_path: Path) -> None:
    """
    C{--redis rediss://...} keeps the file's C{tls_*} keys, as its other
    C{[session_map]} keys.
    """
    redis = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nurl = "redis://x"\ntls_ca_file = "/ca.pem"\n'
        'tls_verify = true\n' + POOL)
    url = "rediss+sentinel://s1:26380,s2:26380/m/0"
    assert loadConfig(redis, redis=url).sessionMap == SessionMapConfig(
        type="redis", options=(("tls_ca_file", "/ca.pem"), ("tls_verify", True), ("url", url)))


def test_redisFlagRepeated(tmp_path: Path) -> None:
    """
    C{--redis} given several times makes the map's C{shards}, in order (the
    first is home), replacing the file's C{url} or C{shards} and keeping
    its other options; a Sentinel URL's commas stay inside its item.
    """
    urls = ["redis://10.0.0.9:6379/0", "redis+sentinel://s1:26379,s2:26379/b/0"]
    assert loadConfig(None, backends=["ws://a:1"], redis=urls).sessionMap == SessionMapConfig(
        type="redis", options=(("shards", urls),))
    redis = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nurl = "redis://x"\ntimeout = 2\n' + POOL)
    assert loadConfig(redis, redis=urls).sessionMap == SessionMapConfig(
        type="redis", options=(("shards", urls), ("timeout", 2)))
    sharded = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nshards = ["redis://x", "redis://y"]\n' + POOL)
    assert loadConfig(sharded, redis=urls[:1]).sessionMap == SessionMapConfig(
        type="redis", options=(("url", urls[0]),))
    assert configError(None, backends=["ws://a:1"], redis=[urls[0], urls[0]]) == (
        "--redis: shards[1]: the shard name '10.0.0.9:6379/0' is taken by an earlier shard"
        " (give each a name of its own)")
    withPassword = writeConfig(
        tmp_path, '[session_map]\ntype = "redis"\nsentinel_password = "p"\n' + POOL)
    assert "cannot use the file's sentinel_password" in configError(withPassword, redis=urls)


def test_listenFlagReplacesFile(tmp_path: Path) -> None:
    """
    C{--listen} values replace the file's C{listen} list, in order.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1"]\n' + POOL)
    assert loadConfig(path).listen == ("tcp:1",)
    assert loadConfig(path, listen=["tcp:2", "tcp:3"]).listen == ("tcp:2", "tcp:3")


def test_listenFlagWithoutFile() -> None:
    """
    C{--listen} works without a file too.
    """
    config = loadConfig(None, listen=["unix:/tmp/gw.sock"], backends=["ws://a:1"])
    assert config.listen == ("unix:/tmp/gw.sock",)


def test_backendFlagsWithFileWithoutPools(tmp_path: Path) -> None:
    """
    C{--backend} combines with a file that has no pools: the file gives the
    rest of the settings, the flags give the pool.
    """
    path = writeConfig(tmp_path, "[timeouts]\nconnect = 1\n")
    config = loadConfig(path, backends=["ws://a:1"])
    assert config.timeouts.connect == 1.0
    assert config.routes == (RouteConfig("/", "default"),)
    assert config.source == path


def test_fileRoutesToFlagPool(tmp_path: Path) -> None:
    """
    Routes in a file may name the C{default} pool that C{--backend} makes.
    """
    path = writeConfig(tmp_path, '[[route]]\nprefix = "/ws"\npool = "default"\n')
    config = loadConfig(path, backends=["ws://a:1"])
    assert config.routes == (RouteConfig("/ws", "default"),)


def test_demoWithoutBackends(tmp_path: Path) -> None:
    """
    With C{demo}, no pool is needed (the service adds demo backends), with
    or without a file.
    """
    config = loadConfig(None, demo=True)
    assert config.demo is True
    assert config.pools == ()
    assert config.routes == ()
    path = writeConfig(tmp_path, 'listen = ["tcp:0"]\n')
    assert loadConfig(path, demo=True).listen == ("tcp:0",)


def test_demoKeepsBackends() -> None:
    """
    C{demo} with C{--backend} keeps both.
    """
    config = loadConfig(None, backends=["ws://a:1"], demo=True)
    assert config.demo is True
    assert config.pool("default").backends[0].host == "a"


def test_noBackends() -> None:
    """
    Neither pools, nor C{--backend}, nor C{demo} is an error saying what to
    give.
    """
    assert configError(None) == (
        "no backends: give --backend URL, --config FILE or --demo"
    )


def test_noBackendsInFile(tmp_path: Path) -> None:
    """
    A file with no pools, and no C{--backend} or C{demo}, is an error naming
    the file.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1"]\n')
    assert configError(path) == (
        f"{path}: no backends: add a [pool.NAME] table with "
        "[[pool.NAME.backend]] tables, or give --backend URL or --demo"
    )


def test_backendFlagWithFilePools(tmp_path: Path) -> None:
    """
    C{--backend} cannot be mixed with pools from the file.
    """
    path = writeConfig(tmp_path, POOL)
    assert configError(path, backends=["ws://a:1"]) == (
        f"--backend cannot be combined with pools defined in {path}"
    )


def test_balanceWithoutBackend(tmp_path: Path) -> None:
    """
    C{--balance} without C{--backend} is an error pointing at the pool table.
    """
    message = "--balance goes with --backend; set balance in a [pool.NAME] table instead"
    assert configError(None, balance="hash") == message
    assert configError(writeConfig(tmp_path, POOL), balance="hash") == message


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o666])
def test_adminTokenFileOpenToOthers(tmp_path: Path, mode: int) -> None:
    """
    A token file that group or others may read or write is refused with one
    line naming the file, its mode and the fix, as ssh refuses such a key;
    the token is not read, and the same file with mode 0600 is accepted.
    """
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(mode)
    path = writeConfig(tmp_path, '[admin]\nlisten = "tcp:9"\ntoken_file = "token"\n' + POOL)
    reason = f"{token} is open to group or others (mode {mode:04o}); run chmod 600 {token}"
    assert configError(path) == f"{path}: admin.token_file: {reason}"
    assert configError(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)) == (
        f"--admin-token-file: {reason}"
    )
    token.chmod(0o600)
    assert loadConfig(path).admin.token == TOKEN
    token.chmod(0o400)
    assert loadConfig(path).admin.token == TOKEN


def test_adminTokenFileOwner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    A token file that belongs to another user than the gateway's (or root)
    is refused with one line naming the file, both users and the fix.
    """
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(token, 4242, -1)
        owner, user = 4242, 0
    else:
        owner = token.stat().st_uid
        user = owner + 1
        monkeypatch.setattr("os.geteuid", lambda: user)
    reason = (f"{token} belongs to uid {owner}, not to the gateway's user (uid {user}); "
              f"run chown {user} {token}")
    assert configError(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)) == (
        f"--admin-token-file: {reason}"
    )
    monkeypatch.setattr("os.geteuid", lambda: owner)
    assert loadConfig(None, backends=["ws://a:1"], admin="tcp:9",
                      adminTokenFile=str(token)).admin.token == TOKEN


@pytest.mark.parametrize(
    "flags, expected",
    [
        pytest.param(
            {"backends": ["x"]},
            "--backend: backend URL 'x' must start with ws:// or wss://",
            id="scheme",
        ),
        pytest.param(
            {"backends": ["ws://a:1/app"]},
            "--backend: backend URL 'ws://a:1/app' must not have a path: "
            "the client's path is passed on unchanged",
            id="path",
        ),
        pytest.param(
            {"backends": ["ws://a:1", "ws://a:1/"]},
            "--backend: a:1 is given more than once",
            id="twice",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "balance": ""},
            "--balance: must not be empty",
            id="empty-balance",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "listen": ["tcp:1", ""]},
            "--listen: must not be empty",
            id="empty-listen",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "redis": ""},
            "--redis: must be a non-empty string such as 'redis://127.0.0.1:6379/0'",
            id="empty-redis",
        ),
        pytest.param(
            {"backends": ["ws://a:1"], "redis": "redis://:secret@h:1/x"},
            "--redis: the database must be a number >= 0, not 'x'",
            id="redis-db",
        ),
    ],
)
def test_badFlags(flags: dict[str, object], expected: str) -> None:
    """
    A bad flag value is reported as one line starting with the option name.
    """
    assert configError(None, **flags) == expected


def test_missingFile(tmp_path: Path) -> None:
    """
    A file that does not exist is one line naming it and saying why.
    """
    path = str(tmp_path / "nope.toml")
    assert configError(path) == f"{path}: cannot read the file: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    """
    A directory given as the file is one line naming it.
    """
    assert configError(str(tmp_path)) == f"{tmp_path}: cannot read the file: Is a directory"


def test_notUTF8(tmp_path: Path) -> None:
    """
    A file that is not UTF-8 is one line naming it and the offset.
    """
    path = tmp_path / "gateway.toml"
    path.write_bytes(b"listen = ['\xff']\n")
    assert configError(str(path)) == f"{path}: not UTF-8 text: bad byte at offset 11"


def test_tomlSyntax(tmp_path: Path) -> None:
    """
    A TOML syntax error is one line with tomllib's line and column.
    """
    path = writeConfig(tmp_path, POOL + "weight = \n")
    assert configError(path) == (
        f"{path}: not valid TOML: Invalid value (at line 5, column 10)"
    )


def test_tomlDuplicateTable(tmp_path: Path) -> None:
    """
    A table declared twice is a TOML error naming its line.
    """
    path = writeConfig(tmp_path, POOL + "[timeouts]\n[timeouts]\n")
    message = configError(path)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert message.endswith("(at line 6, column 10)")


def test_noAdminByDefault(tmp_path: Path) -> None:
    """
    Without an C{[admin]} table or C{--admin}, there is no admin API.
    """
    assert loadConfig(writeConfig(tmp_path, POOL)).admin is None
    assert loadConfig(None, backends=["ws://a:1"]).admin is None


def test_adminTable(tmp_path: Path) -> None:
    """
    C{[admin]} gives the listener and the token; the token is never shown
    by C{repr}.
    """
    path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9090"\ntoken = "{TOKEN}"\n' + POOL)
    admin = loadConfig(path).admin
    assert admin == AdminConfig(listen="tcp:9090", token=TOKEN, tokenFile=None)
    assert TOKEN not in repr(admin) and TOKEN not in repr(loadConfig(path))


def test_adminTokenFile(tmp_path: Path) -> None:
    """
    C{token_file} is read (without its trailing newline), relative to the
    configuration file's directory.
    """
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "admin").write_text(f"  {TOKEN}\n")
    (tmp_path / "secrets" / "admin").chmod(0o600)
    path = writeConfig(tmp_path, '[admin]\nlisten = "tcp:9090"\ntoken_file = "secrets/admin"\n' + POOL)
    admin = loadConfig(path).admin
    assert admin.token == TOKEN
    assert admin.tokenFile == str(tmp_path / "secrets" / "admin")


def test_adminFlags(tmp_path: Path) -> None:
    """
    C{--admin} and C{--admin-token-file} make the admin API without a
    table, and replace the table's C{listen} and token when there is one.
    """
    token = tmp_path / "token"
    token.write_text("t" * 16 + "\n")
    token.chmod(0o600)
    admin = loadConfig(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)).admin
    assert (admin.listen, admin.token, admin.tokenFile) == ("tcp:9", "t" * 16, str(token))
    path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9090"\ntoken = "{TOKEN}"\n' + POOL)
    admin = loadConfig(path, admin="unix:/run/admin.sock").admin
    assert (admin.listen, admin.token) == ("unix:/run/admin.sock", TOKEN)
    admin = loadConfig(path, adminTokenFile=str(token)).admin
    assert (admin.listen, admin.token) == ("tcp:9090", "t" * 16)


@pytest.mark.parametrize(
    "table, expected",
    [
        ('listen = "tcp:9090"\n', "admin: needs token or token_file (or --admin-token-file PATH)"),
        (f'token = "{TOKEN}"\n', "admin.listen: is required (or give --admin LISTEN)"),
        (f'listen = "tcp:9090"\ntoken = "{TOKEN}"\ntoken_file = "t"\n',
         "admin: give token or token_file, not both"),
        ('listen = "tcp:9090"\ntoken = "short"\n',
         "admin.token: must be at least 16 characters long, not 5"),
        ('listen = "tcp:9090"\ntoken = "' + "x" * 15 + '"\n',
         "admin.token: must be at least 16 characters long, not 15"),
        ('listen = "tcp:9090"\ntoken = "' + "x" * 1025 + '"\n',
         "admin.token: must be at most 1024 characters long"),
        ('listen = "tcp:9090"\ntoken = "with a space in it"\n',
         "admin.token: must be printable ASCII without spaces"),
        ('listen = "tcp:9090"\ntoken = "h\\u00e9h\\u00e9h\\u00e9h\\u00e9h\\u00e9h\\u00e9"\n',
         "admin.token: must be printable ASCII without spaces"),
        ('listen = 9090\n', "admin.listen: must be a string, not 9090"),
        ('port = 9090\n', "admin.port: unknown key; known keys: listen, token, token_file"),
    ],
    ids=["no-token", "no-listen", "both", "short", "one-short", "long", "space", "non-ascii",
         "listen-type", "unknown"],
)
def test_adminErrors(tmp_path: Path, table: str, expected: str) -> None:
    """
    Each mistake in C{[admin]} is one line naming the key; the token is
    never shown.
    """
    path = writeConfig(tmp_path, "[admin]\n" + table + POOL)
    message = configError(path)
    assert message == f"{path}: {expected}"
    assert TOKEN not in message


def test_adminTokenAtTheBounds(tmp_path: Path) -> None:
    """
    Tokens of exactly L{MIN_ADMIN_TOKEN} and L{MAX_ADMIN_TOKEN} characters
    are accepted.
    """
    for size in (MIN_ADMIN_TOKEN, MAX_ADMIN_TOKEN):
        path = writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9"\ntoken = "{"k" * size}"\n' + POOL)
        assert loadConfig(path).admin.token == "k" * size


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "cannot read {file}: No such file or directory"),
        (b"\n", "{file} is empty"),
        (b"\xff" * 20, "{file} must hold printable ASCII without spaces"),
        (b"short\n", "the token in {file}: must be at least 16 characters long, not 5"),
        (b"x" * 5000, "the token in {file}: must be at most 1024 characters long"),
    ],
    ids=["missing", "empty", "binary", "short", "long"],
)
def test_adminTokenFileErrors(tmp_path: Path, content: bytes | None, reason: str) -> None:
    """
    A token file that cannot be read or holds no usable token is one line,
    naming the key (or flag) and the file, never the token.
    """
    token = tmp_path / "token"
    if content is not None:
        token.write_bytes(content)
        token.chmod(0o600)
    path = writeConfig(tmp_path, '[admin]\nlisten = "tcp:9"\ntoken_file = "token"\n' + POOL)
    assert configError(path) == f"{path}: admin.token_file: {reason.format(file=token)}"
    assert configError(None, backends=["ws://a:1"], admin="tcp:9", adminTokenFile=str(token)) == (
        f"--admin-token-file: {reason.format(file=token)}"
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"admin": "tcp:9"}, "--admin: needs a token: give --admin-token-file PATH "
                             "(or token_file in [admin])"),
        ({"admin": ""}, "--admin: must not be empty"),
        ({"adminTokenFile": "/x"}, "--admin-token-file goes with --admin LISTEN or an [admin] table"),
        ({"admin": "tcp:9", "adminTokenFile": ""}, "--admin-token-file: must not be empty"),
    ],
)
def test_adminFlagErrors(flags: dict[str, str], expected: str) -> None:
    """
    The admin flags used wrongly are one line naming the flag.
    """
    assert configError(None, backends=["ws://a:1"], **flags) == expected


def test_restartNeededNothing(tmp_path: Path) -> None:
    """
    What a reload applies by itself (backends, their weights and limits,
    a pool's balance, affinity_ttl, fail_timeout, connect_attempts, the
    admin token) needs no restart.
    """
    old = loadConfig(writeConfig(tmp_path, f'[admin]\nlisten = "tcp:9"\ntoken = "{TOKEN}"\n' + POOL))
    new = loadConfig(writeConfig(
        tmp_path,
        f'[admin]\nlisten = "tcp:9"\ntoken = "{"n" * 16}"\n'
        '[pool.chat]\nbalance = "hash"\naffinity_ttl = 5\nfail_timeout = 2\nconnect_attempts = 1\n'
        '[[pool.chat.backend]]\nurl = "ws://127.0.0.1:1"\nweight = 3\nmax_connections = 4\n',
    ))
    assert restartNeeded(old, new) == []


def test_restartNeeded(tmp_path: Path) -> None:
    """
    Everything else is listed by its key path.
    """
    old = loadConfig(writeConfig(
        tmp_path,
        f'[admin]\nlisten = "tcp:9"\ntoken = "{TOKEN}"\n'
        '[[route]]\nprefix = "/"\npool = "chat"\n'
        '[pool.chat]\n[[pool.chat.backend]]\nurl = "ws://a"\n'
        '[pool.gone]\n[[pool.gone.backend]]\nurl = "ws://a"\n',
    ))
    new = loadConfig(writeConfig(
        tmp_path,
        'listen = ["tcp:1"]\ntrusted_proxies = ["10.0.0.0/8"]\n[timeouts]\nconnect = 1\n'
        '[limits]\nmax_connections = 5\n[session]\ngrace = 1\n[session_map]\nmax_entries = 9\n'
        f'[admin]\nlisten = "tcp:10"\ntoken = "{TOKEN}"\n'
        '[[route]]\nprefix = "/x"\npool = "chat"\n'
        '[pool.chat]\naffinity = "address"\n[[pool.chat.backend]]\nurl = "ws://a"\n'
        '[pool.chat.health]\n'
        '[pool.new]\n[[pool.new.backend]]\nurl = "ws://a"\n',
    ))
    assert restartNeeded(old, new) == [
        "listen", "trusted_proxies", "timeouts", "limits", "session", "session_map", "route",
        "admin.listen", "pool.chat.affinity", "pool.chat.health", "pool.new (a new pool)",
        "pool.gone (a pool removed)",
    ]
    assert restartNeeded(old, dataclasses.replace(old, admin=None)) == ["admin"]


def test_metricsTableAndFlag(tmp_path: Path) -> None:
    """
    C{[metrics] listen} names the metrics listener; C{--metrics} replaces
    it, or adds one to a file without the table; without either there is
    none.  An empty value or an unknown key is refused in one line, and a
    change waits for a restart.
    """
    path = writeConfig(tmp_path, POOL + '[metrics]\nlisten = "tcp:9108:interface=127.0.0.1"\n')
    config = loadConfig(path)
    assert config.metrics == MetricsConfig(listen="tcp:9108:interface=127.0.0.1")
    assert loadConfig(path, metrics="unix:/run/m.sock").metrics == MetricsConfig(listen="unix:/run/m.sock")
    assert loadConfig(None, backends=["ws://127.0.0.1:1"]).metrics is None
    assert loadConfig(None, backends=["ws://127.0.0.1:1"], metrics="tcp:0").metrics == MetricsConfig("tcp:0")
    with pytest.raises(ConfigError) as error:
        loadConfig(None, backends=["ws://127.0.0.1:1"], metrics="")
    assert str(error.value) == "--metrics: must not be empty"
    assert restartNeeded(config, loadConfig(path, metrics="tcp:1")) == ["metrics"]
    wrong = writeConfig(tmp_path, POOL + '[metrics]\nlisten = "tcp:1"\nport = 3\n')
    assert configError(wrong) == f"{wrong}: metrics.port: unknown key; known keys: listen"


def test_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """
    C{workers} in the file and C{--workers} (which wins) take an integer
    from 1 to 64 or C{"auto"}, the CPUs this process may run on; the
    default is 1.
    """
    import gateway.config.values

    monkeypatch.setattr(gateway.config.values, "cpuCount", lambda: 3)
    assert loadConfig(None, backends=["ws://a:1"]).workers == 1
    path = writeConfig(tmp_path, "workers = 4\n" + POOL)
    assert loadConfig(path).workers == 4
    assert loadConfig(path, workers="2").workers == 2
    assert loadConfig(path, workers="auto").workers == 3
    auto = writeConfig(tmp_path, 'workers = "auto"\n' + POOL)
    assert loadConfig(auto).workers == 3


@pytest.mark.parametrize("value", ["0", "65", "-1", "two", "", "1.5"])
def test_workersFlagErrors(value: str) -> None:
    """
    A C{--workers} value out of bounds or not a number is one line naming
    the flag.
    """
    message = configError(None, backends=["ws://a:1"], workers=value)
    assert message.startswith("--workers: must be \"auto\" or an integer from 1 to 64, not ")


@pytest.mark.parametrize("value", ["0", "true", "1.0", '"many"', "[2]"])
def test_workersFileErrors(tmp_path: Path, value: str) -> None:
    """
    A C{workers} key that is not C{"auto"} or an integer from 1 to 64 is one
    line naming the file and the key.
    """
    path = writeConfig(tmp_path, f"workers = {value}\n" + POOL)
    assert configError(path).startswith(f"{path}: workers: must be \"auto\" or an integer from 1")


def test_workersNeedRestart(tmp_path: Path) -> None:
    """
    A reload cannot change the number of workers.
    """
    old = loadConfig(writeConfig(tmp_path, POOL))
    new = dataclasses.replace(old, workers=2)
    assert restartNeeded(old, new) == ["workers"]
