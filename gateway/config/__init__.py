"""
The gateway's configuration: a TOML file and command-line flags turned into
frozen dataclasses.

Every error is a L{ConfigError} whose message is one line naming the file (or
option), the key and the reason.

This module is the public face of the package and re-exports its names; they
live in L{gateway.config.model} (the dataclasses, their defaults and bounds),
L{gateway.config.values} (the parsers of single values: backend and Redis
URLs, affinity key specs, route prefixes), L{gateway.config.reader} (the
typed reader of a parsed document), L{gateway.config.tables} (each table of
the file) and L{gateway.config.load} (the file and the flags put together,
and what a reload cannot apply).
"""

from ..errors import ConfigError
from .load import loadConfig, restartNeeded
from .model import (
    MAX_ADMIN_TOKEN,
    MAX_WEIGHT,
    MIN_ADMIN_TOKEN,
    AccessLogConfig,
    AdminConfig,
    BackendConfig,
    GatewayConfig,
    HealthCheckConfig,
    Limits,
    MetricsConfig,
    PoolConfig,
    RouteConfig,
    SessionConfig,
    SessionMapConfig,
    Timeouts,
)
from .values import parseBackendURL

__all__ = [
    "BackendConfig",
    "HealthCheckConfig",
    "PoolConfig",
    "RouteConfig",
    "Timeouts",
    "Limits",
    "SessionMapConfig",
    "SessionConfig",
    "AdminConfig",
    "MetricsConfig",
    "AccessLogConfig",
    "GatewayConfig",
    "ConfigError",
    "loadConfig",
    "parseBackendURL",
    "restartNeeded",
    "MAX_WEIGHT",
    "MIN_ADMIN_TOKEN",
    "MAX_ADMIN_TOKEN",
]
