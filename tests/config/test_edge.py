"""
The configuration of PROXY protocol listeners (C{proxy_protocol_from},
C{haproxy:} endpoints) and of the access log (C{[access_log]}).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from gateway.config import AccessLogConfig, GatewayConfig, loadConfig, restartNeeded

from .helpers import POOL, configError, writeConfig


def test_defaults() -> None:
    """
    No PROXY header is trusted from anyone, and there is no access log.
    """
    config = GatewayConfig()
    assert (config.proxyProtocolFrom, config.accessLog) == ((), None)


def test_proxyProtocolFrom(tmp_path: Path) -> None:
    """
    C{proxy_protocol_from} is read as networks in normal form, with a
    C{haproxy:} listener from the file or from C{--listen}.
    """
    path = writeConfig(tmp_path, 'listen = ["haproxy:tcp:8080"]\n'
                                 'proxy_protocol_from = ["10.0.0.0/8", "::1", "192.0.2.7"]\n' + POOL)
    config = loadConfig(path)
    assert config.proxyProtocolFrom == ("10.0.0.0/8", "::1/128", "192.0.2.7/32")
    assert config.listen == ("haproxy:tcp:8080",)
    assert loadConfig(path, listen=["HAProxy:ssl:8443:privateKey=k.pem"]).listen == (
        "HAProxy:ssl:8443:privateKey=k.pem",)


def test_proxyListenerNeedsNetworks(tmp_path: Path) -> None:
    """
    A C{haproxy:} listener without C{proxy_protocol_from} is one line naming
    the listener (in the file, or the flag); so is one with nothing after
    C{haproxy:}.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:8081", "haproxy:tcp:8080"]\n' + POOL)
    assert configError(path) == (
        f"{path}: listen[1]: 'haproxy:tcp:8080' reads PROXY protocol headers, but proxy_protocol_from "
        "(in the --config file) lists no network that may send them")
    assert configError(None, listen=["haproxy:tcp:8080"], backends=["ws://127.0.0.1:1"]).startswith(
        "--listen: 'haproxy:tcp:8080' reads PROXY protocol headers")
    path = writeConfig(tmp_path, 'listen = ["haproxy:"]\nproxy_protocol_from = ["10.0.0.0/8"]\n' + POOL)
    assert configError(path) == (f"{path}: listen[0]: 'haproxy:': haproxy: must be followed by an endpoint "
                                 "(once: tcp:, ssl:, unix:...)")
    path = writeConfig(tmp_path, 'listen = ["haproxy:haproxy:tcp:80"]\nproxy_protocol_from = ["10.0.0.0/8"]\n'
                       + POOL)
    assert configError(path).startswith(f"{path}: listen[0]: 'haproxy:haproxy:tcp:80': haproxy: must be")


def test_proxyProtocolFromNotANetwork(tmp_path: Path) -> None:
    """
    A value that is not a network, or has host bits set, is refused by key.
    """
    path = writeConfig(tmp_path, 'proxy_protocol_from = ["10.0.0.1/8"]\n' + POOL)
    assert configError(path).startswith(f"{path}: proxy_protocol_from[0]: must be a network")
    path = writeConfig(tmp_path, 'proxy_protocol_from = ["nlb"]\n' + POOL)
    assert configError(path).startswith(f"{path}: proxy_protocol_from[0]: must be a network")


def test_accessLog(tmp_path: Path) -> None:
    """
    C{[access_log]}: C{path} (required), C{max_buffer_bytes} (>= 4096, 1 MiB
    by default).
    """
    path = writeConfig(tmp_path, '[access_log]\npath = "-"\n' + POOL)
    assert loadConfig(path).accessLog == AccessLogConfig(path="-", maxBufferBytes=1 << 20)
    path = writeConfig(tmp_path, '[access_log]\npath = "/var/log/gw.log"\nmax_buffer_bytes = 8192\n' + POOL)
    assert loadConfig(path).accessLog == AccessLogConfig(path="/var/log/gw.log", maxBufferBytes=8192)
    path = writeConfig(tmp_path, "[access_log]\nmax_buffer_bytes = 8192\n" + POOL)
    assert configError(path) == f'{path}: access_log.path: is required (a file, or "-" for standard output)'
    path = writeConfig(tmp_path, '[access_log]\npath = "-"\nmax_buffer_bytes = 10\n' + POOL)
    assert configError(path) == f"{path}: access_log.max_buffer_bytes: must be an integer >= 4096, not 10"
    path = writeConfig(tmp_path, '[access_log]\npath = "-"\nformat = "json"\n' + POOL)
    assert configError(path).startswith(f"{path}: access_log.format: unknown key")


def test_restartNeeded() -> None:
    """
    Both take effect at a restart, not at a reload.
    """
    running = GatewayConfig()
    new = dataclasses.replace(running, proxyProtocolFrom=("10.0.0.0/8",),
                              accessLog=AccessLogConfig(path="-"))
    assert restartNeeded(running, new) == ["proxy_protocol_from", "access_log"]
