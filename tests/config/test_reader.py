"""
Tests for L{gateway.config.reader}: how values are shown in the one-line
errors (shortened, escaped), and the numbers it reads (seconds are floats,
zero only where allowed).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.config import ConfigError, loadConfig

from .helpers import POOL, configError, writeConfig


def test_longValueShortened(tmp_path: Path) -> None:
    """
    A long bad value is shortened in the message.
    """
    path = writeConfig(tmp_path, 'listen = ["tcp:1", ' + "1" * 100 + "]\n" + POOL)
    assert configError(path) == (
        f"{path}: listen[1]: must be a string, not {'1' * 57}..."
    )


def test_newlinesEscaped(tmp_path: Path) -> None:
    """
    A newline in a bad value or in an unknown key is escaped, so the
    message stays on one line.
    """
    path = writeConfig(tmp_path, POOL + '[pool.chat.health]\ntype = "a\\nb"\n')
    assert configError(path) == (
        f"{path}: pool.chat.health.type: must be one of 'websocket', 'http', "
        "'tcp', not 'a\\nb'"
    )
    path = writeConfig(
        tmp_path,
        '[pool.chat]\naffinity = "cookie:a\\nb"\n[[pool.chat.backend]]\nurl = "ws://a"\n',
    )
    assert "\n" not in configError(path)
    path = writeConfig(tmp_path, '"a\\nb" = 1\n' + POOL)
    assert configError(path).startswith(f'{path}: "a\\nb": unknown key; ')


def test_secondsAreFloats(tmp_path: Path) -> None:
    """
    Every seconds value is a finite float, whether written as integer or
    float.
    """
    path = writeConfig(tmp_path, "[timeouts]\nconnect = 7\nshutdown = 0.25\n" + POOL)
    timeouts = loadConfig(path).timeouts
    assert timeouts.connect == 7.0 and type(timeouts.connect) is float
    assert timeouts.shutdown == 0.25
    assert all(math.isfinite(value) for value in vars(timeouts).values())


def test_idleTimeoutMayBeZeroButNotNegative(tmp_path) -> None:
    """
    C{timeouts.idle} is the one timeout that may be 0 (never close); a
    negative value is refused with a one-line message.
    """
    from gateway.config import loadConfig

    good = tmp_path / "good.toml"
    good.write_text('[timeouts]\nidle = 0\n[pool.p]\n[[pool.p.backend]]\nurl = "ws://h:1"\n')
    assert loadConfig(str(good)).timeouts.idle == 0.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[timeouts]\nidle = -1\n[pool.p]\n[[pool.p.backend]]\nurl = "ws://h:1"\n')
    with pytest.raises(ConfigError) as caught:
        loadConfig(str(bad))
    assert str(caught.value) == f"{bad}: timeouts.idle: must be a number of seconds >= 0, not -1"
