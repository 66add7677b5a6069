"""
The typed reader: takes values out of a parsed TOML document (plain dicts,
lists, strings and numbers), checks each one's type and bounds, and fails on
the first bad one with a single line, C{"<file>: <dotted key path>:
<reason>"}.

L{gateway.config.tables} and L{gateway.config.load} read every key of the
file through a L{Reader}, so that every error names the file, the key and the
reason the same way.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import ConfigError

__all__ = ["Reader", "configError", "show", "keyPath", "isBareKey"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")

_MISSING: Any = object()


def configError(text: str) -> ConfigError:
    """
    @return: a L{ConfigError} whose message is C{text} folded onto one line.
    """
    return ConfigError(" ".join(text.splitlines()))


def show(value: object) -> str:
    """
    Show a value from the file in an error message: short, on one line and
    spelled as TOML spells it where that differs from Python.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, (datetime.date, datetime.time)):
        return f"the date/time {value.isoformat()}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return text


def keyPath(path: str, key: str) -> str:
    """
    Extend a dotted key path by one key, quoting the key as TOML would when it
    is not a bare key.
    """
    part = key if isBareKey(key) else json.dumps(key)
    return f"{path}.{part}" if path else part


def isBareKey(key: str) -> bool:
    """
    @return: whether C{key} is a TOML bare key (letters, digits, C{_} and
        C{-}), which needs no quotes in a key path.
    """
    return _BARE_KEY.match(key) is not None


class Reader:
    """
    Reads values out of a parsed TOML document, checking type and bounds,
    and fails with one line naming the file, the key path and the reason.

    @ivar origin: the file name (or option) errors start with.
    """

    def __init__(self, origin: str) -> None:
        """
        @param origin: the file name (or option) errors start with.
        """
        self.origin = origin

    def fail(self, path: str, reason: str) -> NoReturn:
        """
        @raise ConfigError: C{"<origin>: <path>: <reason>"}.
        """
        where = f"{self.origin}: {path}" if path else self.origin
        raise configError(f"{where}: {reason}")

    def table(
        self, value: object, path: str, known: Sequence[str] | None
    ) -> dict[str, Any]:
        """
        Check that C{value} is a table whose keys are all in C{known} (any
        key when C{known} is L{None}).
        """
        if not isinstance(value, dict):
            self.fail(path, f"must be a table, not {show(value)}")
        if known is not None:
            for key in value:
                if key not in known:
                    self.fail(
                        keyPath(path, key),
                        f"unknown key; known keys: {', '.join(known)}",
                    )
        return value

    def tables(self, table: dict[str, Any], path: str, key: str) -> list[dict[str, Any]]:
        """
        @return: the array of tables C{table[key]} (empty when absent).
        """
        value = table.get(key, [])
        here = keyPath(path, key)
        if not isinstance(value, list):
            self.fail(
                here,
                f"must be an array of tables, written [[{here}]], not {show(value)}",
            )
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                self.fail(f"{here}[{index}]", f"must be a table, not {show(item)}")
        return value

    def string(
        self, table: dict[str, Any], path: str, key: str, default: Any = _MISSING
    ) -> Any:
        """
        @return: the non-empty string C{table[key]}, or C{default} when the key
            is absent.
        """
        if key not in table:
            if default is _MISSING:
                self.fail(keyPath(path, key), "is required")
            return default
        value = table[key]
        if not isinstance(value, str):
            self.fail(keyPath(path, key), f"must be a string, not {show(value)}")
        if not value:
            self.fail(keyPath(path, key), "must not be empty")
        return value

    def strings(self, table: dict[str, Any], path: str, key: str) -> list[str] | None:
        """
        @return: the array of non-empty strings C{table[key]}, or L{None}
            when the key is absent.
        """
        value = table.get(key)
        if value is None:
            return None
        here = keyPath(path, key)
        if not isinstance(value, list):
            self.fail(here, f"must be an array of strings, not {show(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail(f"{here}[{index}]", f"must be a string, not {show(item)}")
            if not item:
                self.fail(f"{here}[{index}]", "must not be empty")
        return value

    def integer(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: int,
        minimum: int,
        maximum: int | None = None,
    ) -> int:
        """
        @return: the integer C{table[key]} (not a boolean, not a float),
            at least C{minimum} (and at most C{maximum}, when given), or
            C{default} when the key is absent.
        """
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(
                keyPath(path, key),
                f"must be an integer >= {minimum}, not {show(value)}",
            )
        if maximum is not None and value > maximum:
            self.fail(
                keyPath(path, key),
                f"must be an integer <= {maximum}, not {show(value)}",
            )
        return value

    def seconds(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool = False,
    ) -> float:
        """
        @return: the finite number C{table[key]} (an integer will do, a
            boolean will not), greater than 0 (or equal to it, with
            C{allowZero}), or C{default} when the key is absent.
        """
        return self._number(table, path, key, default, allowZero, None, "a number of seconds")

    def rate(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool = True,
    ) -> float:
        """
        @return: the finite number C{table[key]} of things per second, at
            least 0 (greater, without C{allowZero}) and at most 100,000, or
            C{default} when the key is absent.
        """
        return self._number(table, path, key, default, allowZero, 100_000, "a number per second")

    def _number(
        self,
        table: dict[str, Any],
        path: str,
        key: str,
        default: float,
        allowZero: bool,
        maximum: float | None,
        what: str,
    ) -> float:
        """
        @return: the finite number C{table[key]}, greater than 0 (or equal
            to it, with C{allowZero}) and at most C{maximum}, or C{default}
            when the key is absent.
        """
        value = table.get(key, _MISSING)
        if value is _MISSING:
            return default
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or not (value > 0 or (allowZero and value == 0))
            or (maximum is not None and value > maximum)
        ):
            bound = ">= 0" if allowZero else "> 0"
            if maximum is not None:
                bound += f" and <= {maximum:g}"
            self.fail(keyPath(path, key), f"must be {what} {bound}, not {show(value)}")
        return float(value)

    def choice(
        self, table: dict[str, Any], path: str, key: str, default: str, choices: Sequence[str]
    ) -> str:
        """
        @return: the string C{table[key]}, one of C{choices}, or C{default}
            when the key is absent.
        """
        value = self.string(table, path, key, default)
        if value not in choices:
            self.fail(
                keyPath(path, key),
                f"must be one of {', '.join(map(repr, choices))}, not {show(value)}",
            )
        return value

